//! Central's storage on a real PostgreSQL server (Debian's, started by the test on a
//! loopback port in a temporary directory): the same rules as on SQLite, and two replicas
//! storing the same box's batches at once store each event once.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

use commeow_central::store::{self, EventFilter};
use fleet_proto::{BoxId, EventsBatch, Status, WireEvent};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A PostgreSQL server of its own: `initdb` and `pg_ctl` run as the `postgres` user when
/// the test runs as root (PostgreSQL refuses to run as root).
struct Server {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is installed (.ci/setup-debian installs it)")
            .flatten()
            .map(|version| version.path().join("bin"))
            .find(|bin| bin.join("initdb").exists())
            .expect("initdb");
        let dir = tempfile::tempdir().expect("tempdir");
        let root = nix::unistd::geteuid().is_root();
        if root {
            let postgres = nix::unistd::User::from_name("postgres")
                .expect("users")
                .expect("the postgres user");
            nix::unistd::chown(dir.path(), Some(postgres.uid), Some(postgres.gid)).expect("chown");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let data = dir.path().join("data");
        let server = Server {
            bin,
            data,
            port,
            _dir: dir,
        };
        server.run(
            "initdb",
            &[
                "-D",
                &server.data.display().to_string(),
                "--auth=trust",
                "-U",
                "postgres",
            ],
        );
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=on",
            server.data.parent().expect("dir").display()
        );
        server.run(
            "pg_ctl",
            &[
                "-D",
                &server.data.display().to_string(),
                "-o",
                &options,
                "-w",
                "-l",
                "/dev/null",
                "start",
            ],
        );
        server
    }

    fn run(&self, program: &str, args: &[&str]) {
        let path = self.bin.join(program);
        let mut command = if nix::unistd::geteuid().is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let out = command
            .args(args)
            .current_dir(self.data.parent().unwrap_or(Path::new("/")))
            .output()
            .expect("run a PostgreSQL tool");
        assert!(
            out.status.success(),
            "{program}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let data = self.data.display().to_string();
        self.run("pg_ctl", &["-D", &data, "-m", "immediate", "stop"]);
    }
}

fn batch(box_id: &str, floor: i64, events: &[(i64, &str)]) -> EventsBatch {
    EventsBatch {
        box_id: BoxId::new(box_id).expect("box id"),
        floor,
        sent_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        events: events
            .iter()
            .map(|(seq, id)| WireEvent {
                seq: *seq,
                event_id: (*id).into(),
                kind: "grant".into(),
                v: 1,
                at: "2026-12-05T00:00:00Z".into(),
                payload: serde_json::json!({"type": "grant", "points": seq}),
            })
            .collect(),
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[test]
fn postgres_keeps_every_rule_and_replicas_store_each_event_once() {
    let server = Server::start();
    let mut s = store::open(&server.url()).expect("connect");

    // Once per event, acknowledged every time.
    let first = s
        .store_batch(&batch("hall-1", 1, &[(1, "a"), (2, "b")]), &now())
        .expect("store");
    assert_eq!((first.new, first.duplicates, first.high_water), (2, 0, 2));
    let again = s
        .store_batch(&batch("hall-1", 1, &[(2, "b"), (3, "c")]), &now())
        .expect("store");
    assert_eq!((again.new, again.duplicates, again.high_water), (1, 1, 3));
    assert_eq!(again.acknowledge, vec!["b", "c"]);
    // A sequence with another event id quarantines; a floor past the high water is a gap.
    let reset = s
        .store_batch(&batch("hall-1", 1, &[(1, "z")]), &now())
        .expect("store");
    assert_eq!(reset.conflicts, vec![1]);
    assert!(reset.acknowledge.is_empty());
    let skipped = s
        .store_batch(&batch("hall-1", 6, &[(6, "f")]), &now())
        .expect("store");
    assert_eq!(skipped.gap, Some((4, 5)));
    let boxes = s.boxes().expect("boxes");
    assert!(boxes[0].quarantined.is_some());
    assert_eq!(s.gaps().expect("gaps").len(), 1);
    // A stale last will is ignored.
    let id = BoxId::new("hall-1").expect("box id");
    let mut online = Status::will(id.clone(), 5, now());
    online.online = true;
    assert!(s.note_status(&online, &now()).expect("status"));
    assert!(!s
        .note_status(&Status::will(id, 4, now()), &now())
        .expect("status"));

    // Two replicas, each with its own connection, store the same 50 batches of hall-2 at
    // the same time (a shared subscription that redelivered everything to both).
    let batches: Vec<EventsBatch> = (0..50)
        .map(|n| {
            let ids: Vec<String> = (0..20).map(|k| format!("e-{}", n * 20 + k + 1)).collect();
            let events: Vec<(i64, &str)> = ids
                .iter()
                .enumerate()
                .map(|(k, id)| ((n * 20 + k as i64) + 1, id.as_str()))
                .collect();
            batch("hall-2", n * 20 + 1, &events)
        })
        .collect();
    std::thread::scope(|threads| {
        for _ in 0..2 {
            let (url, batches) = (server.url(), &batches);
            threads.spawn(move || {
                let mut replica = store::open(&url).expect("connect");
                for b in batches {
                    let stored = replica.store_batch(b, &now()).expect("store");
                    assert_eq!(stored.acknowledge.len(), 20, "every event acknowledged");
                }
            });
        }
    });
    let events = s
        .events(&EventFilter {
            box_id: Some("hall-2".into()),
            limit: 10_000,
            ..EventFilter::default()
        })
        .expect("events");
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=1_000).collect::<Vec<i64>>(), "each once");
    let hall_2 = s
        .boxes()
        .expect("boxes")
        .into_iter()
        .find(|b| b.box_id == "hall-2")
        .expect("hall-2");
    assert_eq!(hall_2.high_water, 1_000);
    assert!(hall_2.quarantined.is_none());
}
