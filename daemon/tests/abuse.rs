//! One phone (or one script) on the open venue Wi-Fi against the real daemon: bursts of
//! logins and sign-ups, oversized fields, and strangers trying to lock accounts.
//! Many clients are played from distinct loopback addresses (127.0.x.y).

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

mod common;

use common::{all_at_once, memory_kib, request_from, Daemon, Response};
use serde_json::json;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

const PASSWORD: &str = "correct horse battery";

fn client(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 1 + (n / 250) as u8, 1 + (n % 250) as u8)
}

/// A JSON POST from `from`, answered.
fn post_from(from: Ipv4Addr, http: SocketAddr, path: &str, body: &serde_json::Value) -> Response {
    request_from(from, http, "POST", path, body.to_string().as_bytes()).expect("an answer")
}

fn login_from(daemon: &Daemon, from: Ipv4Addr, username: &str, password: &str) -> Response {
    let body = json!({"username": username, "password": password});
    post_from(from, daemon.http, "/api/auth/login", &body)
}

fn statuses(responses: &[Response]) -> std::collections::BTreeMap<u16, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for r in responses {
        *counts.entry(r.status).or_insert(0) += 1;
    }
    counts
}

/// Finding 1: 300 logins at once for unknown users took a fresh box to 1.7 GB. Now hashing
/// runs on two threads: from one address the burst gets one evaluation; from 300 addresses
/// the rest wait their turn or hear `503 busy`, and memory stays bounded either way.
#[test]
fn bursts_of_logins_keep_memory_bounded() {
    let daemon = Daemon::start("");
    let pid = daemon.child.id();
    let before = memory_kib(pid, "VmHWM");

    let http = daemon.http;
    let one_address = all_at_once(300, move |i| {
        let body = json!({"username": format!("nobody{i}"), "password": "guess12345"});
        post_from(client(0), http, "/api/auth/login", &body)
    });
    let counts = statuses(&one_address);
    // One evaluation, or two if the burst outlasts the first one-second penalty.
    let evaluated = counts.get(&401).copied().unwrap_or(0);
    assert!(
        (1..=2).contains(&evaluated),
        "one address, one evaluation at a time: {counts:?}"
    );
    assert_eq!(counts.get(&429), Some(&(300 - evaluated)), "{counts:?}");
    assert!(one_address
        .iter()
        .filter(|r| r.status == 429)
        .all(|r| r.header("retry-after").is_some()));

    let many_addresses = all_at_once(300, move |i| {
        let body = json!({"username": format!("nobody{i}"), "password": "guess12345"});
        post_from(client(i + 1), http, "/api/auth/login", &body)
    });
    let counts = statuses(&many_addresses);
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        if counts.contains_key(&503) {
            vec![401, 503]
        } else {
            vec![401]
        },
        "wrong or busy, nothing else: {counts:?}"
    );
    for busy in many_addresses.iter().filter(|r| r.status == 503) {
        assert_eq!(busy.error_code(), "busy");
        assert!(busy.header("retry-after").is_some());
    }
    let peak = memory_kib(pid, "VmHWM");
    eprintln!(
        "VmHWM before {} MB, after 600 logins {} MB; answers {counts:?}",
        before / 1024,
        peak / 1024
    );
    assert!(
        peak < 250 * 1024,
        "peak RSS {} MB (limit 250 MB)",
        peak / 1024
    );
    // The box still answers, and a real user still logs in.
    daemon.add_user("minji", "viewer");
    assert_eq!(
        login_from(&daemon, client(900), "minji", PASSWORD).status,
        200
    );
}

/// Finding 2: after one wrong guess, a burst of 150 (the right password last) must get no
/// 200 and at most two evaluations.
#[test]
fn a_burst_of_guesses_gets_one_evaluation() {
    let daemon = Daemon::start("");
    daemon.add_user("minji", "viewer");
    let phone = client(7);
    assert_eq!(
        login_from(&daemon, phone, "minji", "wrong guess 0").status,
        401
    );
    // The scenario: the first penalty (1 s) has just run out when the burst comes.
    std::thread::sleep(Duration::from_millis(1200));
    let http = daemon.http;
    let burst = all_at_once(150, move |i| {
        let password = if i == 149 {
            PASSWORD.to_string()
        } else {
            format!("wrong guess {i}")
        };
        if i == 149 {
            // Sent last.
            std::thread::sleep(Duration::from_millis(20));
        }
        let body = json!({"username": "minji", "password": password});
        post_from(phone, http, "/api/auth/login", &body)
    });
    let counts = statuses(&burst);
    assert_eq!(
        counts.get(&200),
        None,
        "no guess in a burst gets in: {counts:?}"
    );
    let evaluated = counts.get(&401).copied().unwrap_or(0);
    assert!(
        evaluated <= 2,
        "{evaluated} guesses were evaluated: {counts:?}"
    );
    assert_eq!(
        counts.get(&429).copied().unwrap_or(0) + evaluated,
        150,
        "{counts:?}"
    );
}

/// Finding 3: 2 MB usernames became throttle keys of 2 MB each, and RSS grew by 450 MB.
/// A body past 16 KiB is refused before it is read; a username of a shape no account has is
/// refused before it is a key.
#[test]
fn huge_usernames_cost_nothing() {
    let daemon = Daemon::start("");
    let pid = daemon.child.id();
    // Warm up the paths first, so the baseline includes what any first request allocates.
    assert_eq!(
        login_from(&daemon, client(1), "someone", "guess12345").status,
        401
    );
    let before = memory_kib(pid, "VmRSS");
    let http = daemon.http;
    let huge = "x".repeat(2 * 1024 * 1024);
    let answers = all_at_once(200, move |i| {
        let body = json!({"username": format!("{huge}{i}"), "password": "guess12345"});
        request_from(
            client(i + 10),
            http,
            "POST",
            "/api/auth/login",
            body.to_string().as_bytes(),
        )
        .map(|r| (r.status, r.error_code()))
    });
    for answer in &answers {
        assert_eq!(
            answer.as_ref().map(|(s, c)| (*s, c.as_str())),
            Some((413, "too_large"))
        );
    }
    // Under the body limit but no username: a plain 401, nothing remembered.
    let long = "y".repeat(10_000);
    for i in 0..200 {
        let r = login_from(
            &daemon,
            client(300 + i),
            &format!("{long}{i}"),
            "guess12345",
        );
        assert_eq!(r.status, 401);
    }
    let after = memory_kib(pid, "VmRSS");
    eprintln!(
        "VmRSS before {} MB, after {} MB",
        before / 1024,
        after / 1024
    );
    assert!(
        after < before + 20 * 1024,
        "RSS grew from {} to {} MB",
        before / 1024,
        after / 1024
    );
}

/// Finding 4: failures from one address locked the account for every address. Now a
/// stranger only slows themselves.
#[test]
fn a_stranger_cannot_lock_someone_out() {
    let daemon = Daemon::start("");
    daemon.add_user("bob", "viewer");
    let stranger = client(66);
    assert_eq!(
        login_from(&daemon, stranger, "bob", "wrong guess").status,
        401
    );
    let again = login_from(&daemon, stranger, "bob", "wrong guess 2");
    assert_eq!(
        (again.status, again.error_code().as_str()),
        (429, "too_many_attempts")
    );
    // Bob, on his own phone, is not kept out.
    assert_eq!(login_from(&daemon, client(67), "bob", PASSWORD).status, 200);
    // And the stranger logging into their own account does not reset bob's count there.
    daemon.add_user("mallory", "viewer");
    assert!(common::wait_until(Duration::from_secs(5), || {
        login_from(&daemon, stranger, "mallory", PASSWORD).status == 200
    }));
    // bob's count at this address carried on: his second failure there doubles the wait.
    assert_eq!(
        login_from(&daemon, stranger, "bob", "wrong guess 3").status,
        401
    );
    let after = login_from(&daemon, stranger, "bob", "wrong guess 4");
    assert_eq!(after.status, 429, "{after:?}");
    assert_eq!(after.header("retry-after"), Some("2"), "{after:?}");
}

/// 100 sign-ups at once from one phone took the box to 1.2 GB. Now one account is made,
/// the rest are told to wait, and each further account from that address waits longer.
#[test]
fn sign_ups_are_limited_per_address() {
    let daemon = Daemon::start("");
    let http = daemon.http;
    let phone = client(5);
    let burst = all_at_once(100, move |i| {
        let body = json!({"username": format!("user{i}"), "password": PASSWORD, "nickname": "n"});
        post_from(phone, http, "/api/auth/signup", &body)
    });
    let counts = statuses(&burst);
    assert_eq!(counts.get(&201), Some(&1), "{counts:?}");
    assert_eq!(counts.get(&429), Some(&99), "{counts:?}");
    let next = {
        let body = json!({"username": "late", "password": PASSWORD, "nickname": "n"});
        post_from(phone, http, "/api/auth/signup", &body)
    };
    assert_eq!(next.status, 429);
    let wait: u64 = next
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!(
        (5..=10).contains(&wait),
        "the second account waits ~10 s: {wait}"
    );
    // Another phone signs up at once.
    let body = json!({"username": "other", "password": PASSWORD, "nickname": "n"});
    let other = post_from(client(6), http, "/api/auth/signup", &body);
    assert_eq!(other.status, 201, "{other:?}");
    // A malformed sign-up costs no hash and no wait.
    let body = json!({"username": "x", "password": PASSWORD, "nickname": "n"});
    let bad = post_from(client(6), http, "/api/auth/signup", &body);
    assert_eq!(bad.status, 400);
}

/// With one hashing thread and a short wait, logins from many addresses at once are
/// answered `503 busy` with `Retry-After` rather than queued without bound.
#[test]
fn a_busy_box_says_so() {
    let daemon =
        Daemon::start("[auth]\npassword_hash_threads = 1\npassword_hash_wait_seconds = 0.1\n");
    let http = daemon.http;
    let answers = all_at_once(40, move |i| {
        let body = json!({"username": format!("nobody{i}"), "password": "guess12345"});
        post_from(client(i + 1), http, "/api/auth/login", &body)
    });
    let counts = statuses(&answers);
    assert!(counts.get(&503).is_some_and(|n| *n > 0), "{counts:?}");
    let busy = answers
        .iter()
        .find(|r| r.status == 503)
        .expect("a busy answer");
    assert_eq!(busy.error_code(), "busy");
    assert_eq!(busy.header("retry-after"), Some("1"));
    // Busy is not a failed guess: that address may try again at once.
    let again = answers.iter().position(|r| r.status == 503).expect("busy");
    let retry = login_from(&daemon, client(again + 1), "nobody", "guess12345");
    assert_ne!(retry.status, 429, "{retry:?}");
}

/// Finding 10: 500 channels in a second, and a 97 KB list every open page fetched every
/// few seconds. A streamer now has at most `channels.per_streamer` (5), even when asking
/// all at once, and an unchanged list costs a 304 with no body.
#[test]
fn channels_are_bounded_per_streamer_and_the_list_is_cheap_to_poll() {
    let daemon = Daemon::start("");
    let streamer = daemon.add_user_token("djay", "streamer");
    let url = daemon.url("/api/channels");
    let answers = all_at_once(50, move |i| {
        common::send_json(
            "POST",
            &url,
            Some(&json!({"slug": format!("room-{i}")})),
            Some(&streamer),
        )
    });
    let counts = statuses(&answers);
    assert_eq!(counts.get(&201), Some(&5), "{counts:?}");
    assert_eq!(counts.get(&409), Some(&45), "{counts:?}");
    assert!(answers
        .iter()
        .filter(|r| r.status == 409)
        .all(|r| r.error_code() == "too_many_channels"));
    // The venue's admin is not bound.
    let admin = daemon.add_user_token("boss", "admin");
    for i in 0..6 {
        let made = daemon.post(
            "/api/channels",
            json!({"slug": format!("hall-{i}")}),
            Some(&admin),
        );
        assert_eq!(made.status, 201);
    }

    let first = daemon.get("/api/channels");
    assert_eq!(first.status, 200);
    assert_eq!(first.json().as_array().map(Vec::len), Some(11));
    let tag = first.header("etag").expect("an ETag").to_string();
    let again = common::get_with(&daemon.url("/api/channels"), &[("if-none-match", &tag)]);
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    daemon.post("/api/channels", json!({"slug": "hall-new"}), Some(&admin));
    let changed = common::get_with(&daemon.url("/api/channels"), &[("if-none-match", &tag)]);
    assert_eq!(changed.status, 200);
    assert_ne!(changed.header("etag"), Some(tag.as_str()));
}

/// Finding 7: 2,000 anonymous chat sockets from one address showed 2,000 viewers. Now one
/// address holds at most `chat.sockets_per_address` (8) and counts as one viewer, and a
/// second address still gets in.
#[test]
fn one_address_cannot_inflate_the_viewer_count() {
    let daemon = Daemon::start("");
    daemon.add_channel("stage");
    let phone = client(40);
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..2_000 {
        let stream = common::connect_from(phone, daemon.http).expect("connect");
        match tungstenite::client(
            format!("ws://{}/api/channels/stage/chat", daemon.http),
            stream,
        ) {
            Ok((socket, _)) => held.push(socket),
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
                assert_eq!(response.status().as_u16(), 429);
                refused += 1;
            }
            Err(e) => panic!("handshake: {e}"),
        }
    }
    assert_eq!((held.len(), refused), (8, 1_992));
    let list = daemon.get("/api/channels").json();
    assert_eq!(list[0]["viewers"], 1, "{list}");
    // Another phone joins and is counted.
    let mut other = daemon
        .chat("stage", None)
        .expect("a second address gets in");
    other.hello();
    assert!(common::wait_until(Duration::from_secs(5), || {
        daemon.get("/api/channels").json()[0]["viewers"] == 2
    }));
}

/// Smaller points: API answers carry `nosniff` and a CSP that runs nothing; `+1` and `01`
/// are not segment numbers; the database is readable by the daemon's user only.
#[test]
fn small_points_from_the_review() {
    let daemon = Daemon::start("");
    for path in ["/api/channels", "/api/nope", "/healthz"] {
        let answer = daemon.get(path);
        assert_eq!(
            answer.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(
            answer.header("content-security-policy"),
            Some("default-src 'none'; frame-ancestors 'none'"),
            "{path}"
        );
    }
    let page = daemon.get("/");
    assert!(page
        .header("content-security-policy")
        .is_some_and(|p| p.contains("script-src 'self'")));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(daemon.data_dir().join("commeow.db"))
        .expect("database")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
}
