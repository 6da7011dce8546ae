//! Accounts and tokens over the real HTTP API: identity comes from the token only.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

mod common;

use common::{send_json, wait_until, Daemon, Response};
use serde_json::{json, Value};
use std::io::Write;
use std::time::Duration;

fn me(daemon: &Daemon, token: &str) -> Response {
    send_json("GET", &daemon.url("/api/me"), None, Some(token))
}

fn signup(daemon: &Daemon, username: &str, password: &str) -> Response {
    daemon.post(
        "/api/auth/signup",
        json!({"username": username, "password": password, "nickname": format!("{username}님")}),
        None,
    )
}

fn login(daemon: &Daemon, username: &str, password: &str) -> Value {
    let response = daemon.post(
        "/api/auth/login",
        json!({"username": username, "password": password}),
        None,
    );
    assert_eq!(response.status, 200, "login: {}", response.text());
    response.json()
}

#[test]
fn sign_up_log_in_and_the_token_says_who_you_are() {
    let daemon = Daemon::start("");
    let created = signup(&daemon, "Minji", "correct horse battery");
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.json()["username"], "minji");
    assert_eq!(created.json()["role"], "viewer", "sign-ups are viewers");

    let taken = signup(&daemon, "MINJI", "another password");
    assert_eq!(
        (taken.status, taken.error_code().as_str()),
        (409, "username_taken")
    );
    let short = signup(&daemon, "jisoo", "short");
    assert_eq!(
        (short.status, short.error_code().as_str()),
        (400, "bad_request")
    );
    let garbage = send_json(
        "POST",
        &daemon.url("/api/auth/signup"),
        Some(&json!("not an object")),
        None,
    );
    assert_eq!(
        (garbage.status, garbage.error_code().as_str()),
        (400, "bad_request")
    );

    let tokens = login(&daemon, "minji", "correct horse battery");
    assert_eq!(tokens["token_type"], "Bearer");
    assert!(tokens["expires_in"].as_u64().is_some_and(|s| s > 0));
    let access = tokens["access_token"].as_str().expect("access token");
    assert!(tokens["refresh_token"]
        .as_str()
        .is_some_and(|t| t.len() >= 40));
    let who = me(&daemon, access);
    assert_eq!(who.status, 200);
    assert_eq!(who.json()["username"], "minji");
    assert_eq!(who.json()["nickname"], "Minji님");

    let wrong = daemon.post(
        "/api/auth/login",
        json!({"username": "minji", "password": "wrong password"}),
        None,
    );
    assert_eq!(
        (wrong.status, wrong.error_code().as_str()),
        (401, "invalid_credentials")
    );
    let nobody = daemon.post(
        "/api/auth/login",
        json!({"username": "nobody", "password": "whatever123"}),
        None,
    );
    assert!(
        nobody.status == 401 || nobody.status == 429,
        "{}",
        nobody.text()
    );

    let anonymous = send_json("GET", &daemon.url("/api/me"), None, None);
    assert_eq!(
        (anonymous.status, anonymous.error_code().as_str()),
        (401, "unauthorized")
    );
}

#[test]
fn tampered_foreign_and_expired_tokens_are_refused() {
    let daemon = Daemon::start("[auth]\naccess_token_seconds = 1\n");
    assert_eq!(
        signup(&daemon, "minji", "correct horse battery").status,
        201
    );
    let tokens = login(&daemon, "minji", "correct horse battery");
    let access = tokens["access_token"].as_str().expect("access").to_string();

    // The payload edited to claim another user, signature kept.
    let mut parts: Vec<String> = access.split('.').map(String::from).collect();
    parts[1] = parts[1].chars().rev().collect();
    let tampered = me(&daemon, &parts.join("."));
    assert_eq!(
        (tampered.status, tampered.error_code().as_str()),
        (401, "invalid_token")
    );

    // A token another box signed.
    let other = Daemon::start("");
    assert_eq!(signup(&other, "minji", "correct horse battery").status, 201);
    let foreign = login(&other, "minji", "correct horse battery");
    let refused = me(&daemon, foreign["access_token"].as_str().expect("access"));
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (401, "invalid_token")
    );

    // Expiry, then a refresh brings a working token back.
    assert!(wait_until(Duration::from_secs(5), || me(&daemon, &access)
        .error_code()
        == "token_expired"));
    let renewed = daemon.post(
        "/api/auth/refresh",
        json!({"refresh_token": tokens["refresh_token"]}),
        None,
    );
    assert_eq!(renewed.status, 200, "{}", renewed.text());
    assert_eq!(
        me(
            &daemon,
            renewed.json()["access_token"].as_str().expect("access")
        )
        .status,
        200
    );
}

#[test]
fn refresh_rotates_and_a_reused_refresh_token_revokes_the_family() {
    let daemon = Daemon::start("");
    assert_eq!(
        signup(&daemon, "minji", "correct horse battery").status,
        201
    );
    let first = login(&daemon, "minji", "correct horse battery");
    let refresh =
        |token: &Value| daemon.post("/api/auth/refresh", json!({"refresh_token": token}), None);

    let second = refresh(&first["refresh_token"]);
    assert_eq!(second.status, 200);
    let second = second.json();
    assert_ne!(
        second["refresh_token"], first["refresh_token"],
        "both tokens rotate"
    );
    assert_ne!(second["access_token"], first["access_token"]);
    let third = refresh(&second["refresh_token"]).json();

    // The first refresh token again: someone kept a copy. The whole family ends.
    let reused = refresh(&first["refresh_token"]);
    assert_eq!(
        (reused.status, reused.error_code().as_str()),
        (401, "refresh_token_reused")
    );
    let newest = refresh(&third["refresh_token"]);
    assert_eq!(
        (newest.status, newest.error_code().as_str()),
        (401, "session_revoked")
    );
    let access = me(&daemon, third["access_token"].as_str().expect("access"));
    assert_eq!(
        (access.status, access.error_code().as_str()),
        (401, "session_revoked"),
        "revocation reaches access tokens at once"
    );

    // Another login (another family) is unaffected.
    let other = login(&daemon, "minji", "correct horse battery");
    assert_eq!(
        me(&daemon, other["access_token"].as_str().expect("access")).status,
        200
    );
    let unknown = refresh(&json!("rt_not_a_token"));
    assert_eq!(
        (unknown.status, unknown.error_code().as_str()),
        (401, "invalid_token")
    );
}

#[test]
fn logout_ends_the_session_at_once_and_for_good() {
    let mut daemon = Daemon::start("");
    assert_eq!(
        signup(&daemon, "minji", "correct horse battery").status,
        201
    );
    let tokens = login(&daemon, "minji", "correct horse battery");
    let access = tokens["access_token"].as_str().expect("access");
    assert_eq!(
        daemon
            .post("/api/auth/logout", json!({}), Some(access))
            .status,
        204
    );
    assert_eq!(me(&daemon, access).error_code(), "session_revoked");
    let refreshed = daemon.post(
        "/api/auth/refresh",
        json!({"refresh_token": tokens["refresh_token"]}),
        None,
    );
    assert_eq!(refreshed.error_code(), "session_revoked");
    // The daemon keeps ended sessions in memory; a restart reloads them from the store.
    let other = login(&daemon, "minji", "correct horse battery");
    let other = other["access_token"].as_str().expect("access");
    daemon.crash_and_restart();
    assert_eq!(me(&daemon, access).error_code(), "session_revoked");
    assert_eq!(me(&daemon, other).status, 200, "live sessions stay live");
}

#[test]
fn failed_logins_are_slowed_per_address_and_per_account() {
    let daemon = Daemon::start("");
    assert_eq!(
        signup(&daemon, "minji", "correct horse battery").status,
        201
    );
    let attempt = |user: &str, password: &str| {
        daemon.post(
            "/api/auth/login",
            json!({"username": user, "password": password}),
            None,
        )
    };
    assert_eq!(attempt("minji", "wrong password").status, 401);
    // Right away, even the right password waits: 429 with Retry-After.
    let limited = attempt("minji", "correct horse battery");
    assert_eq!(
        (limited.status, limited.error_code().as_str()),
        (429, "too_many_attempts")
    );
    assert!(limited
        .header("retry-after")
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|s| s >= 1));
    // The address is slowed for other accounts too.
    assert_eq!(attempt("someone", "whatever123").status, 429);
    // After the penalty the right password works, and success clears the record.
    assert!(wait_until(Duration::from_secs(5), || attempt(
        "minji",
        "correct horse battery"
    )
    .status
        == 200));
    assert_eq!(attempt("minji", "correct horse battery").status, 200);
    assert!(daemon.logged("login refused: wrong username or password"));
    assert!(
        !daemon.logged("wrong password"),
        "passwords never reach the log"
    );
}

#[test]
fn the_operator_creates_accounts_and_sets_roles_from_the_cli() {
    let daemon = Daemon::start("");
    let mut add = common::commeowd()
        .arg("--data-dir")
        .arg(daemon.data_dir())
        .args([
            "user",
            "add",
            "venue-admin",
            "--role",
            "admin",
            "--password-stdin",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run cli");
    add.stdin
        .take()
        .expect("stdin")
        .write_all(b"correct horse battery\n")
        .expect("password");
    assert!(add.wait().expect("wait").success());

    let tokens = login(&daemon, "venue-admin", "correct horse battery");
    let access = tokens["access_token"].as_str().expect("access");
    assert_eq!(me(&daemon, access).json()["role"], "admin");

    // The venue keeps an admin: the only one cannot be demoted.
    let last = daemon.cli(&["user", "set-role", "venue-admin", "streamer"]);
    assert!(!last.status.success());
    assert!(String::from_utf8_lossy(&last.stderr).contains("last admin"));
    daemon.add_user("deputy", "admin");
    let set = daemon.cli(&["user", "set-role", "venue-admin", "streamer"]);
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    // The running daemon learns of the CLI's change within seconds: the open session's
    // token is refused as stale, and a refresh or a new login carries the new role.
    common::poll_until(
        std::time::Duration::from_secs(5),
        "the CLI's role change reaches the open session",
        || Some(me(&daemon, access).json()["error"]["code"].clone()),
        |code| code == "token_stale",
    );
    let again = login(&daemon, "venue-admin", "correct horse battery");
    let access = again["access_token"].as_str().expect("access");
    assert_eq!(me(&daemon, access).json()["role"], "streamer");

    let missing = daemon.cli(&["user", "set-role", "ghost", "admin"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no user `ghost`"));
    let no_stdin_flag = daemon.cli(&["user", "add", "someone"]);
    assert!(
        !no_stdin_flag.status.success(),
        "a password must come from stdin"
    );
}

/// Finding 8 of the security review, server side: a page's parallel calls (or two tabs)
/// refreshing with the same token moments apart are one client racing itself, not a
/// thief: every one of them gets tokens and the session lives on. A copy presented after
/// the session has moved on still ends it.
#[test]
fn a_client_racing_itself_with_one_refresh_token_stays_logged_in() {
    let daemon = Daemon::start("");
    daemon.add_user("minji", "viewer");
    let first = login(&daemon, "minji", "correct horse battery");
    let token = first["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_string();
    let url = daemon.url("/api/auth/refresh");
    let answers = common::all_at_once(6, move |_| {
        send_json("POST", &url, Some(&json!({"refresh_token": token})), None)
    });
    for answer in &answers {
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    for answer in &answers {
        let access = answer.json()["access_token"]
            .as_str()
            .expect("access")
            .to_string();
        assert_eq!(me(&daemon, &access).status, 200);
    }
    // One of the new tokens is used: the session has moved on, and the first token
    // presented now is a stolen copy.
    let next = answers[0].json()["refresh_token"].clone();
    let moved_on = daemon.post("/api/auth/refresh", json!({"refresh_token": next}), None);
    assert_eq!(moved_on.status, 200);
    let stolen = daemon.post(
        "/api/auth/refresh",
        json!({"refresh_token": first["refresh_token"]}),
        None,
    );
    assert_eq!(
        (stolen.status, stolen.error_code().as_str()),
        (401, "refresh_token_reused")
    );
}

/// Finding 9: one user made 3,000 refresh-token rows in 5 s. A session keeps its newest
/// spent tokens only, and an account its newest sessions only.
#[test]
fn refresh_tokens_and_sessions_are_bounded() {
    let daemon = Daemon::start("[auth]\nsessions_per_user = 3\n");
    daemon.add_user("minji", "viewer");
    let mut pair = login(&daemon, "minji", "correct horse battery");
    for _ in 0..300 {
        let next = daemon.post(
            "/api/auth/refresh",
            json!({"refresh_token": pair["refresh_token"]}),
            None,
        );
        assert_eq!(next.status, 200);
        pair = next.json();
    }
    let rows = || -> i64 {
        let db = rusqlite::Connection::open_with_flags(
            daemon.data_dir().join("commeow.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("open the database");
        db.query_row("SELECT COUNT(*) FROM refresh_tokens", [], |r| r.get(0))
            .expect("count")
    };
    let after_refreshes = rows();
    // The session's 64 newest spent tokens and its live one, and add_user's session.
    assert!(
        after_refreshes <= 66,
        "{after_refreshes} rows after 300 refreshes"
    );
    // Three more logins: the account keeps three sessions, and the oldest (the one
    // refreshed above) ends, its access token at once.
    let access = pair["access_token"].as_str().expect("access").to_string();
    for _ in 0..3 {
        login(&daemon, "minji", "correct horse battery");
    }
    assert_eq!(me(&daemon, &access).error_code(), "session_revoked");
    let refused = daemon.post(
        "/api/auth/refresh",
        json!({"refresh_token": pair["refresh_token"]}),
        None,
    );
    assert_eq!(refused.status, 401);
}
