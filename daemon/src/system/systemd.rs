//! Life under systemd: sockets it hands over (socket activation), and what the daemon tells
//! it over `$NOTIFY_SOCKET` — `READY=1` once the listeners and the store are up, `STATUS=`
//! with live channels and viewers, `WATCHDOG=1` only while every [`Health`] activity makes
//! progress, `STOPPING=1` when shutdown starts.
//!
//! `sd-notify` rather than the `systemd` crate: it is the same protocol (a datagram per
//! message, `LISTEN_FDS`/`LISTEN_FDNAMES`), in Rust, with no link to libsystemd, so the
//! aarch64 build needs no extra target libraries and the binary also runs where libsystemd
//! is absent (a container, a test). Logs go to journald through `tracing-journald` (see
//! `main.rs`).

use super::health::{Activity, Health, Stall};
use sd_notify::NotifyState;
use std::net::TcpListener;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

/// How often `STATUS=` is refreshed when there is no watchdog to pace the loop.
const STATUS_INTERVAL: Duration = Duration::from_secs(5);

/// Listening sockets systemd passed, by the name their socket unit gave them.
#[derive(Debug, Default)]
pub struct Inherited {
    pub http: Option<TcpListener>,
    pub rtmp: Option<TcpListener>,
    /// WebRTC viewers' media (`ListenDatagram=`).
    pub webrtc: Option<std::net::UdpSocket>,
}

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("cannot read the sockets systemd passed: {0}")]
    Environment(#[source] std::io::Error),
    #[error("socket `{name}` from systemd is not a listening TCP socket")]
    NotListening { name: String },
    #[error("socket `webrtc` from systemd is not a bound UDP socket")]
    NotDatagram,
    #[error(
        "socket `{name}` from systemd: expected FileDescriptorName=http, rtmp or webrtc \
         (or two unnamed sockets, HTTP first)"
    )]
    UnknownName { name: String },
    #[error("systemd passed two sockets named `{name}`")]
    Twice { name: String },
}

/// Takes the sockets systemd passed (none when not socket-activated). Named `http`,
/// `rtmp` and `webrtc` by their units' `FileDescriptorName=`; two unnamed ones are HTTP
/// then RTMP.
///
/// Call it before any thread starts: it removes `LISTEN_*` from the environment, so nothing
/// started later mistakes them for its own.
pub fn inherited_sockets() -> Result<Inherited, SocketError> {
    // SAFETY: called from `run_daemon` before the runtime or any other thread exists.
    let passed: Vec<(RawFd, String)> = unsafe { sd_notify::listen_fds_with_names_and_unset_env() }
        .map_err(SocketError::Environment)?
        .collect();
    let unnamed = passed.iter().all(|(_, name)| name == "unknown");
    let mut inherited = Inherited::default();
    for (index, (fd, name)) in passed.into_iter().enumerate() {
        // SAFETY: systemd passed this descriptor to this process (LISTEN_PID matched) and
        // nothing else in the process knows of it, so we own it from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let role = match (unnamed, index, name.as_str()) {
            (true, 0, _) | (false, _, "http") => "http",
            (true, 1, _) | (false, _, "rtmp") => "rtmp",
            (false, _, "webrtc") => {
                let socket = bound_udp(fd).ok_or(SocketError::NotDatagram)?;
                if inherited.webrtc.replace(socket).is_some() {
                    return Err(SocketError::Twice { name });
                }
                continue;
            }
            _ => return Err(SocketError::UnknownName { name }),
        };
        let listener = listening_tcp(fd).ok_or_else(|| SocketError::NotListening {
            name: role.to_string(),
        })?;
        let slot = if role == "http" {
            &mut inherited.http
        } else {
            &mut inherited.rtmp
        };
        if slot.replace(listener).is_some() {
            return Err(SocketError::Twice { name: role.into() });
        }
    }
    Ok(inherited)
}

fn bound_udp(fd: OwnedFd) -> Option<std::net::UdpSocket> {
    use nix::sys::socket::{getsockopt, sockopt, SockType};
    if getsockopt(&fd, sockopt::SockType).ok()? != SockType::Datagram {
        return None;
    }
    let socket = std::net::UdpSocket::from(fd);
    socket.local_addr().ok()?;
    Some(socket)
}

fn listening_tcp(fd: OwnedFd) -> Option<TcpListener> {
    use nix::sys::socket::{getsockopt, sockopt, SockType};
    let listening = getsockopt(&fd, sockopt::AcceptConn).ok()?;
    let stream = getsockopt(&fd, sockopt::SockType).ok()? == SockType::Stream;
    if !(listening && stream) {
        return None;
    }
    let listener = TcpListener::from(fd);
    // Anything but an IP address (a Unix socket unit) is not ours to serve.
    listener.local_addr().ok()?;
    listener.set_nonblocking(true).ok()?;
    Some(listener)
}

/// What the watchdog thread needs from the rest of the daemon.
pub struct Watch {
    pub health: Arc<Health>,
    /// Probed each round: a task spawned on it must get to run.
    pub runtime: tokio::runtime::Handle,
    /// The one-line `STATUS=` text ("2 live channels, 31 viewers").
    pub status: Box<dyn Fn() -> String + Send>,
}

/// The thread that talks to systemd while the daemon runs. Dropping it stops the thread.
pub struct Notifier {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").finish_non_exhaustive()
    }
}

impl Notifier {
    /// Sends `READY=1` and starts the watchdog and status thread. Without `$NOTIFY_SOCKET`
    /// (not under systemd) it does nothing.
    pub fn ready(watch: Watch) -> Notifier {
        let idle = Notifier {
            stop: None,
            thread: None,
        };
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            return idle;
        }
        let watchdog = sd_notify::watchdog_enabled();
        let status = (watch.status)();
        send(&[NotifyState::Ready, NotifyState::Status(&status)]);
        tracing::info!(watchdog = ?watchdog, "told systemd we are ready");
        let (stop, stopped) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("systemd".into())
            .spawn(move || Rounds::new(watch, watchdog, status).run(&stopped));
        match spawned {
            Ok(thread) => Notifier {
                stop: Some(stop),
                thread: Some(thread),
            },
            Err(e) => {
                tracing::error!(error = %e, "cannot start the watchdog thread");
                idle
            }
        }
    }

    /// Tells systemd shutdown has begun; the watchdog goes on until the notifier is dropped.
    pub fn stopping(&self) {
        if self.thread.is_some() {
            send(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
        }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// The watchdog loop's state.
struct Rounds {
    watch: Watch,
    /// How often a round runs: a quarter of the watchdog period, so a ping is never late.
    every: Duration,
    /// Work busy longer than this is a stall: half the watchdog period.
    stall_limit: Option<Duration>,
    runtime_probe: Arc<Activity>,
    stalled: Option<Stall>,
    status: String,
}

impl Rounds {
    fn new(watch: Watch, watchdog: Option<Duration>, status: String) -> Rounds {
        let runtime_probe = watch.health.register("async runtime");
        Rounds {
            every: watchdog.map_or(STATUS_INTERVAL, |w| (w / 4).max(Duration::from_millis(50))),
            stall_limit: watchdog.map(|w| w / 2),
            runtime_probe,
            watch,
            stalled: None,
            status,
        }
    }

    fn run(mut self, stopped: &mpsc::Receiver<()>) {
        while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(self.every) {
            self.round();
        }
    }

    fn round(&mut self) {
        let mut states = Vec::new();
        let stall = self
            .stall_limit
            .and_then(|limit| self.watch.health.stalled(limit));
        match (&stall, &self.stalled) {
            (Some(now), None) => tracing::error!(
                "{now}: withholding the watchdog ping, so systemd restarts the daemon"
            ),
            (None, Some(before)) => {
                tracing::warn!(activity = %before.activity, "progress again after a stall")
            }
            _ => {}
        }
        let status = match &stall {
            Some(stall) => format!("stalled: {stall}"),
            None => (self.watch.status)(),
        };
        self.stalled = stall;
        if status != self.status {
            states.push(NotifyState::Status(&status));
        }
        if self.stall_limit.is_some() && self.stalled.is_none() {
            states.push(NotifyState::Watchdog);
        }
        if !states.is_empty() {
            send(&states);
        }
        self.status = status.clone();
        // The next round looks at whether this probe got to run.
        if self.stall_limit.is_some() {
            let probe = self.runtime_probe.clone();
            probe.mark_busy();
            self.watch.runtime.spawn(async move { probe.mark_idle() });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    /// Everything the daemon said on the socket within `window`.
    fn messages(socket: &UnixDatagram, window: Duration) -> Vec<String> {
        let deadline = std::time::Instant::now() + window;
        let mut seen = Vec::new();
        let mut buffer = [0u8; 4096];
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            if socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .is_err()
            {
                break;
            }
            match socket.recv(&mut buffer) {
                Ok(n) => seen.push(String::from_utf8_lossy(&buffer[..n]).into_owned()),
                Err(_) => break,
            }
        }
        seen
    }

    // One test for the environment-dependent parts: NOTIFY_SOCKET and WATCHDOG_USEC are
    // process-wide, so they are set once here and nowhere else in this test binary.
    #[test]
    fn a_wedged_pipeline_stops_the_watchdog_pings_and_recovery_brings_them_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind");
        // SAFETY: this test binary's other tests do not read or write these variables.
        unsafe {
            std::env::set_var("NOTIFY_SOCKET", &path);
            std::env::set_var("WATCHDOG_USEC", "400000");
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let health = Health::new();
        let pipeline = health.register("media stage");
        let handle = runtime.handle().clone();
        let entered = runtime.enter();
        let notifier = Notifier::ready(Watch {
            health: health.clone(),
            runtime: runtime.handle().clone(),
            status: Box::new(|| "1 live channel, 3 viewers".into()),
        });
        drop(entered);
        // A runtime thread that keeps polling, as the daemon's does.
        let (quit, quitting) = tokio::sync::oneshot::channel::<()>();
        let driver = std::thread::spawn(move || runtime.block_on(quitting));

        let first = messages(&socket, Duration::from_millis(600));
        assert_eq!(
            first.first().map(String::as_str),
            Some("READY=1\nSTATUS=1 live channel, 3 viewers\n")
        );
        let pings = first.iter().filter(|m| m.contains("WATCHDOG=1")).count();
        assert!(pings >= 3, "a ping every 100 ms: {first:?}");

        let wedged = pipeline.begin();
        let during = messages(&socket, Duration::from_millis(900));
        // Past half the period (200 ms) the pings stop, and the status says why.
        let stalled_at = during
            .iter()
            .position(|m| m.contains("STATUS=stalled: media stage has been busy"))
            .unwrap_or_else(|| panic!("no stall status: {during:?}"));
        assert!(
            !during[stalled_at..]
                .iter()
                .any(|m| m.contains("WATCHDOG=1")),
            "{during:?}"
        );
        drop(wedged);
        let after = messages(&socket, Duration::from_millis(500));
        assert!(after.iter().any(|m| m.contains("WATCHDOG=1")), "{after:?}");
        assert!(after.iter().any(|m| m.contains("STATUS=1 live channel")));

        // A runtime that cannot run its tasks (a blocking call on its only thread) stalls too.
        handle.spawn(async { std::thread::sleep(Duration::from_millis(800)) });
        let blocked = messages(&socket, Duration::from_millis(700));
        assert!(
            blocked
                .iter()
                .any(|m| m.contains("STATUS=stalled: async runtime has been busy")),
            "{blocked:?}"
        );
        assert!(
            !blocked.last().is_some_and(|m| m.contains("WATCHDOG=1")),
            "{blocked:?}"
        );
        let recovered = messages(&socket, Duration::from_millis(600));
        assert!(
            recovered.iter().any(|m| m.contains("WATCHDOG=1")),
            "{recovered:?}"
        );

        notifier.stopping();
        let last = messages(&socket, Duration::from_millis(200));
        assert!(last.iter().any(|m| m.starts_with("STOPPING=1")), "{last:?}");
        drop(notifier);
        let _ = quit.send(());
        let _ = driver.join().expect("driver");
    }
}
