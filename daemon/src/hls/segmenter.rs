//! Decides where segments begin and end, and assembles them from muxed parts.
//!
//! Pure: the media pipeline tells it each video packet's timestamp and whether it is a
//! keyframe; it answers whether the open segment must close first. A segment is a list of
//! [`Part`]s (byte runs the muxer flushed), so the same segmenter serves classic HLS (one
//! part per segment) and Low-Latency HLS (parts of a few hundred milliseconds).

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
    pub parts: Vec<Part>,
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

/// Cuts a stream into segments at keyframes.
#[derive(Debug)]
pub struct Segmenter {
    target_ms: i64,
    /// A stream with no keyframes for this long is cut anyway, so memory stays bounded.
    max_ms: i64,
    open: Option<Building>,
    next_sequence: u64,
    discontinuity: bool,
    last_video_dts: Option<i64>,
    last_video_step: i64,
}

/// Keyframes this close to the target still cut: a GOP of 1.98 s with a 2 s target must
/// give 1.98 s segments, not 3.96 s ones.
const EARLY_CUT_PERCENT: i64 = 90;

impl Segmenter {
    pub fn new(target: Duration) -> Segmenter {
        let target_ms = i64::try_from(target.as_millis())
            .unwrap_or(i64::MAX / 8)
            .max(1);
        Segmenter {
            target_ms,
            max_ms: (target_ms * 4).max(10_000),
            open: None,
            next_sequence: 0,
            discontinuity: false,
            last_video_dts: None,
            last_video_step: 0,
        }
    }

    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Whether the open segment must close before a video packet with this `dts`.
    pub fn cut_before(&self, dts: i64, keyframe: bool) -> bool {
        let Some(open) = &self.open else { return false };
        let elapsed = dts - open.start_dts;
        (keyframe && elapsed * 100 >= self.target_ms * EARLY_CUT_PERCENT) || elapsed >= self.max_ms
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
        })
    }

    /// Milliseconds between the last two video frames.
    pub fn frame_step(&self) -> i64 {
        self.last_video_step
    }

    /// Where the stream ends: one frame after its last video frame.
    pub fn end_dts(&self) -> Option<i64> {
        Some(self.last_video_dts? + self.last_video_step)
    }

    /// Notes a video packet's timestamp, for the duration of the stream's last segment.
    pub fn observe_video(&mut self, dts: i64) {
        if let Some(last) = self.last_video_dts {
            if dts > last {
                self.last_video_step = dts - last;
            }
        }
        self.last_video_dts = Some(dts);
    }

    /// The next segment follows a change of codec configuration or timeline.
    pub fn mark_discontinuity(&mut self) {
        self.discontinuity = true;
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
            parts: vec![Part {
                data,
                duration,
                independent: open.independent,
            }],
        };
        self.next_sequence += 1;
        Some(segment)
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
            s.observe_video(dts);
        }
        out.extend(s.close_at_end(Bytes::from_static(b"x")).map(|s| s.duration));
        out
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

    #[test]
    fn long_gops_give_long_segments_that_add_up() {
        let durations = run(Duration::from_secs(2), 120, 600);
        assert!(
            durations.iter().all(|d| close_to(*d, 4000)),
            "{durations:?}"
        );
        let total: Duration = durations.iter().sum();
        assert!(close_to(total, 20_000), "{total:?}");
    }

    #[test]
    fn no_keyframes_still_cuts_at_the_bound() {
        let mut s = Segmenter::new(Duration::from_secs(2));
        s.begin(0, now(), true);
        assert!(!s.cut_before(9_999, false));
        assert!(s.cut_before(10_000, false));
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
        /// gap or overlap, start on keyframes unless the no-keyframe bound forced a cut, and
        /// never exceed that bound by more than one frame.
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
                s.observe_video(dts);
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
                proptest::prop_assert!(g.duration.as_millis() <= 10_000 + 200, "{:?}", g.duration);
            }
            proptest::prop_assert!(segments.first().is_none_or(|g| g.parts[0].independent), "the first segment starts on a keyframe");
        }
    }
}
