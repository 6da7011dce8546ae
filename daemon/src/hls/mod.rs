//! Live broadcasts as viewers see them: per channel, the variants (quality levels), each in
//! its packagings, the segments they hold in memory, and the playlists rendered from them.
//!
//! A [`Broadcast`] is a list of [`Variant`]s, as HLS means the word: one quality level
//! (codec, resolution, bandwidth). Today there is one, `source`, the streamer's own stream
//! remuxed; an encoder thread can add others ([`Broadcast::add_variant`]) and feed them
//! through the same calls the remuxing pipeline uses. Each variant is [`Packaged`] twice:
//! fMP4 parts for LL-HLS, and MPEG-TS segments for classic HLS.
//!
//! A broadcast outlives a short drop. When the publisher leaves, the playlists stay open
//! (no EXT-X-ENDLIST) for the linger time; a publisher that comes back within it continues
//! the same playlists with EXT-X-DISCONTINUITY, media and discontinuity sequence numbers
//! still counting up, and a new EXT-X-MAP, so a TV or VLC left playing resumes by itself
//! (RFC 8216 §6.2.2 forbids the sequence to go back). The window slides on as usual: a
//! player syncs each reload to the last (GStreamer's hlsdemux2 stalls on a playlist that
//! shares no segment with the one before). New players are turned away (no master
//! playlist, the channel not `live`) until the return fills the last three target
//! durations, where players start: nothing from before the drop is offered as live. Only
//! when the linger passes does the playlist end.
//!
//! Media never touches the disk (SD cards die from write load). Each packaging keeps a
//! bounded ring of segments: the playlist window, plus as many again that have slid out of
//! the playlist but that a player holding an older playlist may still fetch (RFC 8216
//! §6.2.2). The media pipeline thread writes here; HTTP handlers read. Locks are std
//! mutexes held for a copy of a few `Arc`s, never across an `.await`.

pub mod health;
pub mod playlist;
pub mod realtime;
pub mod request;
pub mod segmenter;

use bytes::Bytes;
use playlist::{LowLatencyPlaylist, MediaPlaylist, Rendered, StreamInf};
use rand::Rng;
use segmenter::{OpenSegment, Part, Segment, SegmentStart};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;

/// What the master playlist says about a variant's stream.
#[derive(Debug, Clone, Default)]
pub struct StreamInfo {
    pub codecs: Vec<String>,
    pub resolution: Option<(u32, u32)>,
    pub frame_rate: Option<f64>,
    /// Bits per second the encoder was asked for (a ladder rung): BANDWIDTH until a few
    /// segments have been measured, so players rank the rungs right from the start.
    pub nominal_bandwidth: Option<u64>,
}

/// How a variant is packaged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Packaging {
    /// MPEG-TS segments, classic HLS for every player.
    Classic,
    /// fMP4 parts and segments, LL-HLS (RFC 8216bis).
    LowLatency { part_target: f64 },
}

#[derive(Debug, Default)]
struct PackagedState {
    info: StreamInfo,
    /// Oldest first; the playlist shows the last `window` of them.
    segments: VecDeque<Arc<Segment>>,
    /// LL-HLS: the segment being built and its parts so far.
    open: Option<OpenSegment>,
    /// LL-HLS: the fMP4 initialization segment of each timeline still referenced, oldest
    /// first (a publisher's return or a codec change starts a new one).
    inits: VecDeque<(u64, Bytes)>,
    /// Fixed for the broadcast (RFC 8216 forbids changing it); the segmenter keeps every
    /// segment within it.
    target_duration: u64,
    /// The first segment of the current publish: what came before it is from before a
    /// drop, and a player starting now must not land there.
    live_from: u64,
    peak_bitrate: u64,
    ended: bool,
    /// The media playlist, rendered when the segments change rather than per request:
    /// every player polls it, and it changes once per part or segment.
    playlist: Rendered,
    /// LL-HLS: the delta update (`_HLS_skip=YES`), rendered alongside.
    delta: Rendered,
    /// LL-HLS: the same for `_HLS_skip=v2`.
    delta_v2: Rendered,
}

/// One variant in one packaging: its segments, parts and media playlist.
#[derive(Debug)]
pub struct Packaged {
    /// Its directory under `/hls/<slug>/`: unique within the broadcast.
    pub path: String,
    pub packaging: Packaging,
    window: usize,
    /// The broadcast's id: file names start with it.
    broadcast_id: String,
    state: Mutex<PackagedState>,
    /// Bumped on every new part, segment or end. Held playlist and part requests wait on
    /// it: one notification per packaging wakes them all, no thread per request.
    changes: watch::Sender<u64>,
    /// The newest part, `(sequence << 16) | (index + 1)` (0: none yet), read without its
    /// lock by the other variants' playlists for their rendition reports.
    edge: std::sync::atomic::AtomicU64,
    /// The broadcast's other LL-HLS variants (EXT-X-RENDITION-REPORT).
    siblings: Mutex<Vec<std::sync::Weak<Packaged>>>,
    /// When the newest part appeared (for `/metrics`: a stalled packaging shows).
    edge_at: Mutex<Option<std::time::Instant>>,
}

impl Packaged {
    fn new(
        path: String,
        packaging: Packaging,
        window: usize,
        target_duration: u64,
        broadcast_id: String,
    ) -> Packaged {
        let packaged = Packaged {
            path,
            packaging,
            window,
            broadcast_id,
            state: Mutex::new(PackagedState {
                target_duration,
                ..PackagedState::default()
            }),
            changes: watch::Sender::new(0),
            edge: std::sync::atomic::AtomicU64::new(0),
            edge_at: Mutex::new(None),
            siblings: Mutex::new(Vec::new()),
        };
        packaged.render(&mut packaged.lock());
        packaged
    }

    /// The other variants' live edges, as of now. Reads their atomics, never their locks
    /// (this runs under our own).
    fn rendition_reports(&self) -> Vec<playlist::RenditionReport> {
        let siblings = self.siblings.lock().unwrap_or_else(|e| e.into_inner());
        siblings
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .filter_map(|sibling| {
                let edge = sibling.edge.load(std::sync::atomic::Ordering::Acquire);
                (edge != 0).then(|| playlist::RenditionReport {
                    uri: format!("../{}/index.m3u8", sibling.path),
                    last_msn: edge >> 16,
                    last_part: usize::try_from((edge & 0xffff) - 1).unwrap_or(0),
                })
            })
            .collect()
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

    /// The initialization segment of a timeline.
    pub fn init_name(&self, timeline: u64) -> String {
        format!("{}-init-{timeline}.mp4", self.broadcast_id)
    }

    /// The timeline an init segment name stands for.
    pub fn parse_init_name(&self, name: &str) -> Option<u64> {
        let rest = name
            .strip_prefix(self.broadcast_id.as_str())?
            .strip_prefix("-init-")?
            .strip_suffix(".mp4")?;
        canonical_number(rest)
    }

    /// Parses a media file name of this packaging: `(sequence, Some(part))` for a part,
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

    fn lock(&self) -> MutexGuard<'_, PackagedState> {
        // A panic elsewhere while holding this lock leaves plain data behind; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Renders the playlists and wakes every held request.
    fn changed(&self, state: &mut PackagedState) {
        if let Some((sequence, index)) = newest_part(state) {
            let edge = (sequence << 16) | (u64::try_from(index).unwrap_or(0xfffe).min(0xfffe) + 1);
            if self.edge.swap(edge, std::sync::atomic::Ordering::AcqRel) != edge {
                *self.edge_at.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(std::time::Instant::now());
            }
        }
        self.render(state);
        self.changes.send_modify(|n| *n += 1);
    }

    /// The segments the playlist lists: the last `window`, and more while fewer would last
    /// under three target durations (RFC 8216 §6.2.2).
    fn listed(&self, state: &PackagedState) -> Vec<Arc<Segment>> {
        let floor = 3.0 * state.target_duration as f64;
        let mut seconds = 0.0;
        let mut listed: Vec<_> = state
            .segments
            .iter()
            .rev()
            .enumerate()
            .take_while(|(count, s)| {
                let keep = *count < self.window || seconds < floor;
                seconds += s.duration.as_secs_f64();
                keep
            })
            .map(|(_, s)| s.clone())
            .collect();
        listed.reverse();
        listed
    }

    fn render(&self, state: &mut PackagedState) {
        let listed = self.listed(state);
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
                let mut playlist = LowLatencyPlaylist {
                    target_duration: state.target_duration,
                    part_target,
                    map_uri: &|timeline| self.init_name(timeline),
                    segments: &listed,
                    open: state.open.as_ref(),
                    ended: state.ended,
                    skip: 0,
                    skip_dateranges: false,
                    segment_uri: &|sequence| self.segment_name(sequence),
                    part_uri: &|sequence, index| self.part_name(sequence, index),
                    reports: &self.rendition_reports(),
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
                playlist.skip_dateranges = true;
                let delta_v2 = playlist::low_latency(&playlist);
                state.playlist = Rendered::new(full);
                state.delta = Rendered::new(delta);
                state.delta_v2 = Rendered::new(delta_v2);
            }
        }
    }

    pub fn set_info(&self, info: StreamInfo) {
        self.lock().info = info;
    }

    /// The init segment of `timeline`'s segments.
    pub fn set_init(&self, timeline: u64, init: Bytes) {
        let mut state = self.lock();
        state.inits.retain(|(t, _)| *t != timeline);
        state.inits.push_back((timeline, init));
    }

    pub fn init(&self, timeline: u64) -> Option<Bytes> {
        let state = self.lock();
        state
            .inits
            .iter()
            .find(|(t, _)| *t == timeline)
            .map(|(_, init)| init.clone())
    }

    /// The newest segment, closed or being built: (sequence, timeline).
    fn last_sequence(state: &PackagedState) -> Option<(u64, u64)> {
        let closed = state.segments.back().map(|s| (s.sequence, s.timeline));
        let open = state
            .open
            .as_ref()
            .map(|o| (o.start.sequence, o.start.timeline));
        closed.max(open)
    }

    /// A new publish continues this packaging: its segments come after every one so far.
    /// A segment left open by a publish that did not finish it is dropped (its number is
    /// not reused).
    fn resume(&self) {
        let mut state = self.lock();
        state.live_from = Self::last_sequence(&state).map_or(0, |(sequence, _)| sequence + 1);
        state.open = None;
        self.changed(&mut state);
    }

    /// Whether a player starting now plays the current publish: it has media to start on
    /// (see [`Packaged::is_playable`]), and if the playlist still lists segments from before
    /// a drop, its own last three target durations, where a classic player starts
    /// (RFC 8216 §6.3.3).
    fn starts_current(&self) -> bool {
        let state = self.lock();
        let listed = self.listed(&state);
        let current = listed.iter().filter(|s| s.sequence >= state.live_from);
        match listed.first() {
            None => false,
            Some(first) if first.sequence >= state.live_from => true,
            Some(_) => {
                let seconds: f64 = current.map(|s| s.duration.as_secs_f64()).sum();
                seconds >= 3.0 * state.target_duration as f64
            }
        }
    }

    /// Whether a player could start on it now: it has a whole segment, LL-HLS too. A
    /// playlist of parts alone is no use to hls.js: it takes it for empty and asks again
    /// one second, then two seconds later (measured: the first frame 4 s after the first
    /// keyframe, against 2.5 s when the playlist waits for the segment).
    pub fn is_playable(&self) -> bool {
        !self.lock().segments.is_empty()
    }

    /// Publishes a closed segment and forgets the oldest beyond twice the window.
    pub fn push(&self, segment: Segment) {
        let mut state = self.lock();
        self.push_locked(&mut state, segment);
        self.changed(&mut state);
    }

    fn push_locked(&self, state: &mut PackagedState, segment: Segment) {
        let rounded = segment.duration.as_secs_f64().round() as u64;
        if rounded > state.target_duration {
            // Only an encoder that skips half a second of frames at once gets here; the
            // declared target stays (RFC 8216: it must not change).
            tracing::warn!(
                sequence = segment.sequence,
                duration = ?segment.duration,
                "segment longer than the target duration (the encoder skipped frames)"
            );
        }
        state.peak_bitrate = state.peak_bitrate.max(segment.bitrate());
        state.segments.push_back(Arc::new(segment));
        while state.segments.len() > self.window * 2 {
            state.segments.pop_front();
        }
        if let Some(oldest) = state.segments.front().map(|s| s.timeline) {
            state.inits.retain(|(timeline, _)| *timeline >= oldest);
        }
    }

    /// LL-HLS: publishes a part of the segment `start` describes; returns its index.
    pub fn push_part(&self, start: SegmentStart, part: Part) -> usize {
        let mut state = self.lock();
        let index = Self::add_part(&mut state, start, part);
        self.changed(&mut state);
        index
    }

    fn add_part(state: &mut PackagedState, start: SegmentStart, part: Part) -> usize {
        match &mut state.open {
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
        }
    }

    /// LL-HLS: publishes the open segment's last part and closes the segment in one
    /// change. Published apart, a blocking request answered in between would get a playlist
    /// whose preload hint names a part of this segment that never comes (RFC 8216bis: the
    /// hinted part MUST be what is added next).
    pub fn close_open_with(&self, last: Option<(SegmentStart, Part)>, duration: Duration) {
        let mut state = self.lock();
        if let Some((start, part)) = last {
            Self::add_part(&mut state, start, part);
        }
        if let Some(open) = state.open.take() {
            self.push_locked(
                &mut state,
                Segment {
                    sequence: open.start.sequence,
                    duration,
                    program_date_time: open.start.program_date_time,
                    discontinuity: open.start.discontinuity,
                    timeline: open.start.timeline,
                    parts: open.parts,
                    gap: false,
                },
            );
        }
        self.changed(&mut state);
    }

    /// The broadcast is over: the playlist gets EXT-X-ENDLIST.
    fn end(&self) {
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

    /// How long ago the newest part appeared.
    pub fn newest_part_age(&self) -> Option<std::time::Duration> {
        self.edge_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|at| at.elapsed())
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

    /// LL-HLS delta update for `_HLS_skip=v2`.
    pub fn delta_v2_playlist(&self) -> Rendered {
        self.lock().delta_v2.clone()
    }

    /// The newest complete segment (an EXTINF in the playlist): RFC 8216bis's "last Media
    /// Segment", which the open segment's parts are not yet.
    pub fn last_complete_sequence(&self) -> Option<u64> {
        self.lock().segments.back().map(|s| s.sequence)
    }

    /// LL-HLS delta update (`_HLS_skip=YES`).
    pub fn delta_playlist(&self) -> Rendered {
        self.lock().delta.clone()
    }

    fn stream_inf(&self, uri: String) -> StreamInf {
        let state = self.lock();
        let (bytes, micros) = state.segments.iter().fold((0u64, 0u128), |(b, d), s| {
            (b + s.len() as u64, d + s.duration.as_micros())
        });
        let average = (micros > 0).then(|| (bytes as u128 * 8 * 1_000_000 / micros) as u64);
        // The measured peak once known (RFC 8216); until a few segments are measured, not
        // below what a rung's encoder was asked for.
        let nominal = state
            .info
            .nominal_bandwidth
            .filter(|_| state.segments.len() < 3)
            .unwrap_or(0);
        StreamInf {
            uri,
            bandwidth: state.peak_bitrate.max(nominal),
            average_bandwidth: average,
            codecs: state.info.codecs.clone(),
            resolution: state.info.resolution,
            frame_rate: state.info.frame_rate,
        }
    }
}

fn newest_part(state: &PackagedState) -> Option<(u64, usize)> {
    if let Some(open) = state.open.as_ref().filter(|o| !o.parts.is_empty()) {
        return Some((open.start.sequence, open.parts.len() - 1));
    }
    let last = state.segments.back()?;
    Some((last.sequence, last.parts.len().checked_sub(1)?))
}

/// A quality level of a broadcast, in both packagings. The media pipeline (or an
/// encoder) writes to it through these few calls; players read its [`Packaged`] halves.
#[derive(Debug)]
pub struct Variant {
    pub name: String,
    /// fMP4 parts and segments: LL-HLS, what `master.m3u8` offers.
    pub ll: Arc<Packaged>,
    /// MPEG-TS segments: classic HLS, what `classic.m3u8` offers.
    pub classic: Arc<Packaged>,
    /// Where its media timestamps ended (milliseconds): a returning publisher's start
    /// there, so even a player that ignores EXT-X-DISCONTINUITY sees time run on.
    media_end: std::sync::atomic::AtomicI64,
    /// Its video for WebRTC viewers, as the pipeline has it.
    pub realtime: realtime::Feed,
}

impl Variant {
    /// A variant of broadcast `id` named `name`. Its packagings live at
    /// `/hls/<slug>/<name>/` (LL-HLS) and `/hls/<slug>/<name>-ts/` (MPEG-TS); `source`
    /// keeps the paths it has always had, `ll/` and `source/`, so links keep working.
    fn new(name: &str, id: &str, window: usize, target_duration: u64, part_target: f64) -> Variant {
        let (ll_path, classic_path) = if name == SOURCE {
            ("ll".to_string(), "source".to_string())
        } else {
            (name.to_string(), format!("{name}-ts"))
        };
        // The LL playlist is as long as the classic one: players that do not know LL-HLS
        // read it as classic, and some (VLC) start near its top. Delta updates skip what
        // is older than six target durations, so they skip something only in longer
        // windows than the default.
        let ll_window = window;
        Variant {
            name: name.to_string(),
            ll: Arc::new(Packaged::new(
                ll_path,
                Packaging::LowLatency { part_target },
                ll_window,
                target_duration,
                id.to_string(),
            )),
            classic: Arc::new(Packaged::new(
                classic_path,
                Packaging::Classic,
                window,
                target_duration,
                id.to_string(),
            )),
            media_end: std::sync::atomic::AtomicI64::new(0),
            realtime: realtime::Feed::default(),
        }
    }

    /// Where the media timestamps of the last publish ended (0 before any).
    pub fn media_end(&self) -> i64 {
        self.media_end.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn set_media_end(&self, end: i64) {
        self.media_end
            .store(end, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn packagings(&self) -> [&Arc<Packaged>; 2] {
        [&self.ll, &self.classic]
    }

    /// What the master playlists say about it.
    pub fn set_info(&self, info: StreamInfo) {
        for packaged in self.packagings() {
            packaged.set_info(info.clone());
        }
    }

    /// The fMP4 initialization segment of `timeline`.
    pub fn set_init(&self, timeline: u64, init: Bytes) {
        self.ll.set_init(timeline, init);
    }

    /// The newest segment so far, closed or being built, in either packaging:
    /// (sequence, timeline). A returning publisher's segments come after it.
    pub fn last_sequence(&self) -> Option<(u64, u64)> {
        let [ll, classic] = self
            .packagings()
            .map(|p| Packaged::last_sequence(&p.lock()));
        ll.max(classic)
    }

    /// A new LL-HLS part of the segment starting at `start`; returns its index.
    pub fn push_part(&self, start: SegmentStart, part: Part) -> usize {
        self.ll.push_part(start, part)
    }

    /// A segment is complete: the LL-HLS one closes with its `last_part` (its parts are
    /// the segment), and the MPEG-TS one is published.
    pub fn close_segment(&self, segment: Segment, last_part: Option<(SegmentStart, Part)>) {
        self.ll.close_open_with(last_part, segment.duration);
        self.classic.push(segment);
    }

    /// Whether its playlists have ended (the broadcast is over, or the rung was shed).
    pub fn is_ended(&self) -> bool {
        self.ll.is_ended()
    }

    /// Segments this variant has no media for (see [`Segment::gap`]), in both packagings.
    pub fn push_gaps(&self, gaps: Vec<Segment>) {
        for gap in gaps {
            self.ll.push(gap.clone());
            self.classic.push(gap);
        }
    }

    /// Ends this variant's playlists (EXT-X-ENDLIST): a ladder rung shed while the
    /// broadcast goes on; the master playlist stops offering it.
    pub fn end(&self) {
        for packaged in self.packagings() {
            packaged.end();
        }
    }

    fn resume(&self) {
        for packaged in self.packagings() {
            packaged.resume();
        }
    }

    /// Whether a player starting now plays the current publish.
    fn starts_current(&self) -> bool {
        // Both packagings hold the same segments: either decides.
        self.ll.starts_current()
    }
}

/// One publish on one channel, from the accepted publish until its media is dropped.
#[derive(Debug)]
pub struct Broadcast {
    pub slug: String,
    /// Random per publish; part of every media file name.
    pub id: String,
    /// The streamer's own stream, remuxed: always there, and first of `variants`.
    source: Arc<Variant>,
    /// The quality levels, `source` first. Variants are added, never removed, during a
    /// broadcast.
    variants: Mutex<Vec<Arc<Variant>>>,
    window: usize,
    target_duration: u64,
    part_target: f64,
    /// The publish feeding it now, or the last one.
    publish: Mutex<Publish>,
    /// Its audio for WebRTC viewers (Opus), whichever variant's video they watch.
    pub realtime_audio: realtime::Feed,
}

/// One publish (one OBS connection) on a broadcast: a broadcast has several when the
/// streamer drops and comes back within the linger time.
#[derive(Debug)]
struct Publish {
    /// Counts the broadcast's publishes from 1: a linger timer started when publish `n`
    /// ended does nothing if `n` is no longer the last.
    number: u64,
    on_air: bool,
    /// Cancelled to end the publish from outside (its stream key was rotated, or its media
    /// cannot be served: see [`Broadcast::refuse`]).
    stop: tokio_util::sync::CancellationToken,
    /// Why the box ended the publish, in words for the streamer.
    refusal: Option<String>,
    /// What the box measures of the incoming stream (ingest feeds it).
    health: health::Meter,
}

impl Publish {
    fn new(number: u64) -> Publish {
        Publish {
            number,
            on_air: true,
            stop: tokio_util::sync::CancellationToken::new(),
            refusal: None,
            health: health::Meter::default(),
        }
    }
}

impl Broadcast {
    fn publish(&self) -> MutexGuard<'_, Publish> {
        self.publish.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Cancelled when the current publish must end (see [`Broadcast::refuse`]).
    pub fn stop_token(&self) -> tokio_util::sync::CancellationToken {
        self.publish().stop.clone()
    }

    /// Ends the publish because its media cannot be served; `why` goes to the publisher
    /// (OBS) and the logs.
    pub fn refuse(&self, why: String) {
        let mut publish = self.publish();
        publish.refusal = Some(why);
        publish.stop.cancel();
    }

    /// Updates the stream's health measurements (a few numbers; called per frame).
    pub fn measure(&self, update: impl FnOnce(&mut health::Meter)) {
        update(&mut self.publish().health);
    }

    /// The stream's health now, with its warnings.
    pub fn health(&self) -> health::Snapshot {
        self.publish().health.snapshot(std::time::Instant::now())
    }

    /// Why the publish was refused, if it was.
    pub fn refusal(&self) -> Option<String> {
        self.publish().refusal.clone()
    }

    /// The publisher left (or was sent away). The playlists stay open for the linger
    /// time; returns the publish's number for [`Broadcasts::end_if_idle`].
    pub fn off_air(&self) -> u64 {
        let mut publish = self.publish();
        publish.on_air = false;
        publish.number
    }

    /// Whether a publisher is feeding it now.
    pub fn is_on_air(&self) -> bool {
        self.publish().on_air
    }

    /// A publisher is back within the linger time: a new publish continues the playlists.
    fn resume(&self) {
        let mut publish = self.publish();
        *publish = Publish::new(publish.number + 1);
        for variant in self.variants() {
            variant.resume();
        }
    }

    fn variants_lock(&self) -> MutexGuard<'_, Vec<Arc<Variant>>> {
        self.variants.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every variant, `source` first.
    pub fn variants(&self) -> Vec<Arc<Variant>> {
        self.variants_lock().clone()
    }

    /// The streamer's own stream, remuxed.
    pub fn source(&self) -> Arc<Variant> {
        self.source.clone()
    }

    /// Adds a quality level (or returns the one of that name); see [`Variant::new`] for
    /// where it is served.
    pub fn add_variant(&self, name: &str) -> Arc<Variant> {
        let mut variants = self.variants_lock();
        if let Some(existing) = variants.iter().find(|v| v.name == name) {
            return existing.clone();
        }
        let variant = Arc::new(Variant::new(
            name,
            &self.id,
            self.window,
            self.target_duration,
            self.part_target,
        ));
        // Each LL-HLS playlist reports the others' live edges.
        for other in variants.iter() {
            other
                .ll
                .siblings
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Arc::downgrade(&variant.ll));
            variant
                .ll
                .siblings
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Arc::downgrade(&other.ll));
        }
        variants.push(variant.clone());
        variant
    }

    /// A packaging by its path, for HTTP.
    pub fn packaged(&self, path: &str) -> Option<Arc<Packaged>> {
        self.variants_lock()
            .iter()
            .flat_map(|v| v.packagings())
            .find(|p| p.path == path)
            .cloned()
    }

    /// How long ago the source's newest LL-HLS part appeared.
    pub fn newest_part_age(&self) -> Option<std::time::Duration> {
        self.packaged("ll").and_then(|p| p.newest_part_age())
    }

    /// Publishing, and a player starting now plays this publish: its first segment
    /// exists, and after a return, nothing from before the drop is where players start.
    pub fn is_live(&self) -> bool {
        self.is_on_air() && self.source.starts_current()
    }

    /// Whether the playlists have ended (EXT-X-ENDLIST): the broadcast is over, though
    /// its media may still be served for a moment.
    pub fn is_ended(&self) -> bool {
        self.source.classic.is_ended()
    }

    /// A master playlist offering every variant's `pick`ed packaging that has a segment to
    /// describe; `None` until the source has one, and while the publisher is away (a
    /// player starting then would be shown the minutes before the drop as live).
    fn master_for(&self, pick: impl Fn(&Variant) -> &Arc<Packaged>) -> Option<Rendered> {
        if !self.is_live() {
            return None;
        }
        let variants = self.variants();
        let offered: Vec<StreamInf> = variants
            .iter()
            .map(|v| pick(v))
            .filter(|p| p.is_playable() && !p.is_ended())
            .map(|p| p.stream_inf(format!("{}/index.m3u8", p.path)))
            .collect();
        let source_ready = variants.first().is_some_and(|v| pick(v).is_playable());
        source_ready.then(|| Rendered::new(playlist::master(&offered)))
    }

    /// `master.m3u8`: every variant's LL-HLS packaging (hls.js and Safari play it; players
    /// that do not know LL-HLS tags ignore them and play its fMP4 segments).
    pub fn master_playlist(&self) -> Option<Rendered> {
        self.master_for(|v| &v.ll)
    }

    /// `classic.m3u8`: MPEG-TS segments, for old players without fMP4 support.
    pub fn classic_master_playlist(&self) -> Option<Rendered> {
        self.master_for(|v| &v.classic)
    }

    /// Ends every variant's playlists (EXT-X-ENDLIST): the broadcast is over.
    pub fn end(&self) {
        for variant in self.variants() {
            variant.end();
        }
    }
}

/// The name of the variant that is the streamer's own stream.
pub const SOURCE: &str = "source";

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
    /// Why the box last refused a channel's publish (its media), and when (RFC 3339): the
    /// dashboard tells the streamer. In memory: it matters for minutes, not across restarts.
    refusals: Mutex<HashMap<String, (String, String)>>,
}

impl Broadcasts {
    pub fn new(
        window: usize,
        target: std::time::Duration,
        part_target: std::time::Duration,
    ) -> Broadcasts {
        Broadcasts {
            window,
            target_duration: segmenter::target_duration(target),
            part_target: part_target.as_secs_f64(),
            by_slug: Mutex::new(HashMap::new()),
            refusals: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Broadcast>>> {
        self.by_slug.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a publish on `slug`: it continues the channel's broadcast if its publisher
    /// left less than the linger time ago, or starts a new one. Refused while another
    /// publish on the channel is running.
    pub fn begin(&self, slug: &str) -> Result<Arc<Broadcast>, AlreadyLive> {
        let mut by_slug = self.lock();
        if let Some(current) = by_slug.get(slug) {
            if current.is_on_air() {
                return Err(AlreadyLive(slug.to_string()));
            }
            if !current.is_ended() {
                current.resume();
                return Ok(current.clone());
            }
        }
        let id = format!("{:08x}", rand::rng().random::<u32>());
        let source = Arc::new(Variant::new(
            SOURCE,
            &id,
            self.window,
            self.target_duration,
            self.part_target,
        ));
        let broadcast = Arc::new(Broadcast {
            slug: slug.to_string(),
            id,
            variants: Mutex::new(vec![source.clone()]),
            source,
            window: self.window,
            target_duration: self.target_duration,
            part_target: self.part_target,
            publish: Mutex::new(Publish::new(1)),
            realtime_audio: realtime::Feed::default(),
        });
        by_slug.insert(slug.to_string(), broadcast.clone());
        Ok(broadcast)
    }

    pub fn get(&self, slug: &str) -> Option<Arc<Broadcast>> {
        self.lock().get(slug).cloned()
    }

    /// The channels live now, by slug.
    pub fn live_slugs(&self) -> Vec<String> {
        let mut slugs: Vec<String> = self
            .lock()
            .values()
            .filter(|b| b.is_live())
            .map(|b| b.slug.clone())
            .collect();
        slugs.sort();
        slugs
    }

    /// How many channels are live now (not counting ended broadcasts that linger).
    pub fn live_count(&self) -> usize {
        self.lock().values().filter(|b| b.is_live()).count()
    }

    /// The linger time after publish `number` ended has passed: ends the broadcast's
    /// playlists unless a publisher came back meanwhile. Whether it ended them.
    pub fn end_if_idle(&self, broadcast: &Broadcast, number: u64) -> bool {
        let by_slug = self.lock();
        let current = by_slug
            .get(&broadcast.slug)
            .is_some_and(|b| b.id == broadcast.id);
        let idle = {
            let publish = broadcast.publish();
            publish.number == number && !publish.on_air
        };
        if current && idle {
            broadcast.end();
        }
        current && idle
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

    /// Remembers why a publish on `slug` was refused (a codec the box cannot serve).
    pub fn note_refusal(&self, slug: &str, why: &str) {
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        self.refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(slug.to_string(), (at, why.to_string()));
    }

    /// Why and when a publish on `slug` was last refused.
    pub fn last_refusal(&self, slug: &str) -> Option<(String, String)> {
        self.refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(slug)
            .cloned()
    }

    /// Ends the live publish on `slug`, if there is one.
    pub fn stop(&self, slug: &str) {
        if let Some(broadcast) = self.get(slug) {
            broadcast.stop_token().cancel();
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
            timeline: 0,
            parts: vec![Part {
                data: Bytes::from(vec![0u8; 1000]),
                duration,
                independent: true,
            }],
            gap: false,
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
        first.source().classic.push(segment(0, 2.0));
        let number = first.off_air();
        assert!(broadcasts.end_if_idle(&first, number), "nobody came back");
        assert!(first.is_ended());
        let second = broadcasts.begin("stage").expect("after end");
        assert_ne!(first.id, second.id);
        assert_eq!(second.source().classic.segment_count(), 0);
        assert!(second
            .source()
            .classic
            .parse_media_name(&first.source().classic.segment_name(0))
            .is_none());
        broadcasts.remove(&first);
        assert!(
            broadcasts.get("stage").is_some(),
            "removing the old one keeps the new one"
        );
    }

    /// The publisher drops and comes back within the linger time: the same playlists
    /// carry on, numbers counting up on a new timeline, the window sliding on over the
    /// drop, and new players are let in once the return fills where they start.
    #[test]
    fn a_publisher_back_within_the_linger_continues_the_playlists() {
        let broadcasts = Broadcasts::new(3, Duration::from_secs(2), Duration::from_millis(334));
        let b = broadcasts.begin("stage").expect("begin");
        for n in 0..4 {
            b.source().ll.push(segment(n, 2.0));
            b.source().classic.push(segment(n, 2.0));
        }
        assert!(b.is_live());
        let number = b.off_air();
        assert!(!b.is_live() && !b.is_ended(), "away, not over");
        assert!(b.master_playlist().is_none() && b.classic_master_playlist().is_none());
        let text = |b: &Broadcast| {
            String::from_utf8(b.source().classic.media_playlist().plain.to_vec()).expect("utf-8")
        };
        assert!(
            !text(&b).contains("ENDLIST"),
            "players wait through the drop"
        );

        let again = broadcasts.begin("stage").expect("back");
        assert!(Arc::ptr_eq(&b, &again), "the same broadcast");
        assert!(
            !broadcasts.end_if_idle(&b, number),
            "the old linger timer does nothing"
        );
        assert_eq!(b.source().last_sequence(), Some((3, 0)));
        assert!(!b.is_live());
        let back = |n: u64| {
            let mut s = segment(n, 2.0);
            s.discontinuity = n == 4;
            s.timeline = 1;
            b.source().ll.push(s.clone());
            b.source().classic.push(s);
        };
        back(4);
        let listed = text(&b);
        assert!(
            listed.contains("#EXT-X-MEDIA-SEQUENCE:2\n"),
            "the window slides on, so a player syncs: {listed}"
        );
        assert!(listed.contains("-3.ts\n#EXT-X-DISCONTINUITY\n"), "{listed}");
        assert!(
            !b.is_live() && b.master_playlist().is_none(),
            "a player starting now would start before the drop"
        );
        back(5);
        back(6);
        assert!(b.is_live() && b.master_playlist().is_some());
        let listed = text(&b);
        assert!(
            listed.contains("#EXT-X-MEDIA-SEQUENCE:4\n#EXT-X-DISCONTINUITY\n"),
            "{listed}"
        );
        assert!(
            b.source().classic.segment(3).is_some(),
            "still fetchable mid-play"
        );
    }

    #[test]
    fn the_window_is_bounded_and_lasts_three_target_durations() {
        let broadcasts = Broadcasts::new(3, Duration::from_secs(2), Duration::from_millis(334));
        let b = broadcasts.begin("stage").expect("begin");
        for n in 0..10 {
            b.source().classic.push(segment(n, 2.0));
        }
        assert_eq!(b.source().classic.segment_count(), 6);
        assert!(b.source().classic.segment(3).is_none());
        assert!(
            b.source().classic.segment(4).is_some(),
            "slid out of the playlist but still served"
        );
        let text =
            String::from_utf8(b.source().classic.media_playlist().plain.to_vec()).expect("utf-8");
        assert!(text.contains("#EXT-X-TARGETDURATION:2\n"), "{text}");
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:7\n"), "{text}");
        assert_eq!(text.matches("#EXTINF").count(), 3);
        // The LL playlist is as long (VLC and others read it as a classic one).
        for n in 0..10 {
            b.source().ll.push(segment(n, 2.0));
        }
        let ll = String::from_utf8(b.source().ll.media_playlist().plain.to_vec()).expect("utf-8");
        assert_eq!(ll.matches("#EXTINF").count(), 3, "{ll}");
        // Short segments (scene cuts): more are listed, so the playlist still lasts three
        // target durations (RFC 8216 §6.2.2).
        for n in 10..16 {
            b.source().classic.push(segment(n, 1.0));
        }
        let text =
            String::from_utf8(b.source().classic.media_playlist().plain.to_vec()).expect("utf-8");
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:10\n"), "{text}");
        assert!(
            text.contains("#EXT-X-TARGETDURATION:2\n"),
            "never changes: {text}"
        );
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
            timeline: 0,
        };
        assert!(!b.source().ll.has(0, Some(0)));
        assert_eq!(b.source().ll.next_part(), None);
        for _ in 0..3 {
            b.source().ll.push_part(start(0), part(false));
        }
        assert!(b.source().ll.has(0, Some(2)) && !b.source().ll.has(0, Some(3)));
        assert!(!b.source().ll.has(0, None), "segment 0 is not complete yet");
        assert_eq!(b.source().ll.next_part(), Some((0, 3)));
        b.source().ll.close_open_with(None, Duration::from_secs(1));
        // Segment 0 ended with three parts: part 3 of it never comes; part 0 of segment 1
        // is "a later one".
        assert!(b.source().ll.has(0, None));
        assert!(!b.source().ll.has(0, Some(3)));
        assert_eq!(b.source().ll.next_part(), Some((1, 0)));
        b.source().ll.push_part(start(1), part(true));
        assert!(
            b.source().ll.has(0, Some(3))
                && b.source().ll.has(1, Some(0))
                && !b.source().ll.has(1, Some(1))
        );
        assert_eq!(b.source().ll.part(0, 2).as_deref(), Some(&b"moof"[..]));
        assert_eq!(b.source().ll.part(0, 3), None);
    }

    #[test]
    fn a_broadcast_is_a_list_of_variants_each_in_two_packagings() {
        let broadcasts = Broadcasts::new(3, Duration::from_secs(2), Duration::from_millis(334));
        let b = broadcasts.begin("stage").expect("begin");
        assert_eq!(b.variants().len(), 1);
        assert_eq!(b.source().name, SOURCE);
        // The source keeps the paths players already use.
        assert_eq!(
            b.packaged("ll").map(|p| p.path.clone()).as_deref(),
            Some("ll")
        );
        assert!(b.packaged("source").is_some());
        assert!(b.master_playlist().is_none(), "nothing to offer yet");
        // An encoder adds a rung and feeds it through the same calls as the remuxer.
        let rung = b.add_variant("480p");
        assert!(Arc::ptr_eq(&rung, &b.add_variant("480p")), "one per name");
        for variant in [b.source(), rung.clone()] {
            variant.set_info(StreamInfo {
                codecs: vec!["avc1.64001f".into()],
                ..StreamInfo::default()
            });
            variant.push_part(
                SegmentStart {
                    sequence: 0,
                    program_date_time: chrono::Utc::now(),
                    discontinuity: false,
                    timeline: 0,
                },
                Part {
                    data: Bytes::from_static(b"moof"),
                    duration: Duration::from_secs(2),
                    independent: true,
                },
            );
            variant.close_segment(segment(0, 2.0), None);
        }
        assert!(b.is_live());
        let master =
            String::from_utf8(b.master_playlist().expect("master").plain.to_vec()).expect("utf-8");
        assert!(
            master.contains("ll/index.m3u8") && master.contains("480p/index.m3u8"),
            "{master}"
        );
        let classic =
            String::from_utf8(b.classic_master_playlist().expect("classic").plain.to_vec())
                .expect("utf-8");
        assert!(
            classic.contains("source/index.m3u8") && classic.contains("480p-ts/index.m3u8"),
            "{classic}"
        );
        assert!(b
            .packaged("480p-ts")
            .is_some_and(|p| p.segment_count() == 1));
        b.end();
        assert!(rung.ll.is_ended() && rung.classic.is_ended() && b.is_ended());
    }

    /// At a segment boundary the last part and the segment's end are one change: a held
    /// request never sees the segment complete in parts but open, hinting a part that
    /// never comes.
    #[test]
    fn a_segment_closes_with_its_last_part_in_one_change() {
        let broadcasts = Broadcasts::new(3, Duration::from_secs(2), Duration::from_millis(334));
        let b = broadcasts.begin("stage").expect("begin");
        let ll = b.source().ll.clone();
        let start = |sequence| SegmentStart {
            sequence,
            program_date_time: chrono::Utc::now(),
            discontinuity: false,
            timeline: 0,
        };
        let part = || Part {
            data: Bytes::from_static(b"moof"),
            duration: Duration::from_millis(334),
            independent: false,
        };
        ll.push_part(start(0), part());
        let mut changes = ll.subscribe();
        changes.borrow_and_update();
        b.source()
            .close_segment(segment(0, 0.668), Some((start(0), part())));
        assert!(changes.has_changed().expect("open"));
        changes.borrow_and_update();
        assert!(!changes.has_changed().expect("open"), "exactly one change");
        assert_eq!(ll.segment(0).map(|s| s.parts.len()), Some(2));
        assert_eq!(
            ll.next_part(),
            Some((1, 0)),
            "the hint moves to the next segment"
        );
        let text = String::from_utf8(ll.media_playlist().plain.to_vec()).expect("utf-8");
        assert!(text.contains("-1.0.m4s\"\n"), "{text}");
    }

    #[test]
    fn segment_names_round_trip() {
        let broadcasts = Broadcasts::new(3, Duration::from_secs(2), Duration::from_millis(334));
        let b = broadcasts.begin("stage").expect("begin");
        let name = b.source().classic.segment_name(42);
        assert_eq!(b.source().classic.parse_media_name(&name), Some((42, None)));
        assert_eq!(b.source().classic.parse_media_name("nope-42.ts"), None);
        assert_eq!(
            b.source()
                .classic
                .parse_media_name(&format!("{}-x.ts", b.id)),
            None
        );
        assert_eq!(
            b.source()
                .classic
                .parse_media_name(&format!("{}-42.1.ts", b.id)),
            None,
            "TS has no parts"
        );
        assert_eq!(
            b.source()
                .ll
                .parse_media_name(&b.source().ll.part_name(42, 3)),
            Some((42, Some(3)))
        );
        assert_eq!(
            b.source()
                .ll
                .parse_media_name(&b.source().ll.segment_name(42)),
            Some((42, None))
        );
        assert_eq!(
            b.source().ll.parse_media_name(&name),
            None,
            "a TS name is not an LL name"
        );
        // One name per segment: no sign, no leading zeros.
        for alias in ["+42", "042", "42 ", "", "-1"] {
            assert_eq!(
                b.source()
                    .ll
                    .parse_media_name(&format!("{}-{alias}.m4s", b.id)),
                None,
                "{alias:?}"
            );
        }
        assert_eq!(
            b.source()
                .ll
                .parse_media_name(&format!("{}-+1.+0.m4s", b.id)),
            None
        );
        assert_eq!(
            b.source().ll.parse_media_name(&format!("{}-0.0.m4s", b.id)),
            Some((0, Some(0)))
        );
    }
}
