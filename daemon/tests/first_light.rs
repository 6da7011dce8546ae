//! End to end: OBS (the real ffmpeg) pushes RTMP, players (ffprobe, HTTP) get HLS.
// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

mod common;

use common::{ffprobe, poll_until, wait_until, Daemon, MediaPlaylist, Push};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Short linger so tests see media dropped; 2 s segments as shipped.
const CONFIG: &str = "[hls]\ntarget_duration = 2.0\nlinger_seconds = 3\n";
const LIVE_TIMEOUT: Duration = Duration::from_secs(20);

fn wait_for_segments(daemon: &Daemon, slug: &str, count: usize) -> MediaPlaylist {
    poll_until(
        LIVE_TIMEOUT,
        &format!("{slug}: {count} segments"),
        || daemon.media_playlist(slug),
        |p| p.segments.len() >= count,
    )
}

/// Whether the live playlist gains `count` segments after the newest one in `before`.
fn keeps_growing(daemon: &Daemon, slug: &str, before: &MediaPlaylist, count: usize) -> bool {
    let newest = before.segments.last().expect("segment").uri.clone();
    wait_until(LIVE_TIMEOUT, || {
        daemon.media_playlist(slug).is_some_and(|p| {
            !p.ended && p.segments.iter().skip_while(|s| s.uri != newest).count() > count
        })
    })
}

fn wait_for_end(daemon: &Daemon, slug: &str) -> MediaPlaylist {
    poll_until(
        Duration::from_secs(10),
        &format!("{slug}: the playlist ends"),
        || daemon.media_playlist(slug),
        |p| p.ended,
    )
}

#[test]
fn a_push_becomes_hls_that_players_can_read_and_ends_cleanly() {
    let daemon = Daemon::start(CONFIG);
    let key = daemon.add_channel("stage");
    assert!(!daemon.channel_live("stage"));
    let push = Push::start(&daemon.rtmp_url(&key), 7, "320x240");

    let live = wait_for_segments(&daemon, "stage", 2);
    assert!(daemon.channel_live("stage"));
    assert!(!live.ended, "a live playlist has no ENDLIST");
    assert_eq!(live.target_duration, Some(2));
    assert_eq!(live.media_sequence, Some(0));
    for segment in &live.segments {
        let date = segment
            .program_date_time
            .as_deref()
            .expect("EXT-X-PROGRAM-DATE-TIME on every segment");
        chrono::DateTime::parse_from_rfc3339(date).expect("PROGRAM-DATE-TIME is ISO 8601");
        assert!(
            segment.duration <= 2.5,
            "segment longer than its target: {segment:?}"
        );
    }

    let master = daemon.get("/hls/stage/master.m3u8");
    assert_eq!(master.status, 200);
    assert_eq!(
        master.header("content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    assert_eq!(master.header("cache-control"), Some("no-cache"));
    let master = master.text();
    assert!(master.starts_with("#EXTM3U\n"), "{master}");
    let stream_inf = master
        .lines()
        .find(|l| l.starts_with("#EXT-X-STREAM-INF:"))
        .expect("a variant");
    assert!(stream_inf.contains("BANDWIDTH="), "{stream_inf}");
    assert!(
        stream_inf.contains("CODECS=\"avc1.") && stream_inf.contains("mp4a.40.2"),
        "{stream_inf}"
    );
    assert!(stream_inf.contains("RESOLUTION=320x240"), "{stream_inf}");
    assert!(
        master.contains("\nll/index.m3u8\n"),
        "master offers LL-HLS: {master}"
    );
    let classic = daemon.get("/hls/stage/classic.m3u8").text();
    assert!(
        classic.contains("\nsource/index.m3u8\n"),
        "classic master offers TS: {classic}"
    );

    let segment = daemon.get(&format!("/hls/stage/source/{}", live.segments[0].uri));
    assert_eq!(segment.status, 200);
    assert_eq!(segment.header("content-type"), Some("video/mp2t"));
    assert!(segment
        .header("cache-control")
        .is_some_and(|c| c.contains("max-age")));
    assert_eq!(segment.body.first(), Some(&0x47), "MPEG-TS sync byte");
    assert_eq!(segment.body.len() % 188, 0, "whole TS packets");

    for master in ["master.m3u8", "classic.m3u8"] {
        let streams = ffprobe(&daemon.url(&format!("/hls/stage/{master}")));
        let kinds: Vec<_> = streams
            .iter()
            .map(|(t, c, _)| (t.as_str(), c.as_str()))
            .collect();
        let count = |kind| kinds.iter().filter(|k| **k == kind).count();
        assert_eq!(count(("video", "h264")), 1, "{master}: {streams:?}");
        assert_eq!(count(("audio", "aac")), 1, "{master}: {streams:?}");
    }

    let (status, stderr) = push.finish(Duration::from_secs(30));
    assert!(status.success(), "ffmpeg: {stderr}");
    let ended = wait_for_end(&daemon, "stage");
    let total = ended.total_duration();
    assert!(
        (total - 7.0).abs() <= 2.0,
        "segments add up to {total} s for a 7 s push: {ended:?}"
    );
    assert!(!daemon.channel_live("stage"), "an ended stream is not live");

    // No new player is offered it; its media is dropped after the linger period.
    assert_eq!(daemon.get("/hls/stage/master.m3u8").status, 404);
    let segment = format!("/hls/stage/source/{}", live.segments[0].uri);
    assert!(wait_until(Duration::from_secs(10), || daemon
        .get(&segment)
        .status
        == 404));
    let gone = daemon.get(&segment);
    let error: serde_json::Value = serde_json::from_slice(&gone.body).expect("JSON error");
    assert_eq!(error["error"]["code"], "not_found");
}

#[test]
fn a_wrong_key_is_refused_and_nothing_goes_live() {
    let daemon = Daemon::start(CONFIG);
    let _key = daemon.add_channel("stage");
    let push = Push::start(&daemon.rtmp_url("not-a-real-key"), 5, "160x120");
    let (status, _) = push.finish(Duration::from_secs(30));
    assert!(!status.success(), "ffmpeg must fail on a wrong key");
    assert!(daemon.logged("publish refused: unknown stream key"));
    assert!(daemon.logged("failures=1"));
    // Ten parallel connections from the same address right after: the key is reserved
    // before it is checked, so they are not all evaluated (at most one more, should they
    // straddle the one-second penalty).
    let burst: Vec<_> = (0..10)
        .map(|_| Push::start(&daemon.rtmp_url("another-wrong-key"), 5, "160x120"))
        .collect();
    for push in burst {
        let (status, _) = push.finish(Duration::from_secs(30));
        assert!(!status.success(), "ffmpeg must fail on a wrong key");
    }
    // Each connection waits out a short penalty once and then races for the one check;
    // ten processes starting on two cores may straddle a penalty or two.
    assert!(wait_until(Duration::from_secs(5), || daemon
        .log_count("too many wrong stream keys")
        >= 5));
    let evaluated = daemon.log_count("publish refused: unknown stream key");
    assert!(evaluated <= 5, "{evaluated} of 11 wrong keys were checked");
    assert!(!daemon.logged("not-a-real-key"), "keys are never logged");
    assert!(!daemon.channel_live("stage"));
    assert_eq!(daemon.get("/hls/stage/master.m3u8").status, 404);
}

#[test]
fn a_second_publisher_on_a_live_channel_is_refused_and_the_first_keeps_going() {
    let daemon = Daemon::start(CONFIG);
    let key = daemon.add_channel("stage");
    let _first = Push::start(&daemon.rtmp_url(&key), 30, "320x240");
    let before = wait_for_segments(&daemon, "stage", 1);

    let second = Push::start(&daemon.rtmp_url(&key), 5, "160x120");
    let (status, _) = second.finish(Duration::from_secs(30));
    assert!(!status.success(), "the second publisher must be refused");
    assert!(daemon.logged("channel is already live"));

    // The first stream is undisturbed: new segments keep coming, still 320 wide.
    assert!(
        keeps_growing(&daemon, "stage", &before, 3),
        "the first stream stopped growing"
    );
    let streams = ffprobe(&daemon.url("/hls/stage/master.m3u8"));
    assert!(
        streams
            .iter()
            .any(|(t, _, w)| t == "video" && *w == Some(320)),
        "{streams:?}"
    );
}

/// After the linger, a new push is a new broadcast: a new playlist from 0, and nothing of
/// the old one served. (A return within the linger continues the old one: see
/// `drop_and_return.rs`.)
#[test]
fn a_push_after_the_linger_is_a_new_broadcast_with_only_its_own_segments() {
    let daemon = Daemon::start(CONFIG);
    let key = daemon.add_channel("stage");
    let (status, _) =
        Push::start(&daemon.rtmp_url(&key), 5, "320x240").finish(Duration::from_secs(30));
    assert!(status.success());
    let old = wait_for_end(&daemon, "stage");
    let old_uris: HashSet<_> = old.segments.iter().map(|s| s.uri.clone()).collect();
    assert!(!old_uris.is_empty());
    assert!(wait_until(Duration::from_secs(10), || daemon
        .media_playlist("stage")
        .is_none()));

    let _again = Push::start(&daemon.rtmp_url(&key), 20, "320x240");
    let new = wait_for_segments(&daemon, "stage", 1);
    assert!(!new.ended);
    assert_eq!(
        new.media_sequence,
        Some(0),
        "a new broadcast starts a new playlist"
    );
    for segment in &new.segments {
        assert!(
            !old_uris.contains(&segment.uri),
            "old segment {} served in the new stream",
            segment.uri
        );
    }
    for uri in &old_uris {
        assert_eq!(
            daemon.get(&format!("/hls/stage/source/{uri}")).status,
            404,
            "old segment {uri} still served"
        );
    }
}

#[test]
fn sigterm_while_live_ends_the_stream_and_exits_cleanly() {
    let mut daemon = Daemon::start(CONFIG);
    let key = daemon.add_channel("stage");
    let push = Push::start(&daemon.rtmp_url(&key), 60, "320x240");
    wait_for_segments(&daemon, "stage", 1);

    let status = daemon
        .terminate()
        .expect("commeowd did not exit within 15 s of SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    // The log pipe may still hold the last lines after the process exited.
    assert!(wait_until(Duration::from_secs(5), || daemon
        .logged("shutdown complete")));
    // Shutdown phases, in order: signal, publishes end (playlists closed), store closed.
    let signal = daemon
        .log_position("SIGTERM received")
        .expect("signal logged");
    let stream_ended = daemon
        .log_position("stream ended")
        .expect("the pipeline closed its stream");
    let publish_ended = daemon.log_position("publish ended").expect("publish ended");
    let stopped = daemon
        .log_position("shutdown complete")
        .expect("shutdown finished");
    assert!(signal < stream_ended && stream_ended < publish_ended && publish_ended < stopped);
    // The publisher was disconnected rather than left hanging.
    let (status, _) = push.finish(Duration::from_secs(15));
    assert!(!status.success(), "ffmpeg should see its connection closed");
    // The store was closed cleanly and is usable.
    let list = daemon.cli(&["channel", "list", "--json"]);
    assert!(list.status.success());
    assert!(String::from_utf8_lossy(&list.stdout).contains("\"stage\""));
}

#[test]
fn a_codec_other_than_h264_is_refused_clearly_and_the_channel_stays_usable() {
    let daemon = Daemon::start(CONFIG);
    let key = daemon.add_channel("stage");
    // Sorenson H.263 (FLV's own codec) instead of H.264.
    let (status, _) = Push::start_with(
        &daemon.rtmp_url(&key),
        5,
        "160x120",
        &["-c:v", "flv1"],
        false,
    )
    .finish(Duration::from_secs(30));
    assert!(!status.success(), "an H.263 push must be refused");
    assert!(wait_until(Duration::from_secs(10), || daemon.logged("stream refused")));
    assert!(
        daemon.logged("Sorenson H.263"),
        "the refusal names the codec"
    );
    assert!(
        daemon.logged("send H.264"),
        "the refusal says what to send instead"
    );
    assert!(!daemon.channel_live("stage"));

    // The channel is free again for a proper push.
    let _push = Push::start(&daemon.rtmp_url(&key), 10, "160x120");
    wait_for_segments(&daemon, "stage", 1);
    assert!(daemon.channel_live("stage"));
}

/// Newer OBS and FFmpeg send HEVC and AV1 over Enhanced RTMP: refused at once, naming the
/// codec and saying to send H.264, and the channel stays usable.
#[test]
fn hevc_and_av1_over_enhanced_rtmp_are_refused_by_name() {
    let daemon = Daemon::start(CONFIG);
    let key = daemon.add_channel("stage");
    let encoders: [(&[&str], &str); 2] = [
        (&["-c:v", "libx265", "-preset", "ultrafast"], "hvc1"),
        (
            &["-c:v", "libaom-av1", "-cpu-used", "8", "-b:v", "200k"],
            "av01",
        ),
    ];
    for (video, fourcc) in encoders {
        let started = std::time::Instant::now();
        let (status, stderr) =
            Push::with_newer_ffmpeg(&daemon.rtmp_url(&key), 10, "160x120", video)
                .finish(Duration::from_secs(30));
        assert!(!status.success(), "{fourcc} must be refused");
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{fourcc}: refused at once, not at the end of the push"
        );
        assert!(
            stderr.contains("Server error")
                && stderr.contains(fourcc)
                && stderr.contains("send H.264"),
            "{fourcc}: the publisher reads why: {stderr}"
        );
        assert!(!daemon.channel_live("stage"));
    }
    let _push = Push::start(&daemon.rtmp_url(&key), 10, "160x120");
    wait_for_segments(&daemon, "stage", 1);
}

#[test]
fn after_kill_9_mid_stream_the_box_comes_back_with_its_channels_and_no_stale_stream() {
    let mut daemon = Daemon::start(CONFIG);
    let key = daemon.add_channel("stage");
    let push = Push::start(&daemon.rtmp_url(&key), 60, "160x120");
    wait_for_segments(&daemon, "stage", 1);

    daemon.crash_and_restart();
    drop(push);
    // The channel and its key survived; nothing of the killed stream is live or served.
    assert!(!daemon.channel_live("stage"));
    assert_eq!(daemon.get("/hls/stage/master.m3u8").status, 404);
    let list = daemon.cli(&["channel", "list", "--json"]);
    assert!(String::from_utf8_lossy(&list.stdout).contains("\"stage\""));
    // The same key publishes again at once.
    let _again = Push::start(&daemon.rtmp_url(&key), 20, "160x120");
    let fresh = wait_for_segments(&daemon, "stage", 1);
    assert_eq!(fresh.media_sequence, Some(0));
    assert!(daemon.channel_live("stage"));
}

#[test]
fn slow_and_half_open_http_clients_do_not_hold_up_players() {
    let daemon = Daemon::start(CONFIG);
    let key = daemon.add_channel("stage");
    let _push = Push::start(&daemon.rtmp_url(&key), 30, "320x240");
    let live = wait_for_segments(&daemon, "stage", 1);

    // 100 sockets that send half a request line and stop (slowloris) ...
    let mut idle: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut s = TcpStream::connect(daemon.http).expect("connect");
            s.write_all(b"GET /hls/stage/mas").expect("partial request");
            s
        })
        .collect();
    // ... and 20 that ask for a segment and never read the answer.
    let segment = format!(
        "GET /hls/stage/source/{} HTTP/1.1\r\nHost: x\r\n\r\n",
        live.segments[0].uri
    );
    for _ in 0..20 {
        let mut s = TcpStream::connect(daemon.http).expect("connect");
        s.write_all(segment.as_bytes()).expect("request");
        idle.push(s);
    }
    // Players meanwhile get playlists promptly, and the stream keeps growing.
    for _ in 0..20 {
        let started = std::time::Instant::now();
        assert_eq!(daemon.get("/hls/stage/ll/index.m3u8").status, 200);
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "playlist took {:?}",
            started.elapsed()
        );
    }
    assert!(
        keeps_growing(&daemon, "stage", &live, 2),
        "the stream stalled"
    );
    assert_eq!(daemon.get("/healthz").status, 200);
}

/// Issue 23: OBS's AV1 encoder on a custom server sends AV1 under the H.264 tag. The box
/// used to retry it at every keyframe forever while OBS showed a healthy stream. Now the
/// publish is refused within a few keyframes with an `onStatus` error, and no playlist is
/// served for it.
#[test]
fn an_unusable_video_configuration_is_refused_in_words() {
    use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
    use rml_rtmp::sessions::{
        ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult,
        PublishRequestType,
    };
    use rml_rtmp::time::RtmpTimestamp;

    let daemon = Daemon::start(CONFIG);
    let key = daemon.add_channel("stage");
    let mut socket = TcpStream::connect(daemon.rtmp).expect("connect");
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    // The client side of the handshake.
    let mut handshake = Handshake::new(PeerType::Client);
    let p0p1 = handshake.generate_outbound_p0_and_p1().expect("p0p1");
    socket.write_all(&p0p1).expect("write");
    let mut buffer = vec![0u8; 64 * 1024];
    let leftover = loop {
        let n = match socket.read(&mut buffer) {
            Ok(0) => panic!("closed during the handshake"),
            Ok(n) => n,
            Err(_) => continue,
        };
        match handshake.process_bytes(&buffer[..n]).expect("handshake") {
            HandshakeProcessResult::InProgress { response_bytes } => {
                socket.write_all(&response_bytes).expect("write");
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                socket.write_all(&response_bytes).expect("write");
                break remaining_bytes;
            }
        }
    };
    let (mut session, results) = ClientSession::new(ClientSessionConfig::new()).expect("session");
    let mut events = Vec::new();
    let handle = |socket: &mut TcpStream,
                  results: Vec<ClientSessionResult>,
                  events: &mut Vec<ClientSessionEvent>| {
        for result in results {
            match result {
                ClientSessionResult::OutboundResponse(packet) => {
                    let _ = socket.write_all(&packet.bytes);
                }
                ClientSessionResult::RaisedEvent(event) => events.push(event),
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
    };
    handle(&mut socket, results, &mut events);
    if !leftover.is_empty() {
        let results = session.handle_input(&leftover).expect("input");
        handle(&mut socket, results, &mut events);
    }
    let pump = |session: &mut ClientSession,
                socket: &mut TcpStream,
                events: &mut Vec<ClientSessionEvent>,
                buffer: &mut [u8]|
     -> bool {
        match socket.read(buffer) {
            Ok(0) => false,
            Ok(n) => {
                if let Ok(results) = session.handle_input(&buffer[..n]) {
                    handle(socket, results, events);
                }
                true
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                true
            }
            Err(_) => false,
        }
    };
    let connect = session.request_connection("live".into()).expect("connect");
    handle(&mut socket, vec![connect], &mut events);
    assert!(wait_until(Duration::from_secs(10), || {
        pump(&mut session, &mut socket, &mut events, &mut buffer);
        events
            .iter()
            .any(|e| matches!(e, ClientSessionEvent::ConnectionRequestAccepted))
    }));
    let publish = session
        .request_publishing(key, PublishRequestType::Live)
        .expect("publish");
    handle(&mut socket, vec![publish], &mut events);
    assert!(wait_until(Duration::from_secs(10), || {
        pump(&mut session, &mut socket, &mut events, &mut buffer);
        events
            .iter()
            .any(|e| matches!(e, ClientSessionEvent::PublishRequestAccepted))
    }));
    // An "AVC sequence header" whose record is not an AVCDecoderConfigurationRecord (AV1's
    // av1C, say), then keyframes, one every 200 ms.
    let header = bytes::Bytes::from_static(&[0x17, 0, 0, 0, 0, 0x81, 0x08, 0x0c, 0x00, 0x0a]);
    let started = std::time::Instant::now();
    let mut open = true;
    let mut n = 0u32;
    while open && started.elapsed() < Duration::from_secs(15) {
        let tag = if n == 0 {
            header.clone()
        } else {
            bytes::Bytes::from(vec![0x17, 1, 0, 0, 0, 0x12, 0x00, 0x0a, 0x0b, 0x00])
        };
        if let Ok(ClientSessionResult::OutboundResponse(packet)) =
            session.publish_video_data(tag, RtmpTimestamp::new(n * 200), false)
        {
            if socket.write_all(&packet.bytes).is_err() {
                break;
            }
        }
        n += 1;
        let until = std::time::Instant::now() + Duration::from_millis(200);
        while open && std::time::Instant::now() < until {
            open = pump(&mut session, &mut socket, &mut events, &mut buffer);
        }
        if events.iter().any(|e| {
            matches!(e, ClientSessionEvent::UnhandleableOnStatusCode { code } if code == "NetStream.Publish.Rejected")
        }) {
            break;
        }
    }
    assert!(
        events.iter().any(|e| matches!(
            e,
            ClientSessionEvent::UnhandleableOnStatusCode { code } if code == "NetStream.Publish.Rejected"
        )),
        "no onStatus error reached the publisher: {events:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "refused after {:?}",
        started.elapsed()
    );
    // The log line may land a moment after the publisher hears the refusal.
    assert!(wait_until(Duration::from_secs(5), || {
        daemon.logged("publish refused: unusable media")
            && daemon.logged("choose x264 or a hardware H.264 encoder")
    }));
    // The streamer's dashboard has the same words.
    let admin = daemon.add_user_token("boss", "admin");
    let notices = common::send_json(
        "GET",
        &daemon.url("/api/channels/stage/notices"),
        None,
        Some(&admin),
    )
    .json();
    assert!(
        notices["refused"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("H.264")),
        "{notices}"
    );
    assert!(!daemon.channel_live("stage"));
    assert_eq!(daemon.get("/hls/stage/ll/index.m3u8").status, 404);
    assert_eq!(daemon.get("/hls/stage/source/index.m3u8").status, 404);
}

/// MP3 audio (OBS never sends it, other tools do) is refused at once, and the publisher is
/// told why: ffmpeg prints the box's words ("Server error: …").
#[test]
fn mp3_audio_is_refused_and_the_publisher_is_told_why() {
    let daemon = Daemon::start(CONFIG);
    let key = daemon.add_channel("stage");
    let options = [
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "30",
        "-c:a",
        "libmp3lame",
        "-ar",
        "44100",
    ];
    let push = Push::start_with(&daemon.rtmp_url(&key), 10, "160x120", &options, true);
    let (status, said) = push.finish(Duration::from_secs(30));
    assert!(!status.success(), "ffmpeg must fail: {said}");
    assert!(said.contains("send AAC"), "ffmpeg was not told why: {said}");
    assert!(daemon.logged("stream refused"));
    assert!(!daemon.channel_live("stage"));
}
