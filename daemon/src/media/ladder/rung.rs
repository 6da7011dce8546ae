//! One rung's worker thread: it probes the encoders again at the rung's real size, then
//! scales each picture it is handed (its scaler made here: swscale contexts stay on one
//! thread), encodes it, asking for an IDR where the source has a keyframe or begins a
//! segment, and packages the result with the same pipeline code as the source, cutting
//! where the source cut. It sheds itself, ending its playlists, when it falls behind real
//! time for several seconds.

use super::encoder::{Encoded, Encoder, Spec};
use super::probe;
use crate::hls::{Broadcast, Variant};
use crate::media::{Cuts, Frame, MediaEvent, Pipeline};
use crate::system::Activity;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use ffmpeg_next as ff;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Behind real time by more than this (a picture's encode finishing this long after the
/// source packet arrived) ...
const BEHIND: Duration = Duration::from_secs(2);
/// ... for this long, and the rung is shed.
const BEHIND_FOR: Duration = Duration::from_secs(4);

/// AAC frames held for the rung's video at most: ~10 s at 48 kHz.
const MAX_HELD_AUDIO: usize = 500;

/// What the decode thread knows of a source picture.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mark {
    pub keyframe: bool,
    /// The source segment that begins at this picture.
    pub begins: Option<u64>,
    pub arrived: Option<DateTime<Utc>>,
}

/// What the decode thread sends a rung.
pub enum Input {
    AudioConfig(Bytes),
    Audio(Frame),
    Picture {
        picture: ff::frame::Video,
        pts: i64,
        mark: Mark,
    },
}

/// A rung as the operator sees it (`GET /api/system/transcode`, the dashboard).
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub video_kbps: u32,
    pub encoder: Option<String>,
    /// `probing`, `running`, `shed`, or `off` (no encoder passed, or not below the
    /// source).
    pub state: &'static str,
    pub reason: Option<String>,
    pub rejected: Vec<probe::Rejection>,
    /// Pictures dropped because the rung's queue was full: the rung skips to the source's
    /// next segment, and what it missed is published as gaps (EXT-X-GAP).
    pub overflowed: u64,
    /// From the source packet's arrival to its picture encoded, the last one.
    pub lag_ms: u64,
}

impl Status {
    /// A rung of `config` at `size` (none when it is not below the source), its encoder
    /// still to be chosen.
    pub fn probing(config: &crate::config::RungConfig, size: Option<(u32, u32)>) -> Status {
        let (width, height) = size.unwrap_or((0, 0));
        Status {
            name: config.name.clone(),
            width,
            height,
            video_kbps: config.video_kbps,
            encoder: None,
            state: "probing",
            reason: None,
            rejected: Vec::new(),
            overflowed: 0,
            lag_ms: 0,
        }
    }
}

pub type Shared = Arc<Mutex<Status>>;

pub fn update(status: &Shared, change: impl FnOnce(&mut Status)) {
    change(&mut status.lock().unwrap_or_else(|e| e.into_inner()));
}

/// Everything a rung is started with.
pub struct Setup {
    pub spec: Spec,
    pub candidates: Vec<String>,
    pub slowdown: Duration,
    pub broadcast: Arc<Broadcast>,
    pub variant: Arc<Variant>,
    pub target: Duration,
    pub part_target: Duration,
    pub audio_config: Option<Bytes>,
}

struct Worker {
    /// Audio held until the rung's video has reached it: the source's audio arrives before
    /// the picture it goes with is encoded, and written at once it would run ahead of the
    /// rung's cuts, leaving an audio hole at the boundary a player switching in crosses.
    audio: std::collections::VecDeque<Frame>,
    encoder: Encoder,
    scaler: Option<ff::software::scaling::Context>,
    pipeline: Pipeline,
    /// Marks of pictures sent to the encoder and not yet out of it, by pts.
    pending: BTreeMap<i64, Mark>,
    status: Shared,
    behind_since: Option<Instant>,
}

/// The worker thread's body. `activity` is watched by the decode thread, not the
/// daemon's watchdog: a wedged encoder sheds its rung instead of restarting the box.
pub fn run(setup: Setup, inbox: Receiver<Input>, status: Shared, activity: Arc<Activity>) {
    // Not counted as busy: the probe has its own deadline per candidate.
    let choice = probe::choose(&setup.candidates, &setup.spec);
    let Some(name) = choice.encoder.clone() else {
        update(&status, |s| {
            s.state = "off";
            s.reason = Some("no encoder passed the probe at this size".into());
            s.rejected = choice.rejected.clone();
        });
        return;
    };
    let spec = Spec {
        encoder: name.clone(),
        ..setup.spec.clone()
    };
    let encoder = match Encoder::open(&spec) {
        Ok(encoder) => encoder,
        Err(why) => {
            update(&status, |s| {
                s.state = "off";
                s.reason = Some(format!(
                    "{name} passed the probe, then failed to open: {why}"
                ));
            });
            return;
        }
    };
    update(&status, |s| {
        s.state = "running";
        s.encoder = Some(name.clone());
        s.rejected = choice.rejected.clone();
    });
    tracing::info!(encoder = %name, width = spec.width, height = spec.height, "rung running");
    let mut pipeline = Pipeline::new(
        setup.broadcast.clone(),
        setup.variant.clone(),
        setup.target,
        setup.part_target,
        Cuts::Follow { next: None },
    );
    // Video as asked plus AAC and the container's share.
    pipeline.nominal_bandwidth = Some(u64::from(spec.kbps) * 1000 + 192_000);
    pipeline.handle(MediaEvent::Metadata {
        resolution: Some((spec.width, spec.height)),
        frame_rate: Some(spec.fps),
    });
    if let Some(asc) = setup.audio_config.clone() {
        pipeline.handle(MediaEvent::AudioConfig(asc));
    }
    let mut worker = Worker {
        audio: std::collections::VecDeque::new(),
        encoder,
        scaler: None,
        pipeline,
        pending: BTreeMap::new(),
        status,
        behind_since: None,
    };
    // The rung starts at a source segment, and keeps to its frame rate.
    let min_step = (1000.0 / spec.fps.max(1.0)).floor() as i64 - 2;
    let mut started = false;
    let mut last_kept = i64::MIN;
    while let Ok(input) = inbox.recv() {
        let _busy = activity.begin();
        if setup.variant.is_ended() {
            return; // shed by the decode thread (or the broadcast is over)
        }
        match input {
            Input::AudioConfig(asc) => worker.pipeline.handle(MediaEvent::AudioConfig(asc)),
            Input::Audio(frame) => {
                if started && worker.audio.len() < MAX_HELD_AUDIO {
                    worker.audio.push_back(frame);
                }
            }
            Input::Picture { picture, pts, mark } => {
                if !started && mark.begins.is_none() {
                    continue;
                }
                let boundary = mark.begins.is_some() || mark.keyframe;
                if !boundary && pts.saturating_sub(last_kept) < min_step {
                    continue;
                }
                started = true;
                last_kept = pts;
                if let Err(why) = worker.picture(&picture, pts, mark, &spec, setup.slowdown) {
                    tracing::warn!(error = %why, pts, "rung picture lost");
                }
                if worker.shed_when_behind(&setup.variant) {
                    return;
                }
            }
        }
    }
    for encoded in worker.encoder.finish() {
        worker.emit(encoded);
    }
    while let Some(frame) = worker.audio.pop_front() {
        worker.pipeline.handle(MediaEvent::Audio(frame));
    }
    worker.pipeline.finish_timeline();
}

impl Worker {
    fn picture(
        &mut self,
        picture: &ff::frame::Video,
        pts: i64,
        mark: Mark,
        spec: &Spec,
        slowdown: Duration,
    ) -> Result<(), String> {
        let format = self.encoder.input_format();
        let scaler = match self.scaler.as_mut() {
            Some(scaler) => scaler,
            None => self.scaler.insert(
                ff::software::scaling::Context::get(
                    picture.format(),
                    picture.width(),
                    picture.height(),
                    format,
                    spec.width,
                    spec.height,
                    ff::software::scaling::Flags::BILINEAR,
                )
                .map_err(|e| format!("scaler: {e}"))?,
            ),
        };
        let mut scaled = ff::frame::Video::empty();
        scaler
            .run(picture, &mut scaled)
            .map_err(|e| format!("scale: {e}"))?;
        scaled.set_pts(Some(pts));
        if !slowdown.is_zero() {
            std::thread::sleep(slowdown);
        }
        // A WebRTC viewer joining or losing packets asks for one (PLI/FIR).
        let asked = self.pipeline.variant.realtime.take_keyframe_request();
        let keyframe = mark.begins.is_some() || mark.keyframe || asked;
        self.pending.insert(pts, mark);
        for encoded in self.encoder.encode(&mut scaled, keyframe)? {
            self.emit(encoded);
        }
        Ok(())
    }

    /// Packages one encoded picture, with the source's segment start if it was one.
    fn emit(&mut self, encoded: Encoded) {
        let mark = self.pending.remove(&encoded.pts).unwrap_or_default();
        // Pictures the encoder dropped leave their marks behind: forget the older ones.
        self.pending = self.pending.split_off(&encoded.pts);
        let arrived = mark.arrived.unwrap_or_else(Utc::now);
        if let Some(config) = encoded.config {
            self.pipeline
                .handle(MediaEvent::VideoConfig(Bytes::from(config)));
        }
        if let Some(sequence) = mark.begins {
            self.pipeline.handle(MediaEvent::SegmentStart(sequence));
        }
        self.pipeline.handle(MediaEvent::Video(Frame {
            dts: encoded.pts,
            pts: encoded.pts,
            keyframe: encoded.unit.idr,
            data: Bytes::from(encoded.unit.data),
            arrived,
        }));
        while self.audio.front().is_some_and(|a| a.dts <= encoded.pts) {
            if let Some(frame) = self.audio.pop_front() {
                self.pipeline.handle(MediaEvent::Audio(frame));
            }
        }
        let lag = (Utc::now() - arrived).to_std().unwrap_or_default();
        update(&self.status, |s| s.lag_ms = lag.as_millis() as u64);
        if lag > BEHIND {
            self.behind_since.get_or_insert_with(Instant::now);
        } else {
            self.behind_since = None;
        }
    }

    /// Behind real time for too long: end the rung's playlists (the master stops offering
    /// it) and say so.
    fn shed_when_behind(&mut self, variant: &Variant) -> bool {
        if self
            .behind_since
            .is_none_or(|since| since.elapsed() < BEHIND_FOR)
        {
            return false;
        }
        let lag = self.status.lock().map(|s| s.lag_ms).unwrap_or(0);
        tracing::warn!(lag_ms = lag, "rung shed: it fell behind real time");
        self.pipeline.finish_timeline();
        variant.end();
        update(&self.status, |s| {
            s.state = "shed";
            s.reason = Some(format!(
                "fell behind real time (by {:.1} s for {} s; its encoder is too slow for this board)",
                lag as f64 / 1000.0,
                BEHIND_FOR.as_secs()
            ));
        });
        true
    }
}
