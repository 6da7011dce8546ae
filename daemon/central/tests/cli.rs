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
            "Not A Box",
            "stage",
            "--broker",
            "mqtt://127.0.0.1:1",
        ],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("box id"));
}
