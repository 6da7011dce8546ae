//! `/metrics` from a live box: every metric family the operator relies on is there with
//! the values the box's state says, `promtool check metrics` (Debian's Prometheus) finds
//! the text well-formed, and a real Prometheus server scrapes it. (Who may scrape from the
//! LAN, the token rule, is unit-tested in `http/metrics.rs`: every client here is loopback.)

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

mod common;

use common::{get, poll_until, send_json_with, Daemon, Push};
use serde_json::json;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The value of the sample `name{labels}` (labels as printed), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[test]
fn a_live_box_exports_its_state_and_promtool_and_prometheus_read_it() {
    let daemon = Daemon::start("[hls]\ntarget_duration = 1.0\n");
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
    let _push = Push::start(&daemon.rtmp_url(&key), 60, "320x240");
    poll_until(
        Duration::from_secs(30),
        "the channel is live",
        || Some(daemon.channel_live("stage")),
        |live| *live,
    );
    let fan = daemon.add_user_token("fan", "viewer");
    daemon.cli(&["wallet", "grant", "fan", "1000", "--reason", "metrics"]);
    let donated = send_json_with(
        "POST",
        &daemon.url("/api/channels/stage/donations"),
        Some(&json!({"amount": 300, "message": "hi"})),
        Some(&fan),
        &[("idempotency-key", "m1")],
    );
    assert_eq!(donated.status, 201, "{donated:?}");
    let mut chat = daemon.chat("stage", Some(&fan)).expect("chat");
    chat.hello();
    chat.send(json!({"type": "chat", "text": "hello"}));
    chat.next_of("chat", Duration::from_secs(5));

    let text = poll_until(
        Duration::from_secs(10),
        "the metrics show frames and a viewer",
        || Some(get(&daemon.url("/metrics")).text()),
        |t| {
            sample(t, r#"commeow_channel_viewers{channel="stage"}"#) == Some(1.0)
                && sample(t, r#"commeow_ingest_video_frames_total{channel="stage"}"#)
                    .is_some_and(|n| n > 30.0)
        },
    );
    for (series, check) in [
        (
            r#"commeow_ingest_bitrate_kbps{channel="stage"}"#,
            (0.0, 50_000.0),
        ),
        (
            r#"commeow_ingest_audio_frames_total{channel="stage"}"#,
            (1.0, 1e9),
        ),
        (
            r#"commeow_hls_part_age_seconds{channel="stage"}"#,
            (0.0, 3.0),
        ),
        ("commeow_donations_total", (1.0, 1.0)),
        ("commeow_donation_points_total", (300.0, 300.0)),
        ("commeow_chat_messages_total", (1.0, 1.0)),
        ("commeow_chat_viewers", (1.0, 1.0)),
        ("commeow_hls_held_requests_max", (1024.0, 1024.0)),
        ("commeow_hls_held_requests", (0.0, 1024.0)),
        ("commeow_outbox_depth", (1.0, 1e6)),
        ("commeow_store_commit_seconds_count", (1.0, 1e9)),
        ("commeow_store_group_commit_writes_count", (1.0, 1e9)),
        (r#"commeow_task_busy_seconds{task="store"}"#, (0.0, 5.0)),
        ("commeow_process_open_fds", (5.0, 10_000.0)),
        ("commeow_process_resident_memory_bytes", (1e6, 1e10)),
        // Page caches and statements: something, and within the caches' bounds (42 MB).
        ("commeow_store_sqlite_memory_bytes", (10_000.0, 44e6)),
        ("commeow_process_cpu_seconds", (0.0, 1e6)),
        ("commeow_disk_free_bytes", (1.0, 1e15)),
    ] {
        let value = sample(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
        assert!(
            (check.0..=check.1).contains(&value),
            "{series} = {value}, expected {check:?}"
        );
    }
    assert!(text.contains("# TYPE commeow_store_commit_seconds histogram"));

    // Debian's promtool finds the exposition well-formed.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus; .ci/setup-debian does)");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let checked = promtool.wait_with_output().expect("promtool");
    assert!(
        checked.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // A real Prometheus scrapes the box (loopback, as a Prometheus on the box would).
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: commeow\n    static_configs:\n      - targets: ['{}']\n",
            daemon.http
        ),
    )
    .expect("config");
    let mut prometheus = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus");
    // (None until Prometheus listens.)
    let query = |q: &str| {
        let url = format!(
            "http://127.0.0.1:{port}/api/v1/query?query={}",
            q.replace('{', "%7B")
                .replace('}', "%7D")
                .replace('"', "%22")
                .replace('=', "%3D")
        );
        common::try_send_json_with("GET", &url, None, None, &[]).map(|r| r.json())
    };
    let scraped = poll_until(
        Duration::from_secs(30),
        "Prometheus scrapes the box",
        || query(r#"commeow_channel_viewers{channel="stage"}"#),
        |answer| answer["data"]["result"][0]["value"][1] == "1",
    );
    assert_eq!(scraped["status"], "success");
    let up = query(r#"up{job="commeow"}"#).expect("Prometheus answers");
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");
    let _ = prometheus.kill();
    let _ = prometheus.wait();
}
