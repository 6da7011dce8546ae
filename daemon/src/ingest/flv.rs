//! FLV tag bodies, as RTMP carries them, turned into typed media events.
//!
//! Pure and allocation-free: payloads are sliced out of the `Bytes` rml_rtmp handed us.
//! Only what OBS sends by default is accepted (H.264 in AVCC form, AAC); anything else
//! becomes an [`FlvError`] that the connection reports and refuses.

use bytes::Bytes;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlvError {
    #[error("empty media message")]
    Empty,
    #[error("truncated {0} tag")]
    Truncated(&'static str),
    #[error("video codec {0} is not supported: send H.264 (in OBS: Output > Encoder x264 or a hardware H.264 encoder)")]
    UnsupportedVideo(String),
    #[error("audio codec {0} is not supported: send AAC (OBS's default)")]
    UnsupportedAudio(String),
}

/// One RTMP video message, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoTag {
    /// AVCDecoderConfigurationRecord ("avcC"): SPS/PPS, sent before the first frame.
    Config(Bytes),
    /// Length-prefixed NAL units of one access unit.
    Frame {
        keyframe: bool,
        /// Composition time offset in milliseconds: pts = dts + cts.
        cts: i32,
        data: Bytes,
    },
    /// End of sequence, or an info/command frame: nothing to mux.
    Ignored,
}

/// One RTMP audio message, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioTag {
    /// AudioSpecificConfig.
    Config(Bytes),
    /// One raw AAC frame.
    Frame(Bytes),
}

fn video_codec_name(id: u8) -> String {
    match id {
        2 => "Sorenson H.263".into(),
        3 => "Screen video".into(),
        4 => "VP6".into(),
        5 => "VP6 alpha".into(),
        6 => "Screen video 2".into(),
        12 => "HEVC".into(),
        other => format!("id {other}"),
    }
}

fn audio_codec_name(id: u8) -> String {
    match id {
        0 | 3 => "PCM".into(),
        1 => "ADPCM".into(),
        2 | 14 => "MP3".into(),
        4..=6 => "Nellymoser".into(),
        7 => "G.711 A-law".into(),
        8 => "G.711 mu-law".into(),
        11 => "Speex".into(),
        13 => "Opus".into(),
        other => format!("id {other}"),
    }
}

pub fn parse_video(body: &Bytes) -> Result<VideoTag, FlvError> {
    let first = *body.first().ok_or(FlvError::Empty)?;
    if first & 0x80 != 0 {
        // Enhanced RTMP: a FourCC follows (hvc1, av01, vp09). Name it for the refusal.
        let fourcc = body
            .get(1..5)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_else(|| "unknown".into());
        return Err(FlvError::UnsupportedVideo(format!(
            "enhanced-RTMP '{fourcc}'"
        )));
    }
    let frame_type = first >> 4;
    let codec = first & 0x0f;
    if codec != 7 {
        return Err(FlvError::UnsupportedVideo(video_codec_name(codec)));
    }
    if frame_type == 5 {
        return Ok(VideoTag::Ignored);
    }
    let header = body.get(..5).ok_or(FlvError::Truncated("video"))?;
    // Composition time is a signed 24-bit big-endian integer.
    let raw = (u32::from(header[2]) << 16) | (u32::from(header[3]) << 8) | u32::from(header[4]);
    let cts = ((raw << 8) as i32) >> 8;
    let data = body.slice(5..);
    match header[1] {
        0 => Ok(VideoTag::Config(data)),
        1 if data.is_empty() => Ok(VideoTag::Ignored),
        1 => Ok(VideoTag::Frame {
            keyframe: frame_type == 1,
            cts,
            data,
        }),
        _ => Ok(VideoTag::Ignored),
    }
}

pub fn parse_audio(body: &Bytes) -> Result<AudioTag, FlvError> {
    let first = *body.first().ok_or(FlvError::Empty)?;
    let format = first >> 4;
    if format == 9 {
        // Enhanced RTMP v2: a FourCC follows (Opus, fLaC, ac-3, mp4a). Name it for the
        // refusal; AAC comes the legacy way from every encoder we know.
        let fourcc = body
            .get(1..5)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        return Err(FlvError::UnsupportedAudio(format!(
            "enhanced-RTMP '{fourcc}'"
        )));
    }
    if format != 10 {
        return Err(FlvError::UnsupportedAudio(audio_codec_name(format)));
    }
    let packet_type = *body.get(1).ok_or(FlvError::Truncated("audio"))?;
    let data = body.slice(2..);
    if packet_type == 0 {
        Ok(AudioTag::Config(data))
    } else {
        Ok(AudioTag::Frame(data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(bytes: &[u8]) -> Bytes {
        Bytes::copy_from_slice(bytes)
    }

    #[test]
    fn avc_sequence_header_and_frames() {
        let config = parse_video(&b(&[0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f])).expect("config");
        assert_eq!(config, VideoTag::Config(b(&[1, 0x64, 0, 0x1f])));
        let key = parse_video(&b(&[0x17, 1, 0, 0, 0x42, 0, 0, 0, 1, 0x65])).expect("key");
        assert_eq!(
            key,
            VideoTag::Frame {
                keyframe: true,
                cts: 0x42,
                data: b(&[0, 0, 0, 1, 0x65])
            }
        );
        let inter = parse_video(&b(&[0x27, 1, 0xff, 0xff, 0xfe, 9])).expect("inter");
        assert_eq!(
            inter,
            VideoTag::Frame {
                keyframe: false,
                cts: -2,
                data: b(&[9])
            }
        );
    }

    #[test]
    fn refuses_other_video_codecs_by_name() {
        let err = parse_video(&b(&[0x12, 0, 0])).expect_err("h263");
        assert!(err.to_string().contains("H.263"));
        let err = parse_video(&b(&[0x90, b'h', b'v', b'c', b'1'])).expect_err("ertmp");
        assert!(err.to_string().contains("hvc1"), "{err}");
    }

    #[test]
    fn refuses_opus_over_enhanced_rtmp_by_name() {
        // SoundFormat 9 (ExHeader), packet type 0 (sequence start), FourCC `Opus`.
        let err = parse_audio(&b(&[0x90, b'O', b'p', b'u', b's', 1, 2])).expect_err("opus");
        assert!(
            err.to_string().contains("'Opus'") && err.to_string().contains("AAC"),
            "{err}"
        );
    }

    #[test]
    fn aac_config_and_frames() {
        assert_eq!(
            parse_audio(&b(&[0xaf, 0, 0x12, 0x10])).expect("asc"),
            AudioTag::Config(b(&[0x12, 0x10]))
        );
        assert_eq!(
            parse_audio(&b(&[0xaf, 1, 7])).expect("raw"),
            AudioTag::Frame(b(&[7]))
        );
        assert!(parse_audio(&b(&[0x2f, 1]))
            .expect_err("mp3")
            .to_string()
            .contains("MP3"));
    }

    #[test]
    fn never_panics_on_any_short_input() {
        // Every body up to three bytes long, every value: errors are fine, panics are not.
        for a in 0..=255u8 {
            let _ = parse_video(&b(&[a]));
            let _ = parse_audio(&b(&[a]));
            for c in 0..=255u8 {
                let _ = parse_video(&b(&[a, c]));
                let _ = parse_audio(&b(&[a, c]));
                let _ = parse_video(&b(&[a, c, 0, 0]));
            }
        }
        let _ = parse_video(&Bytes::new());
        let _ = parse_audio(&Bytes::new());
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_parse_to_a_value_or_an_error(body in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let body = Bytes::from(body);
            let _ = parse_video(&body);
            let _ = parse_audio(&body);
        }

        #[test]
        fn frames_keep_their_payload_and_signed_composition_time(cts in -8_388_608i32..8_388_608, payload in proptest::collection::vec(proptest::num::u8::ANY, 1..32)) {
            let c = cts.to_be_bytes();
            let mut body = vec![0x27, 1, c[1], c[2], c[3]];
            body.extend_from_slice(&payload);
            let parsed = parse_video(&Bytes::from(body));
            proptest::prop_assert_eq!(parsed, Ok(VideoTag::Frame { keyframe: false, cts, data: Bytes::from(payload) }));
        }
    }
}
