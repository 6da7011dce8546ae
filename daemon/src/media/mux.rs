//! MPEG-TS muxing with libav (ffmpeg-next), into memory.
//!
//! libav writes through a custom I/O context into a shared buffer; at each cut the muxer is
//! flushed and the buffer taken as one run of bytes. Packets arrive as RTMP gave them
//! (H.264 in AVCC form with an avcC record, raw AAC with an AudioSpecificConfig); libav's
//! mpegts muxer inserts the `h264_mp4toannexb` filter itself (which also repeats SPS/PPS
//! before every keyframe) and wraps AAC in ADTS. The few raw calls ffmpeg-next has no safe
//! form for (extradata, flushing, one muxer flag) are confined to this file.

use crate::ingest::flv;
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
    #[error("the AAC configuration (AudioSpecificConfig) is malformed")]
    BadAudioConfig,
}

/// Which elementary stream a packet belongs to.
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

/// An MPEG-TS muxer writing H.264 and optionally AAC into memory.
pub struct TsMuxer {
    output: ff::format::context::Output,
    sink: Sink,
    video: (usize, ff::Rational),
    audio: Option<(usize, ff::Rational)>,
}

fn parameters(
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

impl TsMuxer {
    /// `avcc` is the AVCDecoderConfigurationRecord; `asc` the AAC AudioSpecificConfig.
    pub fn new(avcc: &[u8], asc: Option<&[u8]>) -> Result<TsMuxer, MuxError> {
        let sink = Sink::default();
        let io = ff::format::context::StreamIo::from_write(sink.clone())?;
        let mut output = ff::format::output_to_stream(io, None, Some("mpegts"))?;

        let mut video = output.add_stream(None::<ff::Codec>)?;
        video.set_parameters(parameters(
            ff::media::Type::Video,
            ff::codec::Id::H264,
            avcc,
        )?);
        video.set_time_base(MILLIS);
        let video_index = video.index();
        let audio_index = match asc {
            Some(asc) => {
                let config = flv::parse_aac_config(asc).ok_or(MuxError::BadAudioConfig)?;
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
        // PAT/PMT before every keyframe: each segment starts decodable on its own.
        options.set("mpegts_flags", "+pat_pmt_at_frames");
        output.write_header_with(options)?;

        // The muxer picks its own time base (1/90000) in write_header.
        let time_base = |output: &ff::format::context::Output, index: usize| {
            output.stream(index).map_or(MILLIS, |s| s.time_base())
        };
        let video = (video_index, time_base(&output, video_index));
        let audio = audio_index.map(|i| (i, time_base(&output, i)));
        Ok(TsMuxer {
            output,
            sink,
            video,
            audio,
        })
    }

    pub fn has_audio(&self) -> bool {
        self.audio.is_some()
    }

    /// Muxes one access unit. Timestamps in milliseconds.
    pub fn write(
        &mut self,
        track: Track,
        dts: i64,
        pts: i64,
        keyframe: bool,
        data: &[u8],
    ) -> Result<(), MuxError> {
        let (index, time_base) = match track {
            Track::Video => self.video,
            Track::Audio => match self.audio {
                Some(audio) => audio,
                None => return Ok(()),
            },
        };
        let mut packet = ff::Packet::copy(data);
        packet.set_stream(index);
        packet.set_dts(Some(dts));
        packet.set_pts(Some(pts));
        if keyframe {
            packet.set_flags(ff::packet::Flags::KEY);
        }
        packet.rescale_ts(MILLIS, time_base);
        packet.write(&mut self.output)?;
        Ok(())
    }

    /// Flushes everything muxed so far and returns it. The next bytes start with PAT/PMT.
    pub fn cut(&mut self) -> Result<Bytes, MuxError> {
        // SAFETY: the context is valid for the life of `self.output`, its pb is the custom
        // I/O context output_to_stream installed, and libav documents a NULL packet to
        // av_write_frame as "flush" for muxers with AVFMT_ALLOW_FLUSH (mpegts has it).
        unsafe {
            let context = self.output.as_mut_ptr();
            let flushed = ff::ffi::av_write_frame(context, std::ptr::null_mut());
            if flushed < 0 {
                return Err(ff::Error::from(flushed).into());
            }
            ff::ffi::avio_flush((*context).pb);
            // One-shot flag, cleared by the muxer once it has re-sent PAT/PMT: covers a cut
            // that does not start on a keyframe.
            ff::ffi::av_opt_set(
                (*context).priv_data,
                c"mpegts_flags".as_ptr(),
                c"+resend_headers".as_ptr(),
                0,
            );
        }
        Ok(self.sink.take())
    }

    /// Ends the stream: writes the trailer and returns the last bytes.
    pub fn finish(mut self) -> Result<Bytes, MuxError> {
        self.output.write_trailer()?;
        // SAFETY: as in `cut`; the pb stays valid until `self.output` drops.
        unsafe {
            ff::ffi::avio_flush((*self.output.as_mut_ptr()).pb);
        }
        Ok(self.sink.take())
    }
}
