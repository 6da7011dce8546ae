//! A disk that fills, and a database that is damaged. The data directory is a small tmpfs
//! that a filler file takes almost all of; a donation storm then meets the full disk:
//! donations get `503 storage_full` and never a 201 that was not stored, streaming and
//! chat go on, and once space is freed donations work again, the ledger checks clean and
//! every acknowledged donation is there. At startup a truncated or overwritten database
//! is refused with its path and what to do, and never replaced.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

mod common;

use common::{poll_until, send_json_with, Daemon, Launch, Push};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A tmpfs of `size` mounted on a directory until dropped.
struct Mounted(PathBuf);

impl Mounted {
    fn tmpfs(at: &Path, size: &str) -> Mounted {
        let mounted = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(
            mounted.success(),
            "cannot mount a tmpfs on {} (the test runs as root, as CI does)",
            at.display()
        );
        Mounted(at.to_path_buf())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn donate(daemon: &Daemon, token: &str, n: usize) -> common::Response {
    send_json_with(
        "POST",
        &daemon.url("/api/channels/stage/donations"),
        Some(&json!({"amount": 100, "message": format!("donation {n}")})),
        Some(token),
        &[("idempotency-key", &format!("fill-{n:06}"))],
    )
}

fn donations_stored(daemon: &Daemon) -> i64 {
    let db = rusqlite::Connection::open_with_flags(
        daemon.data_dir().join("commeow.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("db");
    db.query_row("SELECT COUNT(*) FROM donations", [], |r| r.get(0))
        .expect("count")
}

#[test]
fn a_full_disk_refuses_donations_clearly_keeps_the_stream_and_loses_nothing_acknowledged() {
    let mut mount = None;
    let mut daemon = Daemon::start_on(
        "[hls]\ntarget_duration = 1.0\n",
        Launch::default(),
        |data| {
            mount = Some(Mounted::tmpfs(data, "24m"));
        },
    );
    let streamer = daemon.add_streamer_channel("djay", "stage");
    let key = daemon
        .post(
            "/api/channels/stage/stream-key/rotate",
            json!({}),
            Some(&streamer),
        )
        .json()["stream_key"]
        .as_str()
        .expect("key")
        .to_string();
    let _push = Push::start(&daemon.rtmp_url(&key), 120, "320x240");
    let fan = daemon.add_user_token("fan", "viewer");
    let granted = daemon.cli(&["wallet", "grant", "fan", "10000000", "--reason", "storm"]);
    assert!(
        granted.status.success(),
        "{}",
        String::from_utf8_lossy(&granted.stderr)
    );
    poll_until(
        Duration::from_secs(30),
        "the channel is live",
        || Some(daemon.channel_live("stage")),
        |live| *live,
    );
    let mut chat = daemon.chat("stage", Some(&fan)).expect("chat");
    chat.hello();

    // Fill the disk but for a little.
    let filler = daemon.data_dir().join("filler");
    let free = nix::sys::statvfs::statvfs(&daemon.data_dir()).expect("statvfs");
    let left = 256 * 1024;
    let fill = (free.blocks_available() * free.fragment_size()).saturating_sub(left);
    std::fs::write(&filler, vec![0u8; fill as usize]).expect("filler");

    // The storm: 400 donations into a disk with 256 KB left. Each answer is a 201 that was
    // stored or a 503 storage_full that stored nothing (space comes and goes as SQLite
    // checkpoints its WAL, so the two interleave), never anything else.
    let mut stored_answers = 0;
    let mut refused = 0;
    for n in 0..400 {
        let answer = donate(&daemon, &fan, n);
        match (answer.status, answer.error_code().as_str()) {
            (201, _) => stored_answers += 1,
            (503, "storage_full") => {
                assert!(answer.header("retry-after").is_some());
                refused += 1;
            }
            _ => panic!("donation {n}: {answer:?}"),
        }
    }
    eprintln!(
        "a full disk: {stored_answers} donations stored, {refused} refused with storage_full"
    );
    assert!(refused > 0, "the disk filled up");
    assert_eq!(
        donations_stored(&daemon),
        stored_answers,
        "every 201, and nothing else, is stored"
    );

    // Streaming and chat go on: parts keep coming, a message is said and heard.
    let (msn, part) = daemon
        .ll_playlist("stage", "")
        .and_then(|p| p.newest_part())
        .expect("a part");
    poll_until(
        Duration::from_secs(5),
        "new parts while the disk is full",
        || {
            daemon
                .ll_playlist("stage", "")
                .and_then(|p| p.newest_part())
        },
        |newest| *newest > (msn, part + 2),
    );
    chat.send(json!({"type": "chat", "text": "still streaming?"}));
    assert_eq!(
        chat.next_of("chat", Duration::from_secs(5))["text"],
        "still streaming?"
    );

    // Space again: donations work, the ledger is sound, every 201 is there.
    std::fs::remove_file(&filler).expect("free the space");
    let again = poll_until(
        Duration::from_secs(10),
        "donations work once space is freed",
        || Some(donate(&daemon, &fan, 200_000)),
        |a| a.status == 201,
    );
    assert_eq!(again.status, 201);
    daemon.assert_ledger_balances();
    assert_eq!(donations_stored(&daemon), stored_answers + 1);
    // Across a restart too.
    daemon.crash_and_restart();
    daemon.assert_ledger_balances();
    assert_eq!(donations_stored(&daemon), stored_answers + 1);
    daemon.kill();
    drop(mount);
}

#[test]
fn a_damaged_database_is_refused_with_its_path_and_never_replaced() {
    let daemon = Daemon::start("");
    daemon.add_user("fan", "viewer");
    let db = daemon.data_dir().join("commeow.db");
    let run = |data: &Path| {
        common::commeowd()
            .arg("--data-dir")
            .arg(data)
            .args([
                "--http-listen",
                "127.0.0.1:0",
                "--rtmp-listen",
                "127.0.0.1:0",
            ])
            .output()
            .expect("run commeowd")
    };
    let mut stopped = daemon;
    stopped.kill();
    let size = std::fs::metadata(&db).expect("db").len();

    // Truncated to nothing: SQLite alone would take it for a new, empty database.
    let copy = tempfile::tempdir().expect("tempdir");
    let data = copy.path();
    std::fs::copy(&db, data.join("commeow.db")).expect("copy");
    std::fs::write(data.join("commeow.db"), b"").expect("truncate");
    let out = run(data);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains(&data.join("commeow.db").display().to_string()),
        "{said}"
    );
    assert!(
        said.contains("truncated") && said.contains("restore it from a backup"),
        "{said}"
    );
    assert_eq!(
        std::fs::metadata(data.join("commeow.db"))
            .expect("kept")
            .len(),
        0,
        "not recreated"
    );

    // Cut in half, and overwritten in the middle.
    let bytes = std::fs::read(&db).expect("db");
    for (what, damaged) in [
        ("cut in half", bytes[..bytes.len() / 2].to_vec()),
        ("overwritten", {
            let mut b = bytes.clone();
            let at = b.len() / 2;
            b[at..at + 4096].fill(0xAA);
            b
        }),
        (
            "not a database",
            b"this is not a database, it is a text file".repeat(200),
        ),
    ] {
        std::fs::write(data.join("commeow.db"), &damaged).expect("damage");
        let _ = std::fs::remove_file(data.join("commeow.db-wal"));
        let out = run(data);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: started on it");
        assert!(
            said.contains("is damaged") && said.contains("move it aside"),
            "{what}: {said}"
        );
        assert_eq!(
            std::fs::read(data.join("commeow.db")).expect("kept"),
            damaged,
            "{what}: the file is left as it was"
        );
    }
    assert!(size > 0);
}
