//! The media pipeline: one thread per broadcast turns ingested packets into segments.
//!
//! Ingest sends [`MediaEvent`]s over a bounded queue; this thread muxes them with libav
//! ([`mux::TsMuxer`]), asks the [`Segmenter`] where to cut, and publishes each closed
//! segment to the broadcast's rendition. libav calls block, so they run here and never on
//! the async runtime. When the queue closes (the publisher left), the open segment is
//! closed and the playlist ended.

pub mod mux;

use crate::hls::segmenter::Segmenter;
use crate::hls::{Broadcast, StreamInfo};
use crate::ingest::flv;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use mux::{Track, TsMuxer};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How many events may wait for the pipeline: about 4 s of 30 fps video with its audio.
/// When it is full, ingest drops media until the next keyframe (see `ingest`).
pub const MEDIA_QUEUE: usize = 300;

/// One coded frame as it arrived.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Decode time, milliseconds on the publisher's clock.
    pub dts: i64,
    /// Presentation time, milliseconds.
    pub pts: i64,
    pub keyframe: bool,
    pub data: Bytes,
    /// Wall clock when ingest received it.
    pub arrived: DateTime<Utc>,
}

/// What ingest tells the pipeline.
#[derive(Debug, Clone)]
pub enum MediaEvent {
    /// From the publisher's onMetaData.
    Metadata {
        resolution: Option<(u32, u32)>,
        frame_rate: Option<f64>,
    },
    VideoConfig(Bytes),
    AudioConfig(Bytes),
    Video(Frame),
    Audio(Frame),
}

/// Starts the pipeline thread of `broadcast`.
pub fn spawn(
    broadcast: Arc<Broadcast>,
    target: Duration,
    inbox: mpsc::Receiver<MediaEvent>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let name = format!("media-{}", broadcast.slug);
    std::thread::Builder::new().name(name).spawn(move || {
        let span =
            tracing::info_span!("media", channel = %broadcast.slug, broadcast = %broadcast.id);
        let _entered = span.enter();
        Pipeline::new(broadcast, target).run(inbox);
    })
}

struct Pipeline {
    broadcast: Arc<Broadcast>,
    segmenter: Segmenter,
    muxer: Option<TsMuxer>,
    video_config: Option<Bytes>,
    audio_config: Option<Bytes>,
    resolution: Option<(u32, u32)>,
    frame_rate: Option<f64>,
    /// Last dts written per track; libav requires them to increase strictly.
    last_dts: [Option<i64>; 2],
}

impl Pipeline {
    fn new(broadcast: Arc<Broadcast>, target: Duration) -> Pipeline {
        Pipeline {
            broadcast,
            segmenter: Segmenter::new(target),
            muxer: None,
            video_config: None,
            audio_config: None,
            resolution: None,
            frame_rate: None,
            last_dts: [None, None],
        }
    }

    fn run(mut self, mut inbox: mpsc::Receiver<MediaEvent>) {
        while let Some(event) = inbox.blocking_recv() {
            self.handle(event);
        }
        self.finish();
        tracing::info!("stream ended");
    }

    fn handle(&mut self, event: MediaEvent) {
        match event {
            MediaEvent::Metadata {
                resolution,
                frame_rate,
            } => {
                self.resolution = resolution.or(self.resolution);
                self.frame_rate = frame_rate.or(self.frame_rate);
            }
            MediaEvent::VideoConfig(config) => {
                if self.video_config.as_ref() != Some(&config) {
                    self.restart_on_new_config();
                    self.video_config = Some(config);
                }
            }
            MediaEvent::AudioConfig(config) => {
                if self.audio_config.as_ref() != Some(&config) {
                    self.restart_on_new_config();
                    self.audio_config = Some(config);
                }
            }
            MediaEvent::Video(frame) => self.video(frame),
            MediaEvent::Audio(frame) => {
                if self.muxer.is_some() {
                    self.write(Track::Audio, &frame);
                }
            }
        }
    }

    /// New codec configuration mid-stream: close what we have; the next keyframe opens a
    /// new muxer, and the playlist marks the discontinuity.
    fn restart_on_new_config(&mut self) {
        if let Some(muxer) = self.muxer.take() {
            tracing::info!("codec configuration changed; starting a new timeline");
            self.close_segment(muxer.finish(), |s, data| s.close_at_end(data));
            self.segmenter.mark_discontinuity();
            self.last_dts = [None, None];
        }
    }

    fn video(&mut self, frame: Frame) {
        if self.muxer.is_none() {
            if !frame.keyframe {
                return; // nothing decodable before the first keyframe
            }
            let Some(avcc) = self.video_config.clone() else {
                tracing::warn!("keyframe before the H.264 configuration; waiting for it");
                return;
            };
            match TsMuxer::new(&avcc, self.audio_config.as_deref()) {
                Ok(muxer) => {
                    tracing::info!(audio = muxer.has_audio(), "muxing started");
                    self.broadcast
                        .source
                        .set_info(self.stream_info(&avcc, muxer.has_audio()));
                    self.muxer = Some(muxer);
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the muxer; retrying at the next keyframe");
                    return;
                }
            }
        }
        if self.segmenter.cut_before(frame.dts, frame.keyframe) {
            if let Some(muxer) = self.muxer.as_mut() {
                let data = muxer.cut();
                self.close_segment(data, |s, data| s.close(frame.dts, data));
            }
        }
        if !self.segmenter.is_open() {
            self.segmenter
                .begin(frame.dts, frame.arrived, frame.keyframe);
        }
        self.segmenter.observe_video(frame.dts);
        self.write(Track::Video, &frame);
    }

    fn write(&mut self, track: Track, frame: &Frame) {
        let Some(muxer) = self.muxer.as_mut() else {
            return;
        };
        let slot = &mut self.last_dts[track as usize];
        // Publishers occasionally repeat a millisecond timestamp; nudge rather than drop a
        // frame the decoder needs.
        let dts = match *slot {
            Some(last) if frame.dts <= last => last + 1,
            _ => frame.dts,
        };
        let pts = frame.pts.max(dts);
        *slot = Some(dts);
        if let Err(e) = muxer.write(track, dts, pts, frame.keyframe, &frame.data) {
            tracing::warn!(error = %e, ?track, dts, "packet dropped by the muxer");
        }
    }

    fn close_segment(
        &mut self,
        data: Result<Bytes, mux::MuxError>,
        close: impl FnOnce(&mut Segmenter, Bytes) -> Option<crate::hls::segmenter::Segment>,
    ) {
        match data {
            Ok(data) => {
                if let Some(segment) = close(&mut self.segmenter, data) {
                    tracing::debug!(sequence = segment.sequence, duration = ?segment.duration, bytes = segment.len(), "segment");
                    self.broadcast.source.push(segment);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "segment lost: the muxer failed to flush");
                let _ = close(&mut self.segmenter, Bytes::new());
            }
        }
    }

    fn finish(&mut self) {
        if let Some(muxer) = self.muxer.take() {
            self.close_segment(muxer.finish(), |s, data| s.close_at_end(data));
        }
        self.broadcast.source.end();
    }

    fn stream_info(&self, avcc: &[u8], with_audio: bool) -> StreamInfo {
        let audio_codec = self
            .audio_config
            .as_deref()
            .filter(|_| with_audio)
            .and_then(flv::aac_codec_string);
        StreamInfo {
            codecs: flv::avc_codec_string(avcc)
                .into_iter()
                .chain(audio_codec)
                .collect(),
            resolution: self.resolution,
            frame_rate: self.frame_rate,
        }
    }
}
