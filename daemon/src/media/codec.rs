//! Codec facts the pipeline needs from a stream's configuration records: RFC 6381 codec
//! strings for the master playlist, the picture size, an AAC AudioSpecificConfig's fields.
//! Pure functions of bytes, used by ingest (which receives the records) and the muxers
//! (which need them), so they live below both.

/// What the master playlist needs from an AVCDecoderConfigurationRecord: the RFC 6381
/// codec string, e.g. `avc1.64001f`.
pub fn avc_codec_string(avcc: &[u8]) -> Option<String> {
    match avcc {
        [1, profile, compat, level, ..] => {
            Some(format!("avc1.{profile:02x}{compat:02x}{level:02x}"))
        }
        _ => None,
    }
}

/// Picture size from the first SPS in an AVCDecoderConfigurationRecord (the mp4 muxer
/// needs it; RTMP metadata may omit it).
pub fn avc_dimensions(avcc: &[u8]) -> Option<(u32, u32)> {
    use h264_reader::avcc::AvcDecoderConfigurationRecord;
    use h264_reader::nal::{sps::SeqParameterSet, Nal, RefNal};
    let record = AvcDecoderConfigurationRecord::try_from(avcc).ok()?;
    let sps = record.sequence_parameter_sets().next()?.ok()?;
    let sps = SeqParameterSet::from_bits(RefNal::new(sps, &[], true).rbsp_bits()).ok()?;
    sps.pixel_dimensions().ok()
}

/// The fields of an AAC AudioSpecificConfig (ISO 14496-3 §1.6.2.1) a muxer needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AacConfig {
    pub object_type: u8,
    pub sample_rate: u32,
    pub channels: u8,
}

const AAC_SAMPLE_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

pub fn parse_aac_config(asc: &[u8]) -> Option<AacConfig> {
    // Read as one big-endian bit string: at most 5+6+4+24+4 bits.
    let mut bits: u64 = 0;
    for (i, byte) in asc.iter().take(6).enumerate() {
        bits |= u64::from(*byte) << (56 - 8 * i);
    }
    let available = asc.len().min(6) * 8;
    let mut at = 0usize;
    let mut take = |n: usize| -> Option<u32> {
        if at + n > available {
            return None;
        }
        let value = (bits << at) >> (64 - n);
        at += n;
        u32::try_from(value).ok()
    };
    let mut object_type = take(5)?;
    if object_type == 31 {
        object_type = 32 + take(6)?;
    }
    let index = take(4)?;
    let sample_rate = if index == 15 {
        take(24)?
    } else {
        *AAC_SAMPLE_RATES.get(index as usize)?
    };
    let channels = take(4)?;
    if object_type == 0 || sample_rate == 0 || channels == 0 {
        return None;
    }
    Some(AacConfig {
        object_type: u8::try_from(object_type).ok()?,
        sample_rate,
        channels: u8::try_from(channels).ok()?,
    })
}

/// The RFC 6381 codec string of an AudioSpecificConfig, e.g. `mp4a.40.2` for AAC-LC.
pub fn aac_codec_string(asc: &[u8]) -> Option<String> {
    parse_aac_config(asc).map(|c| format!("mp4a.40.{}", c.object_type))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_strings() {
        assert_eq!(
            avc_codec_string(&[1, 0x64, 0x00, 0x1f, 0xff]).as_deref(),
            Some("avc1.64001f")
        );
        assert_eq!(avc_codec_string(&[0]), None);
        assert_eq!(
            aac_codec_string(&[0x12, 0x10]).as_deref(),
            Some("mp4a.40.2")
        );
    }

    #[test]
    fn audio_specific_configs() {
        // AAC-LC, 44.1 kHz, stereo: what OBS and ffmpeg send by default.
        assert_eq!(
            parse_aac_config(&[0x12, 0x10]),
            Some(AacConfig {
                object_type: 2,
                sample_rate: 44100,
                channels: 2
            })
        );
        // AAC-LC, 48 kHz, mono.
        assert_eq!(
            parse_aac_config(&[0x11, 0x88]),
            Some(AacConfig {
                object_type: 2,
                sample_rate: 48000,
                channels: 1
            })
        );
        // Explicit frequency (index 15): 5 + 4 + 24 + 4 bits.
        let explicit = [0x17, 0x80, 0x2e, 0xe0, 0x08];
        assert_eq!(
            parse_aac_config(&explicit).map(|c| c.sample_rate),
            Some(24000)
        );
        assert_eq!(parse_aac_config(&[0x12]), None, "truncated");
        assert_eq!(parse_aac_config(&[]), None);
        assert_eq!(
            parse_aac_config(&[0x17, 0x00]),
            None,
            "reserved frequency index 14"
        );
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_give_a_value_or_none(body in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            if let Some(config) = parse_aac_config(&body) {
                proptest::prop_assert!(config.sample_rate > 0 && config.channels > 0);
            }
            let _ = avc_codec_string(&body);
            let _ = avc_dimensions(&body);
        }
    }
}
