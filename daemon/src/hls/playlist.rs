//! Renders HLS playlists (RFC 8216) from the segments a rendition holds. Pure text.

use super::segmenter::Segment;
use chrono::SecondsFormat;
use std::fmt::Write;
use std::sync::Arc;

/// One variant stream of the master playlist.
#[derive(Debug, Clone)]
pub struct Variant {
    pub uri: String,
    /// Peak bits per second.
    pub bandwidth: u64,
    pub average_bandwidth: Option<u64>,
    /// RFC 6381 codec strings, e.g. `avc1.64001f`.
    pub codecs: Vec<String>,
    pub resolution: Option<(u32, u32)>,
    pub frame_rate: Option<f64>,
}

pub fn master(variants: &[Variant]) -> String {
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    for v in variants {
        let _ = write!(out, "#EXT-X-STREAM-INF:BANDWIDTH={}", v.bandwidth);
        if let Some(avg) = v.average_bandwidth {
            let _ = write!(out, ",AVERAGE-BANDWIDTH={avg}");
        }
        if !v.codecs.is_empty() {
            let _ = write!(out, ",CODECS=\"{}\"", v.codecs.join(","));
        }
        if let Some((w, h)) = v.resolution {
            let _ = write!(out, ",RESOLUTION={w}x{h}");
        }
        if let Some(fps) = v.frame_rate {
            let _ = write!(out, ",FRAME-RATE={fps:.3}");
        }
        let _ = write!(out, "\n{}\n", v.uri);
    }
    out
}

/// What a media playlist shows.
pub struct MediaPlaylist<'a> {
    pub target_duration: u64,
    /// The segments listed, oldest first.
    pub segments: &'a [Arc<Segment>],
    pub ended: bool,
    /// File name of a segment, relative to the playlist.
    pub segment_uri: &'a dyn Fn(&Segment) -> String,
}

pub fn media(p: &MediaPlaylist<'_>) -> String {
    let mut out = String::with_capacity(128 + p.segments.len() * 96);
    let first_sequence = p.segments.first().map_or(0, |s| s.sequence);
    let _ = write!(
        out,
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{}\n#EXT-X-MEDIA-SEQUENCE:{}\n",
        p.target_duration, first_sequence
    );
    for segment in p.segments {
        if segment.discontinuity {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        let _ = write!(
            out,
            "#EXT-X-PROGRAM-DATE-TIME:{}\n#EXTINF:{:.3},\n{}\n",
            segment
                .program_date_time
                .to_rfc3339_opts(SecondsFormat::Millis, true),
            segment.duration.as_secs_f64(),
            (p.segment_uri)(segment)
        );
    }
    if p.ended {
        out.push_str("#EXT-X-ENDLIST\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hls::segmenter::Part;
    use bytes::Bytes;
    use chrono::{TimeZone, Utc};
    use std::time::Duration;

    fn segment(sequence: u64, millis: u64, discontinuity: bool) -> Arc<Segment> {
        let duration = Duration::from_millis(millis);
        Arc::new(Segment {
            sequence,
            duration,
            program_date_time: Utc
                .with_ymd_and_hms(2026, 11, 25, 6, 0, 0)
                .single()
                .expect("date")
                + chrono::Duration::seconds(sequence as i64 * 2),
            discontinuity,
            parts: vec![Part {
                data: Bytes::from_static(b"ts"),
                duration,
                independent: true,
            }],
        })
    }

    #[test]
    fn media_playlist_lists_segments_with_dates_and_ends() {
        let segments = [segment(7, 2000, false), segment(8, 1966, true)];
        let uri = |s: &Segment| format!("abc-{}.ts", s.sequence);
        let text = media(&MediaPlaylist {
            target_duration: 2,
            segments: &segments,
            ended: true,
            segment_uri: &uri,
        });
        assert_eq!(
            text,
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n\
             #EXT-X-PROGRAM-DATE-TIME:2026-11-25T06:00:14.000Z\n#EXTINF:2.000,\nabc-7.ts\n\
             #EXT-X-DISCONTINUITY\n\
             #EXT-X-PROGRAM-DATE-TIME:2026-11-25T06:00:16.000Z\n#EXTINF:1.966,\nabc-8.ts\n\
             #EXT-X-ENDLIST\n"
        );
    }

    #[test]
    fn empty_live_playlist_has_no_endlist() {
        let uri = |_: &Segment| String::new();
        let text = media(&MediaPlaylist {
            target_duration: 2,
            segments: &[],
            ended: false,
            segment_uri: &uri,
        });
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:0\n"));
        assert!(!text.contains("ENDLIST"));
    }

    #[test]
    fn master_playlist_names_codecs_and_resolution() {
        let text = master(&[Variant {
            uri: "source/index.m3u8".into(),
            bandwidth: 6_200_000,
            average_bandwidth: Some(6_000_000),
            codecs: vec!["avc1.64001f".into(), "mp4a.40.2".into()],
            resolution: Some((1920, 1080)),
            frame_rate: Some(30.0),
        }]);
        assert!(text.starts_with("#EXTM3U\n"));
        assert!(text.contains(
            "#EXT-X-STREAM-INF:BANDWIDTH=6200000,AVERAGE-BANDWIDTH=6000000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1920x1080,FRAME-RATE=30.000\nsource/index.m3u8\n"
        ));
    }
}
