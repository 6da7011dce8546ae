//! Codec facts the pipeline needs from a stream's configuration records: RFC 6381 codec
//! strings for the master playlist, the picture size, an AAC AudioSpecificConfig's fields;
//! and the adapter from an encoder's Annex B output to what the muxers take (AVCC frames
//! and an avcC record built from the stream's own SPS and PPS, since some hardware
//! encoders never fill in extradata). Pure functions of bytes, used by ingest (which
//! receives the records), the ladder (which encodes) and the muxers, so they live below
//! all three.

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

/// NAL unit types the adapter treats apart (ITU-T H.264 Table 7-1).
const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_AUD: u8 = 9;

/// The NAL units of an Annex B byte stream, without their start codes (`00 00 01`, or
/// `00 00 00 01`: the extra zero is trailing padding of the unit before).
pub fn annexb_nals(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut nals = Vec::with_capacity(starts.len());
    for (k, &start) in starts.iter().enumerate() {
        let end = starts.get(k + 1).map_or(data.len(), |next| next - 3);
        let mut nal = &data[start..end.max(start)];
        while let [rest @ .., 0] = nal {
            nal = rest;
        }
        if !nal.is_empty() {
            nals.push(nal);
        }
    }
    nals
}

/// One encoded picture as the muxers take it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessUnit {
    /// AVCC: each NAL unit behind its 4-byte length; no SPS, PPS or AUD (those go in the
    /// avcC record).
    pub data: Vec<u8>,
    /// Holds an IDR picture: a player can start here.
    pub idr: bool,
    /// The SPS and PPS it carried, if any (an encoder sends them with each IDR, or, as
    /// the Pi's V4L2 encoder, only once).
    pub sps: Option<Vec<u8>>,
    pub pps: Option<Vec<u8>>,
}

/// Converts an encoder's Annex B access unit.
pub fn annexb_to_avcc(data: &[u8]) -> AccessUnit {
    let mut unit = AccessUnit {
        data: Vec::with_capacity(data.len() + 16),
        idr: false,
        sps: None,
        pps: None,
    };
    for nal in annexb_nals(data) {
        match nal[0] & 0x1f {
            NAL_SPS => unit.sps = Some(nal.to_vec()),
            NAL_PPS => unit.pps = Some(nal.to_vec()),
            NAL_AUD => {}
            kind => {
                unit.idr |= kind == NAL_IDR;
                let length = u32::try_from(nal.len()).unwrap_or(u32::MAX);
                unit.data.extend_from_slice(&length.to_be_bytes());
                unit.data.extend_from_slice(nal);
            }
        }
    }
    unit
}

/// An AVCDecoderConfigurationRecord (ISO 14496-15 §5.3.3.1) for one SPS and one PPS,
/// with 4-byte NAL lengths. `None` when the SPS is too short to name a profile.
pub fn avcc_record(sps: &[u8], pps: &[u8]) -> Option<Vec<u8>> {
    let [_, profile, compatibility, level, ..] = *sps else {
        return None;
    };
    let sps_len = u16::try_from(sps.len()).ok()?;
    let pps_len = u16::try_from(pps.len()).ok()?;
    let mut record = vec![1, profile, compatibility, level, 0xff, 0xe1];
    record.extend_from_slice(&sps_len.to_be_bytes());
    record.extend_from_slice(sps);
    record.push(1);
    record.extend_from_slice(&pps_len.to_be_bytes());
    record.extend_from_slice(pps);
    Some(record)
}

/// The other way, for WebRTC (RFC 6184 packetizers read Annex B): an AVCC frame's NAL
/// units behind start codes, and before a keyframe the stream's SPS and PPS, which a
/// viewer joining there needs and an AVCC stream keeps only in its configuration record.
#[derive(Debug, Clone)]
pub struct ToAnnexB {
    length_size: usize,
    /// The record's SPS and PPS, each behind a start code.
    parameter_sets: Vec<u8>,
    /// SDP's `profile-level-id`: profile, constraint flags, level.
    pub profile_level_id: u32,
}

impl ToAnnexB {
    /// From an AVCDecoderConfigurationRecord; `None` when it is malformed.
    pub fn new(avcc: &[u8]) -> Option<ToAnnexB> {
        use h264_reader::avcc::AvcDecoderConfigurationRecord;
        let record = AvcDecoderConfigurationRecord::try_from(avcc).ok()?;
        let length_size = usize::from(record.length_size_minus_one()) + 1;
        let mut parameter_sets = Vec::new();
        for nal in record
            .sequence_parameter_sets()
            .chain(record.picture_parameter_sets())
        {
            parameter_sets.extend_from_slice(&[0, 0, 0, 1]);
            parameter_sets.extend_from_slice(nal.ok()?);
        }
        let profile_level_id = match avcc {
            [1, profile, compat, level, ..] => {
                u32::from(*profile) << 16 | u32::from(*compat) << 8 | u32::from(*level)
            }
            _ => return None,
        };
        Some(ToAnnexB {
            length_size,
            parameter_sets,
            profile_level_id,
        })
    }

    /// One frame; `None` when its NAL lengths overrun it.
    pub fn convert(&self, frame: &[u8], keyframe: bool) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(frame.len() + self.parameter_sets.len() + 16);
        if keyframe {
            out.extend_from_slice(&self.parameter_sets);
        }
        let mut rest = frame;
        while !rest.is_empty() {
            let (length, tail) = rest.split_at_checked(self.length_size)?;
            let length = length
                .iter()
                .fold(0usize, |n, byte| n << 8 | usize::from(*byte));
            let (nal, tail) = tail.split_at_checked(length)?;
            // An access unit delimiter means nothing to a WebRTC depacketizer.
            if nal.first().is_some_and(|b| b & 0x1f != NAL_AUD) {
                out.extend_from_slice(&[0, 0, 0, 1]);
                out.extend_from_slice(nal);
            }
            rest = tail;
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SPS libx264 (`ultrafast`, Constrained Baseline, level 3.1) makes for 1280x720,
    /// and its PPS.
    const SPS_720P: [u8; 23] = [
        0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xec, 0x04, 0x40, 0x00, 0x00, 0x03, 0x00,
        0x40, 0x00, 0x00, 0x0f, 0x23, 0xc6, 0x0c, 0xa8,
    ];
    const PPS: [u8; 4] = [0x68, 0xce, 0x0f, 0xc8];

    #[test]
    fn avcc_frames_become_annexb_with_the_parameter_sets_before_keyframes() {
        let record = avcc_record(&SPS_720P, &PPS).expect("record");
        let to_annexb = ToAnnexB::new(&record).expect("converter");
        assert_eq!(to_annexb.profile_level_id, 0x42c01f);
        let slice = [0x65, 0x88, 0x84, 0x21];
        let mut frame = vec![0, 0, 0, 2, 0x09, 0xf0]; // an AUD, dropped
        frame.extend_from_slice(&[0, 0, 0, 4]);
        frame.extend_from_slice(&slice);
        let key = to_annexb.convert(&frame, true).expect("keyframe");
        assert_eq!(annexb_nals(&key), [&SPS_720P[..], &PPS[..], &slice[..]]);
        let delta = to_annexb.convert(&frame, false).expect("delta");
        assert_eq!(annexb_nals(&delta), [&slice[..]]);
        // A length that runs past the frame (garbage from the network) is refused.
        assert!(to_annexb.convert(&[0, 0, 0, 9, 0x65], false).is_none());
        assert!(to_annexb.convert(&[0, 0], false).is_none());
        assert!(ToAnnexB::new(&[1, 2, 3]).is_none());
    }

    #[test]
    fn annexb_access_units_become_avcc_with_their_parameter_sets_apart() {
        // AUD, SPS (4-byte start code), PPS, SEI, IDR slice: what x264 emits for an IDR.
        let mut au = vec![0, 0, 0, 1, 0x09, 0xf0];
        au.extend([0, 0, 0, 1]);
        au.extend(SPS_720P);
        au.extend([0, 0, 1]);
        au.extend(PPS);
        au.extend([0, 0, 1, 0x06, 0x05, 0x01, 0x80]);
        au.extend([0, 0, 1, 0x65, 0x88, 0x84, 0x00, 0x00, 0x03, 0x01]);
        let unit = annexb_to_avcc(&au);
        assert!(unit.idr);
        assert_eq!(unit.sps.as_deref(), Some(&SPS_720P[..]));
        assert_eq!(unit.pps.as_deref(), Some(&PPS[..]));
        // SEI then the slice, each behind its length; the emulation-prevention byte stays.
        assert_eq!(
            unit.data,
            [
                &[0, 0, 0, 4, 0x06, 0x05, 0x01, 0x80][..],
                &[0, 0, 0, 7, 0x65, 0x88, 0x84, 0x00, 0x00, 0x03, 0x01][..]
            ]
            .concat()
        );
        // A P slice alone: not an IDR, no parameter sets.
        let p = annexb_to_avcc(&[0, 0, 1, 0x41, 0x9a, 0x01]);
        assert!(!p.idr && p.sps.is_none());
        assert_eq!(p.data, [0, 0, 0, 3, 0x41, 0x9a, 0x01]);
        // Trailing zeros before a 4-byte start code belong to no NAL unit; garbage with no
        // start code gives nothing.
        assert_eq!(
            annexb_nals(&[0, 0, 1, 0x41, 7, 0, 0, 0, 1, 0x41, 8]).len(),
            2
        );
        assert!(annexb_nals(&[0x41, 0x9a, 0, 0]).is_empty());
        assert!(annexb_to_avcc(&[]).data.is_empty());
    }

    #[test]
    fn the_avcc_record_built_from_sps_and_pps_reads_back() {
        let record = avcc_record(&SPS_720P, &PPS).expect("record");
        assert_eq!(avc_codec_string(&record).as_deref(), Some("avc1.42c01f"));
        assert_eq!(avc_dimensions(&record), Some((1280, 720)));
        assert_eq!(avcc_record(&[0x67, 0x64], &PPS), None);
    }

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
            let unit = annexb_to_avcc(&body);
            proptest::prop_assert!(unit.data.len() <= body.len() + 4 * body.len() / 3 + 4);
        }
    }
}
