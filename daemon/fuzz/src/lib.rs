//! Fuzz targets: every parser of commeowd that takes bytes from the network or a file, fed
//! as the daemon feeds it, with the daemon's own functions.
//!
//! Each target is a plain function of the input bytes. `src/bin/` wraps each for AFL++
//! (`cargo afl`, see `daemon/fuzz/run`); `tests/replay.rs` runs each over its seed corpus
//! and over every input a fuzzer ever found a fault with (`findings/<target>/`), so a fixed
//! fault stays fixed. A target panics only where the daemon would: that is the finding.

use bytes::Bytes;
use commeow::chat::{self, Author, Room, Viewer};
use commeow::config::{ChatConfig, Config};
use commeow::hls::request::PlaylistRequest;
use commeow::hls::segmenter::{Part, Segment, SegmentStart};
use commeow::hls::{Broadcasts, Packaged};
use commeow::ingest::flv::{self, AudioTag, VideoTag};
use commeow::media::codec;
use commeow::store::Role;
use fleet_proto::Envelope;
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A target: one input in, a panic for a finding.
pub type Target = fn(&[u8]);

/// The targets by name, for the replay tests and the run script.
pub const TARGETS: &[(&str, Target)] = &[
    ("rtmp", rtmp),
    ("codec_config", codec_config),
    ("hls_request", hls_request),
    ("chat_frame", chat_frame),
    ("json_body", json_body),
    ("config_file", config_file),
    ("whep_offer", whep_offer),
    ("webrtc_datagram", webrtc_datagram),
];

/// RTMP chunks after the handshake, as a publisher's socket delivers them: rml_rtmp's
/// session reads them (a panic in it contained as `ingest` contains it: the connection
/// ends, the daemon goes on), connect and publish are accepted as `ingest` accepts a good
/// key, and every audio and video message goes through `ingest::flv` and the codec
/// configuration readers the broadcast's health uses. The input is fed in 64-byte reads:
/// a publisher waits for each command's answer, so the daemon sees `connect` accepted
/// before `publish` arrives (one 4 KB read would hand rml_rtmp both before the accept);
/// chunks split across reads are exercised as well.
pub fn rtmp(data: &[u8]) {
    rtmp_messages(data);
}

/// What [`rtmp`] got through to the FLV readers: the seeds' test checks they reach media.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reached {
    pub publishes: usize,
    pub video_configs: usize,
    pub audio_configs: usize,
    pub frames: usize,
}

/// [`rtmp`], counting what reached the FLV readers.
pub fn rtmp_messages(data: &[u8]) -> Reached {
    let mut reached = Reached::default();
    let Ok((mut session, _)) = ServerSession::new(ServerSessionConfig::new()) else {
        return reached;
    };
    for read in data.chunks(64) {
        let results = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            session.handle_input(read)
        })) {
            Ok(Ok(results)) => results,
            // A session error or a contained parser panic: the daemon drops the connection.
            Ok(Err(_)) | Err(_) => return reached,
        };
        for result in results {
            let ServerSessionResult::RaisedEvent(event) = result else {
                continue;
            };
            match event {
                ServerSessionEvent::ConnectionRequested { request_id, .. }
                    if session.accept_request(request_id).is_err() =>
                {
                    return reached;
                }
                ServerSessionEvent::PublishStreamRequested { request_id, .. } => {
                    reached.publishes += 1;
                    if session.accept_request(request_id).is_err() {
                        return reached;
                    }
                }
                ServerSessionEvent::VideoDataReceived { data, .. } => match video(&data) {
                    Some(true) => reached.video_configs += 1,
                    Some(false) => reached.frames += 1,
                    None => {}
                },
                ServerSessionEvent::AudioDataReceived { data, .. } => match audio(&data) {
                    Some(true) => reached.audio_configs += 1,
                    Some(false) => reached.frames += 1,
                    None => {}
                },
                _ => {}
            }
        }
    }
    reached
}

/// A video message read; `Some(true)` for a configuration, `Some(false)` for a frame.
fn video(body: &Bytes) -> Option<bool> {
    match flv::parse_video(body).ok()? {
        VideoTag::Config(config) => {
            avc_config(&config);
            Some(true)
        }
        VideoTag::Frame { .. } => Some(false),
        VideoTag::Ignored => None,
    }
}

/// An audio message read; `Some(true)` for a configuration, `Some(false)` for a frame.
fn audio(body: &Bytes) -> Option<bool> {
    match flv::parse_audio(body).ok()? {
        AudioTag::Config(config) => {
            aac_config(&config);
            Some(true)
        }
        AudioTag::Frame(_) => Some(false),
    }
}

fn avc_config(avcc: &[u8]) {
    let _ = codec::avc_codec_string(avcc);
    let _ = codec::avc_dimensions(avcc);
}

fn aac_config(asc: &[u8]) {
    let _ = codec::parse_aac_config(asc);
    let _ = codec::aac_codec_string(asc);
}

/// A codec configuration as OBS sends it, without the RTMP around it: the first byte says
/// which (even: an AVCDecoderConfigurationRecord with its SPS, odd: an AAC
/// AudioSpecificConfig), the rest is the record. Also the FLV tag readers on the whole
/// input, as a tag body.
pub fn codec_config(data: &[u8]) {
    let Some((&which, record)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        avc_config(record);
    } else {
        aac_config(record);
    }
    let body = Bytes::copy_from_slice(data);
    video(&body);
    audio(&body);
}

/// A player's request for a file of a live LL-HLS and classic broadcast: the input is the
/// part of the URL after `/hls/stage/<packaging>/` (file name, `?`, query; `$` stands for
/// the broadcast's id in a file name), decoded by
/// axum's `Query` as the route decodes it, then answered as `http::hls` answers it against
/// a broadcast with a few segments and an open one: the playlist request read and judged
/// (`hls::request`), a playlist rendered (delta updates too), or an init segment, a
/// segment or a part looked up by name.
pub fn hls_request(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(uri) = format!("/hls/stage/ll/{text}").parse::<axum::http::Uri>() else {
        return;
    };
    let file = uri.path().rsplit('/').next().unwrap_or_default();
    let query = axum::extract::Query::<HashMap<String, String>>::try_from_uri(&uri)
        .map(|q| q.0)
        .unwrap_or_default();
    // Built once: a broadcast renders and compresses its playlists as segments arrive,
    // which would be most of each run; the requests only read it.
    static BROADCAST: std::sync::OnceLock<Arc<commeow::hls::Broadcast>> =
        std::sync::OnceLock::new();
    let source = BROADCAST.get_or_init(broadcast).source();
    for packaged in source.packagings() {
        // File names begin with the broadcast's random id, which a fuzzer cannot guess:
        // `$` in the input stands for it.
        let name = packaged.segment_name(0);
        let id = name.split('-').next().unwrap_or_default();
        answer(packaged, &file.replace('$', id), &query);
    }
}

fn answer(packaged: &Packaged, file: &str, query: &HashMap<String, String>) {
    if file == "index.m3u8" {
        let Ok(request) = PlaylistRequest::parse(query) else {
            return;
        };
        if packaged.check_reach(&request).is_ok() {
            if let Some(msn) = request.msn {
                let _ = packaged.has(msn, request.part);
            }
            let _ = packaged.media_playlist();
            let _ = packaged.delta_playlist();
            let _ = packaged.delta_v2_playlist();
        }
        return;
    }
    if let Some(timeline) = packaged.parse_init_name(file) {
        let _ = packaged.init(timeline);
        return;
    }
    if let Some((sequence, part)) = packaged.parse_media_name(file) {
        match part {
            Some(index) => {
                let _ = packaged.next_part() == Some((sequence, index));
                let _ = packaged.part(sequence, index);
            }
            None => {
                let _ = packaged.segment(sequence).map(|s| s.len());
            }
        }
    }
}

/// A broadcast on `stage` with three whole segments of three parts and an open one.
fn broadcast() -> Arc<commeow::hls::Broadcast> {
    let broadcasts = Broadcasts::new(3, Duration::from_secs(2), Duration::from_millis(667));
    let Ok(broadcast) = broadcasts.begin("stage") else {
        unreachable!("a new set of broadcasts has no live channel");
    };
    let source = broadcast.source();
    let part = || Part {
        data: Bytes::from_static(&[0; 64]),
        duration: Duration::from_millis(667),
        independent: true,
    };
    source.set_init(0, Bytes::from_static(b"init"));
    for sequence in 0..4u64 {
        let start = SegmentStart {
            sequence,
            program_date_time: chrono::Utc::now(),
            discontinuity: false,
            timeline: 0,
        };
        for _ in 0..3 {
            source.push_part(start, part());
        }
        if sequence < 3 {
            source.close_segment(
                Segment {
                    sequence,
                    duration: Duration::from_secs(2),
                    program_date_time: start.program_date_time,
                    discontinuity: false,
                    timeline: 0,
                    parts: vec![part(), part(), part()],
                    gap: false,
                },
                None,
            );
        }
    }
    broadcast
}

/// One WebSocket text frame from a chat client (binary frames are refused before any
/// parsing, and the socket layer only delivers valid UTF-8): read as `http::chat` reads
/// it, and a chat message posted to a room as a viewer's. A posted message must reach the
/// room's feed as a JSON frame carrying the cleaned text: what other phones parse.
pub fn chat_frame(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(frame) = serde_json::from_str::<chat::frames::Inbound>(text) else {
        return;
    };
    let chat::frames::Inbound::Chat { text } = frame else {
        return;
    };
    let limits = Arc::new(ChatConfig::default());
    let room = Arc::new(Room::new(
        "stage".into(),
        1,
        Some(1),
        &[],
        limits.clone(),
        Arc::new(AtomicU64::new(1)),
    ));
    let mut membership = room.join(Viewer::Device(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let author = Author {
        id: 2,
        username: "fan".into(),
        nickname: "Fan".into(),
        role: Role::Viewer,
    };
    let Ok(_) = room.post(&author, &text, Instant::now()) else {
        return;
    };
    let Ok(sent) = membership.feed.try_recv() else {
        panic!("a posted message did not reach the room's feed");
    };
    let sent: serde_json::Value = match serde_json::from_str(sent.as_str()) {
        Ok(sent) => sent,
        Err(e) => panic!("the room sent a frame that is not JSON: {e}"),
    };
    let cleaned = chat::clean_text(&text, limits.max_chars).unwrap_or_default();
    assert_eq!(sent["text"].as_str(), Some(cleaned.as_str()));
}

/// The fleet messages a box or central reads off the broker, named by their topic.
const FLEET_KINDS: &[&str] = &[
    "Ack",
    "Desired",
    "Command",
    "EventsBatch",
    "Status",
    "Reported",
    "CommandResult",
];

/// A JSON body from the network: the first byte picks what it is sent as (one of the API's
/// request bodies, parsed as its route's extractor parses it, or one of the fleet's
/// messages, read as the box or central reads it off the broker for box `hall-1`); every
/// string in it then goes through the text rules names and messages meet (usernames,
/// nicknames, channel titles, chat and donation messages).
pub fn json_body(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let kinds = commeow::http::BODY_KINDS.len() + FLEET_KINDS.len();
    let which = usize::from(which) % kinds;
    match commeow::http::BODY_KINDS.get(which) {
        Some(kind) => {
            if commeow::http::parse_body(kind, body).is_none() {
                panic!("{kind} is listed but not parsed");
            }
        }
        None => fleet_message(FLEET_KINDS[which - commeow::http::BODY_KINDS.len()], body),
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    let mut strings = Vec::new();
    collect_strings(&value, &mut strings, 0);
    for text in strings {
        let _ = commeow::store::normalize_username(text);
        let _ = commeow::store::validate_nickname(text);
        let _ = commeow::text::check_name(text);
        let _ = chat::clean_text(text, 200);
    }
}

fn fleet_message(kind: &str, body: &[u8]) {
    let Ok(hall) = fleet_proto::BoxId::new("hall-1") else {
        unreachable!("hall-1 is a box id");
    };
    let _ = match kind {
        "Ack" => fleet_proto::Ack::read(body, &hall).map(drop),
        "Desired" => fleet_proto::Desired::read(body, &hall).map(drop),
        "Command" => fleet_proto::Command::read(body, &hall).map(drop),
        "EventsBatch" => fleet_proto::EventsBatch::read(body, &hall).map(drop),
        "Status" => fleet_proto::Status::read(body, &hall).map(drop),
        "Reported" => fleet_proto::Reported::read(body, &hall).map(drop),
        _ => fleet_proto::CommandResult::read(body, &hall).map(drop),
    };
    if let Ok(topic) = std::str::from_utf8(body) {
        let _ = fleet_proto::Topic::parse(topic);
    }
}

/// The strings of a JSON value, to a depth of 64 (serde_json's own limit is 128).
fn collect_strings<'a>(value: &'a serde_json::Value, out: &mut Vec<&'a str>, depth: usize) {
    if depth > 64 {
        return;
    }
    match value {
        serde_json::Value::String(s) => out.push(s),
        serde_json::Value::Array(items) => {
            for item in items {
                collect_strings(item, out, depth + 1);
            }
        }
        serde_json::Value::Object(map) => {
            for (key, item) in map {
                out.push(key);
                collect_strings(item, out, depth + 1);
            }
        }
        _ => {}
    }
}

/// A config file (`/etc/commeowd/config.toml` or the console's drop-in): read and checked
/// as `commeowd check-config` and startup do. Refusal is fine; a panic is not.
pub fn config_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = Config::from_toml(text, std::path::Path::new("fuzz.toml")) {
        let _ = config.validate();
    }
}

/// The box's address in the WebRTC targets' sessions, and the viewer's (the candidate in
/// the datagram target's offer).
const BOX: ([u8; 4], u16) = ([127, 0, 0, 1], 8189);
const VIEWER: ([u8; 4], u16) = ([127, 0, 0, 1], 50000);

/// A WHEP offer from anyone, answered as `POST /whep/<slug>` answers it
/// (`webrtc::answer_offer`: str0m's SDP parser and negotiation, then the box's choice of
/// tracks), for a Constrained Baseline source.
pub fn whep_offer(data: &[u8]) {
    let Ok(offer) = std::str::from_utf8(data) else {
        return;
    };
    let _ = commeow::webrtc::answer_offer(
        offer,
        &[std::net::SocketAddr::from(BOX)],
        0x42e01f,
        box_certificate(),
    );
}

/// The box's certificate, made once as the box makes it at start.
fn box_certificate() -> &'static str0m::config::DtlsCert {
    static CERT: std::sync::OnceLock<str0m::config::DtlsCert> = std::sync::OnceLock::new();
    CERT.get_or_init(|| {
        commeow::webrtc::certificate().unwrap_or_else(|e| panic!("the box's certificate: {e}"))
    })
}

/// A datagram on the WebRTC port: routed as the port routes it (the ICE username of a
/// STUN check), then handed to a session that answered a browser's offer as a viewer's
/// task hands it: parsed as STUN, DTLS, RTP or RTCP, accepted or not, fed in, and the
/// session's output drained. It comes from the offer's candidate, so the session takes
/// it as the viewer's.
pub fn webrtc_datagram(data: &[u8]) {
    use str0m::net::{Protocol, Receive};
    use str0m::{Input, Output};
    let _ = commeow::webrtc::socket::viewer_ufrag(data);
    let Ok(mut answered) = commeow::webrtc::answer_offer(
        VIEWER_OFFER,
        &[std::net::SocketAddr::from(BOX)],
        0x42e01f,
        box_certificate(),
    ) else {
        panic!("the datagram target's own offer was refused");
    };
    let rtc = &mut answered.rtc;
    let Ok(receive) = Receive::new(
        Protocol::Udp,
        std::net::SocketAddr::from(VIEWER),
        std::net::SocketAddr::from(BOX),
        data,
    ) else {
        return;
    };
    let input = Input::Receive(Instant::now(), receive);
    if !rtc.accepts(&input) || rtc.handle_input(input).is_err() {
        return;
    }
    for _ in 0..64 {
        match rtc.poll_output() {
            Ok(Output::Timeout(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// A browser's offer (str0m's, receiving video and audio) with a host candidate at
/// [`VIEWER`].
const VIEWER_OFFER: &str = include_str!("../corpus/whep_offer/str0m-recvonly.sdp");
