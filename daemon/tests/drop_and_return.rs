//! End to end: a streamer's connection drops and comes back. Players left running (the
//! real ffmpeg, mpv, and GStreamer's playbin3 and playbin) carry on by themselves, on
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

/// Which player.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// The ffmpeg CLI (libavformat's HLS demuxer, as in many TVs).
    Ffmpeg,
    /// mpv (the same demuxer, its own player).
    Mpv,
    /// GStreamer's `playbin3` (hlsdemux2).
    Playbin3,
    /// GStreamer's `playbin` (the older hlsdemux; MPEG-TS, see README).
    Playbin,
}

/// An HLS player decoding the video of `url` in real time, counting the frames it shows.
struct Player {
    kind: Kind,
    child: Child,
    frames: Arc<AtomicUsize>,
    reader: Option<std::thread::JoinHandle<String>>,
}

impl Player {
    fn start(kind: Kind, url: &str) -> Player {
        let mut command = match kind {
            Kind::Ffmpeg => {
                let mut c = Command::new("ffmpeg");
                c.args(["-hide_banner", "-nostdin", "-loglevel", "info", "-i", url])
                    .args(["-map", "0:v:0", "-vf", "showinfo", "-f", "null", "-"]);
                c
            }
            Kind::Mpv => {
                let mut c = Command::new("mpv");
                c.args(["--no-config", "--vo=null", "--ao=null", "--idle=no"])
                    .args([
                        "--vf=lavfi=[showinfo]",
                        "--msg-level=all=warn,ffmpeg=v",
                        url,
                    ]);
                c
            }
            Kind::Playbin3 | Kind::Playbin => {
                let element = if matches!(kind, Kind::Playbin3) {
                    "playbin3"
                } else {
                    "playbin"
                };
                let mut c = Command::new("gst-launch-1.0");
                c.args(["-v", element, &format!("uri={url}")]).args([
                    "video-sink=fakesink name=v sync=true silent=false",
                    "audio-sink=fakesink sync=true",
                ]);
                c
            }
        };
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {kind:?} (.ci/setup-debian installs it): {e}"));
        let frames = Arc::new(AtomicUsize::new(0));
        // ffmpeg and mpv print frames to stderr, gst-launch to stdout: read both.
        let readers: Vec<Box<dyn std::io::Read + Send>> = vec![
            Box::new(child.stdout.take().expect("stdout")),
            Box::new(child.stderr.take().expect("stderr")),
        ];
        let counted = frames.clone();
        let reader = std::thread::spawn(move || {
            let (lines, receive) = std::sync::mpsc::channel();
            for pipe in readers {
                let lines = lines.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                        let _ = lines.send(line);
                    }
                });
            }
            drop(lines);
            let mut errors = String::new();
            for line in receive {
                let frame = (line.contains("showinfo") && line.contains(" n:"))
                    || (line.contains("(v:sink)") && line.contains("chain"));
                if frame {
                    counted.fetch_add(1, Ordering::Relaxed);
                } else if line.to_lowercase().contains("error") {
                    errors.push_str(&line);
                    errors.push('\n');
                }
            }
            errors
        });
        Player {
            kind,
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
                assert!(status.success(), "{:?} failed: {log}", self.kind);
                return (self.frames(), log);
            }
            assert!(
                Instant::now() < deadline,
                "{:?} did not stop within {timeout:?} of the end ({} frames)",
                self.kind,
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
    let first = Push::start(&daemon.rtmp_url(&key), 9, "160x120");
    // Two segments: GStreamer 1.22's playbin3 joining a playlist of one segment cannot
    // match its next reload to it and stalls (README, "Players").
    poll_until(
        Duration::from_secs(20),
        "the first push is live",
        || daemon.media_playlist("stage"),
        |p| p.segments.len() >= 2,
    );
    // Each on what it plays best (README): ffmpeg on both packagings.
    let players = [
        ("ffmpeg, TS", Kind::Ffmpeg, "/hls/stage/classic.m3u8"),
        ("ffmpeg, LL-HLS", Kind::Ffmpeg, "/hls/stage/master.m3u8"),
        ("mpv, LL-HLS", Kind::Mpv, "/hls/stage/master.m3u8"),
        ("playbin3, LL-HLS", Kind::Playbin3, "/hls/stage/master.m3u8"),
        ("playbin, TS", Kind::Playbin, "/hls/stage/classic.m3u8"),
    ]
    .map(|(name, kind, path)| (name, Player::start(kind, &daemon.url(path))));
    assert!(
        wait_until(Duration::from_secs(15), || players
            .iter()
            .all(|(_, p)| p.frames() > 0)),
        "every player shows the stream: {:?}",
        players
            .iter()
            .map(|(n, p)| (n, p.frames()))
            .collect::<Vec<_>>()
    );

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
    let frames_before: Vec<usize> = players.iter().map(|(_, p)| p.frames()).collect();

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
    for ((name, player), before) in players.into_iter().zip(frames_before) {
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
