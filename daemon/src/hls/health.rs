//! Stream health: what the box measures of a live stream as it arrives, for the streamer's
//! dashboard. Ingest feeds it every frame (cheap: a few numbers and two short rings); HTTP
//! reads a [`Snapshot`] with the warnings that matter for latency and for the venue Wi-Fi.
//!
//! The keyframe interval is measured between keyframes on the publisher's clock. A player
//! can start only at a keyframe, so it sets how far behind (or how late) a joiner starts;
//! segments stay within the target whatever it is, but past it most start without one.
//! B-frames add a reordering delay. Both come from the encoder's settings, which OBS hides
//! in its default Simple mode.

use serde::Serialize;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A keyframe interval longer than this gets a warning (the box's segments are 2 s).
pub const LONG_KEYFRAME_INTERVAL: f64 = 2.5;
/// More than this, in kbit/s over 10 s, is more than a crowded venue Wi-Fi carries well.
pub const HIGH_BITRATE_KBPS: u64 = 8_000;
const WINDOW: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct Meter {
    video_codec: Option<String>,
    audio_codec: Option<String>,
    resolution: Option<(u32, u32)>,
    last_keyframe_dts: Option<i64>,
    keyframe_interval_last: Option<f64>,
    keyframe_interval_max: Option<f64>,
    b_frames: bool,
    /// Bytes received (video and audio) and when, for the last 10 s.
    bytes: VecDeque<(Instant, usize)>,
    /// Video frames' decode times (ms) received in the last 10 s, for the frame rate.
    frames: VecDeque<(Instant, i64)>,
    /// The first video frame: wall clock and decode time, for the ingest lag.
    origin: Option<(Instant, i64)>,
    lag_ms: i64,
}

/// What the dashboard shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    pub video_codec: Option<String>,
    /// From the H.264 configuration: "High", "Main", "Baseline", …
    pub profile: Option<String>,
    /// e.g. "4.1".
    pub level: Option<String>,
    pub audio_codec: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub frame_rate: Option<f64>,
    pub bitrate_kbps_1s: u64,
    pub bitrate_kbps_10s: u64,
    /// Seconds between the last two keyframes, and the longest seen.
    pub keyframe_interval_last: Option<f64>,
    pub keyframe_interval_max: Option<f64>,
    pub b_frames: bool,
    /// How far behind the publisher's clock the stream arrives, in ms (its own start as
    /// zero): grows when the uplink cannot keep up.
    pub ingest_lag_ms: i64,
    /// Codes the page explains: `keyframe_interval`, `b_frames`, `bitrate`.
    pub warnings: Vec<&'static str>,
}

/// RFC 6381 `avc1.PPCCLL` → (profile name, level).
fn avc_profile_level(codec: &str) -> (Option<String>, Option<String>) {
    let Some(hex) = codec.strip_prefix("avc1.").filter(|h| h.len() == 6) else {
        return (None, None);
    };
    let byte = |i: usize| u8::from_str_radix(hex.get(i..i + 2).unwrap_or(""), 16).ok();
    let profile = byte(0).map(|p| {
        match p {
            66 => "Baseline",
            77 => "Main",
            88 => "Extended",
            100 => "High",
            110 => "High 10",
            122 => "High 4:2:2",
            244 => "High 4:4:4",
            _ => "other",
        }
        .to_string()
    });
    let level = byte(4).map(|l| format!("{}.{}", l / 10, l % 10));
    (profile, level)
}

fn audio_name(codec: &str) -> String {
    match codec {
        "mp4a.40.2" => "AAC-LC".to_string(),
        "mp4a.40.5" => "HE-AAC".to_string(),
        "mp4a.40.29" => "HE-AACv2".to_string(),
        other => other.to_string(),
    }
}

impl Meter {
    pub fn video_config(&mut self, codec: Option<String>, resolution: Option<(u32, u32)>) {
        self.video_codec = codec;
        self.resolution = resolution.or(self.resolution);
    }

    pub fn audio_config(&mut self, codec: Option<String>) {
        self.audio_codec = codec;
    }

    fn prune(&mut self, now: Instant) {
        while self
            .bytes
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > WINDOW)
        {
            self.bytes.pop_front();
        }
        while self
            .frames
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > WINDOW)
        {
            self.frames.pop_front();
        }
    }

    /// A video frame: decode time and composition offset in ms, keyframe or not, size.
    pub fn video(&mut self, now: Instant, dts: i64, cts: i32, keyframe: bool, bytes: usize) {
        self.prune(now);
        self.bytes.push_back((now, bytes));
        self.frames.push_back((now, dts));
        if cts > 0 {
            self.b_frames = true;
        }
        if keyframe {
            if let Some(last) = self.last_keyframe_dts {
                let interval = (dts - last) as f64 / 1000.0;
                if interval > 0.0 {
                    self.keyframe_interval_last = Some(interval);
                    self.keyframe_interval_max = Some(
                        self.keyframe_interval_max
                            .map_or(interval, |m| m.max(interval)),
                    );
                }
            }
            self.last_keyframe_dts = Some(dts);
        }
        let (origin_at, origin_dts) = *self.origin.get_or_insert((now, dts));
        let wall = now.duration_since(origin_at).as_millis() as i64;
        self.lag_ms = (wall - (dts - origin_dts)).max(0);
    }

    pub fn audio(&mut self, now: Instant, bytes: usize) {
        self.prune(now);
        self.bytes.push_back((now, bytes));
    }

    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let bits_within = |span: Duration| -> u64 {
            let bytes: usize = self
                .bytes
                .iter()
                .filter(|(t, _)| now.duration_since(*t) <= span)
                .map(|(_, b)| b)
                .sum();
            (bytes as u64 * 8) / 1000 / span.as_secs().max(1)
        };
        let frame_rate = match (self.frames.front(), self.frames.back()) {
            (Some((_, first)), Some((_, last))) if last > first && self.frames.len() > 1 => {
                let rate = (self.frames.len() - 1) as f64 * 1000.0 / (last - first) as f64;
                Some((rate * 100.0).round() / 100.0)
            }
            _ => None,
        };
        let (profile, level) = self
            .video_codec
            .as_deref()
            .map_or((None, None), avc_profile_level);
        let bitrate_kbps_10s = bits_within(WINDOW);
        let mut warnings = Vec::new();
        let longest = self
            .keyframe_interval_last
            .into_iter()
            .chain(self.keyframe_interval_max)
            .fold(0.0f64, f64::max);
        if longest > LONG_KEYFRAME_INTERVAL {
            warnings.push("keyframe_interval");
        }
        if self.b_frames {
            warnings.push("b_frames");
        }
        if bitrate_kbps_10s > HIGH_BITRATE_KBPS {
            warnings.push("bitrate");
        }
        Snapshot {
            video_codec: self.video_codec.clone(),
            profile,
            level,
            audio_codec: self.audio_codec.as_deref().map(audio_name),
            width: self.resolution.map(|r| r.0),
            height: self.resolution.map(|r| r.1),
            frame_rate,
            bitrate_kbps_1s: bits_within(Duration::from_secs(1)),
            bitrate_kbps_10s,
            keyframe_interval_last: self.keyframe_interval_last,
            keyframe_interval_max: self.keyframe_interval_max,
            b_frames: self.b_frames,
            ingest_lag_ms: self.lag_ms,
            warnings,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn obs_simple_mode_gets_the_keyframe_warning_and_two_seconds_does_not() {
        for (keyint, warned) in [(250, true), (60, false)] {
            let mut meter = Meter::default();
            meter.video_config(Some("avc1.64001f".into()), Some((1280, 720)));
            meter.audio_config(Some("mp4a.40.2".into()));
            let start = Instant::now();
            for n in 0..600i64 {
                let at = start + Duration::from_millis(n as u64 * 33);
                meter.video(at, n * 1000 / 30, 0, n % keyint == 0, 20_000);
            }
            let snap = meter.snapshot(start + Duration::from_millis(600 * 33));
            assert_eq!(
                snap.warnings.contains(&"keyframe_interval"),
                warned,
                "{snap:?}"
            );
            let expected = keyint as f64 / 30.0;
            let last = snap.keyframe_interval_last.expect("measured");
            assert!((last - expected).abs() < 0.05, "{last} vs {expected}");
            assert_eq!(snap.profile.as_deref(), Some("High"));
            assert_eq!(snap.level.as_deref(), Some("3.1"));
            assert_eq!(snap.audio_codec.as_deref(), Some("AAC-LC"));
            assert!(
                snap.frame_rate.is_some_and(|f| (f - 30.0).abs() < 0.5),
                "{snap:?}"
            );
            assert!(!snap.b_frames);
        }
    }

    #[test]
    fn b_frames_and_a_heavy_bitrate_are_seen() {
        let mut meter = Meter::default();
        let start = Instant::now();
        for n in 0..300i64 {
            let at = start + Duration::from_millis(n as u64 * 33);
            meter.video(
                at,
                n * 33,
                if n % 3 == 1 { 66 } else { 0 },
                n % 60 == 0,
                50_000,
            );
        }
        let snap = meter.snapshot(start + Duration::from_millis(300 * 33));
        assert!(snap.b_frames);
        assert!(snap.bitrate_kbps_10s > HIGH_BITRATE_KBPS, "{snap:?}");
        assert_eq!(snap.warnings, ["b_frames", "bitrate"]);
    }
}
