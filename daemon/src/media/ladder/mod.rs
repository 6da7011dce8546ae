//! The adaptive ladder: renditions below the source, made in the process. One decode
//! thread reads the packets the remuxing pipeline taps off (never making it wait), and
//! hands each picture by reference to one worker per rung, which scales it, encodes it on
//! the encoder the probe chose, and packages it through the same pipeline code as the
//! source, cutting where the source's segments were cut.

pub mod encoder;
pub mod libav;
pub mod probe;

use crate::config::{TranscodeConfig, TranscodeSwitch};
use serde::Serialize;

/// What the probe found for the configured ladder, and whether the ladder runs: for the
/// operator (`commeowd transcode probe`, `GET /api/system/transcode`, systemd's status
/// line, the dashboard).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `[transcode] enabled` as configured: `auto`, `on` or `off`.
    pub configured: &'static str,
    /// Whether publishes get the ladder.
    pub enabled: bool,
    /// Why, in words.
    pub why: String,
    pub rungs: Vec<RungReport>,
    pub probed_at: String,
}

/// One configured rung, probed at a 16:9 picture of its height (at each publish it is
/// probed again at the source's real shape).
#[derive(Debug, Clone, Serialize)]
pub struct RungReport {
    pub name: String,
    pub video_kbps: u32,
    #[serde(flatten)]
    pub choice: probe::Choice,
}

impl Report {
    /// One line for systemd's `STATUS=`.
    pub fn status_line(&self) -> String {
        let chosen: Vec<String> = self
            .rungs
            .iter()
            .map(|r| {
                format!(
                    "{} {}",
                    r.name,
                    r.choice.encoder.as_deref().unwrap_or("no encoder")
                )
            })
            .collect();
        if self.enabled {
            format!("ladder on: {}", chosen.join(", "))
        } else {
            format!("ladder off: {}", self.why)
        }
    }
}

/// The size a rung is probed at before any source is seen: 16:9 at its height.
fn nominal_size(height: u32) -> (u32, u32) {
    rung_size((height * 16 / 9 + 2, height + 1), height).unwrap_or((height, height))
}

/// Probes every configured rung and decides whether the ladder runs (see
/// [`TranscodeSwitch`]). With the ladder off in the config nothing is probed unless
/// `force` (the operator's `transcode probe`).
pub fn probe_ladder(config: &TranscodeConfig, force: bool) -> Report {
    let configured = match config.enabled {
        TranscodeSwitch::Auto => "auto",
        TranscodeSwitch::On => "on",
        TranscodeSwitch::Off => "off",
    };
    let probed_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    if config.enabled == TranscodeSwitch::Off && !force {
        return Report {
            configured,
            enabled: false,
            why: "off in the config ([transcode] enabled = false)".into(),
            rungs: Vec::new(),
            probed_at,
        };
    }
    let candidates = config.candidates();
    let rungs: Vec<RungReport> = config
        .ladder
        .iter()
        .map(|rung| {
            let (width, height) = nominal_size(rung.height);
            let spec = encoder::Spec {
                encoder: String::new(),
                width,
                height,
                fps: rung.max_fps,
                kbps: rung.video_kbps,
                x264_preset: config.x264_preset.clone(),
            };
            RungReport {
                name: rung.name.clone(),
                video_kbps: rung.video_kbps,
                choice: probe::choose(&candidates, &spec),
            }
        })
        .collect();
    let all_found = !rungs.is_empty() && rungs.iter().all(|r| r.choice.encoder.is_some());
    let all_hardware = all_found && rungs.iter().all(|r| r.choice.is_hardware());
    let (enabled, why) = match config.enabled {
        _ if rungs.is_empty() => (false, "no rungs in [[transcode.ladder]]".to_string()),
        _ if !all_found => (false, "no encoder passed the probe for every rung".to_string()),
        TranscodeSwitch::Off => (false, "off in the config ([transcode] enabled = false)".into()),
        TranscodeSwitch::On => (true, "on in the config".to_string()),
        TranscodeSwitch::Auto if all_hardware => (true, "auto: a hardware encoder works".into()),
        TranscodeSwitch::Auto => (
            false,
            "auto: no hardware encoder works here, only libx264; set [transcode] enabled = true to spend the CPU on it"
                .into(),
        ),
    };
    Report {
        configured,
        enabled,
        why,
        rungs,
        probed_at,
    }
}

/// A rung's picture size for a source of `source` (width, height): `height` tall, as wide
/// as keeps the source's aspect ratio, rounded to even (H.264 4:2:0 wants even sizes).
/// `None` when the rung is not below the source.
pub fn rung_size(source: (u32, u32), height: u32) -> Option<(u32, u32)> {
    let (width, source_height) = source;
    if height >= source_height || width == 0 || height == 0 {
        return None;
    }
    let exact = f64::from(width) * f64::from(height) / f64::from(source_height);
    let even = ((exact / 2.0).round() as u32).max(1) * 2;
    Some((even, height))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rungs_keep_the_aspect_ratio_with_even_widths_and_stay_below_the_source() {
        assert_eq!(rung_size((1920, 1080), 720), Some((1280, 720)));
        assert_eq!(rung_size((1920, 1080), 480), Some((854, 480)));
        assert_eq!(rung_size((1280, 720), 360), Some((640, 360)));
        // 4:3 and a phone held upright.
        assert_eq!(rung_size((1440, 1080), 480), Some((640, 480)));
        assert_eq!(rung_size((1080, 1920), 720), Some((406, 720)));
        // Odd arithmetic rounds to even: 1366x768 -> 480 tall is 853.75 wide.
        assert_eq!(rung_size((1366, 768), 480), Some((854, 480)));
        // At or above the source: no rung.
        assert_eq!(rung_size((1280, 720), 720), None);
        assert_eq!(rung_size((1280, 720), 1080), None);
        assert_eq!(rung_size((0, 0), 480), None);
    }
}
