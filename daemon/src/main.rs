//! `commeowd`: parses the command line, sets up logging, hands over to the library.

use clap::Parser;
use std::io::IsTerminal;
use std::process::ExitCode;

fn main() -> ExitCode {
    commeow::system::facts::mark_start();
    let cli = commeow::cli::Cli::parse();
    init_logging();
    log_panics();
    tune_allocator();
    match commeow::cli::main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("commeowd: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr. Under systemd (JOURNAL_STREAM set) journald adds its own timestamps,
/// so ours are left out. RUST_LOG overrides the level (default: info).
fn init_logging() {
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // Warnings and errors are also kept in memory for the console's health page.
    let registry = tracing_subscriber::registry()
        .with(filter())
        .with(commeow::system::facts::RecentLogs);
    let plain = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        // Straight to journald: each line keeps its level (`journalctl -p warning`) and its
        // fields (`journalctl CHANNEL=stage`). Without a journal socket, plain lines.
        match tracing_journald::layer() {
            Ok(journal) => registry
                .with(journal.with_syslog_identifier("commeowd".into()))
                .init(),
            Err(_) => registry.with(plain.without_time().with_ansi(false)).init(),
        }
    } else {
        registry
            .with(plain.with_ansi(std::io::stderr().is_terminal()))
            .init();
    }
}

/// Panics go to the log like everything else (journald under systemd), not only to a
/// bare stderr line. A panic in a connection task ends that connection only.
fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        tracing::error!(thread = thread.name().unwrap_or("unnamed"), "panic: {info}");
    }));
}

/// Segments are megabyte buffers that live for seconds. glibc raises its mmap threshold
/// each time such a buffer is freed, after which new ones come from heap arenas that rarely
/// shrink, and the box's memory only grows. A fixed threshold keeps every large buffer in
/// its own mapping, returned to the system when the segment expires.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}
