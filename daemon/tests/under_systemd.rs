//! The daemon as systemd runs it, without systemd as PID 1: the notify protocol on a socket
//! the test listens on, sockets handed over by `systemd-socket-activate`, and the units in
//! `systemd/` checked by `systemd-analyze`.
// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::{get, poll_until, wait_until, Daemon, Launch, Push};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A listener for what the daemon tells systemd, with the time each message arrived.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        NotifySocket {
            socket,
            path,
            _dir: dir,
        }
    }

    /// The next message within `timeout`.
    fn next(&self, timeout: Duration) -> Option<(Instant, String)> {
        let mut buffer = [0u8; 4096];
        self.socket.set_read_timeout(Some(timeout)).ok()?;
        let n = self.socket.recv(&mut buffer).ok()?;
        Some((
            Instant::now(),
            String::from_utf8_lossy(&buffer[..n]).into_owned(),
        ))
    }

    /// Messages until one contains `needle` (returned last), or fails after `timeout`.
    fn until(&self, needle: &str, timeout: Duration) -> Vec<(Instant, String)> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if let Some(message) = self.next(left.max(Duration::from_millis(1))) {
                let found = message.1.contains(needle);
                seen.push(message);
                if found {
                    return seen;
                }
            }
        }
        panic!("no {needle:?} within {timeout:?}; saw {seen:?}");
    }
}

const WATCHDOG: Duration = Duration::from_secs(1);

#[test]
fn under_systemd_it_says_ready_once_serving_reports_status_and_keeps_the_watchdog_fed() {
    let notify = NotifySocket::bind();
    let launch = Launch {
        env: vec![
            ("NOTIFY_SOCKET".into(), notify.path.display().to_string()),
            ("WATCHDOG_USEC".into(), WATCHDOG.as_micros().to_string()),
        ],
        ..Launch::default()
    };
    let mut daemon = Daemon::start_with("[hls]\ntarget_duration = 1.0\n", launch);

    // READY=1 is the first thing said, and by then the box answers.
    let (_, first) = notify.next(Duration::from_secs(20)).expect("a message");
    // (The transcoding probe's verdict joins the status line once it has run.)
    assert!(
        first.starts_with("READY=1\nSTATUS=0 live channels, 0 viewers"),
        "{first}"
    );
    let health = get(&daemon.url("/healthz"));
    assert_eq!(health.status, 200, "{health:?}");

    // Pings every quarter period, never a gap near the period itself.
    let start = Instant::now();
    let mut pings = Vec::new();
    while start.elapsed() < Duration::from_secs(3) {
        if let Some((at, text)) = notify.next(Duration::from_millis(900)) {
            if text.contains("WATCHDOG=1") {
                pings.push(at);
            }
        }
    }
    assert!(pings.len() >= 8, "{} pings in 3 s", pings.len());
    let widest = pings
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .expect("two pings");
    assert!(widest < WATCHDOG / 2, "a {widest:?} gap between pings");

    // A streamer goes live and a viewer joins the chat: the status line follows.
    let key = daemon.add_channel("stage");
    let push = Push::start(&daemon.rtmp_url(&key), 30, "320x240");
    notify.until("STATUS=1 live channel, 0 viewers", Duration::from_secs(20));
    let viewer = daemon.chat("stage", None).expect("chat");
    notify.until("STATUS=1 live channel, 1 viewer", Duration::from_secs(10));
    drop(viewer);
    drop(push);
    notify.until("STATUS=0 live channels", Duration::from_secs(30));

    // systemctl stop: STOPPING=1, then a clean exit.
    let pid = nix::unistd::Pid::from_raw(daemon.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    notify.until("STOPPING=1", Duration::from_secs(10));
    let mut status = None;
    wait_until(Duration::from_secs(15), || {
        status = daemon.child.try_wait().expect("wait");
        status.is_some()
    });
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

/// Free loopback ports for `systemd-socket-activate` (it cannot bind port 0).
fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn socket_activate(listen: &[(&str, u16)], names: &str) -> Launch {
    let mut wrapper = vec!["systemd-socket-activate".to_string()];
    for (ip, port) in listen {
        wrapper.push(format!("--listen={ip}:{port}"));
    }
    if !names.is_empty() {
        wrapper.push(format!("--fdname={names}"));
    }
    Launch {
        wrapper,
        env: Vec::new(),
    }
}

/// systemd-socket-activate, like systemd, starts the service on the first connection; this
/// is that connection, a viewer's GET /healthz.
fn first_visit(url: String) -> std::thread::JoinHandle<u16> {
    std::thread::spawn(move || {
        let mut status = 0;
        wait_until(Duration::from_secs(20), || {
            status =
                common::try_send_json_with("GET", &url, None, None, &[]).map_or(0, |r| r.status);
            status != 0
        });
        status
    })
}

#[test]
fn sockets_from_systemd_are_served_by_name_and_the_first_visitor_is_answered() {
    // On 127.0.0.2, which the daemon's own flags (127.0.0.1:0) would never pick; named in
    // the opposite order to the defaults, so only the names can put them right.
    let (rtmp_port, http_port) = (free_port("127.0.0.2"), free_port("127.0.0.2"));
    let launch = socket_activate(
        &[("127.0.0.2", rtmp_port), ("127.0.0.2", http_port)],
        "rtmp:http",
    );
    let visitor = first_visit(format!("http://127.0.0.2:{http_port}/healthz"));
    let daemon = Daemon::start_with("", launch);
    assert_eq!(visitor.join().expect("visitor"), 200);
    assert_eq!(daemon.http.to_string(), format!("127.0.0.2:{http_port}"));
    assert_eq!(daemon.rtmp.to_string(), format!("127.0.0.2:{rtmp_port}"));
    assert!(daemon.logged("HTTP socket from systemd"));
    assert!(daemon.logged("RTMP socket from systemd"));

    // OBS reaches the handed-over RTMP socket and viewers see the channel go live.
    let key = daemon.add_channel("stage");
    let _push = Push::start(&daemon.rtmp_url(&key), 20, "320x240");
    poll_until(
        Duration::from_secs(20),
        "the channel goes live",
        || Some(daemon.channel_live("stage")),
        |live| *live,
    );
}

#[test]
fn two_unnamed_sockets_are_http_then_rtmp_and_a_stranger_is_refused_by_name() {
    let (http_port, rtmp_port) = (free_port("127.0.0.2"), free_port("127.0.0.2"));
    let launch = socket_activate(&[("127.0.0.2", http_port), ("127.0.0.2", rtmp_port)], "");
    let visitor = first_visit(format!("http://127.0.0.2:{http_port}/healthz"));
    let daemon = Daemon::start_with("", launch);
    assert_eq!(visitor.join().expect("visitor"), 200);
    assert_eq!(daemon.rtmp.to_string(), format!("127.0.0.2:{rtmp_port}"));
    drop(daemon);

    // A unit with a typo in FileDescriptorName: a clear error, not a daemon on the wrong port.
    let port = free_port("127.0.0.2");
    let launch = socket_activate(&[("127.0.0.2", port)], "web");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = common::commeowd_through(&launch.wrapper)
        .arg("--data-dir")
        .arg(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start");
    let knocked = wait_until(Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.2", port)).is_ok()
    });
    assert!(knocked, "systemd-socket-activate did not listen");
    let output = wait_for_exit(&mut child, Duration::from_secs(20));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "socket `web` from systemd: expected FileDescriptorName=http, rtmp or webrtc"
        ),
        "{stderr}"
    );
}

fn wait_for_exit(child: &mut std::process::Child, timeout: Duration) -> std::process::Output {
    let exited = wait_until(timeout, || child.try_wait().ok().flatten().is_some());
    if !exited {
        let _ = child.kill();
        panic!("still running after {timeout:?}");
    }
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    std::process::Output {
        status: child.wait().expect("status"),
        stdout: Vec::new(),
        stderr: stderr.into_bytes(),
    }
}

/// A root for `systemd-analyze --root`: systemd's own units (which ours name) under
/// /usr/lib, ours under /etc, and a stand-in for the binary.
fn analyze_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tempdir");
    let system_units = root.path().join("usr/lib/systemd/system");
    copy_dir(Path::new("/lib/systemd/system"), &system_units);
    let ours = Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd");
    let etc = root.path().join("etc/systemd/system");
    std::fs::create_dir_all(&etc).expect("mkdir");
    for unit in [
        "commeowd.service",
        "commeowd-http.socket",
        "commeowd-rtmp.socket",
        "commeowd-webrtc.socket",
    ] {
        std::fs::copy(ours.join(unit), etc.join(unit)).expect("copy unit");
    }
    let bin = root.path().join("usr/bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    std::fs::copy(common::bin().1, bin.join("commeowd")).expect("copy the binary");
    root
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from)
        .expect("read dir")
        .map_while(Result::ok)
    {
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().expect("file type");
        if kind.is_symlink() {
            let link = std::fs::read_link(&source).expect("readlink");
            std::os::unix::fs::symlink(link, &target).expect("symlink");
        } else if kind.is_dir() {
            copy_dir(&source, &target);
        } else {
            std::fs::copy(&source, &target).expect("copy");
        }
    }
}

#[test]
fn the_units_verify_and_the_service_is_locked_down() {
    let root = analyze_root();
    let root_arg = format!("--root={}", root.path().display());
    let verify = Command::new("systemd-analyze")
        .args(["verify", &root_arg])
        .args([
            "commeowd.service",
            "commeowd-http.socket",
            "commeowd-rtmp.socket",
            "commeowd-webrtc.socket",
        ])
        .output()
        .expect("systemd-analyze verify");
    let said = String::from_utf8_lossy(&verify.stderr);
    // Silence means every value parsed, the memory limits too (a bad one is reported).
    assert!(verify.status.success() && said.trim().is_empty(), "{said}");
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/commeowd.service"),
    )
    .expect("unit");
    for limit in ["MemoryHigh=40%", "MemoryMax=50%"] {
        assert!(
            unit.lines().any(|l| l == limit),
            "the service caps its memory: {limit}"
        );
    }
    assert!(
        unit.lines().any(|l| l == "RestartForceExitStatus=75"),
        "the console's restart (exit 75) is restarted"
    );

    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager", &root_arg])
        .arg("commeowd.service")
        .output()
        .expect("systemd-analyze security");
    let report = String::from_utf8_lossy(&security.stdout);
    let exposure: f64 = report
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for commeowd.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure figure: {report}"));
    assert!(exposure <= 2.0, "exposure {exposure}:\n{report}");
    eprintln!("systemd-analyze security: exposure {exposure}");
}

/// The console's restart button, for settings that apply at restart: under systemd the
/// daemon stops as `systemctl stop` would (STOPPING=1, publishes ended with ENDLIST) and
/// exits with 75, which the unit's `RestartForceExitStatus=75` restarts; the settings
/// changed before it are in force in the next process. (The unit carrying the directive
/// is checked by `the_units_verify_and_the_service_is_locked_down`.)
#[test]
fn the_consoles_restart_exits_cleanly_with_the_status_the_unit_restarts_on() {
    let notify = NotifySocket::bind();
    let launch = Launch {
        env: vec![("NOTIFY_SOCKET".into(), notify.path.display().to_string())],
        ..Launch::default()
    };
    let mut daemon = Daemon::start_with("", launch);
    notify.until("READY=1", Duration::from_secs(20));
    let admin = daemon.add_user_token("boss", "admin");
    let settings = common::send_json(
        "GET",
        &daemon.url("/api/admin/settings"),
        None,
        Some(&admin),
    );
    assert_eq!(settings.json()["restart_available"], true);
    let change = common::send_json(
        "PUT",
        &daemon.url("/api/admin/settings"),
        Some(&serde_json::json!({"values": {"chat.max_chars": "77"}})),
        Some(&admin),
    );
    assert_eq!(change.json()["restart_needed"], true, "{change:?}");
    let key = daemon.add_channel("stage");
    let push = Push::start(&daemon.rtmp_url(&key), 60, "320x240");
    poll_until(
        Duration::from_secs(20),
        "the channel is live",
        || Some(daemon.channel_live("stage")),
        |live| *live,
    );
    let restart = common::send_json(
        "POST",
        &daemon.url("/api/admin/restart"),
        None,
        Some(&admin),
    );
    assert_eq!(restart.status, 202, "{restart:?}");
    notify.until("STOPPING=1", Duration::from_secs(10));
    let mut status = None;
    wait_until(Duration::from_secs(15), || {
        status = daemon.child.try_wait().expect("wait");
        status.is_some()
    });
    assert_eq!(status.and_then(|s| s.code()), Some(75), "{status:?}");
    assert!(daemon.logged("restart asked from the console"));
    drop(push);
    // What systemd then does: start it again, on the same data; the setting is in force.
    daemon.crash_and_restart();
    let admin = daemon.login("boss");
    let settings = common::send_json(
        "GET",
        &daemon.url("/api/admin/settings"),
        None,
        Some(&admin),
    )
    .json();
    let max_chars = settings["settings"]
        .as_array()
        .expect("settings")
        .iter()
        .find(|s| s["key"] == "chat.max_chars")
        .map(|s| s["value"].clone());
    assert_eq!(max_chars, Some(serde_json::json!(77)));
    let audit =
        common::send_json("GET", &daemon.url("/api/admin/audit"), None, Some(&admin)).json();
    assert_eq!(audit[0]["action"], "restart");
}
