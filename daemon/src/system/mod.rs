//! The daemon's side of the operating system: systemd (socket hand-over, readiness,
//! status, the watchdog) and the progress checks the watchdog relies on.

pub mod health;
pub mod systemd;

pub use health::{Activity, Health, Stall};
pub use systemd::{inherited_sockets, Inherited, Notifier, Watch};
