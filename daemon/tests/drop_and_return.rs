//! End to end: a streamer's connection drops and comes back. Players left running (the
//! real ffmpeg as the HLS client, as mpv and many TVs use it) carry on by themselves, on
//! playlists whose numbers only ever grow, and no player starting after the return is
//! started on media from before the drop.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

mod common;

use common::{poll_until, wait_until, Daemon, MediaPlaylist, Push};
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The streamer may be away up to 6 s before the playlists end.
const CONFIG: &str = "[hls]\ntarget_duration = 2.0\nlinger_seconds = 6\n";

/// An HLS player: ffmpeg decoding the video of `url` in real time, counting frames.
struct Player {
    child: Child,
    frames: Arc<AtomicUsize>,
    reader: Option<std::thread::JoinHandle<String>>,
}

impl Player {
    fn start(url: &str) -> Player {
        let mut child = Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "info", "-i", url])
            .args(["-map", "0:v:0", "-vf", "showinfo", "-f", "null", "-"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ffmpeg as a player");
        let frames = Arc::new(AtomicUsize::new(0));
        let stderr = child.stderr.take().expect("stderr");
        let counted = frames.clone();
        let reader = std::thread::spawn(move || {
            let mut errors = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("Parsed_showinfo") && line.contains(" n:") {
                    counted.fetch_add(1, Ordering::Relaxed);
                } else if line.contains("rror") || line.contains("Opening") {
                    errors.push_str(&line);
                    errors.push('\n');
                }
            }
            errors
        });
        Player {
            child,
            frames,
            reader: Some(reader),
        }
    }

    fn frames(&self) -> usize {
        self.frames.load(Ordering::Relaxed)
    }

    /// Waits for the player to stop by itself: (frames decoded, what it said).
    fn wait(mut self, timeout: Duration) -> (usize, String) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait player") {
                let log = self
                    .reader
                    .take()
                    .and_then(|r| r.join().ok())
                    .unwrap_or_default();
                assert!(status.success(), "player failed: {log}");
                return (self.frames(), log);
            }
            assert!(
                Instant::now() < deadline,
                "the player did not stop within {timeout:?} of the end ({} frames)",
                self.frames()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Player {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn players_watching_through_a_drop_resume_by_themselves() {
    let daemon = Daemon::start(CONFIG);
    let key = daemon.add_channel("stage");
    let first = Push::start(&daemon.rtmp_url(&key), 6, "160x120");
    poll_until(
        Duration::from_secs(20),
        "the first push is live",
        || daemon.media_playlist("stage"),
        |p| !p.segments.is_empty(),
    );
    let classic = Player::start(&daemon.url("/hls/stage/source/index.m3u8"));
    let low_latency = Player::start(&daemon.url("/hls/stage/ll/index.m3u8"));
    assert!(wait_until(Duration::from_secs(10), || classic.frames() > 0
        && low_latency.frames() > 0));

    // The drop: the channel is not live, no new player is offered the old media, and the
    // playlists stay open for the players already on them.
    let (status, _) = first.finish(Duration::from_secs(30));
    assert!(status.success());
    assert!(wait_until(Duration::from_secs(5), || !daemon.channel_live("stage")));
    assert_eq!(daemon.get("/hls/stage/master.m3u8").status, 404);
    let before = daemon
        .media_playlist("stage")
        .expect("open during the drop");
    assert!(!before.ended, "no ENDLIST during the drop");
    let before_uris: HashSet<_> = before.segments.iter().map(|s| s.uri.clone()).collect();
    let last_before = before.media_sequence.expect("sequence") + before.segments.len() as u64 - 1;
    let frames_before = (classic.frames(), low_latency.frames());

    // The return, within the linger time: the same playlists carry on.
    let second = Push::start(&daemon.rtmp_url(&key), 8, "160x120");
    let returned: MediaPlaylist = poll_until(
        Duration::from_secs(20),
        "the return's first segment",
        || daemon.media_playlist("stage"),
        |p| p.segments.iter().any(|s| s.discontinuity),
    );
    assert!(!returned.ended);
    let at = returned
        .segments
        .iter()
        .position(|s| s.discontinuity)
        .expect("discontinuity");
    assert_eq!(
        returned.media_sequence.expect("sequence") + at as u64,
        last_before + 1,
        "numbers carry on: {returned:?}"
    );
    assert!(
        returned.segments[..at]
            .iter()
            .all(|s| before_uris.contains(&s.uri)),
        "the window slides on over the drop, so players sync: {returned:?}"
    );
    // New players are let in once where they start (the last three target durations)
    // holds only the return.
    assert!(wait_until(Duration::from_secs(20), || daemon.channel_live("stage")));
    assert_eq!(daemon.get("/hls/stage/master.m3u8").status, 200);
    let after = daemon.media_playlist("stage").expect("playlist");
    let mut from_end = 0.0;
    for segment in after.segments.iter().rev() {
        if from_end >= 6.0 {
            break;
        }
        assert!(
            !before_uris.contains(&segment.uri),
            "{} from before the drop where a new player starts: {after:?}",
            segment.uri
        );
        from_end += segment.duration;
    }
    let ll = poll_until(
        Duration::from_secs(10),
        "the LL playlist on the new timeline",
        || daemon.ll_playlist("stage", ""),
        |p| p.map.as_deref().is_some_and(|m| m.ends_with("-init-1.mp4")),
    );
    let map = ll.map.clone().expect("map");
    assert_eq!(daemon.get(&format!("/hls/stage/ll/{map}")).status, 200);
    assert!(ll.text.contains("#EXT-X-DISCONTINUITY\n"), "{}", ll.text);

    // The streamer stops for good: after the linger the playlists end, and the players
    // stop by themselves, having played both pushes.
    let (status, _) = second.finish(Duration::from_secs(30));
    assert!(status.success());
    for (name, player, before) in [
        ("classic", classic, frames_before.0),
        ("LL", low_latency, frames_before.1),
    ] {
        let (frames, log) = player.wait(Duration::from_secs(30));
        eprintln!("{name} player: {before} frames before the drop, {frames} in all");
        // 8 s at 30 fps after the drop; a player that stopped at the drop has none of it.
        assert!(
            frames >= before + 200,
            "{name}: {frames} frames in all, {before} before the drop: {log}"
        );
    }
    let ended = daemon.media_playlist("stage").expect("ended playlist");
    assert!(ended.ended);
}
