//! Decides where segments begin and end, and assembles them from muxed parts.
//!
//! Pure: the media pipeline tells it each video packet's timestamp and whether it is a
//! keyframe; it answers whether the open segment must close first. A segment is a list of
//! [`Part`]s (byte runs the muxer flushed), so the same segmenter serves classic HLS (one
//! part per segment) and Low-Latency HLS (parts of a few hundred milliseconds).
//!
//! The rule that keeps EXT-X-TARGETDURATION honest (RFC 8216: a segment's duration,
//! rounded, never exceeds it, and it never changes): segments end at keyframes when the
//! keyframes allow it, and at the target plus the rounding slack when they do not. A
//! stream with OBS's default 8.33 s keyframe interval gets ~2.5 s segments, only some of
//! which start with a keyframe, instead of 8 s segments that push every player's
//! hold-back to 25 s.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// A run of muxed bytes that a player can fetch on its own (an LL-HLS part), or all of a
/// classic segment.
#[derive(Debug, Clone)]
pub struct Part {
    pub data: Bytes,
    pub duration: Duration,
    /// Starts with a keyframe: a player can begin decoding here.
    pub independent: bool,
}

/// A closed media segment.
#[derive(Debug, Clone)]
pub struct Segment {
    pub sequence: u64,
    pub duration: Duration,
    /// Wall clock at ingest of the segment's first packet.
    pub program_date_time: DateTime<Utc>,
    /// The stream's timing or codecs changed before this segment (EXT-X-DISCONTINUITY).
    pub discontinuity: bool,
    /// Its discontinuity sequence number: how many discontinuities came before it in the
    /// broadcast (RFC 8216 §6.2.1). Segments of one timeline share an init segment.
    pub timeline: u64,
    pub parts: Vec<Part>,
    /// A span this variant has no media for (a ladder rung that fell behind and skipped
    /// to the source's next segment): listed with EXT-X-GAP, so every variant keeps the
    /// same sequence numbers and players skip it or switch.
    pub gap: bool,
}

impl Segment {
    pub fn len(&self) -> usize {
        self.parts.iter().map(|p| p.data.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bits per second over this segment.
    pub fn bitrate(&self) -> u64 {
        let seconds = self.duration.as_secs_f64().max(0.001);
        ((self.len() as f64 * 8.0) / seconds) as u64
    }
}

/// Identity of the segment being built, for LL-HLS parts published before it closes.
#[derive(Debug, Clone, Copy)]
pub struct SegmentStart {
    pub sequence: u64,
    pub program_date_time: DateTime<Utc>,
    pub discontinuity: bool,
    pub timeline: u64,
}

/// A segment still being built, with the parts published so far (LL-HLS).
#[derive(Debug, Clone)]
pub struct OpenSegment {
    pub start: SegmentStart,
    pub parts: Vec<Part>,
}

#[derive(Debug)]
struct Building {
    start_dts: i64,
    started_at: DateTime<Utc>,
    independent: bool,
}

/// Cuts a stream into segments, at keyframes where it can.
#[derive(Debug)]
pub struct Segmenter {
    target_ms: i64,
    /// The longest a segment may last: its duration rounds to at most the declared
    /// TARGETDURATION (whole seconds).
    max_ms: i64,
    open: Option<Building>,
    next_sequence: u64,
    discontinuity: bool,
    timeline: u64,
    last_video_dts: Option<i64>,
    last_video_step: i64,
    /// The last keyframe: the interval up to a new one says whether waiting for the
    /// next would carry the segment past `max_ms`.
    last_keyframe_dts: Option<i64>,
    /// Where the last closed segment ended (for gaps before a numbered one).
    last_end_dts: Option<i64>,
}

/// Keyframes this close to the target still cut: a GOP of 1.98 s with a 2 s target must
/// give 1.98 s segments, not 3.96 s ones.
const EARLY_CUT_PERCENT: i64 = 90;

/// The declared EXT-X-TARGETDURATION for a configured target: whole seconds, at least 1.
pub fn target_duration(target: Duration) -> u64 {
    target.as_secs_f64().round().max(1.0) as u64
}

impl Segmenter {
    pub fn new(target: Duration) -> Segmenter {
        let target_ms = i64::try_from(target.as_millis())
            .unwrap_or(i64::MAX / 8)
            .max(1);
        // 2 s declared: anything under 2.5 s rounds to 2; 50 ms of that is left for frame
        // lengths that vary by a millisecond or two.
        let declared = i64::try_from(target_duration(target)).unwrap_or(i64::MAX / 8000);
        Segmenter {
            target_ms,
            max_ms: declared * 1000 + 450,
            open: None,
            next_sequence: 0,
            discontinuity: false,
            timeline: 0,
            last_video_dts: None,
            last_video_step: 0,
            last_keyframe_dts: None,
            last_end_dts: None,
        }
    }

    /// Continues a broadcast whose last segment was `last_sequence` in `timeline`: the
    /// publisher came back after a drop, on a new timeline (RFC 8216: media and
    /// discontinuity sequence numbers only ever grow).
    pub fn resume_after(&mut self, last_sequence: u64, timeline: u64, media_end: i64) {
        self.next_sequence = last_sequence + 1;
        self.last_end_dts = Some(media_end);
        self.timeline = timeline;
        self.mark_discontinuity();
    }

    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Whether the open segment must close before a video packet with this `dts`.
    ///
    /// At a keyframe: once the segment is near the target, or when it is at least a
    /// quarter of it and the next keyframe, if it comes after as long as this one did,
    /// would come too late (a scene cut, or a long keyframe interval: start the next
    /// segment on this keyframe rather than tens of frames after it). At any frame: when
    /// taking it would carry the segment past `max_ms`.
    pub fn cut_before(&self, dts: i64, keyframe: bool) -> bool {
        let Some(open) = &self.open else { return false };
        let elapsed = dts - open.start_dts;
        let next_keyframe_too_late = self
            .last_keyframe_dts
            .is_none_or(|last| elapsed + (dts - last) > self.max_ms);
        let at_keyframe = keyframe
            && (elapsed * 100 >= self.target_ms * EARLY_CUT_PERCENT
                || (elapsed * 4 >= self.target_ms && next_keyframe_too_late));
        at_keyframe || elapsed + self.last_video_step > self.max_ms
    }

    /// Opens a segment at this packet.
    pub fn begin(&mut self, dts: i64, arrived: DateTime<Utc>, keyframe: bool) {
        self.open = Some(Building {
            start_dts: dts,
            started_at: arrived,
            independent: keyframe,
        });
    }

    /// The segment being built, if any.
    pub fn current(&self) -> Option<SegmentStart> {
        self.open.as_ref().map(|open| SegmentStart {
            sequence: self.next_sequence,
            program_date_time: open.started_at,
            discontinuity: self.discontinuity,
            timeline: self.timeline,
        })
    }

    /// The timeline the next segment belongs to (its init segment's number).
    pub fn timeline(&self) -> u64 {
        self.timeline
    }

    /// Milliseconds between the last two video frames.
    pub fn frame_step(&self) -> i64 {
        self.last_video_step
    }

    /// Where the stream ends: one frame after its last video frame.
    pub fn end_dts(&self) -> Option<i64> {
        Some(self.last_video_dts? + self.last_video_step)
    }

    /// Notes a video packet: its timestamp gives the frame length (for the last
    /// segment's duration and the cut rule), its keyframes the keyframe interval.
    pub fn observe_video(&mut self, dts: i64, keyframe: bool) {
        if let Some(last) = self.last_video_dts {
            if dts > last {
                self.last_video_step = dts - last;
            }
        }
        self.last_video_dts = Some(dts);
        if keyframe {
            self.last_keyframe_dts = Some(dts);
        }
    }

    /// The next segment follows a change of codec configuration or timeline.
    pub fn mark_discontinuity(&mut self) {
        if !self.discontinuity {
            self.timeline += 1;
        }
        self.discontinuity = true;
        self.last_keyframe_dts = None;
    }

    /// Closes the open segment where the packet at `end_dts` begins.
    pub fn close(&mut self, end_dts: i64, data: Bytes) -> Option<Segment> {
        let open = self.open.take()?;
        let duration = Duration::from_millis(u64::try_from(end_dts - open.start_dts).unwrap_or(0));
        let segment = Segment {
            sequence: self.next_sequence,
            duration,
            program_date_time: open.started_at,
            discontinuity: std::mem::take(&mut self.discontinuity),
            timeline: self.timeline,
            parts: vec![Part {
                data,
                duration,
                independent: open.independent,
            }],
            gap: false,
        };
        self.next_sequence += 1;
        self.last_end_dts = Some(end_dts);
        Some(segment)
    }

    /// Opens segment `sequence` at this packet (a ladder rung follows the source's
    /// numbering). When sequences were skipped since this segmenter's last segment, it
    /// returns one gap segment for each, sharing the time between them.
    pub fn begin_numbered(
        &mut self,
        sequence: u64,
        dts: i64,
        arrived: DateTime<Utc>,
        keyframe: bool,
    ) -> Vec<Segment> {
        let mut gaps = Vec::new();
        if sequence > self.next_sequence {
            if let Some(end) = self.last_end_dts {
                let missing = sequence - self.next_sequence;
                let span = u64::try_from(dts - end).unwrap_or(0);
                let each = Duration::from_millis(span / missing);
                for n in 0..missing {
                    gaps.push(Segment {
                        sequence: self.next_sequence + n,
                        duration: each,
                        program_date_time: arrived,
                        discontinuity: n == 0 && std::mem::take(&mut self.discontinuity),
                        timeline: self.timeline,
                        parts: Vec::new(),
                        gap: true,
                    });
                }
            }
            self.next_sequence = sequence;
        }
        self.begin(dts, arrived, keyframe);
        gaps
    }

    /// Closes the open segment at the end of the stream: it lasts until its last video
    /// frame has been shown.
    pub fn close_at_end(&mut self, data: Bytes) -> Option<Segment> {
        let end = self.end_dts()?;
        self.close(end, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Within 1 ms: 30 fps frames fall on whole milliseconds only every third frame.
    fn close_to(d: Duration, millis: u128) -> bool {
        d.as_millis().abs_diff(millis) <= 1
    }

    fn now() -> DateTime<Utc> {
        Utc::now()
    }

    /// Feeds 30 fps video with a keyframe every `gop` frames; returns segment durations.
    fn run(target: Duration, gop: i64, frames: i64) -> Vec<Duration> {
        let mut s = Segmenter::new(target);
        let mut out = Vec::new();
        for n in 0..frames {
            let dts = n * 1000 / 30;
            let key = n % gop == 0;
            if s.cut_before(dts, key) {
                out.extend(s.close(dts, Bytes::from_static(b"x")).map(|s| s.duration));
            }
            if !s.is_open() && key {
                s.begin(dts, now(), key);
            }
            s.observe_video(dts, key);
        }
        out.extend(s.close_at_end(Bytes::from_static(b"x")).map(|s| s.duration));
        out
    }

    #[test]
    fn a_follower_numbered_past_what_it_missed_gets_gaps_sharing_the_time() {
        let mut s = Segmenter::new(Duration::from_secs(2));
        // A rung's first segment takes the source's number, with nothing before it.
        assert!(s.begin_numbered(7, 14_000, now(), true).is_empty());
        s.observe_video(14_000, true);
        let first = s.close(16_000, Bytes::from_static(b"x")).expect("segment");
        assert_eq!(first.sequence, 7);
        // The next is 8: no gap.
        assert!(s.begin_numbered(8, 16_000, now(), true).is_empty());
        s.close(18_000, Bytes::from_static(b"x"));
        // It skipped 9 and 10 (its queue overflowed): two gaps over the 4 s between.
        let gaps = s.begin_numbered(11, 22_000, now(), true);
        assert_eq!(gaps.iter().map(|g| g.sequence).collect::<Vec<_>>(), [9, 10]);
        assert!(gaps.iter().all(|g| g.gap && g.parts.is_empty()));
        assert!(gaps.iter().all(|g| g.duration == Duration::from_secs(2)));
        assert_eq!(s.current().map(|c| c.sequence), Some(11));
    }

    #[test]
    fn cuts_on_every_keyframe_when_gop_equals_target() {
        let durations = run(Duration::from_secs(2), 60, 600);
        assert_eq!(durations.len(), 10);
        assert!(
            durations.iter().all(|d| close_to(*d, 2000)),
            "{durations:?}"
        );
    }

    #[test]
    fn short_gops_are_grouped_to_the_target() {
        let durations = run(Duration::from_secs(2), 15, 600);
        assert_eq!(durations.len(), 10);
        assert!(
            durations.iter().all(|d| close_to(*d, 2000)),
            "{durations:?}"
        );
    }

    #[test]
    fn a_gop_slightly_short_of_the_target_still_cuts() {
        let durations = run(Duration::from_secs(2), 59, 59 * 6);
        assert!(
            durations.iter().all(|d| d.as_millis() < 2000),
            "{durations:?}"
        );
    }

    /// OBS's Simple mode: x264 with keyint 250 (8.33 s at 30 fps). Segments stay within
    /// the declared 2 s (rounded), and each keyframe starts a segment.
    #[test]
    fn long_gops_are_cut_at_the_target_and_keyframes_start_segments() {
        let mut s = Segmenter::new(Duration::from_secs(2));
        let mut segments = Vec::new();
        for n in 0..1500 {
            let dts = n * 1000 / 30;
            let key = n % 250 == 0;
            if s.cut_before(dts, key) {
                segments.extend(
                    s.close(dts, Bytes::new())
                        .map(|g| (g.duration, g.parts[0].independent, dts)),
                );
            }
            if !s.is_open() {
                s.begin(dts, now(), key);
            }
            s.observe_video(dts, key);
        }
        assert!(
            segments.iter().all(|(d, _, _)| d.as_millis() < 2500),
            "{segments:?}"
        );
        let starts: Vec<i64> = segments
            .iter()
            .filter(|(_, i, _)| *i)
            .map(|(d, _, end)| end - d.as_millis() as i64)
            .collect();
        assert_eq!(
            starts,
            vec![0, 8333, 16666, 25000, 33333, 41666],
            "one per keyframe: {segments:?}"
        );
        let total: Duration = segments.iter().map(|(d, _, _)| *d).sum();
        let last_cut = segments.last().map_or(0, |(_, _, end)| *end);
        assert!(close_to(total, last_cut as u128), "they tile: {total:?}");
    }

    /// x264's scene cut: a keyframe 1.63 s into a 2 s GOP resets the keyframe count. The
    /// segment ends there rather than running on to 3.63 s.
    #[test]
    fn a_scene_cut_keyframe_starts_a_segment() {
        let keyframes = [0, 60, 109, 169, 229];
        let mut s = Segmenter::new(Duration::from_secs(2));
        let mut durations = Vec::new();
        for n in 0..240 {
            let dts = n * 1000 / 30;
            let key = keyframes.contains(&n);
            if s.cut_before(dts, key) {
                durations.extend(s.close(dts, Bytes::new()).map(|g| g.duration.as_millis()));
            }
            if !s.is_open() {
                s.begin(dts, now(), key);
            }
            s.observe_video(dts, key);
        }
        assert_eq!(durations, vec![2000, 1633, 2000, 2000], "{durations:?}");
    }

    #[test]
    fn no_keyframes_still_cuts_within_the_declared_target() {
        let mut s = Segmenter::new(Duration::from_secs(2));
        s.begin(0, now(), true);
        s.observe_video(0, true);
        s.observe_video(33, false);
        assert!(!s.cut_before(2417, false));
        assert!(s.cut_before(2418, false), "2418 + 33 is too close to 2.5 s");
    }

    #[test]
    fn sequences_count_up_and_discontinuity_is_carried_once() {
        let mut s = Segmenter::new(Duration::from_secs(2));
        s.begin(0, now(), true);
        let a = s.close(2000, Bytes::new()).expect("segment");
        s.mark_discontinuity();
        s.begin(2000, now(), true);
        let b = s.close(4000, Bytes::new()).expect("segment");
        s.begin(4000, now(), true);
        let c = s.close(6000, Bytes::new()).expect("segment");
        assert_eq!((a.sequence, b.sequence, c.sequence), (0, 1, 2));
        assert_eq!(
            (a.discontinuity, b.discontinuity, c.discontinuity),
            (false, true, false)
        );
        assert!(s.close(8000, Bytes::new()).is_none(), "nothing open");
    }

    proptest::proptest! {
        /// Whatever the frame timing and keyframe pattern: segments tile the stream with no
        /// gap or overlap, and never exceed the declared target's bound (2.499 s) by more
        /// than a change in frame length can carry them.
        #[test]
        fn segments_tile_the_stream(frames in proptest::collection::vec((1i64..200, proptest::bool::weighted(0.05)), 1..600)) {
            let mut s = Segmenter::new(Duration::from_secs(2));
            let mut segments = Vec::new();
            let mut dts = 0;
            let mut first_start = None;
            for (n, (step, key)) in frames.iter().enumerate() {
                let key = *key || n == 0;
                if s.cut_before(dts, key) {
                    segments.extend(s.close(dts, Bytes::new()));
                }
                if !s.is_open() {
                    s.begin(dts, now(), key);
                    first_start.get_or_insert(dts);
                }
                s.observe_video(dts, key);
                dts += step;
            }
            segments.extend(s.close_at_end(Bytes::new()));
            // The last segment ends one frame after the last frame, the frame length being
            // the step before it (the same rule the pipeline uses at end of stream).
            let last_dts = dts - frames.last().map_or(0, |f| f.0);
            let last_frame_length = if frames.len() > 1 { frames[frames.len() - 2].0 } else { 0 };
            let total: i64 = segments.iter().map(|g| g.duration.as_millis() as i64).sum();
            proptest::prop_assert_eq!(total, last_dts + last_frame_length - first_start.unwrap_or(0));
            for (i, g) in segments.iter().enumerate() {
                proptest::prop_assert_eq!(g.sequence, i as u64);
                proptest::prop_assert!(g.duration.as_millis() <= 2_499 + 200, "{:?}", g.duration);
            }
            proptest::prop_assert!(segments.first().is_none_or(|g| g.parts[0].independent), "the first segment starts on a keyframe");
        }
    }
}
