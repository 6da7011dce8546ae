//! A WHEP viewer for tests: `str0m` on the offering side, on a loopback UDP socket of its
//! own, counting what it receives on a thread.

use super::Response;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

/// What the viewer has received.
#[derive(Debug, Default, Clone)]
pub struct Received {
    pub connected: bool,
    pub disconnected: bool,
    pub video_frames: u64,
    pub audio_frames: u64,
    /// NAL unit types of the first video frame (an IDR with SPS and PPS: 7, 8, 5).
    pub first_video_nals: Vec<u8>,
    pub video_codec: Option<String>,
    pub audio_codec: Option<String>,
}

pub struct Viewer {
    pub resource: String,
    received: Arc<Mutex<Received>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// An SDP offer receiving one video and one audio track, and the session behind it.
pub fn offer() -> (Rtc, SdpPendingOffer, String, UdpSocket, Mid, Mid) {
    str0m::crypto::from_feature_flags().install_process_default();
    let socket = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let mut rtc = Rtc::builder().build(Instant::now());
    rtc.add_local_candidate(
        Candidate::host(socket.local_addr().expect("addr"), "udp").expect("candidate"),
    );
    let mut change = rtc.sdp_api();
    let video = change.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let audio = change.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let (offer, pending) = change.apply().expect("an offer");
    let sdp = offer.to_sdp_string();
    (rtc, pending, sdp, socket, video, audio)
}

/// Posts an SDP offer to `url` as WHEP does.
pub fn post_offer(url: &str, sdp: &str) -> Response {
    super::post_raw(url, "application/sdp", sdp.as_bytes())
}

impl Viewer {
    /// Joins `slug` on the daemon at `base` (`http://host:port`); the error response if
    /// the box refuses.
    pub fn join(base: &str, slug: &str) -> Result<Viewer, Response> {
        let (mut rtc, pending, sdp, socket, video_mid, _) = offer();
        let response = post_offer(&format!("{base}/whep/{slug}"), &sdp);
        if response.status != 201 {
            return Err(response);
        }
        let resource = response.header("location").expect("Location").to_string();
        assert_eq!(response.header("content-type"), Some("application/sdp"));
        let answer = SdpAnswer::from_sdp_string(&response.text()).expect("an SDP answer");
        rtc.sdp_api()
            .accept_answer(pending, answer)
            .expect("the answer fits the offer");
        let received = Arc::new(Mutex::new(Received::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (received, stop) = (received.clone(), stop.clone());
            std::thread::spawn(move || run(rtc, socket, video_mid, &received, &stop))
        };
        Ok(Viewer {
            resource,
            received,
            stop,
            thread: Some(thread),
        })
    }

    pub fn received(&self) -> Received {
        self.received.lock().expect("received").clone()
    }

    /// Waits until what was received satisfies `done`; the last state either way.
    pub fn wait_for(&self, timeout: Duration, done: impl Fn(&Received) -> bool) -> Received {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.received();
            if done(&now) || Instant::now() > deadline {
                return now;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(
    mut rtc: Rtc,
    socket: UdpSocket,
    video_mid: Mid,
    received: &Mutex<Received>,
    stop: &AtomicBool,
) {
    let local = socket.local_addr().expect("addr");
    let mut buffer = vec![0u8; 2000];
    while !stop.load(Ordering::Relaxed) {
        let timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(at)) => break at,
                Ok(Output::Transmit(t)) => {
                    let _ = socket.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(event)) => note(event, video_mid, received),
                Err(_) => return,
            }
        };
        let wait = timeout
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(1), Duration::from_millis(50));
        socket.set_read_timeout(Some(wait)).expect("timeout");
        let input = match socket.recv_from(&mut buffer) {
            Ok((n, source)) => match Receive::new(Protocol::Udp, source, local, &buffer[..n]) {
                Ok(receive) => Input::Receive(Instant::now(), receive),
                Err(_) => continue,
            },
            Err(_) => Input::Timeout(Instant::now()),
        };
        if rtc.handle_input(input).is_err() {
            return;
        }
    }
}

fn note(event: Event, video_mid: Mid, received: &Mutex<Received>) {
    let mut r = received.lock().expect("received");
    match event {
        Event::Connected => r.connected = true,
        Event::IceConnectionStateChange(IceConnectionState::Disconnected) => r.disconnected = true,
        Event::MediaData(data) => {
            let codec = format!("{:?}", data.params.spec().codec);
            if data.mid == video_mid {
                if r.video_frames == 0 {
                    r.first_video_nals = commeow::media::codec::annexb_nals(&data.data)
                        .iter()
                        .map(|nal| nal[0] & 0x1f)
                        .collect();
                }
                r.video_frames += 1;
                r.video_codec = Some(codec);
            } else {
                r.audio_frames += 1;
                r.audio_codec = Some(codec);
            }
        }
        _ => {}
    }
}
