//! The web app as the daemon serves it: every page path answers the app with a content
//! security policy that forbids inline script, assets are compressed and revalidated, API
//! paths stay JSON, and the channel list carries what the list page shows.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

mod common;

use common::{get, get_with, send_json, Daemon};

#[test]
fn every_page_path_is_the_app_under_a_strict_content_security_policy() {
    let daemon = Daemon::start("");
    for path in ["/", "/c/stage", "/login", "/dashboard", "/payments/o123"] {
        let page = get(&daemon.url(path));
        assert_eq!(page.status, 200, "{path}");
        assert!(page.text().contains("/assets/app.js"), "{path}");
        assert!(page
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/html")));
        let policy = page.header("content-security-policy").expect("CSP");
        assert!(policy.contains("script-src 'self';"), "{policy}");
        assert!(!policy.contains("unsafe-inline"), "{policy}");
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
        assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    }
    // The page itself carries no inline script.
    let html = get(&daemon.url("/")).text();
    assert!(
        !html.contains("<script>") && !html.contains("onload="),
        "{html}"
    );
    // The page names its icon, so browsers do not ask for `/favicon.ico`.
    assert!(html.contains("/assets/icon.svg"), "{html}");
    let icon = get(&daemon.url("/assets/icon.svg"));
    assert_eq!(icon.status, 200);
    assert_eq!(icon.header("content-type"), Some("image/svg+xml"));
    // API and media paths stay JSON 404s.
    for path in [
        "/api/nothing",
        "/hls/none/x.m3u8",
        "/assets/nothing.js",
        "/favicon.ico",
    ] {
        let missing = get(&daemon.url(path));
        assert_eq!(missing.status, 404, "{path}");
        assert_eq!(missing.error_code(), "not_found", "{path}");
    }
}

#[test]
fn assets_are_compressed_and_revalidated() {
    let daemon = Daemon::start("");
    let plain = get_with(
        &daemon.url("/assets/hls.light.min.js"),
        &[("accept-encoding", "identity")],
    );
    assert_eq!(plain.status, 200);
    let gzip = get_with(
        &daemon.url("/assets/hls.light.min.js"),
        &[("accept-encoding", "gzip")],
    );
    assert_eq!(gzip.header("content-encoding"), Some("gzip"));
    assert!(
        gzip.body.len() * 2 < plain.body.len(),
        "gzip {} of {}",
        gzip.body.len(),
        plain.body.len()
    );
    let etag = plain.header("etag").expect("etag").to_string();
    let again = get_with(
        &daemon.url("/assets/hls.light.min.js"),
        &[("if-none-match", &etag)],
    );
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
}

#[test]
fn the_channel_list_names_the_streamer_and_obs_settings_use_the_host_reached() {
    let daemon = Daemon::start("");
    let streamer = daemon.add_streamer_channel("djay", "stage");
    daemon.add_channel("lobby");
    let list = get(&daemon.url("/api/channels")).json();
    let stage = list
        .as_array()
        .expect("list")
        .iter()
        .find(|c| c["slug"] == "stage")
        .expect("stage")
        .clone();
    assert_eq!(stage["streamer"]["nickname"], "djay");
    assert_eq!(stage["viewers"], 0);
    let lobby = list
        .as_array()
        .expect("list")
        .iter()
        .find(|c| c["slug"] == "lobby")
        .expect("lobby")
        .clone();
    assert!(lobby["streamer"].is_null(), "an operator's channel");
    let obs = send_json("GET", &daemon.url("/api/obs"), None, Some(&streamer)).json();
    assert_eq!(
        obs["server"],
        format!("rtmp://127.0.0.1:{}/live", daemon.rtmp.port())
    );
    assert_eq!(obs["keyframe_interval_seconds"], 2.0);
}
