//! End to end: the fleet relay with a real mosquitto broker (from apt, on a loopback port,
//! with its own config) and the central service, through an outage and a crash.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

mod common;

use commeow_central::store::{EventFilter, Sqlite, Storage};
use common::{send_json_with, wait_until, Daemon};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A mosquitto on a loopback port: no persistence, anonymous (TLS and ACLs are tested
/// apart), stopped and started again on the same port for an outage.
struct Mosquitto {
    child: Option<Child>,
    port: u16,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    fn start() -> Mosquitto {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let config = dir.path().join("mosquitto.conf");
        std::fs::write(
            &config,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        )
        .expect("config");
        let mut broker = Mosquitto {
            child: None,
            port,
            config,
            _dir: dir,
        };
        broker.run();
        broker
    }

    fn run(&mut self) {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto (.ci/setup-debian installs it)");
        self.child = Some(child);
        assert!(
            wait_until(Duration::from_secs(10), || TcpStream::connect((
                "127.0.0.1",
                self.port
            ))
            .is_ok()),
            "mosquitto did not listen"
        );
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The central service, in this process, on its own runtime.
struct Central {
    db: PathBuf,
    shutdown: tokio_util::sync::CancellationToken,
    thread: Option<std::thread::JoinHandle<commeow_central::service::Summary>>,
    _dir: Option<tempfile::TempDir>,
}

impl Central {
    fn start(broker: &str) -> Central {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("central.db");
        let mut central = Central::replica(broker, db, "central-test");
        central._dir = Some(dir);
        central
    }

    /// A replica named `client_id` on the database `db`, in the shared group `central`.
    fn replica(broker: &str, db: PathBuf, client_id: &str) -> Central {
        let config = commeow_central::service::Config {
            broker: fleet_proto::broker::Broker {
                url: broker.to_string(),
                ca_file: None,
                cert_file: None,
                key_file: None,
            },
            client_id: client_id.into(),
            group: "central".into(),
            db: db.clone(),
            keepalive: Duration::from_secs(5),
        };
        let shutdown = tokio_util::sync::CancellationToken::new();
        let token = shutdown.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().expect("runtime");
            runtime
                .block_on(commeow_central::service::run(config, token))
                .expect("central service")
        });
        Central {
            db,
            shutdown,
            thread: Some(thread),
            _dir: None,
        }
    }

    /// Stops the replica: how many batches it stored.
    fn stop(mut self) -> u64 {
        self.shutdown.cancel();
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .map_or(0, |s| s.batches)
    }

    fn storage(&self) -> Sqlite {
        Sqlite::open(&self.db).expect("central db")
    }

    fn events(&self) -> Vec<commeow_central::store::EventRow> {
        self.storage()
            .events(&EventFilter {
                box_id: Some("hall-1".into()),
                limit: 1_000_000,
                ..EventFilter::default()
            })
            .expect("events")
    }
}

impl Drop for Central {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn fleet_config(broker: &str) -> String {
    format!(
        "[fleet]\nenabled = true\nbroker = \"{broker}\"\nbox_id = \"hall-1\"\n\
         ack_timeout_seconds = 2\nkeepalive_seconds = 5\nstatus_seconds = 1\n"
    )
}

/// The events still waiting in the box's outbox.
fn outbox_depth(daemon: &Daemon) -> i64 {
    let conn = rusqlite::Connection::open_with_flags(
        daemon.data_dir().join("commeow.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("box db");
    conn.query_row("SELECT COUNT(*) FROM outbox", [], |row| row.get(0))
        .expect("count")
}

/// A venue: streamer `djay` with channel `stage`, viewer `fan` granted `points`.
fn venue(daemon: &Daemon, points: u32) -> String {
    daemon.add_streamer_channel("djay", "stage");
    let fan = daemon.add_user_token("fan", "viewer");
    let granted = daemon.cli(&[
        "wallet",
        "grant",
        "fan",
        &points.to_string(),
        "--reason",
        "fleet",
    ]);
    assert!(
        granted.status.success(),
        "{}",
        String::from_utf8_lossy(&granted.stderr)
    );
    fan
}

fn donate(daemon: &Daemon, fan: &str, n: usize) {
    let answer = send_json_with(
        "POST",
        &daemon.url("/api/channels/stage/donations"),
        Some(&serde_json::json!({"amount": 100, "message": "fleet"})),
        Some(fan),
        &[("idempotency-key", &format!("d-{n}"))],
    );
    assert_eq!(answer.status, 201, "{}", answer.text());
}

#[test]
fn every_event_reaches_central_exactly_once_through_a_broker_outage() {
    let mut broker = Mosquitto::start();
    let central = Central::start(&broker.url());
    let daemon = Daemon::start(&fleet_config(&broker.url()));
    let fan = venue(&daemon, 100 * 400);
    for n in 0..200 {
        donate(&daemon, &fan, n);
    }
    assert!(
        wait_until(Duration::from_secs(30), || central.events().len() == 201),
        "central has {} of 201 events",
        central.events().len()
    );

    assert!(wait_until(Duration::from_secs(10), || outbox_depth(
        &daemon
    ) == 0));

    // The broker goes away. Donations do not wait for it; events wait in the outbox.
    broker.stop();
    assert!(wait_until(Duration::from_secs(20), || daemon
        .logged("fleet broker unreachable")));
    for n in 200..400 {
        donate(&daemon, &fan, n);
    }
    assert_eq!(outbox_depth(&daemon), 200, "kept while the broker is away");
    broker.run();

    assert!(
        wait_until(Duration::from_secs(60), || outbox_depth(&daemon) == 0),
        "the outbox drains once central acknowledges ({} left)",
        outbox_depth(&daemon)
    );
    let events = central.events();
    assert_eq!(events.len(), 401, "every event exactly once");
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=401).collect::<Vec<i64>>(), "in sequence, no gap");
    let donations = events.iter().filter(|e| e.kind == "donation").count();
    assert_eq!(donations, 400);
    let boxes = central.storage().boxes().expect("boxes");
    assert_eq!(boxes.len(), 1);
    assert_eq!(boxes[0].high_water, 401);
    assert!(central.storage().gaps().expect("gaps").is_empty());
    assert!(
        wait_until(Duration::from_secs(10), || central
            .storage()
            .boxes()
            .is_ok_and(|b| b[0].online == Some(true))),
        "the box says it is online"
    );
}

#[test]
fn a_box_killed_mid_relay_loses_nothing_and_its_last_will_says_offline() {
    let broker = Mosquitto::start();
    let central = Central::start(&broker.url());
    let mut daemon = Daemon::start(&fleet_config(&broker.url()));
    let fan = venue(&daemon, 100 * 300);
    assert!(wait_until(Duration::from_secs(20), || central
        .storage()
        .boxes()
        .is_ok_and(|b| b
            .first()
            .is_some_and(|b| b.online == Some(true)))));
    for n in 0..300 {
        donate(&daemon, &fan, n);
    }
    daemon.kill();
    let killed = std::time::Instant::now();
    // Keepalive 5 s: the broker gives up on the box within 1.5 × that and publishes its
    // last will.
    assert!(
        wait_until(Duration::from_secs(10), || central
            .storage()
            .boxes()
            .is_ok_and(|b| b[0].online == Some(false))),
        "no offline status within 10 s of the kill"
    );
    assert!(killed.elapsed() <= Duration::from_millis(7_500 + 1_000));
    daemon.crash_and_restart();
    assert!(
        wait_until(Duration::from_secs(60), || outbox_depth(&daemon) == 0),
        "the outbox drains after the restart"
    );
    let events = central.events();
    assert_eq!(events.len(), 301, "each event once");
    assert!(wait_until(Duration::from_secs(10), || central
        .storage()
        .boxes()
        .is_ok_and(|b| b[0].online == Some(true))));
}

#[test]
fn two_central_replicas_split_the_work_and_store_each_event_once() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("central.db");
    let one = Central::replica(&broker.url(), db.clone(), "central-1");
    let two = Central::replica(&broker.url(), db.clone(), "central-2");
    // Small batches, so there are many messages to share.
    let daemon = Daemon::start(&format!(
        "{}batch = 5\nwindow = 50\n",
        fleet_config(&broker.url())
    ));
    let fan = venue(&daemon, 100 * 300);
    for n in 0..300 {
        donate(&daemon, &fan, n);
    }
    assert!(
        wait_until(Duration::from_secs(60), || outbox_depth(&daemon) == 0),
        "the outbox drains"
    );
    let events = one.events();
    assert_eq!(events.len(), 301, "each event once");
    let (a, b) = (one.stop(), two.stop());
    assert!(a > 0 && b > 0, "both replicas stored batches: {a} and {b}");
}
