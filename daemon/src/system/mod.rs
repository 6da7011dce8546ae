//! The daemon's side of the operating system: systemd (socket hand-over, readiness,
//! status, the watchdog), the progress checks the watchdog relies on, and the box's facts
//! for the venue's console.

pub mod facts;
pub mod health;
pub mod systemd;

pub use health::{Activity, Health, Stall};
pub use systemd::{inherited_sockets, Inherited, Notifier, Watch};

static RESTART: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The exit status that asks systemd to start the daemon again (`RestartForceExitStatus=`
/// in the unit): EX_TEMPFAIL.
pub const RESTART_EXIT_STATUS: u8 = 75;

/// Asks for the daemon to exit with [`RESTART_EXIT_STATUS`] once it has shut down (the
/// console's restart button: settings that apply at restart).
pub fn request_restart() {
    RESTART.store(true, std::sync::atomic::Ordering::SeqCst);
}

pub fn restart_requested() -> bool {
    RESTART.load(std::sync::atomic::Ordering::SeqCst)
}

/// Whether systemd runs us and would start us again (`NOTIFY_SOCKET` is its mark).
pub fn under_systemd() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}
