//! Kakao Pay top-ups through the real daemon against the fake Kakao Pay server: the happy
//! path, a tampered amount, replays, the wrong user, Kakao Pay down or slow or losing
//! answers, declines, and the payer's cancel and fail returns.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

mod common;

use common::{get_no_redirect, post_form_no_redirect, send_json, Daemon, Response};
use fake_kakaopay::{FakeKakaoPay, Misbehaviour};
use serde_json::json;
use std::time::Duration;

const SECRET: &str = "DEV1234567890ABCDEFSECRET";

/// A fake Kakao Pay, and a daemon pointed at it (calls time out after 1 s) with viewer
/// `fan` logged in. Returns the fan's access token too.
fn venue() -> (FakeKakaoPay, Daemon, String) {
    let kakao = FakeKakaoPay::start(SECRET).expect("fake Kakao Pay");
    venue_with(kakao, "")
}

/// [`venue`] with more `[kakao_pay]` keys, against `kakao`.
fn venue_with(kakao: FakeKakaoPay, more: &str) -> (FakeKakaoPay, Daemon, String) {
    let secret_dir = tempfile::tempdir().expect("tempdir");
    let secret_file = secret_dir.path().join("kakao-secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).expect("secret");
    let config = format!(
        "[kakao_pay]\nbase_url = \"{}\"\nsecret_key_file = \"{}\"\ntimeout_seconds = 1.0\n{more}\n",
        kakao.base_url(),
        secret_file.display()
    );
    let daemon = Daemon::start(&config);
    // The daemon read the key at startup; the file may go.
    drop(secret_dir);
    let fan = daemon.add_user_token("fan", "viewer");
    (kakao, daemon, fan)
}

/// `POST /api/payments/kakao/ready` for `product`.
fn ready(daemon: &Daemon, token: &str, product: &str) -> Response {
    send_json(
        "POST",
        &daemon.url("/api/payments/kakao/ready"),
        Some(&json!({"product_id": product})),
        Some(token),
    )
}

/// A started top-up: the order id and the tid Kakao Pay gave it.
fn start(daemon: &Daemon, token: &str, product: &str) -> (String, String) {
    let started = ready(daemon, token, product);
    assert_eq!(started.status, 201, "{started:?}");
    let order = started.json()["order_id"]
        .as_str()
        .expect("order_id")
        .to_string();
    let mobile = started.json()["redirect_mobile_url"]
        .as_str()
        .expect("mobile url")
        .to_string();
    let tid = mobile
        .split('/')
        .rev()
        .nth(1)
        .expect("tid in the payment page URL")
        .to_string();
    (order, tid)
}

/// The payer presses a button on Kakao Pay's page (`pay`, `quit`, `fail`); returns where
/// Kakao Pay sends their browser.
fn payer_presses(kakao: &FakeKakaoPay, tid: &str, button: &str) -> String {
    let pressed = post_form_no_redirect(&format!(
        "{}/mockup/{tid}/action/{button}",
        kakao.base_url()
    ));
    assert_eq!(pressed.status, 303, "{pressed:?}");
    pressed.header("location").expect("redirect").to_string()
}

/// The payer's browser arriving at one of our return URLs, as an API client would.
fn arrive(url: &str, token: Option<&str>) -> Response {
    send_json("GET", url, None, token)
}

fn balance(daemon: &Daemon, token: &str) -> i64 {
    let wallet = send_json("GET", &daemon.url("/api/wallet"), None, Some(token));
    assert_eq!(wallet.status, 200, "{wallet:?}");
    wallet.json()["balance"].as_i64().expect("balance")
}

fn order(daemon: &Daemon, token: &str, id: &str) -> Response {
    send_json(
        "GET",
        &daemon.url(&format!("/api/payments/{id}")),
        None,
        Some(token),
    )
}

/// Outbox events of `kind`, from the daemon's own database file (read-only).
fn outbox(daemon: &Daemon, kind: &str) -> Vec<serde_json::Value> {
    let db = rusqlite::Connection::open_with_flags(
        daemon.data_dir().join("commeow.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open the database");
    let mut query = db
        .prepare("SELECT payload FROM outbox WHERE type = ?1 ORDER BY sequence")
        .expect("query");
    query
        .query_map([kind], |r| r.get::<_, String>(0))
        .expect("rows")
        .map(|p| serde_json::from_str(&p.expect("row")).expect("JSON payload"))
        .collect()
}

#[test]
fn a_top_up_credits_the_catalog_price_once_whatever_is_replayed() {
    let (kakao, daemon, fan) = venue();
    let products = send_json("GET", &daemon.url("/api/payments/products"), None, None);
    assert_eq!(products.status, 200);
    assert_eq!(products.json()["enabled"], true);
    assert_eq!(
        products.json()["products"][1],
        json!({"id": "points-5000", "points": 5000, "price_krw": 5000})
    );

    let started = ready(&daemon, &fan, "points-5000");
    assert_eq!(started.status, 201, "{started:?}");
    let answer = started.json();
    let order_id = answer["order_id"].as_str().expect("order_id");
    let pc = answer["redirect_pc_url"].as_str().expect("pc url");
    let mobile = answer["redirect_mobile_url"].as_str().expect("mobile url");
    assert!(pc.starts_with(kakao.base_url()) && mobile.starts_with(kakao.base_url()));
    let qr = answer["qr_svg"].as_str().expect("qr");
    assert!(qr.contains("<svg") && qr.contains("</svg>"), "{qr}");

    // What Kakao Pay received: our key, the catalog price, our return URLs on the host
    // the viewer used, and the user from the token.
    let calls = kakao.calls("ready");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].authorization, format!("SECRET_KEY {SECRET}"));
    let sent = &calls[0].body;
    assert_eq!(sent["cid"], "TC0ONETIME");
    assert_eq!(sent["total_amount"], 5000);
    assert_eq!(sent["quantity"], 1);
    assert_eq!(sent["partner_order_id"], order_id);
    let origin = format!("http://{}", daemon.http);
    assert_eq!(
        sent["approval_url"],
        format!("{origin}/api/payments/kakao/approve?order_id={order_id}")
    );
    assert_eq!(
        sent["cancel_url"],
        format!("{origin}/api/payments/kakao/cancel?order_id={order_id}")
    );
    assert_eq!(
        order(&daemon, &fan, order_id).json()["state"],
        "pending",
        "nothing is credited before Kakao Pay approves"
    );

    // The phone opens the payment page and pays; Kakao Pay sends it back to us. The phone
    // is not logged in.
    let page = common::get(mobile);
    assert!(page.text().contains("5000원"), "{}", page.text());
    let tid = mobile.split('/').rev().nth(1).expect("tid");
    let approval = payer_presses(&kakao, tid, "pay");
    assert!(approval.contains("&pg_token="), "{approval}");
    let approved = arrive(&approval, None);
    assert_eq!(approved.status, 200, "{approved:?}");
    assert_eq!(approved.json()["state"], "approved");
    assert_eq!(approved.json()["points"], 5000);
    assert_eq!(balance(&daemon, &fan), 5000);
    let approve_calls = kakao.calls("approve");
    assert_eq!(approve_calls.len(), 1);
    assert_eq!(approve_calls[0].body["tid"], tid);

    // Replays: the same return URL again, in a burst, and as a browser navigation (which is
    // sent on to the order's page). Credited once; Kakao Pay is not asked again.
    let replays: Vec<_> = (0..8)
        .map(|_| {
            let url = approval.clone();
            std::thread::spawn(move || arrive(&url, None))
        })
        .collect();
    for replay in replays {
        let replay = replay.join().expect("replay");
        assert_eq!(replay.status, 200, "{replay:?}");
        assert_eq!(replay.json()["state"], "approved");
    }
    let navigation = get_no_redirect(&approval, &[("accept", "text/html,*/*")]);
    assert_eq!(navigation.status, 303, "{navigation:?}");
    assert_eq!(
        navigation.header("location"),
        Some(format!("/payments/{order_id}").as_str())
    );
    assert_eq!(balance(&daemon, &fan), 5000);
    assert_eq!(kakao.calls("approve").len(), 1);
    let wallet = send_json("GET", &daemon.url("/api/wallet"), None, Some(&fan)).json();
    assert_eq!(wallet["entries"][0]["kind"], "topup");
    assert_eq!(wallet["entries"][0]["amount"], 5000);

    // The verification went to the outbox with Kakao Pay's facts.
    let events = outbox(&daemon, "topup_approved");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["order_id"], order_id);
    assert_eq!(events[0]["tid"], tid);
    assert_eq!(events[0]["price_krw"], 5000);
    assert!(events[0]["aid"].as_str().is_some_and(|a| !a.is_empty()));
    assert_eq!(events[0]["kakao_pay"]["amount"]["total"], 5000);
    daemon.assert_ledger_balances();
    assert!(!daemon.logged(SECRET), "the secret key reached the log");
}

#[test]
fn an_approval_for_another_amount_is_canceled_and_credits_nothing() {
    let (kakao, daemon, fan) = venue();
    let (order_id, tid) = start(&daemon, &fan, "points-1000");
    let approval = payer_presses(&kakao, &tid, "pay");
    // Somewhere between Kakao Pay and the box, the amount is changed.
    kakao.misbehave(Misbehaviour {
        approve_reports_total: Some(100_000),
        ..Misbehaviour::default()
    });
    let refused = arrive(&approval, None);
    assert_eq!(refused.status, 409, "{refused:?}");
    assert_eq!(refused.error_code(), "payment_rejected");
    assert_eq!(balance(&daemon, &fan), 0);
    // The real payment was canceled at Kakao Pay, in full.
    let payment = kakao.payment(&tid).expect("payment");
    assert_eq!(payment["status"], "CANCEL_PAYMENT", "{payment}");
    assert_eq!(kakao.calls("cancel").len(), 1);
    assert_eq!(kakao.calls("cancel")[0].body["cancel_amount"], 1000);
    let stored = order(&daemon, &fan, &order_id).json();
    assert_eq!(stored["state"], "rejected");
    let detail = stored["detail"].as_str().expect("detail");
    assert!(
        detail.contains("100000 KRW") && detail.contains("canceled at Kakao Pay"),
        "{detail}"
    );
    // A replay of the approval changes nothing.
    kakao.misbehave(Misbehaviour::default());
    assert_eq!(arrive(&approval, None).status, 409);
    assert_eq!(balance(&daemon, &fan), 0);
    let events = outbox(&daemon, "topup_rejected");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "topup_rejected");
    assert_eq!(events[0]["kakao_pay"]["amount"]["total"], 100_000);
    assert!(outbox(&daemon, "topup_approved").is_empty());
    daemon.assert_ledger_balances();
}

#[test]
fn someone_else_cannot_approve_or_see_an_order() {
    let (kakao, daemon, fan) = venue();
    let mallory = daemon.add_user_token("mallory", "viewer");
    let (order_id, tid) = start(&daemon, &fan, "points-1000");
    let approval = payer_presses(&kakao, &tid, "pay");
    let refused = arrive(&approval, Some(&mallory));
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(refused.error_code(), "not_your_order");
    assert!(
        kakao.calls("approve").is_empty(),
        "refused before Kakao Pay"
    );
    assert_eq!(order(&daemon, &mallory, &order_id).status, 404);
    // A made-up order id or token gets nowhere either.
    let made_up = daemon.url("/api/payments/kakao/approve?order_id=o123&pg_token=abc");
    assert_eq!(arrive(&made_up, None).status, 404);
    let bad_token = daemon.url(&format!(
        "/api/payments/kakao/approve?order_id={order_id}&pg_token=%3Cscript%3E"
    ));
    assert_eq!(arrive(&bad_token, None).status, 400);
    // A well-formed made-up pg_token: Kakao Pay refuses it, and the order waits.
    let guessed = daemon.url(&format!(
        "/api/payments/kakao/approve?order_id={order_id}&pg_token=1234567890"
    ));
    let guessed = arrive(&guessed, None);
    assert_eq!(guessed.status, 409, "{guessed:?}");
    assert_eq!(guessed.error_code(), "payment_pending");
    // The payer's own return still works, and the points go to the payer's account.
    assert_eq!(arrive(&approval, Some(&fan)).status, 200);
    assert_eq!(balance(&daemon, &fan), 1000);
    assert_eq!(balance(&daemon, &mallory), 0);
    daemon.assert_ledger_balances();
}

#[test]
fn kakao_pay_down_keeps_the_order_pending_and_a_later_look_settles_it() {
    let (kakao, daemon, fan) = venue();
    // Down at ready: a clear error, nothing charged, the order closed.
    kakao.misbehave(Misbehaviour {
        down: true,
        ..Misbehaviour::default()
    });
    let refused = ready(&daemon, &fan, "points-1000");
    assert_eq!(refused.status, 502, "{refused:?}");
    assert_eq!(refused.error_code(), "payment_provider_unavailable");
    let message = refused.json()["error"]["message"].to_string();
    assert!(message.contains("nothing was charged"), "{message}");
    kakao.misbehave(Misbehaviour::default());

    // Down after the payer paid: the order waits, with the payer's pg_token kept.
    let (order_id, tid) = start(&daemon, &fan, "points-1000");
    let approval = payer_presses(&kakao, &tid, "pay");
    kakao.misbehave(Misbehaviour {
        down: true,
        ..Misbehaviour::default()
    });
    let waiting = arrive(&approval, None);
    assert_eq!(waiting.status, 502, "{waiting:?}");
    assert_eq!(waiting.error_code(), "payment_provider_unavailable");
    assert!(waiting.text().contains("nothing is"), "{waiting:?}");
    assert_eq!(order(&daemon, &fan, &order_id).json()["state"], "pending");
    assert_eq!(balance(&daemon, &fan), 0);

    // Kakao Pay is back: the page's next look (no pg_token needed) settles it, once.
    kakao.misbehave(Misbehaviour::default());
    let settled = common::poll_until(
        Duration::from_secs(10),
        "the order settles once Kakao Pay answers",
        || Some(order(&daemon, &fan, &order_id).json()),
        |o| o["state"] == "approved",
    );
    assert_eq!(settled["points"], 1000);
    assert_eq!(balance(&daemon, &fan), 1000);
    daemon.assert_ledger_balances();
}

#[test]
fn orders_nobody_looks_at_are_settled_by_the_box_itself() {
    let kakao = FakeKakaoPay::start_with(SECRET, Duration::from_secs(6)).expect("fake");
    let (kakao, daemon, fan) = venue_with(kakao, "recheck_seconds = 1");
    // The payer came back while Kakao Pay was down, then closed the page.
    let (paid, tid) = start(&daemon, &fan, "points-1000");
    let approval = payer_presses(&kakao, &tid, "pay");
    kakao.misbehave(Misbehaviour {
        down: true,
        ..Misbehaviour::default()
    });
    assert_eq!(arrive(&approval, None).status, 502);
    // Kakao Pay is back; another payer opens its page and walks away.
    kakao.misbehave(Misbehaviour::default());
    let (abandoned, _) = start(&daemon, &fan, "points-5000");
    // Nobody polls the orders; the wallet shows the points arrive, once.
    common::poll_until(
        Duration::from_secs(15),
        "the box settles the paid order by itself",
        || Some(balance(&daemon, &fan)),
        |b| *b == 1000,
    );
    assert_eq!(
        kakao.payment(&tid).expect("payment")["status"],
        "SUCCESS_PAYMENT"
    );
    // The abandoned tid expires at Kakao Pay; the box sees it and closes the order.
    common::poll_until(
        Duration::from_secs(15),
        "the abandoned order is closed",
        || Some(order(&daemon, &fan, &abandoned).json()["state"].clone()),
        |s| s == "canceled",
    );
    assert_eq!(order(&daemon, &fan, &paid).json()["state"], "approved");
    assert_eq!(balance(&daemon, &fan), 1000);
    daemon.assert_ledger_balances();
}

#[test]
fn a_lost_or_slow_approve_answer_is_confirmed_with_the_order_api() {
    let (kakao, daemon, fan) = venue();
    // Kakao Pay approves, but its answer never arrives: the order API says it was paid.
    let (order_id, tid) = start(&daemon, &fan, "points-1000");
    let approval = payer_presses(&kakao, &tid, "pay");
    kakao.misbehave(Misbehaviour {
        drop_responses: vec!["approve".into()],
        ..Misbehaviour::default()
    });
    let approved = arrive(&approval, None);
    assert_eq!(approved.status, 200, "{approved:?}");
    assert_eq!(approved.json()["state"], "approved");
    assert_eq!(kakao.calls("order").len(), 1);
    assert_eq!(balance(&daemon, &fan), 1000);

    // Everything slower than the daemon's 1 s limit: pending and a clear error, then
    // settled when Kakao Pay is quick again.
    let (second, tid) = start(&daemon, &fan, "points-5000");
    let approval = payer_presses(&kakao, &tid, "pay");
    kakao.misbehave(Misbehaviour {
        delay_ms: 2_000,
        ..Misbehaviour::default()
    });
    let slow = arrive(&approval, None);
    assert_eq!(slow.status, 502, "{slow:?}");
    assert_eq!(order(&daemon, &fan, &second).json()["state"], "pending");
    kakao.misbehave(Misbehaviour::default());
    common::poll_until(
        Duration::from_secs(10),
        "the slow order settles",
        || Some(order(&daemon, &fan, &second).json()),
        |o| o["state"] == "approved",
    );
    assert_eq!(balance(&daemon, &fan), 6000);
    assert_eq!(order(&daemon, &fan, &order_id).json()["state"], "approved");
    assert_eq!(outbox(&daemon, "topup_approved").len(), 2);
    daemon.assert_ledger_balances();
}

#[test]
fn a_declined_payment_credits_nothing() {
    let (kakao, daemon, fan) = venue();
    let (order_id, tid) = start(&daemon, &fan, "points-1000");
    let approval = payer_presses(&kakao, &tid, "pay");
    kakao.misbehave(Misbehaviour {
        approve_error: Some(-780),
        ..Misbehaviour::default()
    });
    let declined = arrive(&approval, None);
    assert_eq!(declined.status, 409, "{declined:?}");
    assert_eq!(declined.error_code(), "payment_failed");
    assert!(declined.text().contains("-780"), "{declined:?}");
    assert_eq!(order(&daemon, &fan, &order_id).json()["state"], "failed");
    assert_eq!(balance(&daemon, &fan), 0);
    assert_eq!(outbox(&daemon, "topup_failed")[0]["order_id"], order_id);
}

#[test]
fn cancel_and_fail_returns_are_confirmed_with_kakao_pay_first() {
    let (kakao, daemon, fan) = venue();
    let (order_id, tid) = start(&daemon, &fan, "points-1000");
    // A forged cancel link while the payer is still on Kakao Pay's page changes nothing.
    let forged = daemon.url(&format!("/api/payments/kakao/cancel?order_id={order_id}"));
    let ignored = arrive(&forged, None);
    assert_eq!(ignored.status, 202, "{ignored:?}");
    assert_eq!(ignored.json()["state"], "pending");
    assert_eq!(kakao.calls("order").len(), 1, "asked Kakao Pay first");
    // The payer quits on Kakao Pay's page and comes back by the cancel URL.
    let back = payer_presses(&kakao, &tid, "quit");
    assert_eq!(back, forged);
    let canceled = arrive(&back, None);
    assert_eq!(canceled.status, 409, "{canceled:?}");
    assert_eq!(canceled.error_code(), "payment_canceled");
    assert_eq!(order(&daemon, &fan, &order_id).json()["state"], "canceled");

    let (failed_id, tid) = start(&daemon, &fan, "points-1000");
    let back = payer_presses(&kakao, &tid, "fail");
    assert!(back.contains("/api/payments/kakao/fail?"), "{back}");
    assert_eq!(arrive(&back, None).error_code(), "payment_failed");
    assert_eq!(order(&daemon, &fan, &failed_id).json()["state"], "failed");
    assert_eq!(balance(&daemon, &fan), 0);
    daemon.assert_ledger_balances();
}

#[test]
fn top_ups_refuse_strangers_unknown_products_and_unconfigured_boxes() {
    let (kakao, daemon, fan) = venue();
    let anonymous = send_json(
        "POST",
        &daemon.url("/api/payments/kakao/ready"),
        Some(&json!({"product_id": "points-1000"})),
        None,
    );
    assert_eq!(anonymous.status, 401);
    let unknown = ready(&daemon, &fan, "points-999999");
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.error_code(), "no_such_product");
    // A price in the request is not ours to take: the body has no such field.
    let priced = send_json(
        "POST",
        &daemon.url("/api/payments/kakao/ready"),
        Some(&json!({"product_id": "points-1000", "price_krw": 1})),
        Some(&fan),
    );
    assert_eq!(priced.status, 201, "{priced:?}");
    assert_eq!(kakao.calls("ready")[0].body["total_amount"], 1000);

    // A box without a secret key lists the catalog but sells nothing.
    let plain = Daemon::start("");
    let viewer = plain.add_user_token("fan", "viewer");
    let products = send_json("GET", &plain.url("/api/payments/products"), None, None);
    assert_eq!(products.json()["enabled"], false);
    let off = ready(&plain, &viewer, "points-1000");
    assert_eq!(off.status, 503);
    assert_eq!(off.error_code(), "payments_disabled");
}

#[test]
fn a_missing_secret_key_file_stops_the_daemon_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("commeowd.toml");
    std::fs::write(
        &config,
        "[kakao_pay]\nsecret_key_file = \"/nonexistent/kakao-secret\"\n",
    )
    .expect("config");
    let output = common::commeowd()
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args([
            "--http-listen",
            "127.0.0.1:0",
            "--rtmp-listen",
            "127.0.0.1:0",
        ])
        .output()
        .expect("run commeowd");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("kakao_pay.secret_key_file") && stderr.contains("/nonexistent"),
        "{stderr}"
    );
}
