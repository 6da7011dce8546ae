//! End to end: WebRTC viewers (WHEP) of a live push, with a `str0m` viewer on its own
//! loopback UDP socket: media, teardown, limits, B-frame sources, and hostile input.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

mod common;

use common::whep::{offer, post_offer, Viewer};
use common::{all_at_once, send_json_with, wait_until, Daemon, Push};
use std::time::Duration;

fn live(daemon: &Daemon, slug: &str) {
    assert!(
        wait_until(Duration::from_secs(30), || daemon.channel_live(slug)),
        "{slug} did not go live"
    );
}

fn base(daemon: &Daemon) -> String {
    daemon.url("").trim_end_matches('/').to_string()
}

#[test]
fn a_viewer_gets_the_stream_as_h264_and_opus_until_it_deletes_its_session() {
    let daemon = Daemon::start("");
    let key = daemon.add_channel("stage");
    let _push = Push::start(&daemon.rtmp_url(&key), 40, "320x240");
    live(&daemon, "stage");

    let viewer = Viewer::join(&base(&daemon), "stage").expect("joined");
    assert!(
        viewer.resource.starts_with("/whep/stage/"),
        "{}",
        viewer.resource
    );
    let got = viewer.wait_for(Duration::from_secs(10), |r| {
        r.video_frames >= 60 && r.audio_frames >= 50
    });
    assert!(got.connected, "{got:?}");
    assert!(got.video_frames >= 60 && got.audio_frames >= 50, "{got:?}");
    assert_eq!(got.video_codec.as_deref(), Some("H264"));
    assert_eq!(got.audio_codec.as_deref(), Some("Opus"));
    // The viewer starts at a keyframe that carries the parameter sets it needs.
    assert!(got.first_video_nals.starts_with(&[7, 8, 5]), "{got:?}");

    // DELETE ends the session: media stops, and the resource is gone.
    let deleted = send_json_with("DELETE", &daemon.url(&viewer.resource), None, None, &[]);
    assert_eq!(deleted.status, 200);
    assert!(wait_until(Duration::from_secs(5), || daemon
        .logged("WebRTC viewer left")));
    let at_delete = viewer.received();
    std::thread::sleep(Duration::from_millis(500));
    let later = viewer.received();
    assert!(
        later.video_frames <= at_delete.video_frames + 2,
        "media kept coming after DELETE: {at_delete:?} then {later:?}"
    );
    let again = send_json_with("DELETE", &daemon.url(&viewer.resource), None, None, &[]);
    assert_eq!(again.status, 404);
}

#[test]
fn past_the_viewer_limits_new_viewers_are_turned_to_hls() {
    let daemon =
        Daemon::start("[webrtc]\nport = 0\nmax_viewers = 8\nmax_viewers_per_channel = 1\n");
    let key = daemon.add_channel("stage");
    let _push = Push::start(&daemon.rtmp_url(&key), 40, "320x240");
    live(&daemon, "stage");

    let first = Viewer::join(&base(&daemon), "stage").expect("the first joins");
    let refused = Viewer::join(&base(&daemon), "stage")
        .err()
        .expect("the second is refused");
    assert_eq!(refused.status, 503);
    assert_eq!(refused.error_code(), "webrtc_full");
    assert!(refused.header("retry-after").is_some());
    send_json_with("DELETE", &daemon.url(&first.resource), None, None, &[]);
    let _next = Viewer::join(&base(&daemon), "stage").expect("a place freed by DELETE");

    // A channel that is not live has no WebRTC either.
    let (_, _, sdp, ..) = offer();
    let none = post_offer(&daemon.url("/whep/nobody"), &sdp);
    assert_eq!(none.status, 404);
}

#[test]
fn one_device_posting_offers_at_once_gets_its_few_places_and_no_more() {
    let daemon =
        Daemon::start("[webrtc]\nport = 0\nmax_viewers = 50\nmax_viewers_per_channel = 50\n");
    let key = daemon.add_channel("stage");
    let _push = Push::start(&daemon.rtmp_url(&key), 40, "320x240");
    live(&daemon, "stage");
    let url = daemon.url("/whep/stage");
    // 100 offers from one address, released at the same instant: a check-then-act race
    // on the count would let more than the per-address bound through.
    let statuses = all_at_once(100, move |_| {
        let (_, _, sdp, ..) = offer();
        post_offer(&url, &sdp).status
    });
    let created = statuses.iter().filter(|s| **s == 201).count();
    let full = statuses.iter().filter(|s| **s == 503).count();
    assert_eq!(created, 4, "{statuses:?}");
    assert_eq!(created + full, 100, "{statuses:?}");
}

#[test]
fn a_b_frame_source_goes_out_on_a_ladder_rung_or_not_at_all() {
    let bframes = [
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-bf",
        "2",
        "-g",
        "30",
        "-profile:v",
        "main",
    ];
    // Without the ladder: refused with words the streamer can act on.
    let daemon = Daemon::start("[transcode]\nenabled = false\n");
    let key = daemon.add_channel("stage");
    let _push = Push::start_with(&daemon.rtmp_url(&key), 30, "426x240", &bframes, true);
    live(&daemon, "stage");
    let (_, _, sdp, ..) = offer();
    let refused = post_offer(&daemon.url("/whep/stage"), &sdp);
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(refused.error_code(), "webrtc_unsuitable");
    assert!(refused.text().contains("B-frames"), "{}", refused.text());
    drop(daemon);

    // With it: the viewer gets a rung, which has no B-frames.
    let daemon = Daemon::start(
        "[transcode]\nenabled = true\nencoders = [\"libx264\"]\n\
         [[transcode.ladder]]\nname = \"144p\"\nheight = 144\nvideo_kbps = 200\n",
    );
    let key = daemon.add_channel("stage");
    let _push = Push::start_with(&daemon.rtmp_url(&key), 40, "426x240", &bframes, true);
    live(&daemon, "stage");
    // The rung starts at the source's next segment after its encoder's probe.
    let mut viewer = None;
    assert!(
        wait_until(Duration::from_secs(20), || {
            viewer = Viewer::join(&base(&daemon), "stage").ok();
            viewer.is_some()
        }),
        "no WebRTC session on the rung"
    );
    let viewer = viewer.expect("joined");
    let got = viewer.wait_for(Duration::from_secs(10), |r| r.video_frames >= 30);
    assert!(got.video_frames >= 30, "{got:?}");
    assert!(got.first_video_nals.starts_with(&[7, 8, 5]), "{got:?}");
    assert!(
        daemon.logged("variant=144p"),
        "the viewer was not given the rung"
    );
}

#[test]
fn garbage_on_the_port_and_malformed_offers_disturb_no_viewer() {
    let daemon = Daemon::start("");
    let key = daemon.add_channel("stage");
    let _push = Push::start(&daemon.rtmp_url(&key), 40, "320x240");
    live(&daemon, "stage");
    let viewer = Viewer::join(&base(&daemon), "stage").expect("joined");
    let before = viewer.wait_for(Duration::from_secs(10), |r| r.video_frames >= 30);
    assert!(before.video_frames >= 30, "{before:?}");

    // Every kind of datagram the port might meet: random bytes, a STUN request naming no
    // viewer, a DTLS record and RTP from nowhere, empty ones, a jumbo one.
    let garbage = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let port = daemon.webrtc_addr();
    let mut stun = vec![0x00, 0x01, 0x00, 0x10, 0x21, 0x12, 0xa4, 0x42];
    stun.extend_from_slice(&[9; 12]);
    stun.extend_from_slice(&[0x00, 0x06, 0x00, 0x0b]);
    stun.extend_from_slice(b"nobody:here\0");
    let mut seed = 0x2545_f491_u32;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed as u8
            })
            .collect()
    };
    for i in 0..3000 {
        let datagram = match i % 6 {
            0 => random(1 + i % 1400),
            1 => stun.clone(),
            2 => [vec![0x16, 0xfe, 0xfd], random(60)].concat(),
            3 => [vec![0x80, 0x60], random(200)].concat(),
            4 => Vec::new(),
            _ => random(9000),
        };
        let _ = garbage.send_to(&datagram, port);
    }
    // Malformed offers: clear 4xx answers.
    let url = daemon.url("/whep/stage");
    let cases: [(&str, &[u8], u16); 4] = [
        ("application/sdp", b"v=0\r\nthis is not sdp\r\n", 400),
        ("application/sdp", &[0xff, 0xfe, 0x00, 0x41], 400),
        ("application/json", b"{\"sdp\": \"v=0\"}", 415),
        (
            "application/sdp",
            b"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\n",
            400,
        ),
    ];
    for (content_type, body, status) in cases {
        let response = common::post_raw(&url, content_type, body);
        assert_eq!(response.status, status, "{}", response.text());
        assert!(!response.error_code().is_empty());
    }

    let after = viewer.wait_for(Duration::from_secs(10), |r| {
        r.video_frames >= before.video_frames + 60
    });
    assert!(
        after.video_frames >= before.video_frames + 60,
        "the viewer stalled: {before:?} then {after:?}"
    );
    assert!(!after.disconnected);
    let metrics = common::get(&daemon.url("/metrics")).text();
    let dropped = metrics
        .lines()
        .find(|l| l.starts_with("commeow_webrtc_datagrams_dropped_total{reason=\"unknown\"}"))
        .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(dropped >= 2000.0, "dropped {dropped}\n{metrics}");
}

#[test]
fn an_offer_whose_browser_never_connects_gives_its_place_back() {
    let daemon = Daemon::start("[webrtc]\nport = 0\nmax_viewers_per_channel = 1\n");
    let key = daemon.add_channel("stage");
    let _push = Push::start(&daemon.rtmp_url(&key), 60, "320x240");
    live(&daemon, "stage");
    // An offer answered, then nothing: no check ever reaches the port (a phone that left,
    // a network with no UDP path, or someone holding places).
    let (_, _, sdp, ..) = offer();
    let answered = post_offer(&daemon.url("/whep/stage"), &sdp);
    assert_eq!(answered.status, 201);
    let refused = Viewer::join(&base(&daemon), "stage")
        .err()
        .expect("the place is taken");
    assert_eq!(refused.error_code(), "webrtc_full");
    // Ten seconds on, the session ends by itself and the place is free.
    assert!(
        wait_until(Duration::from_secs(15), || daemon
            .logged("ended=NeverConnected")),
        "the silent session never ended"
    );
    let viewer = Viewer::join(&base(&daemon), "stage").expect("the place came back");
    let got = viewer.wait_for(Duration::from_secs(10), |r| r.video_frames >= 10);
    assert!(got.video_frames >= 10, "{got:?}");
}
