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
use playlist::{MediaPlaylist, Variant};
use rand::Rng;
use segmenter::Segment;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

/// What the master playlist says about a rendition's stream.
#[derive(Debug, Clone, Default)]
pub struct StreamInfo {
    pub codecs: Vec<String>,
    pub resolution: Option<(u32, u32)>,
    pub frame_rate: Option<f64>,
}

#[derive(Debug, Default)]
struct RenditionState {
    info: StreamInfo,
    /// Oldest first; the playlist shows the last `window` of them.
    segments: VecDeque<Arc<Segment>>,
    /// Only grows during a broadcast (RFC 8216 forbids changing it).
    target_duration: u64,
    peak_bitrate: u64,
    ended: bool,
    /// The media playlist, rendered when the segments change rather than per request:
    /// every player polls it, and it changes once per segment.
    playlist: Bytes,
}

/// One rendition of a broadcast (today the remuxed "source").
#[derive(Debug)]
pub struct Rendition {
    pub name: &'static str,
    window: usize,
    /// The broadcast's id: segment names start with it.
    broadcast_id: String,
    state: Mutex<RenditionState>,
}

impl Rendition {
    fn new(
        name: &'static str,
        window: usize,
        target_duration: u64,
        broadcast_id: String,
    ) -> Rendition {
        let rendition = Rendition {
            name,
            window,
            broadcast_id,
            state: Mutex::new(RenditionState {
                target_duration,
                ..RenditionState::default()
            }),
        };
        rendition.render(&mut rendition.lock());
        rendition
    }

    /// A segment's file name: unique per broadcast, so a player can never be served a
    /// previous stream's segment under a reused name.
    pub fn segment_name(&self, sequence: u64) -> String {
        format!("{}-{sequence}.ts", self.broadcast_id)
    }

    /// Parses a segment file name of this rendition back to its sequence number.
    pub fn parse_segment_name(&self, name: &str) -> Option<u64> {
        let rest = name
            .strip_prefix(self.broadcast_id.as_str())?
            .strip_prefix('-')?;
        rest.strip_suffix(".ts")?.parse().ok()
    }

    fn render(&self, state: &mut RenditionState) {
        let skip = state.segments.len().saturating_sub(self.window);
        let listed: Vec<_> = state.segments.iter().skip(skip).cloned().collect();
        let text = playlist::media(&MediaPlaylist {
            target_duration: state.target_duration,
            segments: &listed,
            ended: state.ended,
            segment_uri: &|s| self.segment_name(s.sequence),
        });
        state.playlist = Bytes::from(text);
    }

    fn lock(&self) -> MutexGuard<'_, RenditionState> {
        // A panic elsewhere while holding this lock leaves plain data behind; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_info(&self, info: StreamInfo) {
        self.lock().info = info;
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
        self.render(&mut state);
    }

    /// The stream ended: the playlist gets EXT-X-ENDLIST.
    pub fn end(&self) {
        let mut state = self.lock();
        if !state.ended {
            state.ended = true;
            self.render(&mut state);
        }
    }

    pub fn is_ended(&self) -> bool {
        self.lock().ended
    }

    pub fn segment_count(&self) -> usize {
        self.lock().segments.len()
    }

    pub fn segment(&self, sequence: u64) -> Option<Arc<Segment>> {
        self.lock()
            .segments
            .iter()
            .find(|s| s.sequence == sequence)
            .cloned()
    }

    pub fn media_playlist(&self) -> Bytes {
        self.lock().playlist.clone()
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

/// One publish on one channel, from the accepted publish until its media is dropped.
#[derive(Debug)]
pub struct Broadcast {
    pub slug: String,
    /// Random per publish; part of every segment name.
    pub id: String,
    pub source: Rendition,
}

impl Broadcast {
    /// Publishing and with at least one segment a player can fetch.
    pub fn is_live(&self) -> bool {
        !self.source.is_ended() && self.source.segment_count() > 0
    }

    pub fn rendition(&self, name: &str) -> Option<&Rendition> {
        (name == self.source.name).then_some(&self.source)
    }

    /// The master playlist, once the source has a segment to describe.
    pub fn master_playlist(&self) -> Option<String> {
        if self.source.segment_count() == 0 {
            return None;
        }
        let variant = self
            .source
            .variant(format!("{}/index.m3u8", self.source.name));
        Some(playlist::master(&[variant]))
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
    by_slug: Mutex<HashMap<String, Arc<Broadcast>>>,
}

impl Broadcasts {
    pub fn new(window: usize, target: std::time::Duration) -> Broadcasts {
        Broadcasts {
            window,
            target_duration: target.as_secs_f64().round().max(1.0) as u64,
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
        let broadcast = Arc::new(Broadcast {
            slug: slug.to_string(),
            source: Rendition::new("source", self.window, self.target_duration, id.clone()),
            id,
        });
        by_slug.insert(slug.to_string(), broadcast.clone());
        Ok(broadcast)
    }

    pub fn get(&self, slug: &str) -> Option<Arc<Broadcast>> {
        self.lock().get(slug).cloned()
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

    pub fn all(&self) -> Vec<Arc<Broadcast>> {
        self.lock().values().cloned().collect()
    }
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
        let broadcasts = Broadcasts::new(3, Duration::from_secs(2));
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
            .parse_segment_name(&first.source.segment_name(0))
            .is_none());
        broadcasts.remove(&first);
        assert!(
            broadcasts.get("stage").is_some(),
            "removing the old one keeps the new one"
        );
    }

    #[test]
    fn window_is_bounded_and_target_duration_only_grows() {
        let broadcasts = Broadcasts::new(3, Duration::from_secs(2));
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
        let text = String::from_utf8(b.source.media_playlist().to_vec()).expect("utf-8");
        assert!(text.contains("#EXT-X-TARGETDURATION:4\n"), "{text}");
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:7\n"), "{text}");
        assert_eq!(text.matches("#EXTINF").count(), 3);
    }

    #[test]
    fn segment_names_round_trip() {
        let broadcasts = Broadcasts::new(3, Duration::from_secs(2));
        let b = broadcasts.begin("stage").expect("begin");
        let name = b.source.segment_name(42);
        assert_eq!(b.source.parse_segment_name(&name), Some(42));
        assert_eq!(b.source.parse_segment_name("nope-42.ts"), None);
        assert_eq!(b.source.parse_segment_name(&format!("{}-x.ts", b.id)), None);
    }
}
