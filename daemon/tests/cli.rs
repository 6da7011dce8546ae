//! The operator's command line: help, config errors, channels.
// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

mod common;

use common::Daemon;
use std::time::Duration;

fn commeowd(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    common::commeowd()
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run commeowd")
}

#[test]
fn help_explains_every_flag_and_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = commeowd(&["--help"], dir.path());
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--config",
        "--data-dir",
        "--http-listen",
        "--rtmp-listen",
        "channel",
        "generate-config",
        "0.0.0.0:8080",
        "0.0.0.0:1935",
        "STATE_DIRECTORY",
    ] {
        assert!(
            help.contains(needle),
            "--help does not mention {needle}:\n{help}"
        );
    }
    let out = commeowd(&["channel", "add", "--help"], dir.path());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--json"));
}

#[test]
fn invalid_config_names_the_key_and_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    for (text, key) in [
        ("[http]\nlisten = \"not an address\"\n", "http.listen"),
        ("[hls]\ntarget_duration = -1\n", "hls.target_duration"),
        ("[rtmp]\nlisten_on = \"0.0.0.0:1935\"\n", "listen_on"),
        // check-config reads the fleet's TLS files as the relay would: none here.
        (
            "[fleet]\nenabled = true\nbroker = \"mqtts://fleet:8883\"\nbox_id = \"hall-1\"\n",
            "mqtts needs ca_file, cert_file and key_file",
        ),
        (
            "[fleet]\nenabled = true\nbroker = \"mqtts://fleet:8883\"\nbox_id = \"hall-1\"\n\
             ca_file = \"/nonexistent/ca.pem\"\ncert_file = \"/nonexistent/box.pem\"\n\
             key_file = \"/nonexistent/box.key\"\n",
            "/nonexistent/ca.pem",
        ),
    ] {
        std::fs::write(&path, text).expect("write");
        let out = commeowd(
            &["--config", path.to_str().expect("path"), "check-config"],
            dir.path(),
        );
        assert!(!out.status.success(), "{text} accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "error does not name {key}: {stderr}");
    }
    let out = commeowd(&["--config", "/nonexistent/commeowd.toml"], dir.path());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/commeowd.toml"));
}

#[test]
fn generated_config_is_valid_and_flags_override_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = commeowd(&["generate-config"], dir.path());
    assert!(out.status.success());
    let path = dir.path().join("commeowd.toml");
    std::fs::write(&path, &out.stdout).expect("write");
    let out = commeowd(
        &[
            "--config",
            path.to_str().expect("path"),
            "--data-dir",
            "elsewhere",
            "check-config",
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("elsewhere"));
}

#[test]
fn channel_add_prints_the_key_once_and_obs_settings() {
    let dir = tempfile::tempdir().expect("tempdir");
    // No --data-dir: the default ./data, relative to where the operator runs it.
    let out = commeowd(
        &[
            "--rtmp-listen",
            "127.0.0.1:1935",
            "channel",
            "add",
            "stage",
            "--title",
            "Main stage",
            "--json",
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["slug"], "stage");
    assert_eq!(json["rtmp_url"], "rtmp://127.0.0.1:1935/live");
    let key = json["stream_key"].as_str().expect("key").to_string();
    assert!(key.len() >= 32);
    assert!(
        dir.path().join("data/commeow.db").exists(),
        "default data dir is ./data"
    );

    let out = commeowd(&["channel", "add", "stage"], dir.path());
    assert!(!out.status.success(), "duplicate slug accepted");
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));

    let out = commeowd(&["channel", "add", "Bad Slug"], dir.path());
    assert!(!out.status.success());

    let out = commeowd(&["channel", "list"], dir.path());
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        list.contains("stage") && list.contains("Main stage"),
        "{list}"
    );
    assert!(!list.contains(&key), "list must never show a key");

    let out = commeowd(&["channel", "rotate-key", "stage", "--json"], dir.path());
    let rotated: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_ne!(rotated["stream_key"].as_str(), Some(key.as_str()));

    let out = commeowd(&["channel", "add", "plain"], dir.path());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Server:") && text.contains("/live") && text.contains("Stream Key:"),
        "{text}"
    );
}

/// A key rotated by the operator's CLI (another process) ends the publish using it, as
/// one rotated from the dashboard does: the daemon rechecks a live publish's key.
#[test]
fn rotating_a_key_from_the_cli_ends_the_live_push() {
    let daemon = Daemon::start("");
    let key = daemon.add_channel("stage");
    let live = common::Push::start(&daemon.rtmp_url(&key), 60, "160x120");
    assert!(common::wait_until(Duration::from_secs(20), || daemon.channel_live("stage")));
    let rotated = daemon.cli(&["channel", "rotate-key", "stage"]);
    assert!(rotated.status.success());
    let cut = std::time::Instant::now();
    assert!(
        common::wait_until(Duration::from_secs(10), || daemon
            .logged("publish ended: the stream key was rotated")),
        "the publish on the old key goes on"
    );
    let (status, _) = live.finish(Duration::from_secs(15));
    assert!(!status.success(), "ffmpeg was cut off");
    assert!(cut.elapsed() < Duration::from_secs(15));
    assert!(common::wait_until(Duration::from_secs(15), || !daemon.channel_live("stage")));
}

/// The operator's view of the encoder probe on a machine with no video hardware (CI):
/// every hardware encoder refused with libav's reason, libx264 chosen for each rung, and
/// the ladder left off by `auto` (software only) but on when the config says so.
#[test]
fn transcode_probe_reports_each_rejection_and_the_choice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let began = std::time::Instant::now();
    let out = commeowd(&["transcode", "probe", "--json"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        began.elapsed() < std::time::Duration::from_secs(4),
        "{:?}",
        began.elapsed()
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["configured"], "auto");
    assert_eq!(report["enabled"], false);
    assert!(report["why"]
        .as_str()
        .is_some_and(|w| w.contains("libx264")));
    let rungs = report["rungs"].as_array().expect("rungs");
    assert_eq!(rungs.len(), 2);
    for rung in rungs {
        assert_eq!(rung["encoder"], "libx264", "{rung}");
        let rejected = rung["rejected"].as_array().expect("rejected");
        let names: Vec<&str> = rejected
            .iter()
            .filter_map(|r| r["encoder"].as_str())
            .collect();
        assert_eq!(
            names,
            [
                "h264_v4l2m2m",
                "h264_vaapi",
                "h264_nvmpi",
                "h264_nvenc",
                "h264_qsv"
            ]
        );
        assert!(rejected
            .iter()
            .all(|r| r["reason"].as_str().is_some_and(|s| !s.is_empty())));
        assert!(
            rung["probe_ms"].as_u64().is_some_and(|ms| ms < 2000),
            "{rung}"
        );
    }
    assert_eq!(
        (rungs[0]["width"].as_u64(), rungs[0]["height"].as_u64()),
        (Some(1280), Some(720))
    );

    let config = dir.path().join("on.toml");
    std::fs::write(&config, "[transcode]\nenabled = true\n").expect("config");
    let out = commeowd(
        &[
            "--config",
            config.to_str().expect("path"),
            "transcode",
            "probe",
        ],
        dir.path(),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("Ladder: on"), "{text}");
    assert!(text.contains("rejected h264_nvenc:"), "{text}");
}
