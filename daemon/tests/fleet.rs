//! End to end: the fleet relay with a real mosquitto broker (from apt, on a loopback port,
//! with its own config) and the central service, through an outage and a crash.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

mod common;

use commeow_central::store::{EventFilter, Sqlite, Storage};
use common::{send_json_with, wait_until, Daemon};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
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
        Mosquitto::with(|port, _| {
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        })
    }

    /// The fleet's production set-up (README, "Fleet"): TLS, a client certificate
    /// required, its CN as the username and the client id, and the fleet ACL.
    fn start_tls(certs: &Path) -> Mosquitto {
        let certs = certs.to_path_buf();
        Mosquitto::with(move |port, dir| {
            let acl = dir.join("acl");
            std::fs::write(&acl, FLEET_ACL).expect("acl");
            format!(
                "per_listener_settings false\nallow_anonymous false\npersistence false\n\
                 listener {port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n\
                 require_certificate true\nuse_identity_as_username true\n\
                 use_username_as_clientid true\nacl_file {acl}\n",
                ca = certs.join("ca.pem").display(),
                cert = certs.join("server.pem").display(),
                key = certs.join("server.key").display(),
                acl = acl.display(),
            )
        })
    }

    fn with(config: impl FnOnce(u16, &Path) -> String) -> Mosquitto {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let path = dir.path().join("mosquitto.conf");
        std::fs::write(&path, config(port, dir.path())).expect("config");
        readable_by_all(dir.path());
        let mut broker = Mosquitto {
            child: None,
            port,
            config: path,
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

    /// Replaces the broker's ACL file and has it reread (SIGHUP), as an operator would.
    fn allow(&mut self, acl: String) {
        std::fs::write(self._dir.path().join("acl"), acl).expect("acl");
        let child = self.child.as_ref().expect("running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    }

    /// How a plaintext client (an admin, a proxy) reaches it.
    fn plain(&self) -> fleet_proto::broker::Broker {
        plain_broker(&self.url())
    }
}

fn plain_broker(url: &str) -> fleet_proto::broker::Broker {
    fleet_proto::broker::Broker {
        url: url.to_string(),
        ca_file: None,
        cert_file: None,
        key_file: None,
    }
}

/// A command to hall-1 with `ttl_seconds` to live (negative: already expired), sent
/// through `broker`; its answer.
fn command(
    runtime: &tokio::runtime::Runtime,
    broker: &fleet_proto::broker::Broker,
    id: &str,
    name: &str,
    args: serde_json::Value,
    ttl_seconds: i64,
) -> fleet_proto::CommandResult {
    let command = fleet_proto::Command {
        box_id: fleet_proto::BoxId::new("hall-1").expect("box id"),
        id: id.into(),
        name: name.into(),
        args,
        expires_at: (chrono::Utc::now() + chrono::Duration::seconds(ttl_seconds))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    };
    runtime
        .block_on(commeow_central::service::send_command(
            broker,
            // A client id of its own each time: the same command may be sent again.
            &format!("admin-{id}-{}", rand_suffix()),
            &command,
            Duration::from_secs(20),
        ))
        .expect("an answer")
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The fleet ACL (the README's): central reads and writes everything; a box writes only
/// its own events, status, reported and command results, and reads only its own ack,
/// desired and commands.
const FLEET_ACL: &str = "user central\ntopic readwrite commeow/v1/#\n\
pattern write commeow/v1/%u/events\npattern write commeow/v1/%u/status\n\
pattern write commeow/v1/%u/reported\npattern write commeow/v1/%u/cmd/res\n\
pattern read commeow/v1/%u/ack\npattern read commeow/v1/%u/desired\npattern read commeow/v1/%u/cmd\n";

/// Runs the documented `fleet-certs` command: a CA, the broker's certificate for
/// 127.0.0.1, and client certificates for `names`.
fn fleet_certs(names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/central/fleet-certs");
    let run = |args: &[&str]| {
        let out = Command::new(script)
            .arg(dir.path())
            .args(args)
            .output()
            .expect("run fleet-certs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["ca"]);
    run(&["server", "127.0.0.1"]);
    for name in names {
        run(&["client", name]);
    }
    readable_by_all(dir.path());
    dir
}

/// mosquitto started as root drops to its own user before reading its files: the test's
/// files must be readable by it (on a broker they belong to the mosquitto user).
fn readable_by_all(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
    for entry in std::fs::read_dir(dir).expect("dir").flatten() {
        let _ = std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o644));
    }
}

fn tls_broker(url: &str, certs: &Path, name: &str) -> fleet_proto::broker::Broker {
    fleet_proto::broker::Broker {
        url: url.to_string(),
        ca_file: Some(certs.join("ca.pem")),
        cert_file: Some(certs.join(format!("{name}.pem"))),
        key_file: Some(certs.join(format!("{name}.key"))),
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
        Central::connect(plain_broker(broker), db, client_id)
    }

    fn connect(broker: fleet_proto::broker::Broker, db: PathBuf, client_id: &str) -> Central {
        let config = commeow_central::service::Config {
            broker,
            client_id: client_id.into(),
            group: "central".into(),
            db: db.display().to_string(),
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
/// Events [`venue`] makes before any donation: the channel's creation, the grant, and the
/// grant's audit row (`admin_action`: who granted, from where).
const SETUP_EVENTS: usize = 3;

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

/// Donations `from..to` (a multiple of 4 apart) from 4 clients at once.
fn donate_range(daemon: &Daemon, fan: &str, from: usize, to: usize) {
    std::thread::scope(|threads| {
        let share = (to - from) / 4;
        for part in 0..4 {
            threads.spawn(move || {
                for n in (from + part * share)..(from + (part + 1) * share) {
                    donate(daemon, fan, n);
                }
            });
        }
    });
}

#[test]
fn every_event_reaches_central_exactly_once_through_a_broker_outage() {
    let mut broker = Mosquitto::start();
    let central = Central::start(&broker.url());
    let daemon = Daemon::start(&fleet_config(&broker.url()));
    let fan = venue(&daemon, 100 * 10_000);
    // 10,000 donations through the HTTP API from 4 clients: 5,000 with the broker up, then
    // 5,000 with it away, and it stays away a full minute.
    donate_range(&daemon, &fan, 0, 5_000);
    assert!(
        wait_until(Duration::from_secs(60), || central.events().len()
            == 5_000 + SETUP_EVENTS),
        "central has {} of 5,002 events",
        central.events().len()
    );

    assert!(wait_until(Duration::from_secs(10), || outbox_depth(
        &daemon
    ) == 0));

    // The broker goes away. Donations do not wait for it; events wait in the outbox.
    broker.stop();
    let stopped = std::time::Instant::now();
    assert!(wait_until(Duration::from_secs(20), || daemon
        .logged("fleet broker unreachable")));
    donate_range(&daemon, &fan, 5_000, 10_000);
    assert_eq!(
        outbox_depth(&daemon),
        5_000,
        "kept while the broker is away"
    );
    assert!(
        wait_until(Duration::from_secs(10), || daemon.get("/healthz").json()
            ["fleet"]["connected"]
            == false),
        "/healthz says the relay is not connected"
    );
    // The outage lasts a minute: the relay backs off to its 30 s cap meanwhile.
    std::thread::sleep(Duration::from_secs(60).saturating_sub(stopped.elapsed()));
    broker.run();

    assert!(
        wait_until(Duration::from_secs(90), || outbox_depth(&daemon) == 0),
        "the outbox drains once central acknowledges ({} left)",
        outbox_depth(&daemon)
    );
    let events = central.events();
    assert_eq!(
        events.len(),
        10_000 + SETUP_EVENTS,
        "every event exactly once"
    );
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=10_000 + SETUP_EVENTS as i64).collect::<Vec<i64>>(),
        "in sequence, no gap"
    );
    let donations: Vec<_> = events.iter().filter(|e| e.kind == "donation").collect();
    assert_eq!(donations.len(), 10_000);
    assert_eq!(
        (
            &donations[0].payload["donor"],
            &donations[0].payload["streamer"]
        ),
        (&serde_json::json!("fan"), &serde_json::json!("djay")),
        "people are named by username, not only by the box's ids"
    );
    let created: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "channel_created")
        .collect();
    assert_eq!(
        created.len(),
        1,
        "the channel, made on the box, is an event too"
    );
    assert_eq!(created[0].payload["channel"], "stage");
    assert_eq!(created[0].payload["owner"], "djay", "named by username");
    assert!(
        !created[0].payload.to_string().contains("key"),
        "no stream key travels: {}",
        created[0].payload
    );
    let boxes = central.storage().boxes().expect("boxes");
    assert_eq!(boxes.len(), 1);
    assert_eq!(boxes[0].high_water, 10_000 + SETUP_EVENTS as i64);
    assert!(central.storage().gaps().expect("gaps").is_empty());
    assert!(
        wait_until(Duration::from_secs(10), || central
            .storage()
            .boxes()
            .is_ok_and(|b| b[0].online == Some(true))),
        "the box says it is online"
    );
    let health = daemon.get("/healthz").json();
    assert_eq!(health["fleet"]["connected"], true, "{health}");
    assert!(health["fleet"]["last_ack_at"].is_string(), "{health}");
    // And the ledger central rebuilds from the events is the box's own.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let summary = command(
        &runtime,
        &broker.plain(),
        "summary",
        "ledger_summary",
        serde_json::json!({}),
        60,
    );
    let checked =
        commeow_central::reconcile::reconcile(&mut central.storage(), "hall-1", &summary.result)
            .expect("reconcile");
    assert!(checked.reconciled, "{checked:?}");
    assert_eq!(checked.expected.earnings, 100 * 10_000);
}

/// What the broker lets anonymous clients do before central's acks are let through: all
/// of the fleet's topics but writing `ack`.
const ACL_NO_ACKS: &str = "topic readwrite commeow/v1/+/events\n\
topic readwrite commeow/v1/+/status\ntopic readwrite commeow/v1/+/reported\n\
topic readwrite commeow/v1/+/desired\ntopic readwrite commeow/v1/+/cmd\n\
topic readwrite commeow/v1/+/cmd/res\ntopic read commeow/v1/+/ack\n";

/// Central killed between its commits and its acks, and every batch delivered three times
/// (a proxy republishing each twice): each event is stored once. Until the kill, the
/// broker drops what central publishes on `ack` (its ACL), so every batch central commits
/// is one whose ack never leaves: central holds the box's window of events, and the box
/// still holds every event.
/// Central is killed -9, the acks allowed, central restarted: the box sends everything
/// again, central acknowledges what it already holds, and the outbox drains.
#[test]
fn batches_stored_and_never_acknowledged_or_delivered_thrice_are_stored_once() {
    use rumqttc::{AsyncClient, Event, Packet, QoS};
    let mut broker = Mosquitto::with(|port, dir| {
        let acl = dir.join("acl");
        std::fs::write(&acl, ACL_NO_ACKS).expect("acl");
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nacl_file {}\n",
            acl.display()
        )
    });
    let db_dir = tempfile::tempdir().expect("tempdir");
    let db = db_dir.path().join("central.db");
    let mut central = CentralProcess::start(&broker.url(), &db);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let options = broker
        .plain()
        .options("proxy", Duration::from_secs(5))
        .expect("options");
    let republished = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = republished.clone();
    let subscribed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let listening = subscribed.clone();
    let proxy = runtime.spawn(async move {
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let topic = "commeow/v1/hall-1/events";
        // It hears its own copies too (MQTT 3.1.1 has no "no local"): each batch once.
        let mut seen = std::collections::HashSet::new();
        while let Ok(event) = eventloop.poll().await {
            match event {
                Event::Incoming(Packet::ConnAck(_)) => {
                    let _ = client.subscribe(topic, QoS::AtLeastOnce).await;
                }
                Event::Incoming(Packet::SubAck(_)) => {
                    listening.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                Event::Incoming(Packet::Publish(publish))
                    if publish.topic == topic && seen.insert(publish.payload.clone()) =>
                {
                    for _ in 0..2 {
                        let sent = client.try_publish(
                            topic,
                            QoS::AtLeastOnce,
                            false,
                            publish.payload.clone(),
                        );
                        if sent.is_ok() {
                            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }
                _ => {}
            }
        }
    });
    assert!(wait_until(Duration::from_secs(10), || subscribed
        .load(std::sync::atomic::Ordering::Relaxed)));
    // Small batches, so there are many.
    let daemon = Daemon::start(&format!(
        "{}batch = 10\nwindow = 100\n",
        fleet_config(&broker.url())
    ));
    let fan = venue(&daemon, 100 * 200);
    for n in 0..200 {
        donate(&daemon, &fan, n);
    }
    // The relay has a window (100) of events out and waits for acks before sending more:
    // central holds those 100, and the box all 203.
    assert!(
        wait_until(Duration::from_secs(60), || central.events() == 100),
        "central stores the window the box sent"
    );
    assert_eq!(
        outbox_depth(&daemon),
        200 + SETUP_EVENTS as i64,
        "no ack reached the box"
    );
    central.signal(nix::sys::signal::Signal::SIGKILL);
    broker.allow(ACL_NO_ACKS.to_string() + "topic write commeow/v1/+/ack\n");
    central.crash_and_restart();
    assert!(
        wait_until(Duration::from_secs(60), || outbox_depth(&daemon) == 0),
        "the outbox drains once central acknowledges again"
    );
    let mut storage = Sqlite::open(&db).expect("central db");
    let events = storage
        .events(&EventFilter {
            limit: 1_000_000,
            ..EventFilter::default()
        })
        .expect("events");
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=200 + SETUP_EVENTS as i64).collect::<Vec<i64>>(),
        "each event once"
    );
    assert!(storage.boxes().expect("boxes")[0].quarantined.is_none());
    let copies = republished.load(std::sync::atomic::Ordering::Relaxed);
    assert!(copies >= 20, "the proxy delivered {copies} extra copies");
    proxy.abort();
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
    assert_eq!(events.len(), 300 + SETUP_EVENTS, "each event once");
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
    assert_eq!(events.len(), 300 + SETUP_EVENTS, "each event once");
    let (a, b) = (one.stop(), two.stop());
    assert!(a > 0 && b > 0, "both replicas stored batches: {a} and {b}");
}

/// What a box's certificate lets it do, with the production broker set-up: speak only as
/// itself. Forgeries come from a raw MQTT client holding hall-1's certificate.
#[test]
fn a_box_certificate_speaks_only_for_its_own_box() {
    use fleet_proto::{Envelope, EventsBatch, Status, Topic, WireEvent};
    use rumqttc::{AsyncClient, Event, Packet, QoS};

    let certs = fleet_certs(&["hall-1", "hall-2", "central"]);
    let broker = Mosquitto::start_tls(certs.path());
    let url = format!("mqtts://127.0.0.1:{}", broker.port);
    let dir = tempfile::tempdir().expect("tempdir");
    let central = Central::connect(
        tls_broker(&url, certs.path(), "central"),
        dir.path().join("central.db"),
        "central",
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let hall = |n: &str| fleet_proto::BoxId::new(n).expect("box id");
    let batch = |named: &str, id: &str| {
        EventsBatch {
            box_id: hall(named),
            floor: 1,
            sent_at: "2026-12-05T00:00:00Z".into(),
            events: vec![WireEvent {
                seq: 1,
                event_id: id.to_string(),
                kind: "grant".into(),
                v: 1,
                at: "2026-12-05T00:00:00Z".into(),
                payload: serde_json::json!({"type": "grant", "points": 1_000_000}),
            }],
        }
        .to_bytes()
    };
    // The real hall-2 is connected; hall-1's certificate asks for client id hall-2 and
    // subscribes to hall-2's acks.
    let (hall_2, forger_heard) = runtime.block_on(async {
        let connect = |name: &str, client_id: &str| {
            let options = tls_broker(&url, certs.path(), name)
                .options(client_id, Duration::from_secs(5))
                .expect("options");
            AsyncClient::new(options, 16)
        };
        let (two, mut two_loop) = connect("hall-2", "hall-2");
        let two_events = tokio::spawn(async move {
            let (mut connects, mut acks) = (0, 0);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
            while tokio::time::Instant::now() < deadline {
                match tokio::time::timeout_at(deadline, two_loop.poll()).await {
                    Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => connects += 1,
                    Ok(Ok(Event::Incoming(Packet::Publish(_)))) => acks += 1,
                    Ok(Err(_)) => connects += 100,
                    _ => {}
                }
            }
            (connects, acks)
        });
        // Central is listening once it has hall-2's retained status (it subscribes to
        // events and status together).
        let mut hello = Status::will(hall("hall-2"), 1, "2026-12-05T00:00:00Z".into());
        hello.online = true;
        two.publish(
            Topic::Status.of(&hall("hall-2")),
            QoS::AtLeastOnce,
            true,
            hello.to_bytes(),
        )
        .await
        .expect("publish");
        let db = central.db.clone();
        let listening = tokio::task::spawn_blocking(move || {
            wait_until(Duration::from_secs(10), || {
                Sqlite::open(&db)
                    .and_then(|mut s| s.boxes())
                    .is_ok_and(|b| b.iter().any(|b| b.box_id == "hall-2"))
            })
        });
        assert!(
            listening.await.unwrap_or(false),
            "central never heard hall-2"
        );
        let (forger, mut forger_loop) = connect("hall-1", "hall-2");
        let forger_events = tokio::spawn(async move {
            let mut heard = 0;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
            while let Ok(Ok(event)) = tokio::time::timeout_at(deadline, forger_loop.poll()).await {
                if matches!(event, Event::Incoming(Packet::Publish(_))) {
                    heard += 1;
                }
            }
            heard
        });
        forger
            .subscribe(Topic::Ack.of(&hall("hall-2")), QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        // As hall-2, on hall-2's topic: the ACL stops it at the broker.
        forger
            .publish(
                Topic::Events.of(&hall("hall-2")),
                QoS::AtLeastOnce,
                false,
                batch("hall-2", "forged"),
            )
            .await
            .expect("publish");
        // On its own topic, naming hall-2: central refuses the envelope.
        forger
            .publish(
                Topic::Events.of(&hall("hall-1")),
                QoS::AtLeastOnce,
                false,
                batch("hall-2", "forged"),
            )
            .await
            .expect("publish");
        // Then a status of its own, which central stores: everything before it was seen.
        let mut marker = Status::will(hall("hall-1"), 777, "2026-12-05T00:00:00Z".into());
        marker.online = true;
        forger
            .publish(
                Topic::Status.of(&hall("hall-1")),
                QoS::AtLeastOnce,
                true,
                marker.to_bytes(),
            )
            .await
            .expect("publish");
        // The real hall-2 sends an event of its own: central acks it, to hall-2 only.
        two.subscribe(Topic::Ack.of(&hall("hall-2")), QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        two.publish(
            Topic::Events.of(&hall("hall-2")),
            QoS::AtLeastOnce,
            false,
            batch("hall-2", "real"),
        )
        .await
        .expect("publish");
        let hall_2 = two_events.await.unwrap_or((0, 0));
        (hall_2, forger_events.await.unwrap_or(99))
    });
    assert_eq!(
        hall_2,
        (1, 1),
        "hall-2 connected once, was never pushed off by hall-1's certificate, and got its ack"
    );
    assert_eq!(forger_heard, 0, "hall-1 may not read hall-2's acks");
    assert!(
        wait_until(Duration::from_secs(10), || central
            .storage()
            .boxes()
            .is_ok_and(|b| b
                .iter()
                .any(|b| b.box_id == "hall-1" && b.session == Some(777)))),
        "hall-1's own status arrived"
    );
    let everything = central
        .storage()
        .events(&EventFilter {
            limit: 100,
            ..EventFilter::default()
        })
        .expect("events");
    let ids: Vec<(&str, &str)> = everything
        .iter()
        .map(|e| (e.box_id.as_str(), e.event_id.as_str()))
        .collect();
    assert_eq!(
        ids,
        [("hall-2", "real")],
        "only hall-2's own event is stored"
    );

    // The real box, with its own certificate, is heard.
    let daemon = Daemon::start(&format!(
        "{}ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        fleet_config(&url),
        certs.path().join("ca.pem").display(),
        certs.path().join("hall-1.pem").display(),
        certs.path().join("hall-1.key").display(),
    ));
    let fan = venue(&daemon, 100 * 20);
    for n in 0..20 {
        donate(&daemon, &fan, n);
    }
    assert!(
        wait_until(Duration::from_secs(30), || outbox_depth(&daemon) == 0),
        "hall-1's events are acknowledged over TLS"
    );
    assert_eq!(central.events().len(), 20 + SETUP_EVENTS);
}

/// Runs the card image's `fleet-intake` on `bundle` (the folder on the boot partition) into
/// `etc` (standing in for /etc/commeowd), with the commeowd under test.
fn fleet_intake(bundle: &Path, etc: &Path) -> std::process::Output {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../image/rootfs/usr/lib/commeowd/fleet-intake"
    );
    Command::new(script)
        .arg(bundle)
        .env("COMMEOW_ETC", etc)
        .env("COMMEOWD", env!("CARGO_BIN_EXE_commeowd"))
        .output()
        .expect("run fleet-intake")
}

/// How a box joins the fleet without a shell: the fleet admin makes the box's folder with
/// `fleet-certs … box`, copies it to the card's boot partition, and at boot the card's
/// intake checks it, installs it and deletes the key from the partition; commeowd then
/// finds the files as systemd hands them over (credentials) and central hears the box.
/// A folder that names the wrong box, or carries another box's key, changes nothing.
#[test]
fn a_card_joins_the_fleet_with_the_folder_fleet_certs_made() {
    let certs = fleet_certs(&["central", "hall-2"]);
    let broker = Mosquitto::start_tls(certs.path());
    let url = format!("mqtts://127.0.0.1:{}", broker.port);
    let made = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/central/fleet-certs"))
        .arg(certs.path())
        .args(["box", "hall-1", &url])
        .output()
        .expect("fleet-certs box");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let folder = PathBuf::from(String::from_utf8_lossy(&made.stdout).trim());

    // The card: its boot partition, and /etc/commeowd with the operator's own settings
    // (and an old [fleet] section) that must survive.
    let card = tempfile::tempdir().expect("tempdir");
    let (boot, etc) = (card.path().join("boot"), card.path().join("etc"));
    std::fs::create_dir_all(&etc).expect("etc");
    let operator = "[hls]\nwindow_segments = 6\n\n[fleet]\nenabled = false\nbroker = \"mqtt://old:1\"\n\n[chat]\nhistory = 80\n";
    std::fs::write(etc.join("commeowd.toml"), operator).expect("config");
    let bundle = boot.join("commeow-fleet");
    let copy_folder = |edit: &dyn Fn(&Path)| {
        let _ = std::fs::remove_dir_all(&bundle);
        std::fs::create_dir_all(&bundle).expect("bundle");
        for file in ["ca.pem", "box.pem", "box.key", "fleet.toml"] {
            std::fs::copy(folder.join(file), bundle.join(file)).expect("copy");
        }
        edit(&bundle);
    };

    // Refused, and nothing changed: another box's key; a folder naming another box than its
    // certificate; a certificate that is not one.
    type Edit<'a> = &'a dyn Fn(&Path);
    let refusals: [(Edit, &str); 3] = [
        (
            &|b| {
                std::fs::copy(certs.path().join("hall-2.key"), b.join("box.key")).expect("key");
            },
            "box.key is not box.pem's key",
        ),
        (
            &|b| {
                let toml = std::fs::read_to_string(b.join("fleet.toml")).expect("toml");
                std::fs::write(b.join("fleet.toml"), toml.replace("hall-1", "hall-2"))
                    .expect("toml");
            },
            "box 'hall-1''s certificate, and fleet.toml says 'hall-2'",
        ),
        (
            &|b| std::fs::write(b.join("box.pem"), "garbage").expect("pem"),
            "box.pem is not a certificate",
        ),
    ];
    for (edit, reason) in refusals {
        copy_folder(edit);
        let out = fleet_intake(&bundle, &etc);
        assert!(
            out.status.success(),
            "a refused folder must not fail the boot"
        );
        let note = std::fs::read_to_string(boot.join("commeow-fleet-error.txt")).expect("note");
        assert!(note.contains(reason), "{reason}: {note}");
        assert!(note.ends_with("\r\n"), "CRLF for Notepad");
        assert_eq!(
            std::fs::read_to_string(etc.join("commeowd.toml")).expect("config"),
            operator
        );
        assert!(
            !etc.join("fleet").exists(),
            "nothing installed for: {reason}"
        );
        assert!(
            bundle.join("box.key").exists(),
            "the folder stays for the admin to fix"
        );
    }

    copy_folder(&|_| {});
    let out = fleet_intake(&bundle, &etc);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!bundle.exists(), "the key is gone from the boot partition");
    assert!(!boot.join("commeow-fleet-error.txt").exists());
    let receipt = std::fs::read_to_string(boot.join("commeow-fleet.txt")).expect("receipt");
    assert!(receipt.contains("'hall-1'"), "{receipt}");
    let config = std::fs::read_to_string(etc.join("commeowd.toml")).expect("config");
    assert!(config.contains("window_segments = 6") && config.contains("history = 80"));
    assert!(
        !config.contains("mqtt://old:1") && config.contains(&url),
        "{config}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&etc.join("fleet")), 0o700);
    assert_eq!(mode(&etc.join("fleet/box.key")), 0o600);

    // Under systemd, LoadCredential=fleet:/etc/commeowd/fleet hands each file over as
    // fleet_<name>; the config names no files.
    let credentials = tempfile::tempdir().expect("tempdir");
    for file in ["ca.pem", "box.pem", "box.key"] {
        std::fs::copy(
            etc.join("fleet").join(file),
            credentials.path().join(format!("fleet_{file}")),
        )
        .expect("credential");
    }
    let central = Central::connect(
        tls_broker(&url, certs.path(), "central"),
        card.path().join("central.db"),
        "central",
    );
    let daemon = Daemon::start_with(
        &config,
        common::Launch {
            env: vec![(
                "CREDENTIALS_DIRECTORY".into(),
                credentials.path().display().to_string(),
            )],
            ..common::Launch::default()
        },
    );
    daemon.add_streamer_channel("djay", "stage");
    let heard = wait_until(Duration::from_secs(20), || {
        central.storage().boxes().is_ok_and(|boxes| {
            boxes
                .iter()
                .any(|b| b.box_id == "hall-1" && b.online == Some(true))
        }) && central.events().iter().any(|e| e.kind == "channel_created")
    });
    assert!(
        heard,
        "central did not hear the box online with its channel"
    );
}

/// Debian's libfaketime (package `faketime`), under /usr/lib/<multiarch>/faketime/.
fn libfaketime() -> String {
    std::fs::read_dir("/usr/lib")
        .expect("/usr/lib")
        .filter_map(Result::ok)
        .map(|arch| arch.path().join("faketime/libfaketime.so.1"))
        .find(|lib| lib.exists())
        .expect("libfaketime (apt-get install faketime)")
        .display()
        .to_string()
}

/// A box with no real-time clock, two years behind: central takes its events in sequence
/// order all the same and flags the skew; the box learns central's time from the acks.
#[test]
fn a_box_two_years_behind_is_heard_in_order_and_flagged() {
    let broker = Mosquitto::start();
    let central = Central::start(&broker.url());
    let daemon = Daemon::start_with(
        &fleet_config(&broker.url()),
        common::Launch {
            // libfaketime preloaded directly, not through the `faketime` program: that one
            // forks and waits, so killing it at the test's end would leave the daemon running.
            wrapper: Vec::new(),
            env: vec![
                ("LD_PRELOAD".into(), libfaketime()),
                ("FAKETIME".into(), "-730d".into()),
                // Timers and timeouts run on the real monotonic clock; only the date is wrong.
                ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
            ],
        },
    );
    let fan = venue(&daemon, 100 * 50);
    for n in 0..50 {
        donate(&daemon, &fan, n);
    }
    assert!(
        wait_until(Duration::from_secs(30), || outbox_depth(&daemon) == 0),
        "the outbox drains"
    );
    let events = central.events();
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=50 + SETUP_EVENTS as i64).collect::<Vec<i64>>(),
        "in sequence order"
    );
    // The first donation, made by the daemon (the grant before it came from the CLI, in
    // a process of its own on the real clock).
    let donation = &events[SETUP_EVENTS];
    assert_eq!(donation.kind, "donation");
    assert!(
        donation.at.starts_with("2024-"),
        "the event keeps the box's own time: {}",
        donation.at
    );
    let skew = central.storage().boxes().expect("boxes")[0].clock_skew_seconds;
    assert!(
        skew.is_some_and(|s| s < -700.0 * 86_400.0),
        "the skew is flagged: {skew:?}"
    );
    let offset = daemon.get("/healthz").json()["fleet"]["clock_offset_seconds"].as_f64();
    assert!(
        offset.is_some_and(|o| o > 700.0 * 86_400.0),
        "the box knows central's time: {offset:?}"
    );
    // Expiry is judged by central's clock: by its own, the box would run anything dated
    // within two years.
    let plain = broker.plain();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let ping = |id: &str, ttl_seconds: i64| {
        command(
            &runtime,
            &plain,
            id,
            "ping",
            serde_json::json!({}),
            ttl_seconds,
        )
        .status
    };
    assert_eq!(ping("p-1", 60), "done", "60 s to live still runs");
    assert_eq!(ping("p-2", -5), "expired");
}

/// Provisioning: versions 1 then 2 while the box is offline; on return only v2 applies, a
/// late v1 is ignored, a channel with donations is not removed, and the box reports what
/// it has (channels made on it included).
#[test]
fn desired_channels_apply_newest_first_and_only_once() {
    use fleet_proto::{BoxId, Desired, DesiredChannel};
    let broker = Mosquitto::start();
    let central = Central::start(&broker.url());
    let mut daemon = Daemon::start(&fleet_config(&broker.url()));
    let fan = venue(&daemon, 100 * 5);
    donate(&daemon, &fan, 0);
    let hall = BoxId::new("hall-1").expect("box id");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let plain = broker.plain();
    let publish = |desired: &Desired| {
        runtime
            .block_on(commeow_central::service::publish_desired(
                &plain, "admin", desired,
            ))
            .expect("publish desired");
    };
    let channel = |slug: &str, title: &str, owner: Option<&str>, absent: bool| DesiredChannel {
        slug: slug.into(),
        title: title.into(),
        owner: owner.map(Into::into),
        absent,
    };
    let desired = |version, channels| Desired {
        box_id: hall.clone(),
        version,
        channels,
    };
    let reported = |version: u64| {
        let mut last = None;
        let found = wait_until(Duration::from_secs(20), || {
            last = central.storage().reported(&hall).ok().flatten();
            last.as_ref().is_some_and(|r| r.applied_version == version)
        });
        assert!(found, "no report of version {version}: {last:?}");
        last.expect("reported")
    };

    // The box is offline while v1 and then v2 are published (retained: the broker keeps
    // the newest).
    daemon.kill();
    let v1 = desired(1, vec![channel("hall", "Hall v1", None, false)]);
    publish(&v1);
    publish(&desired(
        2,
        vec![
            channel("hall", "Main hall", Some("djay"), false),
            channel("second", "Second stage", None, false),
        ],
    ));
    daemon.crash_and_restart();
    let applied = reported(2);
    let titles: Vec<(&str, &str, Option<&str>)> = applied
        .channels
        .iter()
        .map(|c| (c.slug.as_str(), c.title.as_str(), c.owner.as_deref()))
        .collect();
    assert_eq!(
        titles,
        [
            ("hall", "Main hall", Some("djay")),
            ("second", "Second stage", None),
            ("stage", "Title of stage", Some("djay")),
        ],
        "v2 applied, and the channel made on the box is reported too"
    );

    // A late v1 changes nothing; v3 (after it on the same topic) shows it was seen.
    publish(&v1);
    publish(&desired(
        3,
        vec![
            channel("second", "", None, true),
            channel("stage", "", None, true),
        ],
    ));
    let after = reported(3);
    let slugs: Vec<(&str, &str)> = after
        .channels
        .iter()
        .map(|c| (c.slug.as_str(), c.title.as_str()))
        .collect();
    assert_eq!(
        slugs,
        [("hall", "Main hall"), ("stage", "Title of stage")],
        "v1 ignored; `second` removed; `stage` kept"
    );
    assert_eq!(after.refused.len(), 1, "{:?}", after.refused);
    assert_eq!(after.refused[0].slug, "stage");
    assert!(
        after.refused[0].reason.contains("donations"),
        "{:?}",
        after.refused
    );
    // v1 never applied: `hall` was made once, with v2's title, and never retitled.
    assert!(wait_until(Duration::from_secs(20), || outbox_depth(
        &daemon
    ) == 0));
    let events = central.events();
    let hall_events: Vec<(&str, &serde_json::Value)> = events
        .iter()
        .filter(|e| e.payload["channel"] == "hall")
        .map(|e| (e.kind.as_str(), &e.payload["title"]))
        .collect();
    assert_eq!(
        hall_events,
        [("channel_created", &serde_json::json!("Main hall"))],
        "{hall_events:?}"
    );
    assert!(events
        .iter()
        .any(|e| e.kind == "channel_removed" && e.payload["channel"] == "second"));
    // The channel list the viewers see agrees.
    let listed = daemon.get("/api/channels").json();
    let listed: Vec<&str> = listed
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|c| c["slug"].as_str())
        .collect();
    assert!(
        listed.contains(&"hall") && !listed.contains(&"second"),
        "{listed:?}"
    );
}

/// Commands: the same `grant` id sent three times credits once (the box answers the
/// repeats from its record); an expired one is answered `expired` and does nothing.
#[test]
fn a_command_runs_once_however_often_it_is_sent_and_not_once_expired() {
    let broker = Mosquitto::start();
    let central = Central::start(&broker.url());
    let daemon = Daemon::start(&fleet_config(&broker.url()));
    let fan = venue(&daemon, 1_000);
    assert!(
        wait_until(Duration::from_secs(20), || central
            .storage()
            .boxes()
            .is_ok_and(|b| b.first().is_some_and(|b| b.online == Some(true)))),
        "the box is connected and listening"
    );
    let plain = broker.plain();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let send = |id: &str, name: &str, args: serde_json::Value, ttl_seconds: i64| {
        command(&runtime, &plain, id, name, args, ttl_seconds)
    };
    let balance = || {
        common::send_json("GET", &daemon.url("/api/wallet"), None, Some(&fan)).json()["balance"]
            .as_i64()
            .expect("balance")
    };
    assert_eq!(balance(), 1_000);
    let grant = serde_json::json!({"user": "fan", "points": 500, "reason": "promo"});
    let answers: Vec<_> = (0..3)
        .map(|_| send("grant-1", "grant", grant.clone(), 60))
        .collect();
    assert_eq!(answers[0].status, "done");
    assert!(!answers[0].replayed);
    for repeat in &answers[1..] {
        assert!(repeat.replayed, "{repeat:?}");
        assert_eq!(
            (&repeat.status, &repeat.result),
            (&answers[0].status, &answers[0].result)
        );
    }
    assert_eq!(balance(), 1_500, "credited once");

    let late = send("grant-2", "grant", grant, -5);
    assert_eq!(late.status, "expired");
    assert_eq!(balance(), 1_500, "an expired command does nothing");

    assert_eq!(
        send("x-1", "reboot", serde_json::json!({}), 60).status,
        "unknown"
    );
    let refused = send(
        "g-3",
        "grant",
        serde_json::json!({"user": "nobody", "points": 1, "reason": "r"}),
        60,
    );
    assert_eq!(refused.status, "refused", "{refused:?}");
    let summary = send("s-1", "ledger_summary", serde_json::json!({}), 60);
    assert_eq!(summary.status, "done");
    assert_eq!(
        summary.result["problems"],
        serde_json::json!([]),
        "{summary:?}"
    );

    // Reconcile: the balances central's events add up to are the box's own.
    assert!(wait_until(Duration::from_secs(20), || outbox_depth(
        &daemon
    ) == 0));
    let summary = send("s-2", "ledger_summary", serde_json::json!({}), 60);
    let mut storage = central.storage();
    let checked = commeow_central::reconcile::reconcile(&mut storage, "hall-1", &summary.result)
        .expect("reconcile");
    assert!(checked.reconciled, "{checked:?}");
    assert_eq!(checked.expected.wallet, 1_500);
    assert_eq!(checked.expected.promotions, -1_500);
    // An event central lost (here: deleted) shows as a mismatch.
    rusqlite::Connection::open(&central.db)
        .expect("central db")
        .execute(
            "DELETE FROM events WHERE type = 'grant' AND payload LIKE '%promo%'",
            [],
        )
        .expect("delete");
    let checked = commeow_central::reconcile::reconcile(&mut storage, "hall-1", &summary.result)
        .expect("reconcile");
    assert!(!checked.reconciled, "{checked:?}");
    assert_eq!(checked.expected.wallet, 1_000);
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()))
}

/// The central service as a process (built with the workspace: its own tests need it).
struct CentralProcess {
    child: Child,
    db: PathBuf,
    broker: String,
}

impl CentralProcess {
    fn start(broker: &str, db: &Path) -> CentralProcess {
        let binary = Path::new(env!("CARGO_BIN_EXE_commeowd")).with_file_name("commeow-central");
        assert!(
            binary.exists(),
            "{} is missing: run the workspace's tests (cargo nextest run --workspace)",
            binary.display()
        );
        let child = Command::new(&binary)
            .arg("--db")
            .arg(db)
            .args([
                "serve",
                "--broker",
                broker,
                "--client-id",
                "central-process",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start commeow-central");
        CentralProcess {
            child,
            db: db.to_path_buf(),
            broker: broker.to_string(),
        }
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).expect("signal");
    }

    /// SIGKILL, then a new process on the same database.
    fn crash_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        *self = CentralProcess::start(&self.broker.clone(), &self.db.clone());
    }

    fn events(&self) -> usize {
        Sqlite::open(&self.db)
            .and_then(|mut s| {
                s.events(&EventFilter {
                    limit: 1_000_000,
                    ..EventFilter::default()
                })
            })
            .map_or(0, |e| e.len())
    }
}

impl Drop for CentralProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Central frozen (SIGSTOP) in the middle of 2,000 donations, then killed, commeowd
/// killed -9, both started again: every event arrives, exactly once (what central had
/// stored but not yet acknowledged comes again and is acknowledged again).
#[test]
fn a_frozen_central_and_a_killed_box_lose_nothing_and_store_nothing_twice() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut central = CentralProcess::start(&broker.url(), &dir.path().join("central.db"));
    let mut daemon = Daemon::start(&fleet_config(&broker.url()));
    let fan = venue(&daemon, 100 * 2_000);
    assert!(
        wait_until(Duration::from_secs(20), || central.events() == SETUP_EVENTS),
        "central is running"
    );
    // Frozen in the middle of the stream: likely between storing a batch and acking it.
    donate_range(&daemon, &fan, 0, 1_000);
    central.signal(nix::sys::signal::Signal::SIGSTOP);
    donate_range(&daemon, &fan, 1_000, 2_000);
    daemon.kill();
    central.crash_and_restart();
    daemon.crash_and_restart();
    assert!(
        wait_until(Duration::from_secs(90), || outbox_depth(&daemon) == 0),
        "the outbox drains ({} left)",
        outbox_depth(&daemon)
    );
    let events = Sqlite::open(&central.db)
        .expect("central db")
        .events(&EventFilter {
            limit: 1_000_000,
            ..EventFilter::default()
        })
        .expect("events");
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=2_000 + SETUP_EVENTS as i64).collect::<Vec<i64>>(),
        "each event once, in order"
    );
    let ids: std::collections::HashSet<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids.len(), 2_000 + SETUP_EVENTS);
}

/// The venue's console enrolls the box with no file copied by hand: the box makes its key
/// and a request, the fleet admin signs it (`fleet-certs sign`), the operator pastes the
/// certificate and CA; after a restart the box speaks to central over TLS as itself, and
/// central hears of the enrollment in the audit events. A certificate that is not for this
/// box's key or id, or not from this CA, is refused and changes nothing. A bundle pasted
/// whole (`fleet-certs bundle`) works as well.
#[test]
fn a_box_enrolled_from_the_console_joins_with_the_key_it_made() {
    let certs = fleet_certs(&["central", "hall-2"]);
    let broker = Mosquitto::start_tls(certs.path());
    let url = format!("mqtts://127.0.0.1:{}", broker.port);
    let dir = tempfile::tempdir().expect("tempdir");
    let central = Central::connect(
        tls_broker(&url, certs.path(), "central"),
        dir.path().join("central.db"),
        "central",
    );
    let mut daemon = Daemon::start("");
    let admin = daemon.add_user_token("boss", "admin");
    let call = |daemon: &Daemon, method: &str, path: &str, body: serde_json::Value, token: &str| {
        common::send_json(method, &daemon.url(path), Some(&body), Some(token))
    };
    let csr = call(
        &daemon,
        "POST",
        "/api/admin/fleet/csr",
        serde_json::json!({"box_id": "hall-1"}),
        &admin,
    );
    assert_eq!(csr.status, 200, "{csr:?}");
    let csr = csr.json()["csr"].as_str().expect("csr").to_string();
    assert!(
        csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"),
        "{csr}"
    );
    let key_file = daemon.data_dir().join("fleet/box.key");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key_file).expect("key").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the key stays the box's alone");

    // The fleet admin signs the request with the fleet's CA.
    let request = certs.path().join("hall-1.csr");
    std::fs::write(&request, &csr).expect("csr");
    let signed = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/central/fleet-certs"))
        .arg(certs.path())
        .args(["sign", "hall-1"])
        .arg(&request)
        .output()
        .expect("fleet-certs sign");
    assert!(
        signed.status.success(),
        "{}",
        String::from_utf8_lossy(&signed.stderr)
    );
    let cert = std::fs::read_to_string(certs.path().join("hall-1.pem")).expect("cert");
    let ca = std::fs::read_to_string(certs.path().join("ca.pem")).expect("ca");

    // What is not this box's is refused, and nothing is written.
    let enroll = |box_id: &str, cert: &str, ca: &str| {
        call(
            &daemon,
            "PUT",
            "/api/admin/fleet",
            serde_json::json!({"broker": url, "box_id": box_id, "ca_pem": ca, "cert_pem": cert}),
            &admin,
        )
    };
    let other = std::fs::read_to_string(certs.path().join("hall-2.pem")).expect("hall-2");
    let refusals = [
        (
            enroll("hall-2", &other, &ca),
            "does not hold this box's key",
        ),
        (enroll("hall-7", &cert, &ca), "not this box's id"),
        (enroll("hall-1", &cert, &cert), "not signed by this CA"),
    ];
    for (answer, words) in refusals {
        assert_eq!(answer.error_code(), "invalid_setting", "{answer:?}");
        assert!(answer.text().contains(words), "{answer:?}");
    }
    assert!(!daemon.data_dir().join("console.toml").exists());

    let enrolled = enroll("hall-1", &cert, &ca);
    assert_eq!(enrolled.status, 200, "{enrolled:?}");
    assert_eq!(enrolled.json()["restart_needed"], true);
    daemon.crash_and_restart();
    assert!(
        wait_until(Duration::from_secs(30), || daemon.get("/healthz").json()
            ["fleet"]["connected"]
            == true),
        "the enrolled box connects over TLS: {:?}",
        daemon.get("/healthz")
    );
    assert!(
        wait_until(Duration::from_secs(30), || central.events().iter().any(
            |e| e.kind == "admin_action" && e.payload["action"] == "fleet_enroll"
        )),
        "central hears of the enrollment as hall-1"
    );
    let admin = daemon.login("boss");
    let health =
        common::send_json("GET", &daemon.url("/api/admin/health"), None, Some(&admin)).json();
    assert_eq!(health["fleet"]["box_id"], "hall-1");
    assert_eq!(health["fleet"]["relay"]["connected"], true);
    let check = daemon.cli(&["check-config"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    // A bundle, pasted whole, on another box.
    let bundle = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/central/fleet-certs"))
        .arg(certs.path())
        .args(["bundle", "hall-3", &url])
        .output()
        .expect("fleet-certs bundle");
    assert!(bundle.status.success());
    let mut other_box = Daemon::start("");
    let admin = other_box.add_user_token("boss", "admin");
    let pasted = call(
        &other_box,
        "PUT",
        "/api/admin/fleet",
        serde_json::json!({"bundle": String::from_utf8_lossy(&bundle.stdout)}),
        &admin,
    );
    assert_eq!(pasted.status, 200, "{pasted:?}");
    other_box.crash_and_restart();
    assert!(
        wait_until(Duration::from_secs(30), || other_box.get("/healthz").json()
            ["fleet"]["connected"]
            == true),
        "the bundle's box connects: {:?}",
        other_box.get("/healthz")
    );
}
