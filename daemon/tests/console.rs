//! The venue's console through the real daemon: only admins get in (every endpoint, in a
//! table); a role change or a disabled account reaches open sessions at once; the last
//! admin stays; reset codes; Kakao Pay switched on from the page against the fake, its
//! secret never shown; settings refused with `check-config`'s words and nothing
//! half-applied; the export's totals against the ledger; the audit log and its events.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

mod common;

use common::{poll_until, send_json, Daemon, Response};
use fake_kakaopay::FakeKakaoPay;
use serde_json::{json, Value};
use std::time::Duration;

fn call(
    daemon: &Daemon,
    method: &str,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> Response {
    send_json(method, &daemon.url(path), body.as_ref(), token)
}

/// Every console endpoint, with a body it would accept.
fn endpoints() -> Vec<(&'static str, &'static str, Option<Value>)> {
    vec![
        ("GET", "/api/admin/users", None),
        (
            "POST",
            "/api/admin/users/vee/role",
            Some(json!({"role": "streamer"})),
        ),
        (
            "POST",
            "/api/admin/users/vee/disabled",
            Some(json!({"disabled": false})),
        ),
        ("POST", "/api/admin/users/vee/reset-code", Some(json!({}))),
        (
            "POST",
            "/api/admin/users/vee/grant",
            Some(json!({"points": 1, "reason": "r"})),
        ),
        ("GET", "/api/admin/channels", None),
        ("DELETE", "/api/admin/channels/nope", None),
        ("POST", "/api/admin/channels/nope/stop", Some(json!({}))),
        ("POST", "/api/admin/channels/nope/rotate", Some(json!({}))),
        (
            "POST",
            "/api/admin/channels/nope/owner",
            Some(json!({"username": "vee"})),
        ),
        ("GET", "/api/admin/kakao-pay", None),
        (
            "PUT",
            "/api/admin/kakao-pay",
            Some(json!({"cid": "TC0ONETIME", "base_url": "http://127.0.0.1:9"})),
        ),
        ("POST", "/api/admin/kakao-pay/check", Some(json!({}))),
        (
            "PUT",
            "/api/admin/kakao-pay/products",
            Some(json!([{"id": "p", "points": 1, "price_krw": 1}])),
        ),
        ("GET", "/api/admin/orders", None),
        ("POST", "/api/admin/ledger/check", Some(json!({}))),
        (
            "GET",
            "/api/admin/export.csv?from=2026-01-01&to=2026-12-31",
            None,
        ),
        ("GET", "/api/admin/settings", None),
        ("PUT", "/api/admin/settings", Some(json!({"values": {}}))),
        ("POST", "/api/admin/restart", Some(json!({}))),
        ("GET", "/api/admin/health", None),
        ("GET", "/api/admin/audit", None),
        ("GET", "/api/system/transcode", None),
    ]
}

#[test]
fn every_admin_endpoint_refuses_streamers_viewers_and_strangers() {
    let daemon = Daemon::start("");
    let admin = daemon.add_user_token("boss", "admin");
    let streamer = daemon.add_user_token("star", "streamer");
    let viewer = daemon.add_user_token("vee", "viewer");
    for (method, path, body) in endpoints() {
        for (who, token) in [("streamer", &streamer), ("viewer", &viewer)] {
            let answer = call(&daemon, method, path, body.clone(), Some(token));
            assert_eq!(
                (answer.status, answer.error_code().as_str()),
                (403, "forbidden"),
                "{who} {method} {path}: {answer:?}"
            );
        }
        let anonymous = call(&daemon, method, path, body.clone(), None);
        assert_eq!(
            anonymous.status, 401,
            "anonymous {method} {path}: {anonymous:?}"
        );
    }
    // The admin gets past the gate on every one of them (restart says why it cannot here).
    for (method, path, body) in endpoints() {
        let answer = call(&daemon, method, path, body, Some(&admin));
        assert!(
            ![401, 403].contains(&answer.status),
            "admin {method} {path}: {answer:?}"
        );
    }
    let restart = call(&daemon, "POST", "/api/admin/restart", None, Some(&admin));
    assert_eq!(
        (restart.status, restart.error_code().as_str()),
        (409, "no_supervisor")
    );
}

#[test]
fn a_role_change_reaches_open_sessions_at_once_and_a_demoted_admin_loses_the_console() {
    let daemon = Daemon::start("");
    let admin = daemon.add_user_token("boss", "admin");
    let vee = daemon.add_user("vee", "viewer");
    let vee_token = vee["access_token"].as_str().expect("token");
    let made = call(
        &daemon,
        "POST",
        "/api/channels",
        Some(json!({"slug": "vee-live"})),
        Some(vee_token),
    );
    assert_eq!(made.status, 403, "a viewer makes no channel");

    let promote = call(
        &daemon,
        "POST",
        "/api/admin/users/vee/role",
        Some(json!({"role": "streamer"})),
        Some(&admin),
    );
    assert_eq!(promote.status, 200, "{promote:?}");
    // The token issued before the change is stale now, not in 15 minutes.
    let stale = call(&daemon, "GET", "/api/me", None, Some(vee_token));
    assert_eq!(
        (stale.status, stale.error_code().as_str()),
        (401, "token_stale")
    );
    // Refreshing, as the page does, gives the new role without logging in again.
    let refreshed = daemon.post(
        "/api/auth/refresh",
        json!({"refresh_token": vee["refresh_token"]}),
        None,
    );
    assert_eq!(refreshed.status, 200, "{refreshed:?}");
    let fresh = refreshed.json()["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    assert_eq!(
        call(&daemon, "GET", "/api/me", None, Some(&fresh)).json()["role"],
        "streamer"
    );
    let made = call(
        &daemon,
        "POST",
        "/api/channels",
        Some(json!({"slug": "vee-live"})),
        Some(&fresh),
    );
    assert_eq!(made.status, 201, "{made:?}");

    // A second admin, demoted, loses the console on their very next request.
    let deputy = daemon.add_user_token("deputy", "admin");
    assert_eq!(
        call(&daemon, "GET", "/api/admin/users", None, Some(&deputy)).status,
        200
    );
    let demote = call(
        &daemon,
        "POST",
        "/api/admin/users/deputy/role",
        Some(json!({"role": "viewer"})),
        Some(&admin),
    );
    assert_eq!(demote.status, 200, "{demote:?}");
    let after = call(&daemon, "GET", "/api/admin/users", None, Some(&deputy));
    assert_eq!(
        (after.status, after.error_code().as_str()),
        (401, "token_stale")
    );
    let deputy_again = daemon.login("deputy");
    assert_eq!(
        call(
            &daemon,
            "GET",
            "/api/admin/users",
            None,
            Some(&deputy_again)
        )
        .status,
        403
    );

    // The operator's CLI in its own process: the daemon learns within seconds.
    let star = daemon.login("vee");
    let cli = daemon.cli(&["user", "set-role", "vee", "viewer"]);
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    poll_until(
        Duration::from_secs(5),
        "the CLI's role change refuses the open session's token",
        || Some(call(&daemon, "GET", "/api/me", None, Some(&star)).error_code()),
        |code| code == "token_stale",
    );
}

#[test]
fn the_last_admin_can_neither_demote_nor_disable_themselves() {
    let daemon = Daemon::start("");
    let admin = daemon.add_user_token("boss", "admin");
    let demote = call(
        &daemon,
        "POST",
        "/api/admin/users/boss/role",
        Some(json!({"role": "viewer"})),
        Some(&admin),
    );
    assert_eq!(
        (demote.status, demote.error_code().as_str()),
        (409, "last_admin"),
        "{demote:?}"
    );
    let disable = call(
        &daemon,
        "POST",
        "/api/admin/users/boss/disabled",
        Some(json!({"disabled": true})),
        Some(&admin),
    );
    assert_eq!(
        (disable.status, disable.error_code().as_str()),
        (409, "last_admin"),
        "{disable:?}"
    );
    let cli = daemon.cli(&["user", "set-role", "boss", "streamer"]);
    assert!(!cli.status.success());
    assert!(String::from_utf8_lossy(&cli.stderr).contains("last admin"));
    // Still an admin, still in.
    assert_eq!(
        call(&daemon, "GET", "/api/admin/users", None, Some(&admin)).status,
        200
    );
    let audit = call(&daemon, "GET", "/api/admin/audit", None, Some(&admin)).json();
    assert_eq!(audit, json!([]), "refusals change nothing and log nothing");
}

#[test]
fn a_disabled_account_loses_its_sessions_and_logins_until_enabled_and_a_reset_code_works_once() {
    let daemon = Daemon::start("");
    daemon.add_streamer_channel("host", "stage");
    let admin = daemon.add_user_token("boss", "admin");
    let vee = daemon.add_user("vee", "viewer");
    let token = vee["access_token"].as_str().expect("token").to_string();
    let mut chat = daemon.chat("stage", Some(&token)).expect("chat");
    chat.hello();

    let disable = call(
        &daemon,
        "POST",
        "/api/admin/users/vee/disabled",
        Some(json!({"disabled": true})),
        Some(&admin),
    );
    assert_eq!(disable.status, 200, "{disable:?}");
    assert_eq!(disable.json()["sessions_ended"], 1);
    assert_eq!(
        call(&daemon, "GET", "/api/me", None, Some(&token)).status,
        401
    );
    let refresh = daemon.post(
        "/api/auth/refresh",
        json!({"refresh_token": vee["refresh_token"]}),
        None,
    );
    assert_eq!(refresh.error_code(), "session_revoked");
    let login = daemon.post(
        "/api/auth/login",
        json!({"username": "vee", "password": "correct horse battery"}),
        None,
    );
    assert_eq!(
        (login.status, login.error_code().as_str()),
        (403, "account_disabled")
    );
    // Its open chat socket may no longer speak.
    chat.send(json!({"type": "chat", "text": "still here?"}));
    let refused = chat.next_of("error", Duration::from_secs(5));
    assert!(
        ["session_revoked", "token_expired"].contains(&refused["code"].as_str().unwrap_or("")),
        "{refused}"
    );

    let listed = call(&daemon, "GET", "/api/admin/users?q=vee", None, Some(&admin)).json();
    assert_eq!(listed[0]["disabled"], true);
    let enable = call(
        &daemon,
        "POST",
        "/api/admin/users/vee/disabled",
        Some(json!({"disabled": false})),
        Some(&admin),
    );
    assert_eq!(enable.status, 200);
    daemon.login("vee");

    // A reset code: a new password, once; the old password and the code then fail.
    let code = call(
        &daemon,
        "POST",
        "/api/admin/users/vee/reset-code",
        None,
        Some(&admin),
    )
    .json()["code"]
        .as_str()
        .expect("code")
        .to_string();
    let reset = |code: &str, password: &str| {
        daemon.post(
            "/api/auth/reset",
            json!({"username": "vee", "code": code, "password": password}),
            None,
        )
    };
    assert_eq!(
        reset("AAAA-BBBB-CCCC", "a new password").error_code(),
        "invalid_reset_code"
    );
    // A wrong code counts like a wrong password: the address waits what Retry-After says.
    let throttled = reset(&code, "a new password");
    assert_eq!(throttled.status, 429, "{throttled:?}");
    assert!(throttled.header("retry-after").is_some());
    let done = after_throttle(|| reset(&code.to_lowercase(), "a new password"));
    assert_eq!(done.status, 204, "{done:?}");
    let again = after_throttle(|| reset(&code, "another password"));
    assert_eq!(again.error_code(), "invalid_reset_code", "used once");
    let old = after_throttle(|| {
        daemon.post(
            "/api/auth/login",
            json!({"username": "vee", "password": "correct horse battery"}),
            None,
        )
    });
    assert_eq!(old.status, 401);
    let new = after_throttle(|| {
        daemon.post(
            "/api/auth/login",
            json!({"username": "vee", "password": "a new password"}),
            None,
        )
    });
    assert_eq!(new.status, 200, "{new:?}");
    let audit = call(&daemon, "GET", "/api/admin/audit", None, Some(&admin)).json();
    let actions: Vec<&str> = audit
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    assert_eq!(actions, ["reset_code", "enable", "disable"]);
    assert!(
        !audit.to_string().contains(&code),
        "the log never holds a code"
    );
    assert!(audit
        .as_array()
        .expect("rows")
        .iter()
        .all(|r| r["actor"] == "boss" && r["address"] == "127.0.0.1"));
}

/// `request`'s answer once the address's failure throttle lets it through (a 429 counts
/// nothing, so asking again until then is what a client honouring Retry-After does).
fn after_throttle(mut request: impl FnMut() -> Response) -> Response {
    poll_until(
        Duration::from_secs(10),
        "the throttle lets the request through",
        || Some(request()),
        |answer| answer.status != 429,
    )
}

const SECRET: &str = "DEVCONSOLE1234567890SECRETKEY";

#[test]
fn kakao_pay_switched_on_from_the_console_works_at_once_and_across_a_restart_and_its_key_never_shows(
) {
    let kakao = FakeKakaoPay::start(SECRET).expect("fake Kakao Pay");
    let mut daemon = Daemon::start("");
    let admin = daemon.add_user_token("boss", "admin");
    let fan = daemon.add_user_token("fan", "viewer");
    assert_eq!(
        daemon.get("/api/payments/products").json()["enabled"],
        false
    );
    let check = call(
        &daemon,
        "POST",
        "/api/admin/kakao-pay/check",
        None,
        Some(&admin),
    );
    assert_eq!(check.json()["ok"], false, "{check:?}");

    // A wrong key first: the check says what Kakao Pay answered.
    let setup = |secret: &str| {
        call(
            &daemon,
            "PUT",
            "/api/admin/kakao-pay",
            Some(json!({"cid": "TC0ONETIME", "base_url": kakao.base_url(), "secret_key": secret})),
            Some(&admin),
        )
    };
    // A refused setup leaves nothing behind: no key file, no drop-in.
    let refused = call(
        &daemon,
        "PUT",
        "/api/admin/kakao-pay",
        Some(json!({"cid": "TC0ONETIME", "base_url": "ftp://pay.example", "secret_key": SECRET})),
        Some(&admin),
    );
    assert_eq!(refused.status, 400, "{refused:?}");
    assert!(!daemon.data_dir().join("kakao_pay.secret").exists());
    assert!(!daemon.data_dir().join("console.toml").exists());
    assert_eq!(setup("WRONGKEY").status, 200);
    let check = call(
        &daemon,
        "POST",
        "/api/admin/kakao-pay/check",
        None,
        Some(&admin),
    )
    .json();
    assert_eq!(check["ok"], false);
    assert!(
        check["message"].as_str().unwrap_or("").contains("refused"),
        "{check}"
    );
    let answer = setup(SECRET);
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json()["enabled"], true);
    let check = call(
        &daemon,
        "POST",
        "/api/admin/kakao-pay/check",
        None,
        Some(&admin),
    )
    .json();
    assert_eq!(check["ok"], true, "{check}");

    // The catalog, edited in the page, is what a viewer can buy: no restart.
    let products = call(
        &daemon,
        "PUT",
        "/api/admin/kakao-pay/products",
        Some(json!([{"id": "snack", "points": 3000, "price_krw": 2500}])),
        Some(&admin),
    );
    assert_eq!(products.status, 200, "{products:?}");
    let listed = daemon.get("/api/payments/products").json();
    assert_eq!(
        listed["products"],
        json!([{"id": "snack", "points": 3000, "price_krw": 2500}])
    );
    let ready = daemon.post(
        "/api/payments/kakao/ready",
        json!({"product_id": "snack"}),
        Some(&fan),
    );
    assert_eq!(ready.status, 201, "{ready:?}");
    let bad = call(
        &daemon,
        "PUT",
        "/api/admin/kakao-pay/products",
        Some(
            json!([{"id": "a", "points": 1, "price_krw": 1}, {"id": "a", "points": 2, "price_krw": 2}]),
        ),
        Some(&admin),
    );
    assert_eq!(
        (bad.status, bad.error_code().as_str()),
        (400, "invalid_setting"),
        "{bad:?}"
    );

    // The key file: only the daemon's user may read it.
    let key_file = daemon.data_dir().join("kakao_pay.secret");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key_file)
            .expect("key file")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // The secret never comes back: not in any console answer, the audit log, the logs.
    let mut seen = String::new();
    for (method, path, _) in endpoints()
        .into_iter()
        .filter(|(m, p, _)| *m == "GET" || p.ends_with("check"))
    {
        seen.push_str(&call(&daemon, method, path, None, Some(&admin)).text());
    }
    assert!(seen.contains("secret_key_set"), "the setup was read");
    assert!(!seen.contains(SECRET), "a console answer holds the secret");
    assert!(!daemon.logged(SECRET), "a log line holds the secret");
    let drop_in = std::fs::read_to_string(daemon.data_dir().join("console.toml")).expect("drop-in");
    assert!(
        !drop_in.contains(SECRET),
        "the drop-in names the key's file, not the key"
    );

    // Still on after a restart: the drop-in is read with the config.
    daemon.crash_and_restart();
    let listed = daemon.get("/api/payments/products").json();
    assert_eq!(
        (
            listed["enabled"].clone(),
            listed["products"][0]["id"].clone()
        ),
        (json!(true), json!("snack"))
    );
    let fan = daemon.login("fan");
    let ready = daemon.post(
        "/api/payments/kakao/ready",
        json!({"product_id": "snack"}),
        Some(&fan),
    );
    assert_eq!(ready.status, 201, "{ready:?}");
    assert!(!daemon.logged(SECRET));
}

#[test]
fn a_bad_setting_is_refused_with_check_configs_words_and_nothing_is_half_applied() {
    let mut daemon = Daemon::start("");
    let admin = daemon.add_user_token("boss", "admin");
    let before = call(&daemon, "GET", "/api/admin/settings", None, Some(&admin)).json();
    let change = call(
        &daemon,
        "PUT",
        "/api/admin/settings",
        Some(json!({
            "venue_name": "Renamed Hall",
            "values": {"points.donation_min": "500", "points.donation_max": "100", "chat.max_chars": "120"},
        })),
        Some(&admin),
    );
    assert_eq!(
        (change.status, change.error_code().as_str()),
        (400, "invalid_setting"),
        "{change:?}"
    );
    let message = change.json()["error"]["message"]
        .as_str()
        .expect("message")
        .to_string();
    // `check-config` on a file with the same values says the same words.
    let file = daemon.dir.path().join("same-values.toml");
    std::fs::write(&file, "[points]\ndonation_min = 500\ndonation_max = 100\n").expect("write");
    let checked = common::commeowd()
        .arg("--config")
        .arg(&file)
        .arg("check-config")
        .output()
        .expect("check-config");
    assert!(!checked.status.success());
    let words = message
        .split_once(": ")
        .map_or(message.as_str(), |(_, w)| w);
    assert!(
        String::from_utf8_lossy(&checked.stderr).contains(words),
        "API said {message:?}; check-config said {:?}",
        String::from_utf8_lossy(&checked.stderr)
    );
    // Nothing of it applied: not the name, not the good value beside the bad one.
    let after = call(&daemon, "GET", "/api/admin/settings", None, Some(&admin)).json();
    assert_eq!(before, after);
    assert!(!daemon.data_dir().join("console.toml").exists());
    let non_setting = call(
        &daemon,
        "PUT",
        "/api/admin/settings",
        Some(json!({"values": {"http.listen": "0.0.0.0:1"}})),
        Some(&admin),
    );
    assert_eq!(non_setting.error_code(), "invalid_setting");

    // A good change: the name at once, the rest marked for restart and there after it.
    let change = call(
        &daemon,
        "PUT",
        "/api/admin/settings",
        Some(json!({"venue_name": "Renamed Hall", "values": {"chat.max_chars": "120"}})),
        Some(&admin),
    );
    assert_eq!(change.status, 200, "{change:?}");
    assert_eq!(change.json()["restart_needed"], true);
    assert_eq!(
        daemon.get("/api/onboarding").json()["venue"],
        "Renamed Hall"
    );
    daemon.crash_and_restart();
    let admin = daemon.login("boss");
    let settings = call(&daemon, "GET", "/api/admin/settings", None, Some(&admin)).json();
    let max_chars = settings["settings"]
        .as_array()
        .expect("settings")
        .iter()
        .find(|s| s["key"] == "chat.max_chars")
        .expect("chat.max_chars")
        .clone();
    assert_eq!(
        (max_chars["value"].clone(), max_chars["applies"].clone()),
        (json!(120), json!("at_restart"))
    );
    // And the chat obeys it.
    daemon.add_streamer_channel("host", "stage");
    let mut chat = daemon.chat("stage", Some(&admin)).expect("chat");
    chat.hello();
    chat.send(json!({"type": "chat", "text": "x".repeat(121)}));
    let refused = chat.next_of("error", Duration::from_secs(5));
    assert_eq!(refused["code"], "too_long", "{refused}");
}

#[test]
fn grants_and_donations_export_with_totals_equal_to_the_ledger_and_the_fleet_hears_of_each_action()
{
    let daemon = Daemon::start("");
    let admin = daemon.add_user_token("boss", "admin");
    daemon.add_streamer_channel("host", "stage");
    let fan = daemon.add_user_token("fan", "viewer");
    for (points, reason) in [(5000, "welcome"), (700, "=cmd|' /C calc'!A0")] {
        let grant = call(
            &daemon,
            "POST",
            "/api/admin/users/fan/grant",
            Some(json!({"points": points, "reason": reason})),
            Some(&admin),
        );
        assert_eq!(grant.status, 200, "{grant:?}");
    }
    let donate = common::send_json_with(
        "POST",
        &daemon.url("/api/channels/stage/donations"),
        Some(&json!({"amount": 1200, "message": "+1 great set"})),
        Some(&fan),
        &[("idempotency-key", "k1")],
    );
    assert_eq!(donate.status, 201, "{donate:?}");
    let today = chrono::Utc::now().date_naive().to_string();
    let csv = call(
        &daemon,
        "GET",
        &format!("/api/admin/export.csv?from={today}&to={today}"),
        None,
        Some(&admin),
    );
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    let text = csv.text();
    let total = |kind: &str| -> i64 {
        text.lines()
            .find(|l| l.starts_with(&format!("total,{kind},")))
            .and_then(|l| l.split(',').nth(5))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    assert!(
        text.contains("'=cmd") && text.contains("'+1 great set"),
        "formulas are quoted: {text}"
    );
    let check = call(
        &daemon,
        "POST",
        "/api/admin/ledger/check",
        None,
        Some(&admin),
    )
    .json();
    assert_eq!(check["balanced"], true, "{check}");
    let ledger = |account: &str| -> i64 {
        check["totals"]
            .as_array()
            .expect("totals")
            .iter()
            .find(|t| t["account"] == account)
            .map_or(0, |t| t["balance"].as_i64().unwrap_or(0))
    };
    assert_eq!(total("grant"), -ledger("promotions"));
    assert_eq!(total("donation"), ledger("earnings"));
    assert_eq!(total("grant") - total("donation"), ledger("wallet"));
    let bad = call(
        &daemon,
        "GET",
        "/api/admin/export.csv?from=yesterday&to=today",
        None,
        Some(&admin),
    );
    assert_eq!(bad.status, 400);

    // Each admin action is in the outbox for the fleet, with who and from where.
    let store = rusqlite::Connection::open(daemon.data_dir().join("commeow.db")).expect("db");
    let actions: Vec<String> = store
        .prepare("SELECT json_extract(payload, '$.action') FROM outbox WHERE type = 'admin_action' ORDER BY sequence")
        .expect("query")
        .query_map([], |r| r.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("actions");
    assert_eq!(actions, ["grant", "grant", "export", "ledger_check"]);
}

#[test]
fn channels_listed_for_the_admin_can_be_given_rotated_and_removed_unless_they_have_donations() {
    let daemon = Daemon::start("");
    let admin = daemon.add_user_token("boss", "admin");
    daemon.add_streamer_channel("host", "stage");
    daemon.add_streamer_channel("other", "side");
    let list = call(&daemon, "GET", "/api/admin/channels", None, Some(&admin)).json();
    assert_eq!(list.as_array().map(Vec::len), Some(2));
    assert_eq!(list[1]["owner"], "host");
    assert_eq!(list[1]["live"], false);
    let give = call(
        &daemon,
        "POST",
        "/api/admin/channels/stage/owner",
        Some(json!({"username": "other"})),
        Some(&admin),
    );
    assert_eq!(give.status, 200, "{give:?}");
    let viewer = daemon.add_user_token("vee", "viewer");
    let to_viewer = call(
        &daemon,
        "POST",
        "/api/admin/channels/stage/owner",
        Some(json!({"username": "vee"})),
        Some(&admin),
    );
    assert_eq!(to_viewer.status, 400, "{to_viewer:?}");
    let rotate = call(
        &daemon,
        "POST",
        "/api/admin/channels/stage/rotate",
        None,
        Some(&admin),
    );
    assert_eq!(rotate.status, 200);
    assert!(rotate.json()["stream_key"]
        .as_str()
        .is_some_and(|k| !k.is_empty()));
    let not_live = call(
        &daemon,
        "POST",
        "/api/admin/channels/stage/stop",
        None,
        Some(&admin),
    );
    assert_eq!(not_live.error_code(), "not_live");
    // A donation keeps a channel; one without is removed.
    call(
        &daemon,
        "POST",
        "/api/admin/users/vee/grant",
        Some(json!({"points": 100, "reason": "r"})),
        Some(&admin),
    );
    let donate = common::send_json_with(
        "POST",
        &daemon.url("/api/channels/stage/donations"),
        Some(&json!({"amount": 100, "message": ""})),
        Some(&viewer),
        &[("idempotency-key", "k1")],
    );
    assert_eq!(donate.status, 201, "{donate:?}");
    let kept = call(
        &daemon,
        "DELETE",
        "/api/admin/channels/stage",
        None,
        Some(&admin),
    );
    assert_eq!(
        (kept.status, kept.error_code().as_str()),
        (409, "channel_has_donations")
    );
    let removed = call(
        &daemon,
        "DELETE",
        "/api/admin/channels/side",
        None,
        Some(&admin),
    );
    assert_eq!(removed.status, 204);
    let list = call(&daemon, "GET", "/api/admin/channels", None, Some(&admin)).json();
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(list[0]["owner"], "other");
    // The health page: the box, OBS's URL, and the newest warnings (the refused login).
    daemon.post(
        "/api/auth/login",
        json!({"username": "vee", "password": "wrong password"}),
        None,
    );
    let health = call(&daemon, "GET", "/api/admin/health", None, Some(&admin)).json();
    assert!(
        health["box"]["rss_bytes"].as_u64().is_some_and(|r| r > 0),
        "{health}"
    );
    assert!(
        health["obs_server"]
            .as_str()
            .is_some_and(|s| s.starts_with("rtmp://")),
        "{health}"
    );
    assert!(
        health["logs"]
            .as_array()
            .expect("logs")
            .iter()
            .any(|l| l["message"]
                .as_str()
                .unwrap_or("")
                .contains("login refused")),
        "{health}"
    );
}
