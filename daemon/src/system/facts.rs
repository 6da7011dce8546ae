//! The box as its operator sees it in the console: uptime, CPU, memory, temperature and
//! throttling, disk, bytes written, network addresses, and the newest warnings and errors
//! from the log. Read from `/proc`, `/sys` and the Pi's firmware where they exist; what a
//! board does not have is `None` (the page says "n/a"), never a guess.

use serde::Serialize;
use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// The console's picture of the box.
#[derive(Debug, Clone, Serialize)]
pub struct Facts {
    pub version: &'static str,
    pub uptime_seconds: u64,
    pub box_uptime_seconds: Option<u64>,
    /// Share of one core the daemon used since the previous reading, in percent.
    pub cpu_percent: Option<f64>,
    /// CPU time the daemon has used, in seconds.
    pub cpu_seconds: Option<f64>,
    pub load_average: Option<[f64; 3]>,
    pub cores: usize,
    pub rss_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub memory_available_bytes: Option<u64>,
    /// The hottest thermal zone, °C.
    pub temperature_celsius: Option<f64>,
    /// The Pi firmware's `get_throttled` bits, and their meaning in words.
    pub throttled: Option<Throttled>,
    pub disk_free_bytes: Option<u64>,
    pub disk_total_bytes: Option<u64>,
    /// Bytes the daemon has written to storage since it started (`/proc/self/io`).
    pub bytes_written: Option<u64>,
    pub open_files: Option<usize>,
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Throttled {
    pub bits: u32,
    pub now: Vec<&'static str>,
    pub since_boot: Vec<&'static str>,
}

/// What the Pi firmware's `get_throttled` bits say (bits 0-3 now, 16-19 since boot).
pub fn throttled_meaning(bits: u32) -> Throttled {
    const NAMES: [&str; 4] = [
        "under-voltage",
        "ARM frequency capped",
        "throttled",
        "soft temperature limit",
    ];
    let pick = |shift: u32| {
        NAMES
            .iter()
            .enumerate()
            .filter(|(i, _)| bits & (1 << (shift + *i as u32)) != 0)
            .map(|(_, n)| *n)
            .collect()
    };
    Throttled {
        bits,
        now: pick(0),
        since_boot: pick(16),
    }
}

/// CPU time read last, to turn the process's total into a rate.
static LAST_CPU: Mutex<Option<(Instant, f64)>> = Mutex::new(None);
static STARTED: OnceLock<Instant> = OnceLock::new();

/// Notes when the daemon started (the first call wins).
pub fn mark_start() {
    STARTED.get_or_init(Instant::now);
}

fn read(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// A `Key:   123 kB` line of a `/proc` file, in bytes.
fn proc_kb(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// The process's user + system CPU seconds.
fn cpu_seconds() -> Option<f64> {
    let stat = read("/proc/self/stat")?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
    Some(ticks / hz as f64)
}

/// The share of a core used since the previous reading, from this reading's CPU seconds.
fn cpu_percent(seconds: Option<f64>) -> Option<f64> {
    let now = Instant::now();
    let seconds = seconds?;
    let mut last = LAST_CPU.lock().unwrap_or_else(|e| e.into_inner());
    let previous = last.replace((now, seconds));
    let (then, before) = previous.or_else(|| STARTED.get().map(|s| (*s, 0.0)))?;
    let wall = now.duration_since(then).as_secs_f64();
    (wall > 0.05).then(|| ((seconds - before) / wall * 100.0).max(0.0))
}

fn temperature() -> Option<f64> {
    let zones = std::fs::read_dir("/sys/class/thermal").ok()?;
    zones
        .filter_map(|z| z.ok())
        .filter(|z| z.file_name().to_string_lossy().starts_with("thermal_zone"))
        .filter_map(|z| read(z.path().join("temp"))?.trim().parse::<f64>().ok())
        .map(|milli| milli / 1000.0)
        .reduce(f64::max)
}

/// The Pi firmware's throttling word: the sysfs file recent firmware offers (readable
/// without `vcgencmd` or `/dev/vcio`), else none.
fn throttled() -> Option<Throttled> {
    let text = read("/sys/devices/platform/soc/soc:firmware/get_throttled")?;
    let text = text.trim();
    let bits = u32::from_str_radix(text.trim_start_matches("0x"), 16).ok()?;
    Some(throttled_meaning(bits))
}

fn addresses() -> Vec<String> {
    let Ok(interfaces) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut found: Vec<String> = interfaces
        .filter(|i| !i.interface_name.starts_with("lo"))
        .filter_map(|i| {
            let address = i.address?;
            if let Some(v4) = address.as_sockaddr_in() {
                return Some(format!("{} {}", i.interface_name, v4.ip()));
            }
            let v6 = address.as_sockaddr_in6()?;
            // Link-local addresses need a zone to be used: not what a phone would type.
            let ip = v6.ip();
            (ip.segments()[0] & 0xffc0 != 0xfe80).then(|| format!("{} {ip}", i.interface_name))
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

/// The process's own figures, as `/metrics` reports them: counters and levels only, so a
/// scrape never moves the console's CPU window (its `cpu_percent` is since its previous
/// reading; Prometheus takes the rate of `cpu_seconds` itself).
#[derive(Debug, Clone, Copy)]
pub struct Process {
    pub cpu_seconds: Option<f64>,
    pub rss_bytes: Option<u64>,
    pub open_files: Option<usize>,
    pub disk_free_bytes: Option<u64>,
}

/// Reads [`Process`] now; `data_dir` is where the free space is taken.
pub fn process(data_dir: &Path) -> Process {
    let status = read("/proc/self/status").unwrap_or_default();
    Process {
        cpu_seconds: cpu_seconds(),
        rss_bytes: proc_kb(&status, "VmRSS:"),
        open_files: open_files(),
        disk_free_bytes: nix::sys::statvfs::statvfs(data_dir)
            .ok()
            .map(|d| d.blocks_available() * d.fragment_size()),
    }
}

fn open_files() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count())
}

/// Reads the box's facts now; `data_dir` is where the disk figures are taken.
pub fn facts(data_dir: &Path) -> Facts {
    let status = read("/proc/self/status").unwrap_or_default();
    let meminfo = read("/proc/meminfo").unwrap_or_default();
    let disk = nix::sys::statvfs::statvfs(data_dir).ok();
    let cpu = cpu_seconds();
    let load = read("/proc/loadavg").and_then(|l| {
        let mut it = l.split_whitespace().map(|n| n.parse::<f64>().ok());
        Some([it.next()??, it.next()??, it.next()??])
    });
    Facts {
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: STARTED.get().map_or(0, |s| s.elapsed().as_secs()),
        box_uptime_seconds: read("/proc/uptime")
            .and_then(|u| u.split_whitespace().next()?.parse::<f64>().ok())
            .map(|s| s as u64),
        cpu_percent: cpu_percent(cpu),
        cpu_seconds: cpu,
        load_average: load,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        rss_bytes: proc_kb(&status, "VmRSS:"),
        memory_total_bytes: proc_kb(&meminfo, "MemTotal:"),
        memory_available_bytes: proc_kb(&meminfo, "MemAvailable:"),
        temperature_celsius: temperature(),
        throttled: throttled(),
        disk_free_bytes: disk
            .as_ref()
            .map(|d| d.blocks_available() * d.fragment_size()),
        disk_total_bytes: disk.as_ref().map(|d| d.blocks() * d.fragment_size()),
        bytes_written: read("/proc/self/io").and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|n| n.trim().parse().ok())
        }),
        open_files: open_files(),
        addresses: addresses(),
    }
}

/// A log line at warning or above, as the console shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LogLine {
    pub at: String,
    pub level: &'static str,
    pub target: String,
    pub message: String,
}

/// How many warnings and errors the console keeps.
pub const RECENT_LOG_LINES: usize = 200;

static RECENT: Mutex<VecDeque<LogLine>> = Mutex::new(VecDeque::new());

/// The newest warnings and errors, oldest first.
pub fn recent_logs() -> Vec<LogLine> {
    RECENT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .cloned()
        .collect()
}

/// A `tracing` layer keeping the newest [`RECENT_LOG_LINES`] warnings and errors in
/// memory for the console (journald keeps everything; the page cannot read the journal).
pub struct RecentLogs;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for RecentLogs {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let level = *event.metadata().level();
        if level > tracing::Level::WARN {
            return;
        }
        let mut text = Fields::default();
        event.record(&mut text);
        let line = LogLine {
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            level: if level == tracing::Level::ERROR {
                "error"
            } else {
                "warn"
            },
            target: event.metadata().target().to_string(),
            message: text.0,
        };
        let mut recent = RECENT.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == RECENT_LOG_LINES {
            recent.pop_front();
        }
        recent.push_back(line);
    }
}

/// The message, then `key=value` for the other fields, each cut to a sensible length.
#[derive(Default)]
struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        if self.0.len() > 1000 {
            return;
        }
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttled_bits_read_in_words() {
        // 0x50005: under-voltage and throttled now, and both since boot.
        let t = throttled_meaning(0x50005);
        assert_eq!(t.now, ["under-voltage", "throttled"]);
        assert_eq!(t.since_boot, ["under-voltage", "throttled"]);
        assert!(throttled_meaning(0).now.is_empty());
    }

    #[test]
    fn facts_read_on_linux() {
        mark_start();
        let f = facts(Path::new("."));
        assert!(f.rss_bytes.is_some_and(|r| r > 0));
        assert!(f.disk_total_bytes.is_some_and(|d| d > 0));
        assert!(f.memory_total_bytes.is_some());
    }
}
