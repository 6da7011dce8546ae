//! Live broadcasts as viewers see them: per channel, the renditions and the segments they
//! hold in memory, and the playlists rendered from them.
//!
//! Media never touches the disk (SD cards die from write load). Each rendition keeps a
//! bounded ring of segments: the playlist window, plus as many again that have slid out of
//! the playlist but that a player holding an older playlist may still fetch (RFC 8216
//! §6.2.2). The media pipeline thread writes here; HTTP handlers read. Locks are std
//! mutexes held for a copy of a few `Arc`s, never across an `.await`.

pub mod playlist;
pub mod segmenter;

use bytes::Bytes;
use playlist::{LowLatencyPlaylist, MediaPlaylist, Rendered, Variant};
use rand::Rng;
use segmenter::{OpenSegment, Part, Segment, SegmentStart};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

/// What the master playlist says about a rendition's stream.
#[derive(Debug, Clone, Default)]
pub struct StreamInfo {
    pub codecs: Vec<String>,
    pub resolution: Option<(u32, u32)>,
    pub frame_rate: Option<f64>,
}

/// How a rendition is packaged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Packaging {
    /// MPEG-TS segments, classic HLS for every player.
    Classic,
    /// fMP4 parts and segments, LL-HLS (RFC 8216bis).
    LowLatency { part_target: f64 },
}

#[derive(Debug, Default)]
struct RenditionState {
    info: StreamInfo,
    /// Oldest first; the playlist shows the last `window` of them.
    segments: VecDeque<Arc<Segment>>,
    /// LL-HLS: the segment being built and its parts so far.
    open: Option<OpenSegment>,
    /// LL-HLS: the fMP4 initialization segment.
    init: Bytes,
    /// Only grows during a broadcast (RFC 8216 forbids changing it).
    target_duration: u64,
    peak_bitrate: u64,
    ended: bool,
    /// The media playlist, rendered when the segments change rather than per request:
    /// every player polls it, and it changes once per part or segment.
    playlist: Rendered,
    /// LL-HLS: the delta update (`_HLS_skip=YES`), rendered alongside.
    delta: Rendered,
}

/// One rendition of a broadcast.
#[derive(Debug)]
pub struct Rendition {
    pub name: &'static str,
    pub packaging: Packaging,
    window: usize,
    /// The broadcast's id: file names start with it.
    broadcast_id: String,
    state: Mutex<RenditionState>,
    /// Bumped on every new part, segment or end. Held playlist and part requests wait on
    /// it: one notification per rendition wakes them all, no thread per request.
    changes: watch::Sender<u64>,
}

impl Rendition {
    fn new(
        name: &'static str,
        packaging: Packaging,
        window: usize,
        target_duration: u64,
        broadcast_id: String,
    ) -> Rendition {
        let rendition = Rendition {
            name,
            packaging,
            window,
            broadcast_id,
            state: Mutex::new(RenditionState {
                target_duration,
                ..RenditionState::default()
            }),
            changes: watch::Sender::new(0),
        };
        rendition.render(&mut rendition.lock());
        rendition
    }

    fn extension(&self) -> &'static str {
        match self.packaging {
            Packaging::Classic => "ts",
            Packaging::LowLatency { .. } => "m4s",
        }
    }

    /// A segment's file name: unique per broadcast, so a player can never be served a
    /// previous stream's segment under a reused name.
    pub fn segment_name(&self, sequence: u64) -> String {
        format!("{}-{sequence}.{}", self.broadcast_id, self.extension())
    }

    /// An LL-HLS part's file name.
    pub fn part_name(&self, sequence: u64, index: usize) -> String {
        format!("{}-{sequence}.{index}.m4s", self.broadcast_id)
    }

    pub fn init_name(&self) -> String {
        format!("{}-init.mp4", self.broadcast_id)
    }

    /// Parses a media file name of this rendition: `(sequence, Some(part))` for a part,
    /// `(sequence, None)` for a whole segment.
    pub fn parse_media_name(&self, name: &str) -> Option<(u64, Option<usize>)> {
        let rest = name
            .strip_prefix(self.broadcast_id.as_str())?
            .strip_prefix('-')?;
        let rest = rest.strip_suffix(self.extension())?.strip_suffix('.')?;
        match rest.split_once('.') {
            Some((sequence, part)) if self.extension() == "m4s" => {
                Some((canonical_number(sequence)?, Some(canonical_number(part)?)))
            }
            Some(_) => None,
            None => Some((canonical_number(rest)?, None)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, RenditionState> {
        // A panic elsewhere while holding this lock leaves plain data behind; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Renders the playlists and wakes every held request.
    fn changed(&self, state: &mut RenditionState) {
        self.render(state);
        self.changes.send_modify(|n| *n += 1);
    }

    fn render(&self, state: &mut RenditionState) {
        let skip = state.segments.len().saturating_sub(self.window);
        let listed: Vec<_> = state.segments.iter().skip(skip).cloned().collect();
        match self.packaging {
            Packaging::Classic => {
                let text = playlist::media(&MediaPlaylist {
                    target_duration: state.target_duration,
                    segments: &listed,
                    ended: state.ended,
                    segment_uri: &|s| self.segment_name(s.sequence),
                });
                state.playlist = Rendered::new(text);
            }
            Packaging::LowLatency { part_target } => {
                let map_uri = self.init_name();
                let mut playlist = LowLatencyPlaylist {
                    target_duration: state.target_duration,
                    part_target,
                    map_uri: &map_uri,
                    segments: &listed,
                    open: state.open.as_ref(),
                    ended: state.ended,
                    skip: 0,
                    segment_uri: &|sequence| self.segment_name(sequence),
                    part_uri: &|sequence, index| self.part_name(sequence, index),
                };
                let full = playlist::low_latency(&playlist);
                // A delta update skips the segments older than CAN-SKIP-UNTIL from the end.
                let horizon = playlist.can_skip_until();
                let mut recent = 0.0;
                let kept = listed.iter().rev().take_while(|s| {
                    recent += s.duration.as_secs_f64();
                    recent <= horizon
                });
                playlist.skip = listed.len() - kept.count();
                let delta = playlist::low_latency(&playlist);
                state.playlist = Rendered::new(full);
                state.delta = Rendered::new(delta);
            }
        }
    }

    pub fn set_info(&self, info: StreamInfo) {
        self.lock().info = info;
    }

    pub fn set_init(&self, init: Bytes) {
        self.lock().init = init;
    }

    pub fn init(&self) -> Option<Bytes> {
        let state = self.lock();
        (!state.init.is_empty()).then(|| state.init.clone())
    }

    /// Publishes a closed segment and forgets the oldest beyond twice the window.
    pub fn push(&self, segment: Segment) {
        let mut state = self.lock();
        let rounded = segment.duration.as_secs_f64().round() as u64;
        state.target_duration = state.target_duration.max(rounded);
        state.peak_bitrate = state.peak_bitrate.max(segment.bitrate());
        state.segments.push_back(Arc::new(segment));
        while state.segments.len() > self.window * 2 {
            state.segments.pop_front();
        }
        self.changed(&mut state);
    }

    /// LL-HLS: publishes a part of the segment `start` describes; returns its index.
    pub fn push_part(&self, start: SegmentStart, part: Part) -> usize {
        let mut state = self.lock();
        let index = match &mut state.open {
            Some(open) if open.start.sequence == start.sequence => {
                open.parts.push(part);
                open.parts.len() - 1
            }
            _ => {
                state.open = Some(OpenSegment {
                    start,
                    parts: vec![part],
                });
                0
            }
        };
        self.changed(&mut state);
        index
    }

    /// LL-HLS: the open segment is complete and lasted `duration`.
    pub fn close_open(&self, duration: std::time::Duration) {
        let open = self.lock().open.take();
        if let Some(open) = open {
            self.push(Segment {
                sequence: open.start.sequence,
                duration,
                program_date_time: open.start.program_date_time,
                discontinuity: open.start.discontinuity,
                parts: open.parts,
            });
        }
    }

    /// The stream ended: the playlist gets EXT-X-ENDLIST.
    pub fn end(&self) {
        let mut state = self.lock();
        if !state.ended {
            state.ended = true;
            self.changed(&mut state);
        }
    }

    pub fn is_ended(&self) -> bool {
        self.lock().ended
    }

    pub fn segment_count(&self) -> usize {
        self.lock().segments.len()
    }

    pub fn target_duration(&self) -> u64 {
        self.lock().target_duration
    }

    pub fn segment(&self, sequence: u64) -> Option<Arc<Segment>> {
        self.lock()
            .segments
            .iter()
            .find(|s| s.sequence == sequence)
            .cloned()
    }

    /// A part of a closed or open segment.
    pub fn part(&self, sequence: u64, index: usize) -> Option<Bytes> {
        let state = self.lock();
        if let Some(open) = state.open.as_ref().filter(|o| o.start.sequence == sequence) {
            return open.parts.get(index).map(|p| p.data.clone());
        }
        let segment = state.segments.iter().find(|s| s.sequence == sequence)?;
        segment.parts.get(index).map(|p| p.data.clone())
    }

    /// The newest segment, closed or being built.
    pub fn newest_sequence(&self) -> Option<u64> {
        let state = self.lock();
        state
            .open
            .as_ref()
            .map(|o| o.start.sequence)
            .or(state.segments.back().map(|s| s.sequence))
    }

    /// The newest part: (segment sequence, part index).
    pub fn newest_part(&self) -> Option<(u64, usize)> {
        newest_part(&self.lock())
    }

    /// The part EXT-X-PRELOAD-HINT names: the one after the newest.
    pub fn next_part(&self) -> Option<(u64, usize)> {
        let state = self.lock();
        match &state.open {
            Some(open) => Some((open.start.sequence, open.parts.len())),
            None => state.segments.back().map(|s| (s.sequence + 1, 0)),
        }
    }

    /// Whether a playlist would satisfy a blocking request (RFC 8216bis §6.2.5.2): with a
    /// part, once that part "or a later one" exists; without, once segment `sequence` is
    /// complete.
    pub fn has(&self, sequence: u64, part: Option<usize>) -> bool {
        let state = self.lock();
        match part {
            None => state
                .segments
                .back()
                .is_some_and(|s| s.sequence >= sequence),
            Some(part) => newest_part(&state).is_some_and(|newest| newest >= (sequence, part)),
        }
    }

    /// Notified on every change (see [`Rendition::changes`]).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn media_playlist(&self) -> Rendered {
        self.lock().playlist.clone()
    }

    /// LL-HLS delta update (`_HLS_skip=YES`).
    pub fn delta_playlist(&self) -> Rendered {
        self.lock().delta.clone()
    }

    fn variant(&self, uri: String) -> Variant {
        let state = self.lock();
        let (bytes, micros) = state.segments.iter().fold((0u64, 0u128), |(b, d), s| {
            (b + s.len() as u64, d + s.duration.as_micros())
        });
        let average = (micros > 0).then(|| (bytes as u128 * 8 * 1_000_000 / micros) as u64);
        Variant {
            uri,
            bandwidth: state.peak_bitrate,
            average_bandwidth: average,
            codecs: state.info.codecs.clone(),
            resolution: state.info.resolution,
            frame_rate: state.info.frame_rate,
        }
    }
}

fn newest_part(state: &RenditionState) -> Option<(u64, usize)> {
    if let Some(open) = state.open.as_ref().filter(|o| !o.parts.is_empty()) {
        return Some((open.start.sequence, open.parts.len() - 1));
    }
    let last = state.segments.back()?;
    Some((last.sequence, last.parts.len().checked_sub(1)?))
}

/// One publish on one channel, from the accepted publish until its media is dropped.
#[derive(Debug)]
pub struct Broadcast {
    pub slug: String,
    /// Random per publish; part of every media file name.
    pub id: String,
    /// The remuxed stream as MPEG-TS segments: classic HLS, for every player.
    pub source: Rendition,
    /// The same stream as fMP4 parts: LL-HLS, what `master.m3u8` offers.
    pub ll: Rendition,
    /// Cancelled to end the publish from outside (its stream key was rotated).
    pub stop: tokio_util::sync::CancellationToken,
}

impl Broadcast {
    /// Publishing and with at least one segment a player can fetch.
    pub fn is_live(&self) -> bool {
        !self.source.is_ended() && self.source.segment_count() > 0 && self.ll.segment_count() > 0
    }

    pub fn renditions(&self) -> [&Rendition; 2] {
        [&self.ll, &self.source]
    }

    pub fn rendition(&self, name: &str) -> Option<&Rendition> {
        self.renditions().into_iter().find(|r| r.name == name)
    }

    /// A master playlist offering one rendition, once it has a segment to describe.
    fn master_for(&self, rendition: &Rendition) -> Option<Rendered> {
        if rendition.segment_count() == 0 {
            return None;
        }
        let variant = rendition.variant(format!("{}/index.m3u8", rendition.name));
        Some(Rendered::new(playlist::master(&[variant])))
    }

    /// `master.m3u8`: the LL-HLS rendition (hls.js and Safari play it; players that do
    /// not know LL-HLS tags ignore them and play its fMP4 segments).
    pub fn master_playlist(&self) -> Option<Rendered> {
        self.master_for(&self.ll)
    }

    /// `classic.m3u8`: MPEG-TS segments, for old players without fMP4 support.
    pub fn classic_master_playlist(&self) -> Option<Rendered> {
        self.master_for(&self.source)
    }

    /// Ends both renditions' playlists.
    pub fn end(&self) {
        for rendition in self.renditions() {
            rendition.end();
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("channel `{0}` is already live")]
pub struct AlreadyLive(pub String);

/// Every channel's current or lingering broadcast.
#[derive(Debug)]
pub struct Broadcasts {
    window: usize,
    target_duration: u64,
    part_target: f64,
    by_slug: Mutex<HashMap<String, Arc<Broadcast>>>,
}

impl Broadcasts {
    pub fn new(
        window: usize,
        target: std::time::Duration,
        part_target: std::time::Duration,
    ) -> Broadcasts {
        Broadcasts {
            window,
            target_duration: target.as_secs_f64().round().max(1.0) as u64,
            part_target: part_target.as_secs_f64(),
            by_slug: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Broadcast>>> {
        self.by_slug.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a broadcast on `slug`, replacing an ended one whose media still lingers.
    /// Refused while another publish on the channel is running.
    pub fn begin(&self, slug: &str) -> Result<Arc<Broadcast>, AlreadyLive> {
        let mut by_slug = self.lock();
        if let Some(current) = by_slug.get(slug) {
            if !current.source.is_ended() {
                return Err(AlreadyLive(slug.to_string()));
            }
        }
        let id = format!("{:08x}", rand::rng().random::<u32>());
        // LL-HLS delta updates skip what is older than six target durations; the LL
        // playlist is kept a little longer than that, so they have something to skip.
        let ll_window = self.window.max(8);
        let low_latency = Packaging::LowLatency {
            part_target: self.part_target,
        };
        let broadcast = Arc::new(Broadcast {
            slug: slug.to_string(),
            source: Rendition::new(
                "source",
                Packaging::Classic,
                self.window,
                self.target_duration,
                id.clone(),
            ),
            ll: Rendition::new(
                "ll",
                low_latency,
                ll_window,
                self.target_duration,
                id.clone(),
            ),
            id,
            stop: tokio_util::sync::CancellationToken::new(),
        });
        by_slug.insert(slug.to_string(), broadcast.clone());
        Ok(broadcast)
    }

    pub fn get(&self, slug: &str) -> Option<Arc<Broadcast>> {
        self.lock().get(slug).cloned()
    }

    /// How many channels are live now (not counting ended broadcasts that linger).
    pub fn live_count(&self) -> usize {
        self.lock().values().filter(|b| b.is_live()).count()
    }

    /// Drops a finished broadcast's media, unless a newer publish has taken its place.
    pub fn remove(&self, broadcast: &Broadcast) {
        let mut by_slug = self.lock();
        if by_slug
            .get(&broadcast.slug)
            .is_some_and(|b| b.id == broadcast.id)
        {
            by_slug.remove(&broadcast.slug);
        }
    }

    /// Ends the live publish on `slug`, if there is one.
    pub fn stop(&self, slug: &str) {
        if let Some(broadcast) = self.get(slug) {
            broadcast.stop.cancel();
        }
    }

    pub fn all(&self) -> Vec<Arc<Broadcast>> {
        self.lock().values().cloned().collect()
    }
}

/// A number as we write it in names and queries: decimal digits, no sign, no leading
/// zero. `str::parse` also takes `+1` and `01`, which would give one segment several names.
pub fn canonical_number<T: std::str::FromStr>(text: &str) -> Option<T> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use segmenter::Part;
    use std::time::Duration;

    fn segment(sequence: u64, seconds: f64) -> Segment {
        let duration = Duration::from_secs_f64(seconds);
        Segment {
            sequence,
            duration,
            program_date_time: chrono::Utc::now(),
            discontinuity: false,
            parts: vec![Part {
                data: Bytes::from(vec![0u8; 1000]),
                duration,
                independent: true,
            }],
        }
    }

    #[test]
    fn one_publish_per_channel_and_a_new_publish_starts_clean() {
        let broadcasts = Broadcasts::new(3, Duration::from_secs(2), Duration::from_millis(334));
        let first = broadcasts.begin("stage").expect("first");
        assert!(
            broadcasts.begin("stage").is_err(),
            "second publisher refused"
        );
        first.source.push(segment(0, 2.0));
        first.source.end();
        let second = broadcasts.begin("stage").expect("after end");
        assert_ne!(first.id, second.id);
        assert_eq!(second.source.segment_count(), 0);
        assert!(second
            .source
            .parse_media_name(&first.source.segment_name(0))
            .is_none());
        broadcasts.remove(&first);
        assert!(
            broadcasts.get("stage").is_some(),
            "removing the old one keeps the new one"
        );
    }

    #[test]
    fn window_is_bounded_and_target_duration_only_grows() {
        let broadcasts = Broadcasts::new(3, Duration::from_secs(2), Duration::from_millis(334));
        let b = broadcasts.begin("stage").expect("begin");
        for n in 0..10 {
            b.source.push(segment(n, if n == 4 { 4.2 } else { 2.0 }));
        }
        assert_eq!(b.source.segment_count(), 6);
        assert!(b.source.segment(3).is_none());
        assert!(
            b.source.segment(4).is_some(),
            "slid out of the playlist but still served"
        );
        let text = String::from_utf8(b.source.media_playlist().plain.to_vec()).expect("utf-8");
        assert!(text.contains("#EXT-X-TARGETDURATION:4\n"), "{text}");
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:7\n"), "{text}");
        assert_eq!(text.matches("#EXTINF").count(), 3);
    }

    fn part(independent: bool) -> Part {
        Part {
            data: Bytes::from_static(b"moof"),
            duration: Duration::from_millis(333),
            independent,
        }
    }

    #[test]
    fn a_blocking_request_is_met_by_its_part_or_a_later_one() {
        let broadcasts = Broadcasts::new(3, Duration::from_secs(2), Duration::from_millis(334));
        let b = broadcasts.begin("stage").expect("begin");
        let start = |sequence| SegmentStart {
            sequence,
            program_date_time: chrono::Utc::now(),
            discontinuity: false,
        };
        assert!(!b.ll.has(0, Some(0)));
        assert_eq!(b.ll.next_part(), None);
        for _ in 0..3 {
            b.ll.push_part(start(0), part(false));
        }
        assert!(b.ll.has(0, Some(2)) && !b.ll.has(0, Some(3)));
        assert!(!b.ll.has(0, None), "segment 0 is not complete yet");
        assert_eq!(b.ll.next_part(), Some((0, 3)));
        b.ll.close_open(Duration::from_secs(1));
        // Segment 0 ended with three parts: part 3 of it never comes; part 0 of segment 1
        // is "a later one".
        assert!(b.ll.has(0, None));
        assert!(!b.ll.has(0, Some(3)));
        assert_eq!(b.ll.next_part(), Some((1, 0)));
        b.ll.push_part(start(1), part(true));
        assert!(b.ll.has(0, Some(3)) && b.ll.has(1, Some(0)) && !b.ll.has(1, Some(1)));
        assert_eq!(b.ll.part(0, 2).as_deref(), Some(&b"moof"[..]));
        assert_eq!(b.ll.part(0, 3), None);
    }

    #[test]
    fn segment_names_round_trip() {
        let broadcasts = Broadcasts::new(3, Duration::from_secs(2), Duration::from_millis(334));
        let b = broadcasts.begin("stage").expect("begin");
        let name = b.source.segment_name(42);
        assert_eq!(b.source.parse_media_name(&name), Some((42, None)));
        assert_eq!(b.source.parse_media_name("nope-42.ts"), None);
        assert_eq!(b.source.parse_media_name(&format!("{}-x.ts", b.id)), None);
        assert_eq!(
            b.source.parse_media_name(&format!("{}-42.1.ts", b.id)),
            None,
            "TS has no parts"
        );
        assert_eq!(
            b.ll.parse_media_name(&b.ll.part_name(42, 3)),
            Some((42, Some(3)))
        );
        assert_eq!(
            b.ll.parse_media_name(&b.ll.segment_name(42)),
            Some((42, None))
        );
        assert_eq!(
            b.ll.parse_media_name(&name),
            None,
            "a TS name is not an LL name"
        );
        // One name per segment: no sign, no leading zeros.
        for alias in ["+42", "042", "42 ", "", "-1"] {
            assert_eq!(
                b.ll.parse_media_name(&format!("{}-{alias}.m4s", b.id)),
                None,
                "{alias:?}"
            );
        }
        assert_eq!(b.ll.parse_media_name(&format!("{}-+1.+0.m4s", b.id)), None);
        assert_eq!(
            b.ll.parse_media_name(&format!("{}-0.0.m4s", b.id)),
            Some((0, Some(0)))
        );
    }
}
