//! One WebRTC viewer: its `str0m` session driven by a task of its own. It takes the
//! datagrams the port hands it, the samples of its variant's video and the broadcast's
//! audio from their rings, and sends what the session says to send. Its queues are the
//! rings' share and a small inbox: a viewer that falls a ring behind skips to the next
//! keyframe; the broadcast never waits for it.

use super::socket::{Datagram, Port};
use crate::hls::realtime::Sample;
use crate::hls::{Broadcast, Variant};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use str0m::format::PayloadParams;
use str0m::media::{Frequency, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc};

/// A viewer whose browser has not connected (ICE and DTLS) this long after its answer
/// never will: no UDP path (a guest network, a firewall). Its place is freed; its page
/// has gone to LL-HLS by then.
pub const CONNECT_WITHIN: Duration = Duration::from_secs(10);

/// Keyframes asked of a rung for one viewer at most this often (a lossy phone sends a
/// PLI per lost frame; each keyframe costs every viewer of the rung bits).
const KEYFRAME_ASK_EVERY: Duration = Duration::from_millis(500);

/// Why a viewer's session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// `DELETE` on its resource, or the box is stopping.
    Closed,
    /// Its browser left (ICE disconnected, or DTLS closed).
    Left,
    NeverConnected,
    /// The broadcast is over.
    BroadcastOver,
    /// The session failed (an error from `str0m`).
    Failed,
}

/// What the viewer is sent: the mids and payload types negotiated for each track.
#[derive(Debug, Clone, Copy)]
pub struct Tracks {
    pub video: (Mid, Pt),
    pub audio: Option<(Mid, Pt)>,
}

impl Tracks {
    /// From the media the offer added: a video line that takes H.264 in packetization
    /// mode 1 (preferring the stream's own profile), and an audio line that takes Opus.
    pub fn negotiated(rtc: &mut Rtc, added: &[(Mid, MediaKind)], profile: u32) -> Option<Tracks> {
        let mut video = None;
        let mut audio = None;
        for &(mid, kind) in added {
            let Some(writer) = rtc.writer(mid) else {
                continue;
            };
            let params: Vec<PayloadParams> = writer.payload_params().cloned().collect();
            match kind {
                MediaKind::Video if video.is_none() => {
                    video = pick_h264(&params, profile).map(|pt| (mid, pt));
                }
                MediaKind::Audio if audio.is_none() => {
                    audio = params
                        .iter()
                        .find(|p| p.spec().codec == str0m::format::Codec::Opus)
                        .map(|p| (mid, p.pt()));
                }
                _ => {}
            }
        }
        Some(Tracks {
            video: video?,
            audio,
        })
    }
}

fn pick_h264(params: &[PayloadParams], profile: u32) -> Option<Pt> {
    let h264: Vec<&PayloadParams> = params
        .iter()
        .filter(|p| {
            let spec = p.spec();
            spec.codec == str0m::format::Codec::H264 && spec.format.packetization_mode == Some(1)
        })
        .collect();
    let profile_idc = |p: &&PayloadParams| p.spec().format.profile_level_id.map(|id| id >> 16);
    h264.iter()
        .find(|p| profile_idc(p) == Some(profile >> 16))
        .or_else(|| h264.first())
        .map(|p| p.pt())
}

pub struct Peer {
    pub rtc: Rtc,
    pub port: Arc<Port>,
    pub inbox: mpsc::Receiver<Datagram>,
    pub tracks: Tracks,
    pub video: broadcast::Receiver<Sample>,
    pub audio: broadcast::Receiver<Sample>,
    /// The variant whose video this viewer gets, to ask its encoder for keyframes; weak,
    /// so a viewer never keeps an ended broadcast alive.
    pub variant: Weak<Variant>,
    pub broadcast: Weak<Broadcast>,
    pub stop: tokio_util::sync::CancellationToken,
}

/// The state of a running viewer.
struct Running {
    connected: bool,
    /// Video is sent from a keyframe on: at the start, and after falling behind.
    waiting_keyframe: bool,
    /// A media time and the instant it maps to: RTP timestamps and the sender reports'
    /// wall clock come from the same media times, so audio and video stay in sync.
    anchor: Option<(i64, Instant)>,
    last_keyframe_ask: Option<Instant>,
}

impl Peer {
    pub async fn run(mut self) -> Ended {
        let started = Instant::now();
        let mut state = Running {
            connected: false,
            waiting_keyframe: true,
            anchor: None,
            last_keyframe_ask: None,
        };
        let mut next = match self.drain(&mut state).await {
            Ok(next) => next,
            Err(ended) => return ended,
        };
        loop {
            // An ICE-lite session waits for the browser's checks and may have no timer of
            // its own: the connect deadline must wake it, or a viewer that posted an offer
            // and vanished would keep its place.
            if !state.connected {
                next = next.min(started + CONNECT_WITHIN + Duration::from_millis(10));
            }
            let wake = tokio::time::sleep_until(next.into());
            let outcome = tokio::select! {
                _ = self.stop.cancelled() => Err(Ended::Closed),
                datagram = self.inbox.recv() => match datagram {
                    Some(datagram) => self.datagram(&datagram),
                    None => Err(Ended::Closed),
                },
                sample = self.video.recv(), if state.connected => self.video(&mut state, sample),
                sample = self.audio.recv(), if state.connected => self.audio(&mut state, sample),
                _ = wake => self.input(Input::Timeout(Instant::now())),
            };
            if let Err(ended) = outcome {
                self.rtc.disconnect();
                let _ = self.drain(&mut state).await;
                return ended;
            }
            if !state.connected && started.elapsed() > CONNECT_WITHIN {
                return Ended::NeverConnected;
            }
            if self.broadcast.upgrade().is_none_or(|b| b.is_ended()) {
                return Ended::BroadcastOver;
            }
            next = match self.drain(&mut state).await {
                Ok(next) => next,
                Err(ended) => return ended,
            };
            if !self.rtc.is_alive() {
                return Ended::Left;
            }
        }
    }

    fn input(&mut self, input: Input) -> Result<(), Ended> {
        self.rtc.handle_input(input).map_err(|e| {
            tracing::debug!(error = %e, "WebRTC session failed");
            Ended::Failed
        })
    }

    fn datagram(&mut self, datagram: &Datagram) -> Result<(), Ended> {
        // Bytes that are none of STUN, DTLS, RTP or RTCP are dropped here, and the
        // session never sees them.
        let Ok(receive) = Receive::new(
            Protocol::Udp,
            datagram.source,
            datagram.destination,
            &datagram.data,
        ) else {
            return Ok(());
        };
        let input = Input::Receive(Instant::now(), receive);
        if !self.rtc.accepts(&input) {
            return Ok(());
        }
        self.input(input)
    }

    fn video(
        &mut self,
        state: &mut Running,
        sample: Result<Sample, RecvError>,
    ) -> Result<(), Ended> {
        let sample = match sample {
            Ok(sample) => sample,
            Err(RecvError::Lagged(missed)) => {
                tracing::debug!(missed, "WebRTC viewer fell behind: to the next keyframe");
                state.waiting_keyframe = true;
                self.ask_keyframe(state);
                return Ok(());
            }
            Err(RecvError::Closed) => return Err(Ended::BroadcastOver),
        };
        if state.waiting_keyframe {
            if !sample.keyframe {
                return Ok(());
            }
            state.waiting_keyframe = false;
        }
        let (mid, pt) = self.tracks.video;
        let time = MediaTime::new(sample.pts.max(0) as u64 * 90, Frequency::NINETY_KHZ);
        self.write(state, mid, pt, sample, time)
    }

    fn audio(
        &mut self,
        state: &mut Running,
        sample: Result<Sample, RecvError>,
    ) -> Result<(), Ended> {
        let sample = match sample {
            Ok(sample) => sample,
            // Missed audio is a gap the browser conceals.
            Err(RecvError::Lagged(_)) => return Ok(()),
            Err(RecvError::Closed) => return Err(Ended::BroadcastOver),
        };
        let Some((mid, pt)) = self.tracks.audio else {
            return Ok(());
        };
        // Audio before the first picture would start the clocks where video cannot.
        if state.anchor.is_none() {
            return Ok(());
        }
        let time = MediaTime::new(sample.pts.max(0) as u64 * 48, Frequency::FORTY_EIGHT_KHZ);
        self.write(state, mid, pt, sample, time)
    }

    fn write(
        &mut self,
        state: &mut Running,
        mid: Mid,
        pt: Pt,
        sample: Sample,
        time: MediaTime,
    ) -> Result<(), Ended> {
        let (anchor_pts, anchor_at) = *state.anchor.get_or_insert((sample.pts, Instant::now()));
        let offset = sample.pts - anchor_pts;
        let wallclock = if offset >= 0 {
            anchor_at + Duration::from_millis(offset as u64)
        } else {
            anchor_at
                .checked_sub(Duration::from_millis(offset.unsigned_abs()))
                .unwrap_or(anchor_at)
        };
        let Some(writer) = self.rtc.writer(mid) else {
            return Ok(());
        };
        writer
            .write(pt, wallclock, time, sample.data.as_ref())
            .map_err(|e| {
                tracing::debug!(error = %e, "WebRTC write failed");
                Ended::Failed
            })
    }

    fn ask_keyframe(&self, state: &mut Running) {
        if state
            .last_keyframe_ask
            .is_some_and(|at| at.elapsed() < KEYFRAME_ASK_EVERY)
        {
            return;
        }
        state.last_keyframe_ask = Some(Instant::now());
        if let Some(variant) = self.variant.upgrade() {
            variant.realtime.request_keyframe();
        }
    }

    /// Sends what the session has to send and handles its events, until it says when
    /// it next needs time.
    async fn drain(&mut self, state: &mut Running) -> Result<Instant, Ended> {
        loop {
            let output = self.rtc.poll_output().map_err(|e| {
                tracing::debug!(error = %e, "WebRTC session failed");
                Ended::Failed
            })?;
            match output {
                Output::Timeout(at) => return Ok(at),
                Output::Transmit(transmit) => {
                    self.port
                        .send(transmit.source, transmit.destination, &transmit.contents)
                        .await;
                }
                Output::Event(Event::Connected) => {
                    tracing::debug!("WebRTC viewer connected");
                    state.connected = true;
                    state.waiting_keyframe = true;
                    // Samples queued before the connection are old: start from now.
                    self.video = self.video.resubscribe();
                    self.audio = self.audio.resubscribe();
                    self.ask_keyframe(state);
                }
                Output::Event(Event::IceConnectionStateChange(
                    IceConnectionState::Disconnected,
                )) => {
                    return Err(Ended::Left);
                }
                Output::Event(Event::KeyframeRequest(_)) => self.ask_keyframe(state),
                Output::Event(_) => {}
            }
        }
    }
}
