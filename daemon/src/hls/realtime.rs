//! The real-time feed: coded frames the moment a pipeline has them, for WebRTC viewers.
//!
//! Nothing here is packaged or kept. Each variant has a feed of its video (Annex B, the
//! parameter sets before every keyframe) and each broadcast one of its audio (Opus). A
//! feed is a bounded ring (`tokio::sync::broadcast`): the pipeline never waits for a
//! viewer, and a viewer that falls a ring behind is told so and skips to the next keyframe.
//! Pipelines do the work of filling a feed only while someone watches it.

use bytes::Bytes;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;
use tokio::sync::broadcast;

/// Samples a viewer may be behind by: ~1.5 s of 30 fps video, or 2.5 s of 20 ms audio.
pub const RING: usize = 48;

/// One coded frame.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Presentation time, milliseconds on the broadcast's media timeline.
    pub pts: i64,
    pub keyframe: bool,
    pub data: Bytes,
}

/// What a viewer's video needs to know of a feed's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoTraits {
    /// `profile_idc`, constraint flags and `level_idc`, as in SDP's `profile-level-id`.
    pub profile_level_id: u32,
    /// Whether any frame was shown in another order than decoded: WebRTC has no B-frames.
    pub reordered: bool,
}

#[derive(Debug)]
pub struct Feed {
    ring: broadcast::Sender<Sample>,
    /// A viewer asked for a keyframe (PLI/FIR, or it is joining): an encoder we drive makes
    /// one at its next picture.
    keyframe_wanted: AtomicBool,
    profile_level_id: AtomicU32,
    reordered: AtomicBool,
    /// Why this feed cannot go to WebRTC viewers, when it cannot.
    unusable: Mutex<Option<String>>,
}

impl Default for Feed {
    fn default() -> Self {
        Feed {
            ring: broadcast::channel(RING).0,
            keyframe_wanted: AtomicBool::new(false),
            profile_level_id: AtomicU32::new(0),
            reordered: AtomicBool::new(false),
            unusable: Mutex::new(None),
        }
    }
}

impl Feed {
    /// Whether anyone watches: the pipeline fills the feed only then.
    pub fn is_watched(&self) -> bool {
        self.ring.receiver_count() > 0
    }

    pub fn send(&self, sample: Sample) {
        // An error only says no one is subscribed, which is fine.
        let _ = self.ring.send(sample);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Sample> {
        self.ring.subscribe()
    }

    /// Asks the encoder feeding this (a ladder rung) for a keyframe.
    pub fn request_keyframe(&self) {
        self.keyframe_wanted.store(true, Ordering::Relaxed);
    }

    /// Whether a keyframe was asked for since the last call.
    pub fn take_keyframe_request(&self) -> bool {
        self.keyframe_wanted.swap(false, Ordering::Relaxed)
    }

    /// A new configuration (a publish, or a return after a drop): its profile, and what
    /// was seen of the frames before it no longer holds (the streamer may have turned
    /// B-frames off).
    pub fn set_profile(&self, profile_level_id: u32) {
        self.profile_level_id
            .store(profile_level_id, Ordering::Relaxed);
        self.reordered.store(false, Ordering::Relaxed);
        self.set_unusable(None);
    }

    /// A frame whose presentation time is not its decode time: B-frames.
    pub fn note_reordered(&self) {
        self.reordered.store(true, Ordering::Relaxed);
    }

    /// The video as seen so far; `None` before its configuration.
    pub fn traits(&self) -> Option<VideoTraits> {
        let profile_level_id = self.profile_level_id.load(Ordering::Relaxed);
        (profile_level_id != 0).then(|| VideoTraits {
            profile_level_id,
            reordered: self.reordered.load(Ordering::Relaxed),
        })
    }

    /// The feed's media cannot go to WebRTC viewers (its pipeline says why).
    pub fn set_unusable(&self, why: Option<String>) {
        *self.unusable.lock().unwrap_or_else(|e| e.into_inner()) = why;
    }

    pub fn unusable(&self) -> Option<String> {
        self.unusable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
