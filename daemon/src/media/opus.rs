//! AAC to Opus for WebRTC viewers, in the process with libav: OBS sends AAC, which
//! browsers do not take over WebRTC. Decode, resample to 48 kHz stereo, cut 20 ms frames,
//! encode with `libopus` (FFmpeg's own Opus encoder where libopus is missing). Runs on the
//! media pipeline's thread, only while a WebRTC viewer listens.

use crate::media::mux;
use bytes::Bytes;
use ffmpeg_next as ff;

/// Opus runs at 48 kHz; WebRTC's clock for it too.
const RATE: u32 = 48_000;
/// 20 ms frames: what browsers send and expect.
const FRAME: usize = 960;
/// Bytes of one stereo sample, interleaved signed 16-bit.
const SAMPLE_BYTES: usize = 4;
/// Audio is music and voice from a stage: 96 kb/s stereo.
const BIT_RATE: usize = 96_000;
/// Decoded audio held before it becomes Opus at most (~1 s): a stalled encoder loses
/// audio rather than growing.
const MAX_PENDING: usize = RATE as usize * SAMPLE_BYTES;

#[derive(Debug, thiserror::Error)]
pub enum OpusError {
    #[error("no Opus encoder in this libav")]
    NoEncoder,
    #[error("the AAC configuration does not open a decoder: {0}")]
    Decoder(String),
    #[error("the Opus encoder does not open: {0}")]
    Encoder(String),
}

/// One stream's transcoder, from its AudioSpecificConfig.
pub struct Transcoder {
    decoder: ff::decoder::Audio,
    resampler: Option<ff::software::resampling::Context>,
    encoder: ff::encoder::Audio,
    /// Interleaved 48 kHz stereo s16 not yet encoded.
    pending: Vec<u8>,
    /// The media time (ms) of the first sample of `pending`.
    pending_pts: Option<i64>,
    /// Samples handed to the encoder.
    encoded: i64,
}

impl Transcoder {
    pub fn new(asc: &[u8]) -> Result<Transcoder, OpusError> {
        let params = mux::parameters(ff::media::Type::Audio, ff::codec::Id::AAC, asc)
            .map_err(|e| OpusError::Decoder(e.to_string()))?;
        let decoder = ff::codec::context::Context::from_parameters(params)
            .and_then(|c| c.decoder().audio())
            .map_err(|e| OpusError::Decoder(e.to_string()))?;
        let codec = ff::encoder::find_by_name("libopus")
            .or_else(|| ff::encoder::find(ff::codec::Id::OPUS))
            .ok_or(OpusError::NoEncoder)?;
        let mut context = ff::codec::context::Context::new_with_codec(codec)
            .encoder()
            .audio()
            .map_err(|e| OpusError::Encoder(e.to_string()))?;
        context.set_rate(RATE as i32);
        context.set_channel_layout(ff::ChannelLayout::STEREO);
        context.set_channels(2);
        context.set_format(ff::format::Sample::I16(ff::format::sample::Type::Packed));
        context.set_bit_rate(BIT_RATE);
        context.set_time_base(ff::Rational(1, RATE as i32));
        let mut options = ff::Dictionary::new();
        // Low delay: no look-ahead beyond the frame (libopus' "lowdelay" application).
        options.set("application", "lowdelay");
        // FFmpeg's native encoder is marked experimental.
        options.set("strict", "experimental");
        let encoder = context
            .open_as_with(codec, options)
            .map_err(|e| OpusError::Encoder(e.to_string()))?;
        Ok(Transcoder {
            decoder,
            resampler: None,
            encoder,
            pending: Vec::new(),
            pending_pts: None,
            encoded: 0,
        })
    }

    /// Takes one AAC frame at `pts` (ms); returns the Opus packets ready, with their times.
    pub fn push(&mut self, aac: &[u8], pts: i64) -> Vec<(i64, Bytes)> {
        let mut packet = ff::Packet::copy(aac);
        packet.set_pts(Some(pts));
        if let Err(e) = self.decoder.send_packet(&packet) {
            tracing::debug!(error = %e, pts, "AAC frame refused by the decoder");
            return Vec::new();
        }
        let mut decoded = ff::frame::Audio::empty();
        while self.decoder.receive_frame(&mut decoded).is_ok() {
            self.resample(&decoded, pts);
        }
        self.encode_ready()
    }

    fn resample(&mut self, decoded: &ff::frame::Audio, pts: i64) {
        let layout = match decoded.channel_layout() {
            layout if layout.is_empty() => {
                ff::ChannelLayout::default(i32::from(decoded.channels()))
            }
            layout => layout,
        };
        let resampler = match self.resampler.as_mut() {
            Some(resampler) => resampler,
            None => match ff::software::resampling::Context::get(
                decoded.format(),
                layout,
                decoded.rate(),
                ff::format::Sample::I16(ff::format::sample::Type::Packed),
                ff::ChannelLayout::STEREO,
                RATE,
            ) {
                Ok(resampler) => self.resampler.insert(resampler),
                Err(e) => {
                    tracing::warn!(error = %e, "no resampler for this audio: WebRTC viewers get none");
                    return;
                }
            },
        };
        // Room for the resampled samples plus what the resampler held back.
        let room = decoded.samples() * RATE as usize / decoded.rate().max(1) as usize + 256;
        let mut out = ff::frame::Audio::new(
            ff::format::Sample::I16(ff::format::sample::Type::Packed),
            room,
            ff::ChannelLayout::STEREO,
        );
        if let Err(e) = resampler.run(decoded, &mut out) {
            tracing::debug!(error = %e, "audio frame lost in resampling");
            return;
        }
        let bytes = out.samples() * SAMPLE_BYTES;
        let data = out.data(0);
        if self.pending.len() + bytes > MAX_PENDING || bytes > data.len() {
            self.pending.clear();
            self.pending_pts = None;
            return;
        }
        if self.pending_pts.is_none() {
            self.pending_pts = Some(pts);
        }
        self.pending.extend_from_slice(&data[..bytes]);
    }

    fn encode_ready(&mut self) -> Vec<(i64, Bytes)> {
        let mut ready = Vec::new();
        while self.pending.len() >= FRAME * SAMPLE_BYTES {
            let Some(start) = self.pending_pts else {
                break;
            };
            let mut frame = ff::frame::Audio::new(
                ff::format::Sample::I16(ff::format::sample::Type::Packed),
                FRAME,
                ff::ChannelLayout::STEREO,
            );
            frame.set_rate(RATE);
            frame.data_mut(0)[..FRAME * SAMPLE_BYTES]
                .copy_from_slice(&self.pending[..FRAME * SAMPLE_BYTES]);
            self.pending.drain(..FRAME * SAMPLE_BYTES);
            self.pending_pts = Some(start + (FRAME as i64 * 1000) / i64::from(RATE));
            frame.set_pts(Some(self.encoded));
            self.encoded += FRAME as i64;
            if let Err(e) = self.encoder.send_frame(&frame) {
                tracing::debug!(error = %e, "the Opus encoder refused a frame");
                continue;
            }
            let mut packet = ff::Packet::empty();
            while self.encoder.receive_packet(&mut packet).is_ok() {
                if let Some(data) = packet.data() {
                    ready.push((start, Bytes::copy_from_slice(data)));
                }
            }
        }
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A second of 44.1 kHz AAC-LC made by libav's own encoder becomes 50 Opus packets of
    /// 20 ms (less the encoders' start-up delay), 20 ms apart.
    #[test]
    fn aac_becomes_twenty_millisecond_opus_packets() {
        let _ = ff::init();
        let Some(aac) = ff::encoder::find(ff::codec::Id::AAC) else {
            panic!("libav has no AAC encoder");
        };
        let mut context = ff::codec::context::Context::new_with_codec(aac)
            .encoder()
            .audio()
            .expect("audio encoder");
        context.set_rate(44_100);
        context.set_channel_layout(ff::ChannelLayout::STEREO);
        context.set_channels(2);
        context.set_format(ff::format::Sample::F32(ff::format::sample::Type::Planar));
        context.set_bit_rate(128_000);
        context.set_time_base(ff::Rational(1, 44_100));
        context.set_flags(ff::codec::Flags::GLOBAL_HEADER);
        let mut encoder = context.open_as(aac).expect("AAC opens");
        let asc = {
            // SAFETY: reading the opened encoder's extradata (the AudioSpecificConfig).
            unsafe {
                let raw = encoder.as_ptr();
                std::slice::from_raw_parts((*raw).extradata, (*raw).extradata_size as usize)
                    .to_vec()
            }
        };
        let mut transcoder = Transcoder::new(&asc).expect("transcoder");
        let mut out = Vec::new();
        let mut packet = ff::Packet::empty();
        for n in 0..44 {
            let mut frame = ff::frame::Audio::new(
                ff::format::Sample::F32(ff::format::sample::Type::Planar),
                1024,
                ff::ChannelLayout::STEREO,
            );
            frame.set_rate(44_100);
            for plane in 0..2 {
                for (i, sample) in frame.plane_mut::<f32>(plane).iter_mut().enumerate() {
                    let t = (n * 1024 + i) as f32 / 44_100.0;
                    *sample = (t * 440.0 * std::f32::consts::TAU).sin() * 0.5;
                }
            }
            frame.set_pts(Some(n as i64 * 1024));
            encoder.send_frame(&frame).expect("AAC takes the frame");
            while encoder.receive_packet(&mut packet).is_ok() {
                let pts = packet.pts().unwrap_or(0) * 1000 / 44_100;
                out.extend(transcoder.push(packet.data().unwrap_or_default(), pts));
            }
        }
        assert!((44..=51).contains(&out.len()), "{} packets", out.len());
        for pair in out.windows(2) {
            assert_eq!(pair[1].0 - pair[0].0, 20, "{:?}", (pair[0].0, pair[1].0));
        }
        assert!(out
            .iter()
            .all(|(_, data)| !data.is_empty() && data.len() < 1500));
    }
}
