//! The media pipeline: one thread per broadcast turns ingested packets into segments.
//!
//! Ingest sends [`MediaEvent`]s over a bounded queue; this thread muxes them with libav
//! (MPEG-TS and fMP4), asks the [`Segmenter`] where to cut, and publishes each part and
//! closed segment to the broadcast's `source` [`Variant`]. libav calls block, so they run
//! here and never on the async runtime. When the queue closes (the publisher left), the
//! open segment is closed; the broadcast decides when the playlists end (see `hls`). A
//! pipeline on a broadcast whose publisher came back continues its numbering on a new
//! timeline.

pub mod codec;
pub mod ladder;
pub mod mux;
pub mod opus;

use crate::hls::segmenter::Segmenter;
use crate::hls::segmenter::{Part, SegmentStart};
use crate::hls::{Broadcast, StreamInfo, Variant};
use crate::system::{Activity, Health};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use mux::{Container, Muxer, Track};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// A publish whose configuration fails this many keyframes in a row, or for this long, is
/// refused.
const GIVE_UP_KEYFRAMES: u32 = 3;
const GIVE_UP_AFTER: Duration = Duration::from_secs(5);

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
    /// A ladder rung only: the next video frame begins segment `sequence`, as the source's
    /// segment of that number began at the same picture.
    SegmentStart(u64),
}

/// Starts the pipeline thread of `broadcast`: it remuxes the publisher's stream into the
/// broadcast's `source` variant, and when the ladder runs, taps what it packages to the
/// ladder's threads, which feed the other variants (see [`ladder`]).
pub fn spawn(
    broadcast: Arc<Broadcast>,
    target: Duration,
    part_target: Duration,
    inbox: mpsc::Receiver<MediaEvent>,
    health: &Arc<Health>,
    ladder: Option<&Arc<ladder::Plan>>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let name = format!("media-{}", broadcast.slug);
    // Watched while the thread lives: a libav call that never returns stops the watchdog.
    let activity = health.register(format!("media pipeline `{}`", broadcast.slug));
    let tap = ladder
        .filter(|plan| plan.may_run())
        .and_then(|plan| ladder::start(plan, &broadcast, target, part_target, health));
    std::thread::Builder::new().name(name).spawn(move || {
        let span =
            tracing::info_span!("media", channel = %broadcast.slug, broadcast = %broadcast.id);
        let _entered = span.enter();
        let variant = broadcast.source();
        Pipeline::new(broadcast, variant, target, part_target, Cuts::Own { tap })
            .run(inbox, &activity);
    })
}

/// Where a pipeline cuts its segments.
enum Cuts {
    /// The source: by the segmenter's rules; what it packages is tapped for the ladder.
    Own { tap: Option<ladder::Tap> },
    /// A ladder rung: where the source cut, under the source's numbers
    /// ([`MediaEvent::SegmentStart`]); nothing is packaged before the first.
    Follow { next: Option<u64> },
}

/// The same stream muxed twice: MPEG-TS segments and fMP4 parts.
struct Muxers {
    ts: Muxer,
    cmaf: Muxer,
}

/// The LL-HLS part being built.
#[derive(Debug, Clone, Copy)]
struct OpenPart {
    start_dts: i64,
    independent: bool,
}

struct Pipeline {
    cuts: Cuts,
    /// Added to the publisher's timestamps: where the broadcast's previous publish ended,
    /// so a return after a drop continues the media timeline. (A rung's frames come from
    /// the source's, already shifted.)
    offset: i64,
    broadcast: Arc<Broadcast>,
    /// Where the segments go.
    variant: Arc<Variant>,
    /// Keyframes whose configuration could not start the muxers, and when the first came.
    unusable: (u32, Option<std::time::Instant>),
    segmenter: Segmenter,
    part_target_ms: i64,
    part: Option<OpenPart>,
    muxers: Option<Muxers>,
    video_config: Option<Bytes>,
    audio_config: Option<Bytes>,
    resolution: Option<(u32, u32)>,
    frame_rate: Option<f64>,
    /// Last dts written per track; libav requires them to increase strictly.
    last_dts: [Option<i64>; 2],
    /// A rung's asked-for bit rate (see [`StreamInfo::nominal_bandwidth`]).
    nominal_bandwidth: Option<u64>,
    /// The video for WebRTC viewers: AVCC frames to Annex B (see [`crate::hls::realtime`]).
    to_annexb: Option<codec::ToAnnexB>,
    /// The audio for them, made while one listens (the source's pipeline only).
    opus: Option<opus::Transcoder>,
}

impl Pipeline {
    fn new(
        broadcast: Arc<Broadcast>,
        variant: Arc<Variant>,
        target: Duration,
        part_target: Duration,
        cuts: Cuts,
    ) -> Pipeline {
        let mut segmenter = Segmenter::new(target);
        if let Some((sequence, timeline)) = variant.last_sequence() {
            segmenter.resume_after(sequence, timeline, variant.media_end());
        }
        let offset = match cuts {
            Cuts::Own { .. } => variant.media_end(),
            Cuts::Follow { .. } => 0,
        };
        Pipeline {
            cuts,
            offset,
            variant,
            broadcast,
            unusable: (0, None),
            segmenter,
            part_target_ms: i64::try_from(part_target.as_millis()).unwrap_or(334).max(1),
            part: None,
            muxers: None,
            video_config: None,
            audio_config: None,
            resolution: None,
            frame_rate: None,
            last_dts: [None, None],
            nominal_bandwidth: None,
            to_annexb: None,
            opus: None,
        }
    }

    fn run(mut self, mut inbox: mpsc::Receiver<MediaEvent>, activity: &Activity) {
        while let Some(event) = inbox.blocking_recv() {
            let _busy = activity.begin();
            self.handle(event);
        }
        let _busy = activity.begin();
        self.finish_timeline();
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
                    if let Cuts::Own { tap: Some(tap) } = &mut self.cuts {
                        tap.video_config(&config);
                    }
                    self.video_config = Some(config);
                }
            }
            MediaEvent::AudioConfig(config) => {
                if self.audio_config.as_ref() != Some(&config) {
                    self.restart_on_new_config();
                    if let Cuts::Own { tap: Some(tap) } = &mut self.cuts {
                        tap.audio_config(&config);
                    }
                    self.audio_config = Some(config);
                    // A new configuration gets a new transcoder, or another try at one.
                    self.opus = None;
                    if let Cuts::Own { .. } = self.cuts {
                        self.broadcast.realtime_audio.set_unusable(None);
                    }
                }
            }
            MediaEvent::SegmentStart(sequence) => {
                if let Cuts::Follow { next } = &mut self.cuts {
                    *next = Some(sequence);
                }
            }
            MediaEvent::Video(frame) => {
                let frame = self.shifted(frame);
                self.video(frame);
            }
            MediaEvent::Audio(frame) => {
                let frame = self.shifted(frame);
                self.audio(frame);
            }
        }
    }

    /// New codec configuration mid-stream: close what we have; the next keyframe opens
    /// new muxers, and the playlists mark the discontinuity.
    fn restart_on_new_config(&mut self) {
        if self.muxers.is_some() {
            tracing::info!("codec configuration changed; starting a new timeline");
            self.finish_timeline();
            self.segmenter.mark_discontinuity();
            self.last_dts = [None, None];
        }
    }

    /// The muxers could not start on this configuration. A glitch may fix itself at the
    /// next keyframe; a stream that keeps failing (a codec we cannot read sent under the
    /// H.264 tag, as OBS's AV1 encoder does on a custom server) is refused within a few
    /// keyframes or [`GIVE_UP_AFTER`], with words the streamer can act on, instead of
    /// being retried forever while OBS shows a healthy stream.
    fn unusable(&mut self, error: mux::MuxError) {
        if let Cuts::Follow { .. } = self.cuts {
            // A rung's own encoder output: never a reason to refuse the streamer.
            tracing::error!(error = %error, "the rung's stream cannot be packaged");
            return;
        }
        let (count, first) = &mut self.unusable;
        *count += 1;
        let first = *first.get_or_insert_with(std::time::Instant::now);
        tracing::warn!(error = %error, keyframes = *count, "cannot start the muxers");
        if *count >= GIVE_UP_KEYFRAMES || first.elapsed() >= GIVE_UP_AFTER {
            let why = match error {
                mux::MuxError::BadVideoConfig => {
                    "the video is not H.264 the box can read (its configuration is malformed; \
                     OBS's AV1 and HEVC encoders send this on a custom server): in OBS, \
                     Settings > Output, choose x264 or a hardware H.264 encoder"
                        .to_string()
                }
                mux::MuxError::BadAudioConfig => {
                    "the audio is not AAC the box can read: in OBS, Settings > Output > Audio \
                     Encoder, choose AAC"
                        .to_string()
                }
                other => format!("the stream cannot be packaged: {other}"),
            };
            tracing::error!(reason = %why, "publish refused: unusable media");
            self.broadcast.refuse(why);
        }
    }

    fn start_muxers(&mut self, avcc: &[u8]) -> Result<(), mux::MuxError> {
        let asc = self.audio_config.clone();
        let ts = Muxer::new(Container::MpegTs, avcc, asc.as_deref())?;
        let cmaf = Muxer::new(Container::Cmaf, avcc, asc.as_deref())?;
        tracing::info!(audio = ts.has_audio(), "muxing started");
        let info = self.stream_info(avcc, ts.has_audio());
        self.variant
            .set_init(self.segmenter.timeline(), cmaf.init_segment());
        self.variant.set_info(info);
        self.to_annexb = codec::ToAnnexB::new(avcc);
        match &self.to_annexb {
            Some(to_annexb) => self
                .variant
                .realtime
                .set_profile(to_annexb.profile_level_id),
            None => self
                .variant
                .realtime
                .set_unusable(Some("its H.264 configuration is malformed".into())),
        }
        self.muxers = Some(Muxers { ts, cmaf });
        Ok(())
    }

    fn video(&mut self, frame: Frame) {
        if self.muxers.is_none() {
            if !frame.keyframe {
                return; // nothing decodable before the first keyframe
            }
            let Some(avcc) = self.video_config.clone() else {
                tracing::warn!("keyframe before the H.264 configuration; waiting for it");
                return;
            };
            if let Err(e) = self.start_muxers(&avcc) {
                self.unusable(e);
                return;
            }
        }
        let dts = self.next_dts(Track::Video, frame.dts);
        let cut_segment = match &self.cuts {
            Cuts::Own { .. } => self.segmenter.cut_before(dts, frame.keyframe),
            Cuts::Follow { next } => next.is_some() && self.segmenter.is_open(),
        };
        // A part closes at every segment boundary, before a frame that would carry it past
        // PART-TARGET (parts must not exceed it), keyframe or not, so a long keyframe
        // interval still gives parts on time; and before every keyframe, so a player can
        // start at it (INDEPENDENT=YES) even where it falls inside a segment.
        let part_full = self.part.is_some_and(|p| {
            dts - p.start_dts + self.segmenter.frame_step() > self.part_target_ms
                || (frame.keyframe && dts > p.start_dts)
        });
        // A rung that skipped source segments (its queue overflowed) ends the open one
        // after its own last frame, not where the next it has begins: the span between
        // becomes gaps, not a segment claiming media it lacks.
        let cut_at = match (&self.cuts, self.segmenter.current()) {
            (Cuts::Follow { next: Some(next) }, Some(open))
                if cut_segment && *next > open.sequence + 1 =>
            {
                self.segmenter.end_dts().unwrap_or(dts).min(dts)
            }
            _ => dts,
        };
        // The segment's last part is published with the segment's end, in one change.
        let last_part = if cut_segment || part_full {
            self.close_part(if cut_segment { cut_at } else { dts }, !cut_segment)
        } else {
            None
        };
        if cut_segment {
            self.close_segment(cut_at, last_part);
        }
        let mut begins = None;
        if !self.segmenter.is_open() {
            match &mut self.cuts {
                Cuts::Own { .. } => self.segmenter.begin(dts, frame.arrived, frame.keyframe),
                Cuts::Follow { next } => {
                    let Some(sequence) = next.take() else {
                        return; // a rung begins where one of the source's segments does
                    };
                    let gaps =
                        self.segmenter
                            .begin_numbered(sequence, dts, frame.arrived, frame.keyframe);
                    if !gaps.is_empty() {
                        tracing::warn!(
                            from = gaps[0].sequence,
                            count = gaps.len(),
                            "rung fell behind: segments published as gaps"
                        );
                        self.variant.push_gaps(gaps);
                    }
                }
            }
            begins = self.segmenter.current().map(|s| s.sequence);
        }
        if self.part.is_none() {
            self.part = Some(OpenPart {
                start_dts: dts,
                independent: frame.keyframe,
            });
        }
        self.segmenter.observe_video(dts, frame.keyframe);
        let pts = frame.pts.max(dts);
        if let Some(muxers) = self.muxers.as_mut() {
            for muxer in [&mut muxers.ts, &mut muxers.cmaf] {
                if let Err(e) = muxer.write_video(dts, pts, frame.keyframe, &frame.data) {
                    tracing::warn!(error = %e, dts, "video frame dropped by the muxer");
                }
            }
        }
        self.realtime_video(&frame, pts);
        if let Cuts::Own { tap: Some(tap) } = &mut self.cuts {
            tap.video(dts, pts, frame.keyframe, frame.data, frame.arrived, begins);
        }
    }

    /// Hands a frame to the variant's WebRTC viewers, if it has any, and notes B-frames,
    /// which WebRTC cannot carry (such a source's viewers get a ladder rung).
    fn realtime_video(&mut self, frame: &Frame, pts: i64) {
        let feed = &self.variant.realtime;
        if frame.pts != frame.dts {
            feed.note_reordered();
        }
        if !feed.is_watched() {
            return;
        }
        let Some(data) = self
            .to_annexb
            .as_ref()
            .and_then(|c| c.convert(&frame.data, frame.keyframe))
        else {
            return;
        };
        feed.send(crate::hls::realtime::Sample {
            pts,
            keyframe: frame.keyframe,
            data: Bytes::from(data),
        });
    }

    /// The source's audio as Opus for WebRTC viewers, while any listens.
    fn realtime_audio(&mut self, frame: &Frame, dts: i64) {
        let feed = &self.broadcast.realtime_audio;
        if !matches!(self.cuts, Cuts::Own { .. }) {
            return;
        }
        if !feed.is_watched() {
            self.opus = None;
            return;
        }
        if self.opus.is_none() {
            // Tried and failed (no Opus encoder in this libav): not again every frame.
            let (Some(asc), None) = (self.audio_config.as_deref(), feed.unusable()) else {
                return;
            };
            match opus::Transcoder::new(asc) {
                Ok(transcoder) => self.opus = Some(transcoder),
                Err(e) => {
                    feed.set_unusable(Some(e.to_string()));
                    return;
                }
            }
        }
        let Some(transcoder) = self.opus.as_mut() else {
            return;
        };
        for (pts, data) in transcoder.push(&frame.data, dts) {
            feed.send(crate::hls::realtime::Sample {
                pts,
                keyframe: true,
                data,
            });
        }
    }

    fn audio(&mut self, frame: Frame) {
        if self.muxers.is_none() {
            return;
        }
        let dts = self.next_dts(Track::Audio, frame.dts);
        if let Some(muxers) = self.muxers.as_mut() {
            for muxer in [&mut muxers.ts, &mut muxers.cmaf] {
                if let Err(e) = muxer.write_audio(dts, &frame.data) {
                    tracing::warn!(error = %e, dts, "audio frame dropped by the muxer");
                }
            }
        }
        self.realtime_audio(&frame, dts);
        if let Cuts::Own { tap: Some(tap) } = &mut self.cuts {
            tap.audio(dts, frame.data, frame.arrived);
        }
    }

    /// Publishers occasionally repeat a millisecond timestamp; libav needs strictly
    /// increasing ones, so nudge rather than drop a frame the decoder needs.
    fn next_dts(&mut self, track: Track, dts: i64) -> i64 {
        let slot = &mut self.last_dts[track as usize];
        let dts = match *slot {
            Some(last) if dts <= last => last + 1,
            _ => dts,
        };
        *slot = Some(dts);
        dts
    }

    /// Closes the LL-HLS part that ends where `end_dts` begins: publishes it, or, when it
    /// is its segment's last (`publish` false), returns it to go out with the segment.
    fn close_part(&mut self, end_dts: i64, publish: bool) -> Option<(SegmentStart, Part)> {
        let (Some(part), Some(start), Some(muxers)) = (
            self.part.take(),
            self.segmenter.current(),
            self.muxers.as_mut(),
        ) else {
            return None;
        };
        match muxers.cmaf.cut(end_dts) {
            Ok(data) => {
                let duration =
                    Duration::from_millis(u64::try_from(end_dts - part.start_dts).unwrap_or(0));
                let part = Part {
                    data,
                    duration,
                    independent: part.independent,
                };
                if !publish {
                    return Some((start, part));
                }
                let index = self.variant.push_part(start, part);
                // The benchmark of blocking reload reads this line's time.
                tracing::debug!(sequence = start.sequence, part = index, "part published");
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "part lost: the fMP4 muxer failed to flush");
                None
            }
        }
    }

    /// Closes the segment that ends where `end_dts` begins, in both packagings, with its
    /// last LL-HLS part.
    fn close_segment(&mut self, end_dts: i64, last_part: Option<(SegmentStart, Part)>) {
        let Some(muxers) = self.muxers.as_mut() else {
            return;
        };
        let data = muxers.ts.cut(end_dts).unwrap_or_else(|e| {
            tracing::error!(error = %e, "segment lost: the TS muxer failed to flush");
            Bytes::new()
        });
        if let Some(segment) = self.segmenter.close(end_dts, data) {
            tracing::debug!(sequence = segment.sequence, duration = ?segment.duration, bytes = segment.len(), "segment");
            if let Some((start, _)) = &last_part {
                tracing::debug!(sequence = start.sequence, "part published");
            }
            self.variant.close_segment(segment, last_part);
        }
    }

    fn shifted(&self, frame: Frame) -> Frame {
        Frame {
            dts: frame.dts.saturating_add(self.offset),
            pts: frame.pts.saturating_add(self.offset),
            ..frame
        }
    }

    /// Ends the current timeline: the last part and segment close one frame after the
    /// last frame, and the muxers are dropped.
    fn finish_timeline(&mut self) {
        if let Some(end) = self.segmenter.end_dts() {
            let last_part = self.close_part(end, false);
            self.close_segment(end, last_part);
            self.variant.set_media_end(end);
        }
        self.muxers = None;
        self.part = None;
    }

    fn stream_info(&self, avcc: &[u8], with_audio: bool) -> StreamInfo {
        let audio_codec = self
            .audio_config
            .as_deref()
            .filter(|_| with_audio)
            .and_then(codec::aac_codec_string);
        StreamInfo {
            codecs: codec::avc_codec_string(avcc)
                .into_iter()
                .chain(audio_codec)
                .collect(),
            resolution: self.resolution.or_else(|| codec::avc_dimensions(avcc)),
            frame_rate: self.frame_rate,
            nominal_bandwidth: self.nominal_bandwidth,
        }
    }
}
