//! End to end: Low-Latency HLS (RFC 8216bis) as hls.js and Safari use it.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

mod common;

use common::{ffprobe, get_with, poll_until, wait_until, Daemon, LlPlaylist, Push};
use std::time::{Duration, Instant};

/// 1 s segments and an 8-segment window, so delta updates (CAN-SKIP-UNTIL = 6 target
/// durations) have something to skip within a short test; the shipped part target.
const CONFIG: &str =
    "[hls]\ntarget_duration = 1.0\npart_target = 0.334\nwindow_segments = 8\nlinger_seconds = 2\n";

fn wait_for_ll(daemon: &Daemon, slug: &str, segments: usize) -> LlPlaylist {
    poll_until(
        Duration::from_secs(30),
        &format!("{slug}: {segments} LL segments"),
        || daemon.ll_playlist(slug, ""),
        |p| p.segments.len() + p.skipped >= segments,
    )
}

#[test]
fn the_ll_playlist_follows_rfc8216bis_and_its_media_is_fmp4() {
    let daemon = Daemon::start(CONFIG);
    let key = daemon.add_channel("stage");
    let _push = Push::start(&daemon.rtmp_url(&key), 30, "320x240");
    let p = wait_for_ll(&daemon, "stage", 3);

    // Parts, hints and blocking reload need version 6; only a delta update (EXT-X-SKIP)
    // needs 9.
    assert_eq!(p.version, Some(6));
    assert_eq!(p.part_target, 0.334);
    let control = &p.server_control;
    assert!(control.contains("CAN-BLOCK-RELOAD=YES"), "{control}");
    let hold_back: f64 = control
        .split(',')
        .find_map(|kv| kv.strip_prefix("PART-HOLD-BACK="))
        .expect("PART-HOLD-BACK")
        .parse()
        .expect("number");
    assert!(
        hold_back >= 3.0 * p.part_target - 1e-9,
        "PART-HOLD-BACK {hold_back} < 3 x PART-TARGET"
    );
    let skip_until: f64 = control
        .split(',')
        .find_map(|kv| kv.strip_prefix("CAN-SKIP-UNTIL="))
        .expect("CAN-SKIP-UNTIL")
        .parse()
        .expect("number");
    assert!(
        skip_until >= 6.0 * p.target_duration,
        "CAN-SKIP-UNTIL {skip_until} < 6 x TARGETDURATION"
    );
    assert_eq!(
        p.dates,
        p.segments.len() + usize::from(!p.open_parts.is_empty()),
        "PROGRAM-DATE-TIME on every segment:\n{}",
        p.text
    );

    for part in p.all_parts() {
        assert!(
            part.duration <= p.part_target + 1e-9,
            "part longer than PART-TARGET: {part:?}"
        );
    }
    for (sequence, duration, _, parts) in &p.segments {
        if parts.is_empty() {
            continue; // parts of older segments may be left out
        }
        assert!(
            parts[0].independent,
            "segment {sequence} starts with an independent part"
        );
        let sum: f64 = parts.iter().map(|x| x.duration).sum();
        assert!(
            (sum - duration).abs() < 0.01,
            "segment {sequence}: parts add to {sum}, EXTINF {duration}"
        );
    }
    let hint = p
        .preload_hint
        .clone()
        .expect("EXT-X-PRELOAD-HINT while live");
    let (sequence, index) = p.newest_part().expect("a part");
    let next_in_segment = format!("-{sequence}.{}.m4s", index + 1);
    let next_segment = format!("-{}.0.m4s", sequence + 1);
    assert!(
        hint.ends_with(&next_in_segment) || hint.ends_with(&next_segment),
        "hint {hint} is not the next part after {sequence}.{index}"
    );

    // The init segment, a part and a whole segment are fMP4, cacheable.
    let init = daemon.get(&format!(
        "/hls/stage/ll/{}",
        p.map.as_deref().expect("EXT-X-MAP")
    ));
    assert_eq!(init.status, 200);
    assert_eq!(&init.body[4..8], b"ftyp");
    assert_eq!(init.header("content-type"), Some("video/mp4"));
    let (_, _, segment_uri, parts) = p
        .segments
        .iter()
        .rev()
        .find(|s| !s.3.is_empty())
        .expect("a segment with parts");
    let part = daemon.get(&format!("/hls/stage/ll/{}", parts[0].uri));
    assert_eq!(part.status, 200);
    assert_eq!(&part.body[4..8], b"moof", "a part is one fMP4 fragment");
    assert!(part
        .header("cache-control")
        .is_some_and(|c| c.contains("max-age")));
    let whole = daemon.get(&format!("/hls/stage/ll/{segment_uri}"));
    let mut joined = Vec::new();
    for part in parts {
        joined.extend(daemon.get(&format!("/hls/stage/ll/{}", part.uri)).body);
    }
    assert_eq!(whole.body, joined, "a segment is its parts, in order");

    // Playlists are gzipped for clients that accept it; media is not.
    let url = daemon.url("/hls/stage/ll/index.m3u8");
    let zipped = get_with(&url, &[("accept-encoding", "gzip")]);
    assert_eq!(zipped.header("content-encoding"), Some("gzip"));
    assert_eq!(zipped.header("cache-control"), Some("no-cache"));
    assert_eq!(&zipped.body[..2], &[0x1f, 0x8b]);
    let part_url = daemon.url(&format!("/hls/stage/ll/{}", parts[0].uri));
    assert_eq!(
        get_with(&part_url, &[("accept-encoding", "gzip")]).header("content-encoding"),
        None
    );

    // A player that knows nothing of LL-HLS still plays it.
    let streams = ffprobe(&daemon.url("/hls/stage/master.m3u8"));
    assert!(
        streams
            .iter()
            .any(|(t, c, w)| t == "video" && c == "h264" && *w == Some(320)),
        "{streams:?}"
    );
}

#[test]
fn a_blocking_reload_returns_when_the_part_appears_and_rejects_bad_requests() {
    let daemon = Daemon::start(CONFIG);
    let key = daemon.add_channel("stage");
    let _push = Push::start(&daemon.rtmp_url(&key), 30, "320x240");
    let p = wait_for_ll(&daemon, "stage", 1);
    let (sequence, index) = p.newest_part().expect("a part");

    // Ask for the part after the newest: held until it exists, then answered with it.
    let next = index + 1;
    let started = Instant::now();
    let held = daemon.get(&format!(
        "/hls/stage/ll/index.m3u8?_HLS_msn={sequence}&_HLS_part={next}"
    ));
    let waited = started.elapsed();
    assert_eq!(held.status, 200);
    let answer = LlPlaylist::parse(&held.text());
    let (s, i) = answer.newest_part().expect("a part");
    assert!(
        (s, i) >= (sequence, next) || s > sequence,
        "before:\n{}\nanswer:\n{}\nanswer's newest part {s}.{i} is older than {sequence}.{next}",
        p.text,
        held.text()
    );
    assert!(
        waited < Duration::from_secs(2),
        "held {waited:?} for a part due within ~0.33 s"
    );

    // _HLS_msn alone waits for the whole segment.
    let whole = daemon.get(&format!(
        "/hls/stage/ll/index.m3u8?_HLS_msn={}",
        sequence + 1
    ));
    assert_eq!(whole.status, 200);
    let answer = LlPlaylist::parse(&whole.text());
    assert!(
        answer.segments.iter().any(|s| s.0 == sequence + 1),
        "segment {} not complete in the answer",
        sequence + 1
    );

    // Bad requests are answered at once.
    for (query, why) in [
        ("?_HLS_part=1", "_HLS_part without _HLS_msn"),
        (
            &format!("?_HLS_msn={}", sequence + 50) as &str,
            "too far ahead",
        ),
        ("?_HLS_msn=abc", "not a number"),
        ("?_HLS_skip=MAYBE", "bad skip"),
    ] {
        let started = Instant::now();
        let response = daemon.get(&format!("/hls/stage/ll/index.m3u8{query}"));
        assert_eq!(response.status, 400, "{why}: {}", response.text());
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{why} was held"
        );
        let error: serde_json::Value = serde_json::from_slice(&response.body).expect("JSON error");
        assert_eq!(error["error"]["code"], "bad_request");
    }

    // The hinted part, requested before it exists, is held and then served.
    let p = daemon.ll_playlist("stage", "").expect("playlist");
    let hint = p.preload_hint.expect("hint");
    let part = daemon.get(&format!("/hls/stage/ll/{hint}"));
    assert_eq!(part.status, 200, "the hinted part arrives");
    assert_eq!(&part.body[4..8], b"moof");
}

#[test]
fn a_held_request_gives_up_with_503_when_the_stream_stalls() {
    let daemon = Daemon::start(CONFIG);
    let key = daemon.add_channel("stage");
    let push = Push::start(&daemon.rtmp_url(&key), 60, "160x120");
    let p = wait_for_ll(&daemon, "stage", 1);
    // Freeze the publisher: connected, sending nothing.
    let pid = nix::unistd::Pid::from_raw(push.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
    let (sequence, _) = p.newest_part().expect("a part");
    let started = Instant::now();
    let response = daemon.get(&format!(
        "/hls/stage/ll/index.m3u8?_HLS_msn={}",
        sequence + 2
    ));
    let waited = started.elapsed();
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
    assert_eq!(response.status, 503, "{}", response.text());
    // Three target durations (1 s each here), and not much more.
    assert!(
        waited >= Duration::from_millis(2900) && waited < Duration::from_secs(6),
        "held {waited:?}"
    );
}

#[test]
fn delta_updates_skip_old_segments() {
    let daemon = Daemon::start(CONFIG);
    let key = daemon.add_channel("stage");
    let _push = Push::start(&daemon.rtmp_url(&key), 30, "160x120");
    // The LL playlist keeps 8 segments (8 s); CAN-SKIP-UNTIL is 6 s.
    let full = wait_for_ll(&daemon, "stage", 8);
    let delta = daemon
        .ll_playlist("stage", "?_HLS_skip=YES")
        .expect("delta");
    assert!(delta.skipped >= 1, "nothing skipped:\n{}", delta.text);
    assert_eq!(
        delta.media_sequence,
        full.media_sequence.max(delta.media_sequence)
    );
    assert!(delta.text.len() < full.text.len());
    let listed: f64 = delta.segments.iter().map(|s| s.1).sum();
    assert!(
        listed <= 6.0 + 1.1,
        "a delta keeps about CAN-SKIP-UNTIL of segments, not {listed} s"
    );
    assert!(delta.server_control.contains("CAN-SKIP-UNTIL"));
    assert_eq!(delta.version, Some(9));
    let v2 = daemon
        .ll_playlist("stage", "?_HLS_skip=v2")
        .expect("delta v2");
    assert!(
        v2.text.contains(",RECENTLY-REMOVED-DATERANGES=\"\""),
        "{}",
        v2.text
    );
}

/// OBS's Simple mode: keyframes every 8.33 s and at scene cuts. TARGETDURATION stays the
/// configured 2 s for the whole stream (RFC 8216: it must not change), every segment
/// rounds to at most that, parts come on time, and each keyframe, the scene cut's too,
/// starts an INDEPENDENT part.
#[test]
fn obs_default_keyframes_keep_the_target_duration_and_parts_on_time() {
    let daemon =
        Daemon::start("[hls]\ntarget_duration = 2.0\npart_target = 0.334\nlinger_seconds = 2\n");
    let key = daemon.add_channel("stage");
    let push = Push::like_obs_simple_mode(&daemon.rtmp_url(&key), 16, "160x120", 5);
    let first = wait_for_ll(&daemon, "stage", 1);
    // Parts keep coming about three a second though keyframes are 8 s apart.
    let count = |p: &LlPlaylist| p.all_parts().count() + p.skipped * 100;
    let before = count(&first);
    let started = Instant::now();
    assert!(wait_until(Duration::from_secs(3), || daemon
        .ll_playlist("stage", "")
        .is_some_and(|p| count(&p) >= before + 4)));
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "4 parts took {:?}",
        started.elapsed()
    );
    // Every playlist until the end: the same target, segments within it.
    let mut seen = std::collections::BTreeMap::new();
    let mut independent = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    let ended = loop {
        assert!(Instant::now() < deadline, "the stream never ended");
        let p = daemon
            .ll_playlist("stage", "")
            .expect("LL playlist while it lingers");
        if p.ended {
            break p;
        }
        assert_eq!(p.target_duration, 2.0, "{}", p.text);
        let classic = daemon.media_playlist("stage").expect("classic playlist");
        assert_eq!(classic.target_duration, Some(2));
        for segment in &classic.segments {
            assert!(segment.duration.round() <= 2.0, "{segment:?}");
        }
        for (sequence, duration, _, _) in &p.segments {
            assert!(
                duration.round() <= 2.0,
                "segment {sequence} lasts {duration}"
            );
            seen.insert(*sequence, *duration);
        }
        for part in p.all_parts() {
            assert!(part.duration <= p.part_target + 1e-9, "{part:?}");
            if part.independent {
                independent.insert(part.uri.clone());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let total: f64 = seen.values().sum();
    assert!(total > 14.0, "16 s pushed, {total} s segmented: {seen:?}");
    // Keyframes at 0 s, the scene cut at 5 s, and 250 frames later at 13.3 s.
    assert!(
        (3..=5).contains(&independent.len()),
        "independent parts: {independent:?}"
    );
    let (status, _) = push.finish(Duration::from_secs(30));
    assert!(status.success());

    // The end: ENDLIST, no preload hint, a held request answers at once.
    assert!(
        ended.preload_hint.is_none(),
        "no preload hint after the end"
    );
    let started = Instant::now();
    let held = daemon.get(&format!(
        "/hls/stage/ll/index.m3u8?_HLS_msn={}&_HLS_part=0",
        ended.media_sequence + ended.segments.len() as u64
    ));
    assert_eq!(held.status, 200);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "an ended stream holds no request"
    );
}

/// RFC 8216bis: `_HLS_skip` on an ended playlist is ignored (the full playlist, with its
/// ENDLIST, comes back), and `_HLS_msn` more than two past the last complete segment is
/// refused at once, whatever the segment being built.
#[test]
fn an_ended_playlist_is_never_a_delta_and_too_far_counts_complete_segments() {
    let daemon = Daemon::start(CONFIG);
    let key = daemon.add_channel("stage");
    let push = Push::start(&daemon.rtmp_url(&key), 9, "160x120");
    let live = wait_for_ll(&daemon, "stage", 8);
    let last_complete = live.media_sequence + live.segments.len() as u64 + live.skipped as u64 - 1;
    let far = get_with(
        &daemon.url(&format!(
            "/hls/stage/ll/index.m3u8?_HLS_msn={}",
            last_complete + 3
        )),
        &[],
    );
    assert_eq!(far.status, 400, "{far:?}");
    let (status, _) = push.finish(Duration::from_secs(30));
    assert!(status.success());
    let ended = poll_until(
        Duration::from_secs(10),
        "the playlist ends",
        || daemon.ll_playlist("stage", ""),
        |p| p.ended,
    );
    let asked = daemon
        .ll_playlist("stage", "?_HLS_skip=YES")
        .expect("playlist");
    assert!(asked.ended && asked.skipped == 0, "{}", asked.text);
    assert_eq!(asked.text, ended.text);
}

/// A fresh stream is offered to LL-HLS players with its first whole segment, never with
/// parts alone (hls.js takes such a playlist for empty and asks again seconds later), and
/// classic players get it at the same moment.
#[test]
fn a_fresh_stream_is_offered_with_its_first_segment_never_with_parts_alone() {
    let daemon = Daemon::start("[hls]\ntarget_duration = 2.0\npart_target = 0.2\n");
    let key = daemon.add_channel("stage");
    let _push = Push::start_with(
        &daemon.rtmp_url(&key),
        20,
        "320x240",
        &[
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-g",
            "60",
        ],
        true,
    );
    // Asked every 50 ms from the push on: the first playlist served already has a segment
    // (with parts alone it would be served for the 2 s the first segment takes).
    let p = poll_until(
        Duration::from_secs(20),
        "the LL-HLS playlist",
        || daemon.ll_playlist("stage", ""),
        |p| {
            assert!(
                !p.segments.is_empty(),
                "offered with parts alone:\n{}",
                p.text
            );
            true
        },
    );
    let (sequence, _, _, parts) = &p.segments[0];
    assert_eq!(*sequence, 0, "{}", p.text);
    assert!(parts[0].independent, "{}", p.text);
    assert!(daemon.channel_live("stage"));
    assert_eq!(daemon.get("/hls/stage/master.m3u8").status, 200);
    assert_eq!(daemon.get("/hls/stage/classic.m3u8").status, 200);
    // What an LL-HLS player fetches to start is there: the map and the first part.
    let map = p.map.as_deref().expect("EXT-X-MAP");
    let init = daemon.get(&format!("/hls/stage/ll/{map}"));
    assert_eq!(init.status, 200);
    assert_eq!(&init.body[4..8], b"ftyp");
    let part = daemon.get(&format!("/hls/stage/ll/{}", parts[0].uri));
    assert_eq!(part.status, 200);
    assert!(
        part.body.windows(4).any(|w| w == b"moof"),
        "not an fMP4 fragment"
    );
}
