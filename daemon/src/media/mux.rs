//! Muxing with libav (ffmpeg-next), into memory: MPEG-TS for classic HLS, fragmented MP4
//! (CMAF) for Low-Latency HLS.
//!
//! libav writes through a custom I/O context into a shared buffer; at each cut the muxer is
//! flushed and the buffer taken as one run of bytes: a TS segment, or one fMP4 fragment
//! (moof + mdat) that is an LL-HLS part. Packets arrive as RTMP gave them (H.264 in AVCC form
//! with an avcC record, raw AAC with an AudioSpecificConfig). libav's mpegts muxer inserts
//! the `h264_mp4toannexb` filter itself (which also repeats SPS/PPS before every keyframe)
//! and wraps AAC in ADTS; the mp4 muxer takes both as they are. Each fMP4 fragment's
//! `tfdt` is set to the decode time we gave its first sample (libav would count from the
//! muxer's first packet), so all variants of a broadcast share one timeline. The few raw calls
//! ffmpeg-next has no safe form for (extradata, flushing, one muxer flag) are confined to
//! this file.

use super::codec;
use bytes::Bytes;
use ffmpeg_next as ff;
use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum MuxError {
    #[error("libav: {0}")]
    Av(#[from] ff::Error),
    #[error("libav: out of memory")]
    OutOfMemory,
    #[error("the H.264 configuration (avcC/SPS) is malformed")]
    BadVideoConfig,
    #[error("the AAC configuration (AudioSpecificConfig) is malformed")]
    BadAudioConfig,
}

/// Which elementary stream a packet belongs to.
/// Sets each track's `tfdt` (baseMediaDecodeTime) in an fMP4 fragment to the decode time
/// of its first sample, `starts[track]` in the track's time base (track IDs are stream
/// index + 1: video 1, audio 2). libav's mp4 muxer counts a track's time from its own
/// first packet; a ladder rung's muxer starts seconds into the broadcast, and its
/// fragments must sit on the source's timeline, where a player switching between them
/// appends them (MSE places samples by tfdt).
fn set_decode_times(fragment: &mut [u8], starts: &[Option<i64>; 2]) {
    let read_u32 = |b: &[u8], at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
    };
    // Boxes in `range`: (type, start, end) of each.
    let boxes = |b: &[u8], from: usize, to: usize| -> Vec<([u8; 4], usize, usize)> {
        let mut out = Vec::new();
        let mut at = from;
        while at + 8 <= to {
            let Some(size) = read_u32(b, at).map(|s| s as usize) else {
                break;
            };
            if size < 8 || at + size > to {
                break;
            }
            let mut kind = [0u8; 4];
            kind.copy_from_slice(&b[at + 4..at + 8]);
            out.push((kind, at, at + size));
            at += size;
        }
        out
    };
    for (kind, start, end) in boxes(fragment, 0, fragment.len()) {
        if &kind != b"moof" {
            continue;
        }
        for (kind, traf, traf_end) in boxes(fragment, start + 8, end) {
            if &kind != b"traf" {
                continue;
            }
            let children = boxes(fragment, traf + 8, traf_end);
            let track = children
                .iter()
                .find(|(k, ..)| k == b"tfhd")
                .and_then(|(_, at, _)| read_u32(fragment, at + 12));
            let Some(start_dts) =
                track.and_then(|id| starts.get((id as usize).wrapping_sub(1)).copied().flatten())
            else {
                continue;
            };
            if let Some((_, at, end)) = children.iter().find(|(k, ..)| k == b"tfdt") {
                let value = u64::try_from(start_dts).unwrap_or(0);
                match fragment.get(at + 8).copied() {
                    Some(1) if end - at >= 20 => {
                        fragment[at + 12..at + 20].copy_from_slice(&value.to_be_bytes())
                    }
                    Some(0) if end - at >= 16 => {
                        let value = u32::try_from(value).unwrap_or(u32::MAX);
                        fragment[at + 12..at + 16].copy_from_slice(&value.to_be_bytes())
                    }
                    _ => {}
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    Video,
    Audio,
}

/// Where libav's output lands until the next cut.
#[derive(Debug, Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Sink {
    fn take(&self) -> Bytes {
        Bytes::from(std::mem::take(
            &mut *self.0.lock().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

/// Timestamps from RTMP are milliseconds.
const MILLIS: ff::Rational = ff::Rational(1, 1000);

/// Which container a muxer writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// MPEG-TS, for classic HLS.
    MpegTs,
    /// Fragmented MP4 with one fragment per flush, for LL-HLS parts.
    Cmaf,
}

/// A video frame held back until the next one gives its duration: an fMP4 fragment needs
/// the duration of its last sample, which RTMP does not carry.
#[derive(Debug)]
struct HeldFrame {
    dts: i64,
    pts: i64,
    keyframe: bool,
    data: bytes::Bytes,
}

/// A libav muxer writing H.264 and optionally AAC into memory.
pub struct Muxer {
    container: Container,
    output: ff::format::context::Output,
    sink: Sink,
    video: (usize, ff::Rational),
    audio: Option<(usize, ff::Rational)>,
    /// AAC frame duration in the audio stream's time base (1024 samples).
    audio_frame: i64,
    held_video: Option<HeldFrame>,
    last_video_step: i64,
    /// CMAF: the initialization segment (ftyp + moov), written by `new`.
    init: Bytes,
    /// CMAF: per track (video, audio), the decode time of the first sample in the fragment
    /// being built, in the track's time base (see [`set_decode_times`]).
    fragment_start: [Option<i64>; 2],
}

pub(crate) fn parameters(
    medium: ff::media::Type,
    id: ff::codec::Id,
    extradata: &[u8],
) -> Result<ff::codec::Parameters, MuxError> {
    let mut params = ff::codec::Parameters::new();
    params.set_medium(medium);
    params.set_id(id);
    let padding = ff::ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize;
    let size = i32::try_from(extradata.len()).map_err(|_| MuxError::OutOfMemory)?;
    // SAFETY: `params` owns a valid AVCodecParameters. The buffer comes from av_mallocz with
    // the padding libav requires and becomes owned by the parameters, which free it.
    unsafe {
        let buffer = ff::ffi::av_mallocz(extradata.len() + padding).cast::<u8>();
        if buffer.is_null() {
            return Err(MuxError::OutOfMemory);
        }
        std::ptr::copy_nonoverlapping(extradata.as_ptr(), buffer, extradata.len());
        let raw = params.as_mut_ptr();
        (*raw).extradata = buffer;
        (*raw).extradata_size = size;
    }
    Ok(params)
}

impl Muxer {
    /// `avcc` is the AVCDecoderConfigurationRecord; `asc` the AAC AudioSpecificConfig.
    pub fn new(container: Container, avcc: &[u8], asc: Option<&[u8]>) -> Result<Muxer, MuxError> {
        let sink = Sink::default();
        let io = ff::format::context::StreamIo::from_write(sink.clone())?;
        let format = match container {
            Container::MpegTs => "mpegts",
            Container::Cmaf => "mp4",
        };
        let mut output = ff::format::output_to_stream(io, None, Some(format))?;

        let mut video_params = parameters(ff::media::Type::Video, ff::codec::Id::H264, avcc)?;
        let (width, height) = codec::avc_dimensions(avcc).ok_or(MuxError::BadVideoConfig)?;
        // SAFETY: `video_params` owns a valid AVCodecParameters; plain integer fields.
        unsafe {
            let raw = video_params.as_mut_ptr();
            (*raw).width = i32::try_from(width).map_err(|_| MuxError::BadVideoConfig)?;
            (*raw).height = i32::try_from(height).map_err(|_| MuxError::BadVideoConfig)?;
        }
        let mut video = output.add_stream(None::<ff::Codec>)?;
        video.set_parameters(video_params);
        video.set_time_base(MILLIS);
        let video_index = video.index();
        let mut sample_rate = 0;
        let audio_index = match asc {
            Some(asc) => {
                let config = codec::parse_aac_config(asc).ok_or(MuxError::BadAudioConfig)?;
                sample_rate = i64::from(config.sample_rate);
                let mut params = parameters(ff::media::Type::Audio, ff::codec::Id::AAC, asc)?;
                // SAFETY: `params` owns a valid AVCodecParameters; ch_layout is plain data
                // that av_channel_layout_default fills in.
                unsafe {
                    let raw = params.as_mut_ptr();
                    (*raw).sample_rate = i32::try_from(config.sample_rate).unwrap_or(48_000);
                    (*raw).frame_size = 1024;
                    ff::ffi::av_channel_layout_default(
                        &mut (*raw).ch_layout,
                        i32::from(config.channels),
                    );
                }
                let mut audio = output.add_stream(None::<ff::Codec>)?;
                audio.set_parameters(params);
                audio.set_time_base(MILLIS);
                Some(audio.index())
            }
            None => None,
        };

        let mut options = ff::Dictionary::new();
        match container {
            // PAT/PMT before every keyframe: each segment starts decodable on its own.
            Container::MpegTs => options.set("mpegts_flags", "+pat_pmt_at_frames"),
            // Init segment at once (empty_moov), a fragment only when we flush
            // (frag_custom), offsets relative to each moof as CMAF wants.
            Container::Cmaf => options.set("movflags", "+frag_custom+empty_moov+default_base_moof"),
        }
        output.write_header_with(options)?;

        // The muxer picks its own time bases in write_header (1/90000 for TS; the mp4
        // muxer uses a video timescale and the audio sample rate).
        let time_base = |output: &ff::format::context::Output, index: usize| {
            output.stream(index).map_or(MILLIS, |s| s.time_base())
        };
        let video = (video_index, time_base(&output, video_index));
        let audio = audio_index.map(|i| (i, time_base(&output, i)));
        let audio_frame = audio.map_or(0, |(_, tb)| {
            use ff::mathematics::rescale::Rescale;
            1024i64.rescale(
                ff::Rational(1, i32::try_from(sample_rate).unwrap_or(48_000).max(1)),
                tb,
            )
        });
        let mut muxer = Muxer {
            container,
            output,
            sink,
            video,
            audio,
            audio_frame,
            held_video: None,
            last_video_step: 33,
            init: Bytes::new(),
            fragment_start: [None, None],
        };
        if container == Container::Cmaf {
            muxer.flush_io();
            muxer.init = muxer.sink.take();
        }
        Ok(muxer)
    }

    pub fn has_audio(&self) -> bool {
        self.audio.is_some()
    }

    /// The CMAF initialization segment (empty for MPEG-TS).
    pub fn init_segment(&self) -> Bytes {
        self.init.clone()
    }

    /// Muxes one video access unit. Timestamps in milliseconds.
    pub fn write_video(
        &mut self,
        dts: i64,
        pts: i64,
        keyframe: bool,
        data: &bytes::Bytes,
    ) -> Result<(), MuxError> {
        let frame = HeldFrame {
            dts,
            pts,
            keyframe,
            data: data.clone(),
        };
        if self.container == Container::MpegTs {
            return self.write_packet(Track::Video, &frame, 0);
        }
        match self.held_video.replace(frame) {
            Some(held) => {
                let step = (dts - held.dts).max(1);
                self.last_video_step = step;
                self.write_packet(Track::Video, &held, step)
            }
            None => Ok(()),
        }
    }

    /// Muxes one AAC frame. Timestamps in milliseconds.
    pub fn write_audio(&mut self, dts: i64, data: &bytes::Bytes) -> Result<(), MuxError> {
        let frame = HeldFrame {
            dts,
            pts: dts,
            keyframe: true,
            data: data.clone(),
        };
        self.write_packet(Track::Audio, &frame, 0)
    }

    fn write_packet(
        &mut self,
        track: Track,
        frame: &HeldFrame,
        duration_ms: i64,
    ) -> Result<(), MuxError> {
        let (index, time_base) = match track {
            Track::Video => self.video,
            Track::Audio => match self.audio {
                Some(audio) => audio,
                None => return Ok(()),
            },
        };
        let mut packet = ff::Packet::copy(&frame.data);
        packet.set_stream(index);
        packet.set_dts(Some(frame.dts));
        packet.set_pts(Some(frame.pts));
        packet.set_duration(duration_ms);
        if frame.keyframe {
            packet.set_flags(ff::packet::Flags::KEY);
        }
        packet.rescale_ts(MILLIS, time_base);
        if track == Track::Audio {
            packet.set_duration(self.audio_frame);
        }
        if let (None, Some(dts)) = (self.fragment_start[track as usize], packet.dts()) {
            self.fragment_start[track as usize] = Some(dts);
        }
        packet.write(&mut self.output)?;
        Ok(())
    }

    /// Flushes everything muxed before `next_dts` and returns it: a TS segment (the next
    /// bytes start with PAT/PMT) or one fMP4 fragment.
    pub fn cut(&mut self, next_dts: i64) -> Result<Bytes, MuxError> {
        if let Some(held) = self.held_video.take() {
            let step = (next_dts - held.dts).max(1);
            self.write_packet(Track::Video, &held, step)?;
        }
        // SAFETY: the context is valid for the life of `self.output`, and libav documents a
        // NULL packet to av_write_frame as "flush" for muxers with AVFMT_ALLOW_FLUSH (mpegts
        // and mp4 both; for mp4 with frag_custom it writes one fragment).
        unsafe {
            let flushed = ff::ffi::av_write_frame(self.output.as_mut_ptr(), std::ptr::null_mut());
            if flushed < 0 {
                return Err(ff::Error::from(flushed).into());
            }
        }
        self.flush_io();
        if self.container == Container::Cmaf {
            let starts = std::mem::take(&mut self.fragment_start);
            let mut fragment = self.sink.take().to_vec();
            set_decode_times(&mut fragment, &starts);
            return Ok(Bytes::from(fragment));
        }
        if self.container == Container::MpegTs {
            // SAFETY: priv_data is the mpegts muxer's option context. One-shot flag, cleared
            // by the muxer once it has re-sent PAT/PMT: covers a cut not on a keyframe.
            unsafe {
                let context = self.output.as_mut_ptr();
                ff::ffi::av_opt_set(
                    (*context).priv_data,
                    c"mpegts_flags".as_ptr(),
                    c"+resend_headers".as_ptr(),
                    0,
                );
            }
        }
        Ok(self.sink.take())
    }

    /// Ends the stream and returns the last media bytes.
    pub fn finish(mut self) -> Result<Bytes, MuxError> {
        let next = self
            .held_video
            .as_ref()
            .map_or(0, |h| h.dts + self.last_video_step);
        let last = self.cut(next)?;
        if self.container == Container::MpegTs {
            self.output.write_trailer()?;
            self.flush_io();
            let mut tail = last.to_vec();
            tail.extend_from_slice(&self.sink.take());
            return Ok(Bytes::from(tail));
        }
        // The fMP4 trailer (mfra) is an index for files, not for live parts: not written.
        Ok(last)
    }

    fn flush_io(&mut self) {
        // SAFETY: pb is the custom I/O context output_to_stream installed; valid until
        // `self.output` drops.
        unsafe {
            ff::ffi::avio_flush((*self.output.as_mut_ptr()).pb);
        }
    }
}
