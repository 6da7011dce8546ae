//! A fresh box's first visit: the setup code from the card names the venue and makes the
//! admin, once, whoever races for it.
// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

mod common;

use common::{get_with, poll_until, send_json, Daemon};
use serde_json::json;
use std::time::Duration;

const CODE: &str = "KX7QP-M4RZ9";

/// A daemon whose setup code file holds [`CODE`], as the image's first boot writes it.
fn fresh_box() -> (Daemon, tempfile::TempDir) {
    let secrets = tempfile::tempdir().expect("tempdir");
    let path = secrets.path().join("setup-code");
    std::fs::write(&path, format!("{CODE}\n")).expect("write code");
    let config = format!("[onboarding]\nsetup_code_file = \"{}\"\n", path.display());
    (Daemon::start(&config), secrets)
}

fn onboard(daemon: &Daemon, code: &str, venue: &str, username: &str) -> common::Response {
    send_json(
        "POST",
        &daemon.url("/api/onboarding"),
        Some(&json!({
            "setup_code": code,
            "venue_name": venue,
            "username": username,
            "password": "correct horse battery",
        })),
        None,
    )
}

#[test]
fn the_first_visitor_with_the_code_names_the_venue_and_becomes_admin_once() {
    let (daemon, _secrets) = fresh_box();
    let status = daemon.get("/api/onboarding").json();
    assert_eq!(status, json!({"needed": true, "venue": null}));

    // A guess is refused, and the next try from that address waits.
    let wrong = onboard(&daemon, "AAAAA-BBBBB", "Club Neko", "boss");
    assert_eq!(
        (wrong.status, wrong.error_code().as_str()),
        (403, "wrong_setup_code")
    );
    let hurried = onboard(&daemon, CODE, "Club Neko", "boss");
    assert_eq!(hurried.status, 429, "{hurried:?}");
    assert!(hurried.header("retry-after").is_some());

    // Typed the way people type it: lower case, a space for the dash.
    let done = poll_until(
        Duration::from_secs(10),
        "onboarding once the wait is over",
        || Some(onboard(&daemon, "kx7qp m4rz9", "  Club Neko ", "boss")),
        |r| r.status != 429,
    );
    assert_eq!(done.status, 201, "{done:?}");
    let token = done.json()["access_token"]
        .as_str()
        .expect("access token")
        .to_string();
    let me = get_with(
        &daemon.url("/api/me"),
        &[("authorization", &format!("Bearer {token}"))],
    );
    assert_eq!(me.json()["role"], "admin", "{me:?}");
    assert_eq!(me.json()["username"], "boss");
    assert_eq!(
        daemon.get("/api/onboarding").json(),
        json!({"needed": false, "venue": "Club Neko"})
    );
    // The admin logs in like anyone else from now on.
    daemon.login("boss");

    // The code is spent: the same code again is a conflict, not a second admin.
    let again = onboard(&daemon, CODE, "Another venue", "intruder");
    assert_eq!(
        (again.status, again.error_code().as_str()),
        (409, "already_onboarded")
    );
    assert!(!daemon.logged(CODE) && !daemon.logged("KX7QPM4RZ9"));
}

#[test]
fn visitors_racing_to_onboard_make_exactly_one_admin() {
    let (daemon, _secrets) = fresh_box();
    let answers: Vec<u16> = std::thread::scope(|scope| {
        let racers: Vec<_> = (0..8)
            .map(|n| {
                let daemon = &daemon;
                // Each from its own phone: one address has one attempt in flight at a time.
                scope.spawn(move || {
                    let body = json!({
                        "setup_code": CODE,
                        "venue_name": "Club Neko",
                        "username": format!("racer{n}"),
                        "password": "correct horse battery",
                    });
                    common::request_from(
                        std::net::Ipv4Addr::new(127, 0, 3, 1 + n),
                        daemon.http,
                        "POST",
                        "/api/onboarding",
                        body.to_string().as_bytes(),
                    )
                    .expect("an answer")
                    .status
                })
            })
            .collect();
        racers
            .into_iter()
            .map(|r| r.join().expect("racer"))
            .collect()
    });
    assert_eq!(
        answers.iter().filter(|&&s| s == 201).count(),
        1,
        "{answers:?}"
    );
    assert!(answers.iter().all(|&s| s == 201 || s == 409), "{answers:?}");
    // What the store holds, read beside the running daemon (WAL lets a reader in).
    let db = rusqlite::Connection::open_with_flags(
        daemon.data_dir().join("commeow.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open the database");
    let admins: i64 = db
        .query_row("SELECT COUNT(*) FROM users WHERE role = 'admin'", [], |r| {
            r.get(0)
        })
        .expect("count admins");
    assert_eq!(admins, 1);
}

#[test]
fn without_a_setup_code_there_is_no_web_onboarding() {
    let daemon = Daemon::start("");
    assert_eq!(
        daemon.get("/api/onboarding").json(),
        json!({"needed": false, "venue": null})
    );
    let refused = onboard(&daemon, CODE, "Club Neko", "boss");
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (404, "onboarding_off")
    );
}

#[test]
fn a_torn_setup_code_file_turns_onboarding_off_but_the_box_still_serves() {
    // What a power cut right after the first boot can leave: the file, empty.
    let secrets = tempfile::tempdir().expect("tempdir");
    let path = secrets.path().join("setup-code");
    std::fs::write(&path, "").expect("write code");
    let daemon = Daemon::start(&format!(
        "[onboarding]\nsetup_code_file = \"{}\"\n",
        path.display()
    ));
    assert_eq!(daemon.get("/healthz").status, 200);
    assert_eq!(daemon.get("/api/onboarding").json()["needed"], false);
    assert!(daemon.logged("web onboarding is off until it is fixed"));
}
