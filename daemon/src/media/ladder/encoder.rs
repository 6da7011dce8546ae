//! One rung's H.264 encoder, opened by name with what each board's encoder needs, turning
//! pictures into AVCC access units and an avcC record the muxers take unchanged.
//!
//! The encoders differ in what they accept (facts found on the boards, see the issue):
//! the Pi's `h264_v4l2m2m` takes yuv420p, rejects a GOP size and makes a keyframe only
//! from a picture typed I; `h264_vaapi` takes surfaces uploaded to the GPU; `h264_qsv`
//! NV12; NVENC turns a forced I into an IDR only with `forced-idr`; libx264 likewise, and
//! needs `zerolatency` so that a picture in gives its packet out. Whatever the encoder, the
//! SPS and PPS are read from the stream itself (the Pi's encoder never fills in extradata),
//! and a keyframe is asked for by typing the picture I.

use super::libav::{capture_log, Vaapi};
use crate::media::codec::{annexb_to_avcc, avcc_record, AccessUnit};
use ffmpeg_next as ff;

/// What to open: an encoder by its libav name, for one picture size and rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub encoder: String,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub kbps: u32,
    pub x264_preset: String,
}

/// An encoded picture.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// Presentation (= decode: no B-frames) time, milliseconds.
    pub pts: i64,
    pub unit: AccessUnit,
    /// A new avcC record when this picture brought new parameter sets.
    pub config: Option<Vec<u8>>,
}

pub struct Encoder {
    encoder: ff::encoder::Video,
    format: ff::format::Pixel,
    vaapi: Option<Vaapi>,
    sps: Option<Vec<u8>>,
    pps: Option<Vec<u8>>,
    /// The record last announced.
    config: Option<Vec<u8>>,
}

/// Timestamps are milliseconds, as ingest gives them.
const MILLIS: ff::Rational = ff::Rational(1, 1000);

impl Encoder {
    /// Opens `spec.encoder`; the error says why in libav's own words where it gave any.
    pub fn open(spec: &Spec) -> Result<Encoder, String> {
        let (opened, log) = capture_log(|| Encoder::open_quietly(spec));
        opened.map_err(|why| {
            let said: Vec<&String> = log.iter().filter(|l| !why.contains(l.as_str())).collect();
            if said.is_empty() {
                why
            } else {
                format!(
                    "{why}: {}",
                    said.iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            }
        })
    }

    fn open_quietly(spec: &Spec) -> Result<Encoder, String> {
        let codec = ff::encoder::find_by_name(&spec.encoder)
            .ok_or_else(|| "not in this libav build".to_string())?;
        let mut context = ff::codec::context::Context::new_with_codec(codec);
        let name = spec.encoder.as_str();
        let (format, vaapi) = match name {
            "h264_vaapi" => {
                let vaapi = Vaapi::open(spec.width, spec.height)?;
                vaapi.attach(&mut context)?;
                (ff::format::Pixel::VAAPI, Some(vaapi))
            }
            "h264_qsv" => (ff::format::Pixel::NV12, None),
            _ => (ff::format::Pixel::YUV420P, None),
        };
        let mut video = context.encoder().video().map_err(|e| e.to_string())?;
        video.set_width(spec.width);
        video.set_height(spec.height);
        video.set_format(format);
        video.set_time_base(MILLIS);
        let fps = ff::Rational::from(spec.fps);
        video.set_frame_rate(Some(fps));
        let kbps = format!("{}k", spec.kbps);
        let mut options = ff::Dictionary::new();
        options.set("b", &kbps);
        options.set("maxrate", &kbps);
        options.set("bufsize", &kbps);
        options.set("bf", "0");
        // Keyframes come where the source's segments begin (pictures typed I); the
        // encoder's own interval is only a backstop, ten seconds.
        let backstop = ((spec.fps * 10.0).round() as u32).max(1).to_string();
        match name {
            "libx264" => {
                options.set("preset", &spec.x264_preset);
                options.set("tune", "zerolatency");
                options.set("forced-idr", "1");
                options.set("x264-params", "scenecut=0:open-gop=0");
                options.set("g", &backstop);
            }
            "h264_nvenc" => {
                options.set("forced-idr", "1");
                options.set("zerolatency", "1");
                options.set("rc", "cbr");
                options.set("g", &backstop);
            }
            "h264_qsv" => {
                options.set("g", &backstop);
                options.set("async_depth", "1");
            }
            "h264_vaapi" => options.set("g", &backstop),
            // The Pi's encoder rejects a GOP size; nvmpi builds differ, so defaults.
            _ => {}
        }
        let encoder = video.open_with(options).map_err(|e| e.to_string())?;
        Ok(Encoder {
            encoder,
            format,
            vaapi,
            sps: None,
            pps: None,
            config: None,
        })
    }

    /// The picture format `encode` takes (NV12 for VA-API, uploaded here).
    pub fn input_format(&self) -> ff::format::Pixel {
        if self.vaapi.is_some() {
            ff::format::Pixel::NV12
        } else {
            self.format
        }
    }

    /// Encodes one picture (its pts in milliseconds), as an IDR when `keyframe`; returns
    /// what came out (nothing yet, for an encoder that holds a few pictures).
    pub fn encode(
        &mut self,
        picture: &mut ff::frame::Video,
        keyframe: bool,
    ) -> Result<Vec<Encoded>, String> {
        picture.set_kind(if keyframe {
            ff::picture::Type::I
        } else {
            ff::picture::Type::None
        });
        let sent = match &self.vaapi {
            Some(vaapi) => {
                let surface = vaapi.upload(picture)?;
                self.encoder.send_frame(&surface)
            }
            None => self.encoder.send_frame(picture),
        };
        sent.map_err(|e| e.to_string())?;
        Ok(self.drain())
    }

    /// Everything the encoder still holds, at the end of the stream.
    pub fn finish(&mut self) -> Vec<Encoded> {
        if self.encoder.send_eof().is_err() {
            return Vec::new();
        }
        self.drain()
    }

    fn drain(&mut self) -> Vec<Encoded> {
        let mut out = Vec::new();
        let mut packet = ff::Packet::empty();
        while self.encoder.receive_packet(&mut packet).is_ok() {
            let Some(data) = packet.data() else { continue };
            let unit = annexb_to_avcc(data);
            if let Some(sps) = &unit.sps {
                self.sps = Some(sps.clone());
            }
            if let Some(pps) = &unit.pps {
                self.pps = Some(pps.clone());
            }
            let record = match (&self.sps, &self.pps) {
                (Some(sps), Some(pps)) => avcc_record(sps, pps),
                _ => None,
            };
            let config = if record.is_some() && record != self.config {
                self.config = record.clone();
                record
            } else {
                None
            };
            let pts = packet.pts().or(packet.dts()).unwrap_or(0);
            out.push(Encoded { pts, unit, config });
        }
        out
    }
}
