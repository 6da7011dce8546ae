//! End to end: the transcoding ladder. A 1080p30 push (ffmpeg standing in for OBS) gives a
//! master playlist with the source, 720p and 480p; every variant's segments begin at the
//! same picture under the same sequence number (ffprobe reads each), and each rung's
//! segments decode with every frame there. No video hardware here: libx264 is what the
//! probe picks.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

mod common;

use common::{get, poll_until, Daemon, MediaPlaylist, Push};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

const LADDER_ON: &str = "[transcode]\nenabled = true\n";

/// A push of `size` at 30 fps and `bitrate`: x264 with a keyframe every 2 s, as the README
/// tells streamers.
fn push(daemon: &Daemon, key: &str, seconds: u32, size: &str, bitrate: &str) -> Push {
    Push::start_with(
        &daemon.rtmp_url(key),
        seconds,
        size,
        &[
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-g",
            "60",
            "-b:v",
            bitrate,
        ],
        true,
    )
}

/// `#EXT-X-STREAM-INF` attributes and URI of each variant in a master playlist.
fn variants(master: &str) -> Vec<(BTreeMap<String, String>, String)> {
    let mut out = Vec::new();
    let mut lines = master.lines();
    while let Some(line) = lines.next() {
        let Some(attributes) = line.strip_prefix("#EXT-X-STREAM-INF:") else {
            continue;
        };
        let mut map = BTreeMap::new();
        // Split on commas outside quotes.
        let (mut key, mut value, mut quoted, mut in_value) =
            (String::new(), String::new(), false, false);
        for c in attributes.chars().chain(std::iter::once(',')) {
            match c {
                '"' => quoted = !quoted,
                '=' if !quoted && !in_value => in_value = true,
                ',' if !quoted => {
                    map.insert(std::mem::take(&mut key), std::mem::take(&mut value));
                    in_value = false;
                }
                c if in_value => value.push(c),
                c => key.push(c),
            }
        }
        out.push((map, lines.next().expect("URI").to_string()));
    }
    out
}

/// The first video packet of a TS segment: (pts seconds, keyframe), and the number of
/// video frames decoded from it, with any decode errors.
fn probe_segment(bytes: &[u8], dir: &std::path::Path, name: &str) -> (f64, bool, u64, String) {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write segment");
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-count_frames",
            "-show_entries",
            "stream=nb_read_frames:packet=pts_time,flags",
            "-of",
            "json",
        ])
        .arg(&path)
        .output()
        .expect("ffprobe");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ffprobe json");
    let first = &json["packets"][0];
    let pts: f64 = first["pts_time"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("pts");
    let key = first["flags"].as_str().is_some_and(|f| f.starts_with('K'));
    let frames = json["streams"][0]["nb_read_frames"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("frames");
    (
        pts,
        key,
        frames,
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn a_1080p_push_gets_720p_and_480p_rungs_aligned_with_the_source() {
    let daemon = Daemon::start(LADDER_ON);
    let key = daemon.add_channel("stage");
    let pusher = push(&daemon, &key, 16, "1920x1080", "6M");

    // The master playlist offers all three once each rung has a segment.
    let master = poll_until(
        Duration::from_secs(20),
        "a master playlist with three variants",
        || {
            let r = get(&daemon.url("/hls/stage/classic.m3u8"));
            (r.status == 200).then(|| r.text())
        },
        |m| variants(m).len() == 3,
    );
    let offered = variants(&master);
    let sizes: Vec<&str> = offered
        .iter()
        .map(|(a, _)| a["RESOLUTION"].as_str())
        .collect();
    assert_eq!(sizes, ["1920x1080", "1280x720", "854x480"], "{master}");
    for (attributes, uri) in &offered {
        assert_eq!(attributes["FRAME-RATE"], "30.000", "{uri}");
        let codecs = &attributes["CODECS"];
        assert!(
            codecs.starts_with("avc1.") && codecs.ends_with(",mp4a.40.2"),
            "{codecs}"
        );
        let bandwidth: u64 = attributes["BANDWIDTH"].parse().expect("BANDWIDTH");
        let average: u64 = attributes["AVERAGE-BANDWIDTH"].parse().expect("AVERAGE");
        assert!(average <= bandwidth, "{uri}");
    }
    let bandwidth = |offered: &[(BTreeMap<String, String>, String)], i: usize| -> u64 {
        offered[i].0["BANDWIDTH"].parse().unwrap_or(0)
    };
    // Ranked right from the first segment (a rung declares what its encoder was asked
    // for until it has been measured).
    assert!(
        bandwidth(&offered, 0) > bandwidth(&offered, 1)
            && bandwidth(&offered, 1) > bandwidth(&offered, 2),
        "{master}"
    );
    let ll_master = get(&daemon.url("/hls/stage/master.m3u8")).text();
    let ll_uris: Vec<String> = variants(&ll_master).into_iter().map(|(_, u)| u).collect();
    assert_eq!(
        ll_uris,
        ["ll/index.m3u8", "720p/index.m3u8", "480p/index.m3u8"]
    );
    // Measured, later in the push: each rung near what it asks (2500 and 1000 kbps, with
    // AAC and the container on top; BANDWIDTH is the peak segment).
    let later = poll_until(
        Duration::from_secs(20),
        "a master playlist with measured rungs",
        || {
            let r = get(&daemon.url("/hls/stage/classic.m3u8"));
            (r.status == 200).then(|| variants(&r.text()))
        },
        |v| {
            let segments = get(&daemon.url("/hls/stage/480p-ts/index.m3u8")).text();
            v.len() == 3 && MediaPlaylist::parse(&segments).segments.len() >= 4
        },
    );
    // Each LL-HLS playlist reports the other renditions' live edges.
    let rung_ll = get(&daemon.url("/hls/stage/720p/index.m3u8")).text();
    for other in ["../ll/index.m3u8", "../480p/index.m3u8"] {
        assert!(
            rung_ll.contains(&format!(
                "#EXT-X-RENDITION-REPORT:URI=\"{other}\",LAST-MSN="
            )),
            "{rung_ll}"
        );
    }
    assert!(
        (2_200_000..4_200_000).contains(&bandwidth(&later, 1)),
        "{later:?}"
    );
    assert!(
        (900_000..2_000_000).contains(&bandwidth(&later, 2)),
        "{later:?}"
    );

    let (status, log) = pusher.finish(Duration::from_secs(40));
    assert!(status.success(), "{log}");
    // The playlists end (the linger passes only with the daemon's shutdown; read them now,
    // while the last segments are listed).
    let playlists: Vec<MediaPlaylist> = offered
        .iter()
        .map(|(_, uri)| {
            let r = get(&daemon.url(&format!("/hls/stage/{uri}")));
            MediaPlaylist::parse(&r.text())
        })
        .collect();
    let sequences = |p: &MediaPlaylist| -> Vec<u64> {
        let first = p.media_sequence.expect("media sequence");
        (first..first + p.segments.len() as u64).collect()
    };
    // Same numbers, same boundaries: every segment a rung lists, the source lists under the
    // same number with the same duration (a rung may start a segment later than the source).
    let source = &playlists[0];
    let source_sequences = sequences(source);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut checked = 0;
    for (rung, (_, uri)) in playlists.iter().zip(&offered).skip(1) {
        assert!(
            !rung.segments.iter().any(|s| s.uri.contains("GAP")),
            "{uri}"
        );
        for (sequence, segment) in sequences(rung).into_iter().zip(&rung.segments) {
            let index = source_sequences
                .iter()
                .position(|s| *s == sequence)
                .unwrap_or_else(|| panic!("{uri}: sequence {sequence} not in the source"));
            let twin = &source.segments[index];
            assert!(
                (twin.duration - segment.duration).abs() < 0.002,
                "{uri} #{sequence}: {} s against the source's {} s",
                segment.duration,
                twin.duration
            );
            // The same first picture, a keyframe in both, and every frame of the rung's.
            let base = |u: &str| u.rsplit_once('/').map_or("", |(b, _)| b).to_string();
            let fetch = |playlist_uri: &str, segment_uri: &str| {
                let url = daemon.url(&format!("/hls/stage/{}/{segment_uri}", base(playlist_uri)));
                let r = get(&url);
                assert_eq!(r.status, 200, "{url}");
                r.body
            };
            let theirs = fetch(&offered[0].1, &twin.uri);
            let ours = fetch(uri, &segment.uri);
            let (source_pts, source_key, _, _) = probe_segment(&theirs, dir.path(), "s.ts");
            let (pts, key, frames, errors) = probe_segment(&ours, dir.path(), "r.ts");
            assert!(
                (pts - source_pts).abs() < 0.002,
                "{uri} #{sequence}: {pts} vs {source_pts}"
            );
            assert!(key && source_key, "{uri} #{sequence}: not a keyframe");
            // The LL-HLS (fMP4) twins too: a player switching appends them by their decode
            // times (tfdt), so those must be the source's as well.
            let fmp4 = |dir: &str, ts_uri: &str| {
                let id = ts_uri.split('-').next().unwrap_or_default();
                let mut bytes = get(&daemon.url(&format!("/hls/stage/{dir}/{id}-init-0.mp4"))).body;
                let m4s = ts_uri.replace(".ts", ".m4s");
                bytes.extend(get(&daemon.url(&format!("/hls/stage/{dir}/{m4s}"))).body);
                bytes
            };
            let rung_dir = base(uri).trim_end_matches("-ts").to_string();
            let (source_ll, _, _, _) = probe_segment(&fmp4("ll", &twin.uri), dir.path(), "s.mp4");
            let (rung_ll, _, _, _) =
                probe_segment(&fmp4(&rung_dir, &segment.uri), dir.path(), "r.mp4");
            assert!(
                (source_ll - rung_ll).abs() < 0.002,
                "{rung_dir} #{sequence}: fMP4 at {rung_ll} s, the source's at {source_ll} s"
            );
            let expected = (segment.duration * 30.0).round() as u64;
            assert_eq!(frames, expected, "{uri} #{sequence}: frames decoded");
            assert!(errors.is_empty(), "{uri} #{sequence}: {errors}");
            checked += 1;
        }
    }
    assert!(checked >= 8, "only {checked} rung segments compared");
}

/// How late each source segment `from..from + count` was published: the moment a blocking
/// playlist request for it (`_HLS_msn`) was answered, minus the moment its media ended on
/// the ingest clock (its PROGRAM-DATE-TIME plus its duration). Milliseconds.
fn source_segment_lags(daemon: &Daemon, from: u64, count: u64) -> Vec<f64> {
    assert!(
        common::wait_until(Duration::from_secs(20), || daemon
            .ll_playlist("stage", "")
            .is_some()),
        "the push never went live"
    );
    (from..from + count)
        .map(|sequence| {
            let playlist = daemon
                .ll_playlist("stage", &format!("?_HLS_msn={sequence}"))
                .expect("playlist");
            let answered = chrono::Utc::now();
            let text = &playlist.text;
            // The segment's date and duration, from the full playlist text.
            let uri_end = format!("-{sequence}.m4s\n");
            let at = text.find(&uri_end).expect("segment listed");
            let before = &text[..at];
            let date = before
                .rfind("#EXT-X-PROGRAM-DATE-TIME:")
                .map(|i| &before[i + 25..])
                .and_then(|s| s.lines().next())
                .expect("date");
            let duration: f64 = before
                .rfind("#EXTINF:")
                .map(|i| &before[i + 8..])
                .and_then(|s| s.split(',').next())
                .and_then(|s| s.parse().ok())
                .expect("duration");
            let start = chrono::DateTime::parse_from_rfc3339(date).expect("date parses");
            let ended = start + chrono::Duration::microseconds((duration * 1e6) as i64);
            (answered - ended.with_timezone(&chrono::Utc))
                .num_microseconds()
                .unwrap_or(0) as f64
                / 1000.0
        })
        .collect()
}

fn worst(lags: &[f64]) -> f64 {
    lags.iter().copied().fold(f64::MIN, f64::max)
}

/// Overload: a rung whose encoder is too slow (a test-only setting: 50 ms a picture, two
/// thirds of real time) never slows the source: its segments are published as late as
/// with no ladder at all (worst of five within 20 ms), and the rung is shed: its playlist
/// ends, the master stops offering it, and the admin's status says why.
#[test]
fn a_rung_too_slow_for_real_time_is_shed_and_the_source_never_waits() {
    // Passthrough first, on the same machine, the same push.
    let passthrough = {
        let daemon = Daemon::start("[transcode]\nenabled = false\n");
        let key = daemon.add_channel("stage");
        let _push = push(&daemon, &key, 14, "1280x720", "3M");
        source_segment_lags(&daemon, 1, 5)
    };
    let daemon = Daemon::start(
        "[transcode]\nenabled = true\n\
         [[transcode.ladder]]\nname = \"slow\"\nheight = 360\nvideo_kbps = 500\ntest_slowdown_ms = 50\n",
    );
    let key = daemon.add_channel("stage");
    let admin = daemon.add_user_token("boss", "admin");
    let _push = push(&daemon, &key, 40, "1280x720", "3M");
    let loaded = source_segment_lags(&daemon, 1, 5);
    eprintln!("source segment lag ms, passthrough {passthrough:?}, with the slow rung {loaded:?}");
    assert!(
        worst(&loaded) - worst(&passthrough) <= 20.0,
        "the slow rung delayed the source: {loaded:?} against {passthrough:?}"
    );
    let shed = poll_until(
        Duration::from_secs(20),
        "the slow rung shed",
        || {
            let r = common::send_json_with(
                "GET",
                &daemon.url("/api/system/transcode"),
                None,
                Some(&admin),
                &[],
            );
            (r.status == 200).then(|| r.json()["live"]["stage"][0].clone())
        },
        |rung| rung["state"] == "shed",
    );
    assert!(
        shed["reason"]
            .as_str()
            .is_some_and(|r| r.contains("behind real time")),
        "{shed}"
    );
    let text = get(&daemon.url("/hls/stage/slow-ts/index.m3u8")).text();
    let slow = MediaPlaylist::parse(&text);
    assert!(slow.ended, "the shed rung's playlist ends");
    // What it skipped before it was shed is listed as gaps of real length, and no segment
    // claims the skipped time (each within the 2 s target's bound).
    assert!(
        slow.segments
            .iter()
            .all(|s| s.duration > 0.0 && s.duration < 2.5),
        "{text}"
    );
    eprintln!("the shed rung's playlist:\n{text}");
    let master = get(&daemon.url("/hls/stage/master.m3u8")).text();
    assert_eq!(
        variants(&master).len(),
        1,
        "only the source is offered: {master}"
    );
    // The source goes on.
    let more = source_segment_lags(&daemon, 7, 1);
    assert!(worst(&more) < 500.0, "{more:?}");
}

/// A wedged encoder call (a test-only setting: one picture takes 4 s) sheds its rung and
/// blocklists the encoder, and the daemon's watchdog never hears of it: the pings go on
/// every quarter period, and systemd's status line says which rung was shed.
#[test]
fn a_wedged_rung_is_shed_without_tripping_the_watchdog() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&path).expect("bind");
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let daemon = Daemon::start_with(
        "[transcode]\nenabled = true\n\
         [[transcode.ladder]]\nname = \"wedge\"\nheight = 360\nvideo_kbps = 500\ntest_slowdown_ms = 4000\n",
        common::Launch {
            env: vec![
                ("NOTIFY_SOCKET".into(), path.display().to_string()),
                ("WATCHDOG_USEC".into(), "2000000".into()),
            ],
            ..common::Launch::default()
        },
    );
    let key = daemon.add_channel("stage");
    let _push = push(&daemon, &key, 20, "1280x720", "3M");
    let started = std::time::Instant::now();
    let (mut pings, mut shed_status) = (Vec::new(), None);
    let mut buffer = [0u8; 4096];
    while started.elapsed() < Duration::from_secs(12) {
        if let Ok(n) = notify.recv(&mut buffer) {
            let text = String::from_utf8_lossy(&buffer[..n]).to_string();
            if text.contains("WATCHDOG=1") {
                pings.push(started.elapsed());
            }
            if text.contains("shed: stage wedge") {
                shed_status.get_or_insert(text);
            }
        }
    }
    let status = shed_status.expect("STATUS names the shed rung");
    assert!(status.contains("STATUS="), "{status}");
    let widest = pings.windows(2).map(|w| w[1] - w[0]).max().expect("pings");
    assert!(
        widest < Duration::from_secs(1),
        "a {widest:?} gap between watchdog pings"
    );
    assert!(daemon.logged("rung wedged"), "the wedge is logged");
    // The source is still served.
    let playlist = daemon.ll_playlist("stage", "").expect("source playlist");
    assert!(!playlist.ended);
}
