//! Which encoder works on this board, found by encoding rather than by listing: each
//! candidate is opened and made to encode a few pictures at the rung's size, on a thread
//! with a deadline. It passes when packets come out, the first picture and one typed I
//! later come out as IDRs (so its keyframes can follow the source's), its SPS says the
//! size asked for, and it encodes faster than real time by a margin. Otherwise the next
//! candidate is tried, and the reason is kept for the operator. An encoder that does not
//! answer within the deadline is abandoned (its thread may be stuck in a driver) and not
//! tried again until the daemon restarts.

use super::encoder::{Encoded, Encoder, Spec};
use crate::media::codec;
use ffmpeg_next as ff;
use serde::Serialize;
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Pictures each candidate encodes; the one at [`FORCED_AT`] is typed I.
const PICTURES: usize = 20;
const FORCED_AT: usize = 10;
/// A candidate must encode at least this many times faster than the rung's frame rate:
/// the decode and the other rungs share the machine.
pub const SPEED_MARGIN: f64 = 1.5;
/// How long a candidate may take to open and encode the test pictures.
pub const DEADLINE: Duration = Duration::from_secs(5);

/// Encoders abandoned for not answering: never tried again in this process.
static HUNG: Mutex<Option<HashSet<String>>> = Mutex::new(None);

fn is_hung(name: &str) -> bool {
    HUNG.lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .is_some_and(|set| set.contains(name))
}

/// Blocklists an encoder for the rest of the process (it hung, here or in a rung).
pub fn abandon(name: &str) {
    HUNG.lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashSet::new)
        .insert(name.to_string());
}

/// A candidate that did not pass, and why.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Rejection {
    pub encoder: String,
    pub reason: String,
}

/// The outcome for one rung size.
#[derive(Debug, Clone, Serialize)]
pub struct Choice {
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    /// The encoder that passed, if any did.
    pub encoder: Option<String>,
    /// Its encoding speed in the test, pictures per second.
    pub measured_fps: Option<f64>,
    pub rejected: Vec<Rejection>,
    /// How long the whole probe took.
    pub probe_ms: u64,
}

impl Choice {
    /// Whether the encoder chosen is a board's hardware encoder.
    pub fn is_hardware(&self) -> bool {
        self.encoder.as_deref().is_some_and(|e| e != "libx264")
    }
}

/// Tries `candidates` in order for pictures of `spec`'s size (its `encoder` is ignored).
pub fn choose(candidates: &[String], spec: &Spec) -> Choice {
    let began = Instant::now();
    let mut choice = Choice {
        width: spec.width,
        height: spec.height,
        fps: spec.fps,
        encoder: None,
        measured_fps: None,
        rejected: Vec::new(),
        probe_ms: 0,
    };
    for name in candidates {
        let spec = Spec {
            encoder: name.clone(),
            ..spec.clone()
        };
        match try_one(spec) {
            Ok(fps) => {
                choice.encoder = Some(name.clone());
                choice.measured_fps = Some((fps * 10.0).round() / 10.0);
                break;
            }
            Err(reason) => choice.rejected.push(Rejection {
                encoder: name.clone(),
                reason,
            }),
        }
    }
    choice.probe_ms = u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX);
    choice
}

/// One candidate on its own thread, within [`DEADLINE`]: its speed, or why not.
fn try_one(spec: Spec) -> Result<f64, String> {
    if is_hung(&spec.encoder) {
        return Err("hung in an earlier probe or rung: not tried again until restart".into());
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let name = spec.encoder.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("probe-{name}"))
        .spawn(move || {
            let _ = tx.send(test_encode(&spec));
        });
    if let Err(e) = spawned {
        return Err(format!("cannot start a probe thread: {e}"));
    }
    match rx.recv_timeout(DEADLINE) {
        Ok(result) => result,
        Err(_) => {
            abandon(&name);
            Err(format!(
                "no answer within {} s: abandoned, not tried again until restart",
                DEADLINE.as_secs()
            ))
        }
    }
}

/// A moving test picture: gradients that shift each frame, so the encoder has work.
pub(super) fn test_picture(width: u32, height: u32, n: usize) -> ff::frame::Video {
    let mut picture = ff::frame::Video::new(ff::format::Pixel::YUV420P, width, height);
    for plane in 0..3 {
        let stride = picture.stride(plane);
        let rows = if plane == 0 {
            height
        } else {
            height.div_ceil(2)
        } as usize;
        let data = picture.data_mut(plane);
        for y in 0..rows {
            for x in 0..stride {
                if let Some(px) = data.get_mut(y * stride + x) {
                    *px = ((x + y + n * 4 + plane * 64) % 256) as u8;
                }
            }
        }
    }
    picture
}

fn test_encode(spec: &Spec) -> Result<f64, String> {
    let mut encoder = Encoder::open(spec)?;
    let format = encoder.input_format();
    let mut convert = if format == ff::format::Pixel::YUV420P {
        None
    } else {
        Some(
            ff::software::scaling::Context::get(
                ff::format::Pixel::YUV420P,
                spec.width,
                spec.height,
                format,
                spec.width,
                spec.height,
                ff::software::scaling::Flags::FAST_BILINEAR,
            )
            .map_err(|e| format!("no conversion to {format:?}: {e}"))?,
        )
    };
    let pictures: Vec<ff::frame::Video> = (0..PICTURES)
        .map(|n| test_picture(spec.width, spec.height, n))
        .collect();
    let step = 1000.0 / spec.fps.max(1.0);
    let pts = |n: usize| (n as f64 * step).round() as i64;
    let mut out: Vec<Encoded> = Vec::new();
    let began = Instant::now();
    for (n, picture) in pictures.into_iter().enumerate() {
        let mut picture = match convert.as_mut() {
            Some(scaler) => {
                let mut converted = ff::frame::Video::empty();
                scaler
                    .run(&picture, &mut converted)
                    .map_err(|e| format!("conversion: {e}"))?;
                converted
            }
            None => picture,
        };
        picture.set_pts(Some(pts(n)));
        out.extend(encoder.encode(&mut picture, n == 0 || n == FORCED_AT)?);
    }
    out.extend(encoder.finish());
    let seconds = began.elapsed().as_secs_f64().max(1e-6);
    judge(spec, &out, pts(FORCED_AT), PICTURES as f64 / seconds)
}

/// The pass rules, on what a test encode gave.
fn judge(spec: &Spec, out: &[Encoded], forced_pts: i64, fps: f64) -> Result<f64, String> {
    let first = out.first().ok_or("no packets came out")?;
    if !first.unit.idr {
        return Err("the first picture did not come out as an IDR".into());
    }
    match out.iter().find(|e| e.pts == forced_pts) {
        Some(forced) if forced.unit.idr => {}
        Some(_) => {
            return Err(
                "a picture typed I did not come out as an IDR: its keyframes could not follow the source's"
                    .into(),
            )
        }
        None => return Err(format!("the picture at {forced_pts} ms never came out")),
    }
    let config = out
        .iter()
        .find_map(|e| e.config.clone())
        .ok_or("no SPS and PPS in the stream")?;
    let size = codec::avc_dimensions(&config).ok_or("its SPS does not parse")?;
    if size != (spec.width, spec.height) {
        return Err(format!(
            "its SPS says {}x{}, not the {}x{} asked for",
            size.0, size.1, spec.width, spec.height
        ));
    }
    if fps < spec.fps * SPEED_MARGIN {
        return Err(format!(
            "{fps:.0} pictures/s, slower than {:.0} ({:.0} fps × {SPEED_MARGIN})",
            spec.fps * SPEED_MARGIN,
            spec.fps
        ));
    }
    Ok(fps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(width: u32, height: u32) -> Spec {
        Spec {
            encoder: String::new(),
            width,
            height,
            fps: 30.0,
            kbps: 1000,
            x264_preset: "ultrafast".into(),
        }
    }

    #[test]
    fn every_hardware_encoder_is_rejected_with_its_reason_and_libx264_chosen() {
        let _ = ff::init();
        let candidates: Vec<String> = crate::config::ENCODERS
            .iter()
            .map(|s| s.to_string())
            .collect();
        let choice = choose(&candidates, &spec(854, 480));
        assert_eq!(choice.encoder.as_deref(), Some("libx264"), "{choice:#?}");
        assert!(!choice.is_hardware());
        let rejected: Vec<&str> = choice.rejected.iter().map(|r| r.encoder.as_str()).collect();
        assert_eq!(rejected, &crate::config::ENCODERS[..5], "{choice:#?}");
        assert!(choice.rejected.iter().all(|r| !r.reason.is_empty()));
        assert!(choice.probe_ms < 2000, "{} ms", choice.probe_ms);
        assert!(choice.measured_fps.is_some_and(|fps| fps >= 45.0));
    }

    #[test]
    fn a_test_encode_that_breaks_a_rule_is_refused_with_the_rule() {
        let _ = ff::init();
        let mut spec = spec(640, 360);
        spec.encoder = "libx264".into();
        let mut encoder = Encoder::open(&spec).expect("libx264");
        let mut out = Vec::new();
        for n in 0..12 {
            let mut picture = test_picture(640, 360, n);
            picture.set_pts(Some(n as i64 * 33));
            out.extend(encoder.encode(&mut picture, n == 0).expect("encode"));
        }
        out.extend(encoder.finish());
        // No picture was typed I at 330 ms: the rule about following keyframes fails.
        let why = judge(&spec, &out, 330, 1000.0).expect_err("not an IDR");
        assert!(why.contains("typed I"), "{why}");
        assert!(judge(&spec, &out, 0, 10.0)
            .expect_err("slow")
            .contains("slower"));
        let other = Spec {
            width: 1280,
            height: 720,
            ..spec.clone()
        };
        assert!(judge(&other, &out, 0, 1000.0)
            .expect_err("size")
            .contains("640x360"));
        assert!(judge(&spec, &[], 0, 1000.0).is_err());
    }
}
