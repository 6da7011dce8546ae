//! The fleet admin's commands, run as the admin runs them. (This file also makes cargo
//! build the `commeow-central` binary before the workspace's tests run: commeowd's fleet
//! tests start it as a process, to freeze and kill it.)

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

use std::process::Command;

fn central(db: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_commeow-central"))
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .expect("run commeow-central")
}

#[test]
fn an_empty_fleet_lists_nothing_and_every_command_explains_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("central.db");
    for listing in [
        ["boxes", "--json"],
        ["events", "--json"],
        ["gaps", "--json"],
    ] {
        let out = central(&db, &listing);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(json, serde_json::json!([]), "{listing:?}");
    }
    let help = central(&db, &["--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    for command in [
        "serve",
        "boxes",
        "events",
        "gaps",
        "box",
        "command",
        "provision",
        "reconcile",
    ] {
        assert!(help.contains(command), "{command} missing from:\n{help}");
    }
    let bad = central(
        &db,
        &[
            "provision",
            "channel",
            "Not A Box",
            "stage",
            "--broker",
            "mqtt://127.0.0.1:1",
        ],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("box id"));
}

/// `provision channel` bumps the box's desired version and leaves it retained at the
/// broker; `command send` without `--wait` only sends.
#[test]
fn provisioning_and_commands_reach_the_broker() {
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
    let mut broker = Command::new("mosquitto")
        .arg("-c")
        .arg(&config)
        .spawn()
        .expect("mosquitto (.ci/setup-debian installs it)");
    let url = format!("mqtt://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "mosquitto did not listen"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let db = dir.path().join("central.db");
    for (slug, version) in [("hall", 1), ("stage", 2)] {
        let out = central(
            &db,
            &[
                "provision",
                "channel",
                "hall-1",
                slug,
                "--title",
                "T",
                "--broker",
                &url,
                "--json",
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let desired: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(desired["version"], version);
    }
    let retained = Command::new("mosquitto_sub")
        .args([
            "-p",
            &port.to_string(),
            "-t",
            "commeow/v1/hall-1/desired",
            "-C",
            "1",
            "-W",
            "5",
        ])
        .output()
        .expect("mosquitto_sub");
    let retained: serde_json::Value =
        serde_json::from_slice(&retained.stdout).expect("retained desired");
    assert_eq!(
        retained["version"], 2,
        "the newest desired state is retained"
    );
    assert_eq!(retained["channels"].as_array().map(Vec::len), Some(2));
    let sent = central(
        &db,
        &["command", "send", "hall-1", "ping", "--broker", &url],
    );
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let _ = broker.kill();
    let _ = broker.wait();
}
