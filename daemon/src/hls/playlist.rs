//! Renders HLS playlists (RFC 8216) from the segments a rendition holds. Pure text.

use super::segmenter::{OpenSegment, Part, Segment};
use chrono::SecondsFormat;
use std::fmt::Write;
use std::sync::Arc;

/// A rendered playlist, plain and gzip-compressed: compressed once when it changes, not
/// once per request (every player reloads it several times a second).
#[derive(Debug, Clone, Default)]
pub struct Rendered {
    pub plain: bytes::Bytes,
    pub gzip: bytes::Bytes,
}

impl Rendered {
    pub fn new(text: String) -> Rendered {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(
            Vec::with_capacity(text.len() / 3),
            flate2::Compression::fast(),
        );
        // Writing to a Vec cannot fail.
        let gzip = encoder
            .write_all(text.as_bytes())
            .and_then(|()| encoder.finish())
            .unwrap_or_default();
        Rendered {
            plain: bytes::Bytes::from(text),
            gzip: bytes::Bytes::from(gzip),
        }
    }
}

/// One variant stream of the master playlist.
#[derive(Debug, Clone)]
pub struct StreamInf {
    pub uri: String,
    /// Peak bits per second.
    pub bandwidth: u64,
    pub average_bandwidth: Option<u64>,
    /// RFC 6381 codec strings, e.g. `avc1.64001f`.
    pub codecs: Vec<String>,
    pub resolution: Option<(u32, u32)>,
    pub frame_rate: Option<f64>,
}

/// No EXT-X-INDEPENDENT-SEGMENTS: with a keyframe interval longer than the target, the
/// segmenter cuts segments that do not start with one (see `segmenter`).
pub fn master(variants: &[StreamInf]) -> String {
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:3\n");
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

/// EXT-X-DISCONTINUITY-SEQUENCE for a playlist starting with `first`: the discontinuities
/// before it (its own EXT-X-DISCONTINUITY is still in the playlist and counts there).
fn discontinuity_sequence(timeline: u64, discontinuity: bool) -> u64 {
    timeline.saturating_sub(u64::from(discontinuity))
}

pub fn media(p: &MediaPlaylist<'_>) -> String {
    let mut out = String::with_capacity(128 + p.segments.len() * 96);
    let first_sequence = p.segments.first().map_or(0, |s| s.sequence);
    let _ = write!(
        out,
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{}\n#EXT-X-MEDIA-SEQUENCE:{}\n",
        p.target_duration, first_sequence
    );
    if let Some(first) = p.segments.first() {
        let sequence = discontinuity_sequence(first.timeline, first.discontinuity);
        if sequence > 0 {
            let _ = writeln!(out, "#EXT-X-DISCONTINUITY-SEQUENCE:{sequence}");
        }
    }
    for segment in p.segments {
        if segment.discontinuity {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        if segment.gap {
            out.push_str("#EXT-X-GAP\n");
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

/// What an LL-HLS media playlist shows (RFC 8216bis).
pub struct LowLatencyPlaylist<'a> {
    pub target_duration: u64,
    pub part_target: f64,
    /// URI of a timeline's initialization segment (EXT-X-MAP).
    pub map_uri: &'a dyn Fn(u64) -> String,
    /// Closed segments, oldest first.
    pub segments: &'a [Arc<Segment>],
    /// The segment being built, with its parts so far.
    pub open: Option<&'a OpenSegment>,
    pub ended: bool,
    /// Leading segments replaced by EXT-X-SKIP (a delta update); 0 for the full playlist.
    pub skip: usize,
    /// A delta update asked for with `_HLS_skip=v2`: EXT-X-SKIP names the removed date
    /// ranges too (we write none, so the list is empty).
    pub skip_dateranges: bool,
    pub segment_uri: &'a dyn Fn(u64) -> String,
    pub part_uri: &'a dyn Fn(u64, usize) -> String,
    /// The other variants' newest parts (EXT-X-RENDITION-REPORT): their playlist's URI
    /// relative to this one, the segment and the part.
    pub reports: &'a [RenditionReport],
}

/// Where another rendition's live edge is, so a player switching to it can ask for its
/// next part at once (RFC 8216bis §4.4.5.4).
#[derive(Debug, Clone, PartialEq)]
pub struct RenditionReport {
    pub uri: String,
    pub last_msn: u64,
    pub last_part: usize,
}

impl LowLatencyPlaylist<'_> {
    /// PART-HOLD-BACK: three part targets, what RFC 8216bis asks for (it requires two).
    pub fn part_hold_back(&self) -> f64 {
        3.0 * self.part_target
    }

    /// CAN-SKIP-UNTIL: six target durations, the minimum RFC 8216bis allows.
    pub fn can_skip_until(&self) -> f64 {
        6.0 * self.target_duration as f64
    }
}

fn write_parts(
    out: &mut String,
    sequence: u64,
    parts: &[Part],
    part_uri: &dyn Fn(u64, usize) -> String,
) {
    for (index, part) in parts.iter().enumerate() {
        let _ = writeln!(
            out,
            "#EXT-X-PART:DURATION={:.5},URI=\"{}\"{}",
            part.duration.as_secs_f64(),
            part_uri(sequence, index),
            if part.independent {
                ",INDEPENDENT=YES"
            } else {
                ""
            }
        );
    }
}

pub fn low_latency(p: &LowLatencyPlaylist<'_>) -> String {
    let mut out = String::with_capacity(512 + p.segments.len() * 400);
    let first = p
        .segments
        .first()
        .map(|s| (s.sequence, s.timeline, s.discontinuity))
        .or(p
            .open
            .map(|o| (o.start.sequence, o.start.timeline, o.start.discontinuity)))
        .unwrap_or((0, 0, false));
    let first_sequence = first.0;
    let skip = p.skip.min(p.segments.len());
    // The map in force at the first segment shown (a delta update's skipped segments keep
    // the one the player already has); each new timeline brings its own.
    let mut timeline = p
        .segments
        .get(skip)
        .map(|s| s.timeline)
        .or(p.open.map(|o| o.start.timeline))
        .unwrap_or(0);
    // EXT-X-SKIP needs version 9; everything else here (parts, preload hints, blocking
    // reload) needs 6.
    let version = if skip > 0 { 9 } else { 6 };
    let _ = write!(
        out,
        "#EXTM3U\n#EXT-X-VERSION:{}\n#EXT-X-TARGETDURATION:{}\n\
         #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL={:.3},PART-HOLD-BACK={:.3}\n\
         #EXT-X-PART-INF:PART-TARGET={:.3}\n#EXT-X-MEDIA-SEQUENCE:{}\n",
        version,
        p.target_duration,
        p.can_skip_until(),
        p.part_hold_back(),
        p.part_target,
        first_sequence,
    );
    let discontinuities = discontinuity_sequence(first.1, first.2);
    if discontinuities > 0 {
        let _ = writeln!(out, "#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuities}");
    }
    if skip > 0 {
        let _ = write!(out, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skip}");
        if p.skip_dateranges {
            out.push_str(",RECENTLY-REMOVED-DATERANGES=\"\"");
        }
        out.push('\n');
    }
    let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", (p.map_uri)(timeline));
    // A segment on a new timeline: EXT-X-DISCONTINUITY, and its map if it has a new one.
    let mut start_of = |out: &mut String, discontinuity: bool, of: u64| {
        if discontinuity {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        if of != timeline {
            timeline = of;
            let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", (p.map_uri)(of));
        }
    };
    // Parts are listed only near the live edge: within three target durations of the end
    // (RFC 8216bis lets older ones go), which keeps each reload small.
    let mut edge = 0.0;
    let parts_from = p
        .segments
        .iter()
        .rev()
        .take_while(|s| {
            let keep = edge < 3.0 * p.target_duration as f64;
            edge += s.duration.as_secs_f64();
            keep
        })
        .last()
        .map_or(u64::MAX, |s| s.sequence);
    for segment in &p.segments[skip..] {
        start_of(&mut out, segment.discontinuity, segment.timeline);
        let _ = writeln!(
            out,
            "#EXT-X-PROGRAM-DATE-TIME:{}",
            segment
                .program_date_time
                .to_rfc3339_opts(SecondsFormat::Millis, true)
        );
        if segment.gap {
            out.push_str("#EXT-X-GAP\n");
        } else if segment.sequence >= parts_from {
            write_parts(&mut out, segment.sequence, &segment.parts, p.part_uri);
        }
        let _ = write!(
            out,
            "#EXTINF:{:.5},\n{}\n",
            segment.duration.as_secs_f64(),
            (p.segment_uri)(segment.sequence)
        );
    }
    if let Some(open) = p.open {
        start_of(&mut out, open.start.discontinuity, open.start.timeline);
        let _ = writeln!(
            out,
            "#EXT-X-PROGRAM-DATE-TIME:{}",
            open.start
                .program_date_time
                .to_rfc3339_opts(SecondsFormat::Millis, true)
        );
        write_parts(&mut out, open.start.sequence, &open.parts, p.part_uri);
    }
    if p.ended {
        out.push_str("#EXT-X-ENDLIST\n");
    } else {
        // The next part: in the open segment, or the first of the next one.
        let (sequence, index) = match p.open {
            Some(open) => (open.start.sequence, open.parts.len()),
            None => (p.segments.last().map_or(0, |s| s.sequence + 1), 0),
        };
        let _ = writeln!(
            out,
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}\"",
            (p.part_uri)(sequence, index)
        );
        for report in p.reports {
            let _ = writeln!(
                out,
                "#EXT-X-RENDITION-REPORT:URI=\"{}\",LAST-MSN={},LAST-PART={}",
                report.uri, report.last_msn, report.last_part
            );
        }
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
        on_timeline(sequence, millis, discontinuity, u64::from(discontinuity))
    }

    fn on_timeline(sequence: u64, millis: u64, discontinuity: bool, timeline: u64) -> Arc<Segment> {
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
            timeline,
            parts: vec![Part {
                data: Bytes::from_static(b"ts"),
                duration,
                independent: true,
            }],
            gap: false,
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
        let text = master(&[StreamInf {
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

    fn low_latency_with(segments: &[Arc<Segment>], skip: usize, v2: bool, ended: bool) -> String {
        low_latency_reporting(segments, skip, v2, ended, &[])
    }

    fn low_latency_reporting(
        segments: &[Arc<Segment>],
        skip: usize,
        v2: bool,
        ended: bool,
        reports: &[RenditionReport],
    ) -> String {
        low_latency(&LowLatencyPlaylist {
            target_duration: 2,
            part_target: 0.334,
            map_uri: &|timeline| format!("b-init-{timeline}.mp4"),
            segments,
            open: None,
            ended,
            skip,
            skip_dateranges: v2,
            segment_uri: &|n| format!("b-{n}.m4s"),
            part_uri: &|n, i| format!("b-{n}.{i}.m4s"),
            reports,
        })
    }

    #[test]
    fn gaps_are_listed_without_parts_and_other_renditions_reported() {
        let mut segments: Vec<_> = (0..5).map(|n| segment(n, 2000, false)).collect();
        let mut gap = (*segments[3]).clone();
        gap.gap = true;
        gap.parts.clear();
        segments[3] = Arc::new(gap);
        let reports = [RenditionReport {
            uri: "../480p/index.m3u8".into(),
            last_msn: 4,
            last_part: 2,
        }];
        let text = low_latency_reporting(&segments, 0, false, false, &reports);
        assert!(
            text.contains("#EXT-X-GAP\n#EXTINF:2.00000,\nb-3.m4s\n"),
            "{text}"
        );
        assert!(!text.contains("b-3.0.m4s"), "a gap has no parts: {text}");
        assert!(
            text.ends_with(
                "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"b-5.0.m4s\"\n\
                 #EXT-X-RENDITION-REPORT:URI=\"../480p/index.m3u8\",LAST-MSN=4,LAST-PART=2\n"
            ),
            "{text}"
        );
        let classic = media(&MediaPlaylist {
            target_duration: 2,
            segments: &segments,
            ended: false,
            segment_uri: &|s| format!("b-{}.ts", s.sequence),
        });
        assert!(
            classic.contains("#EXT-X-GAP\n#EXT-X-PROGRAM-DATE-TIME:"),
            "{classic}"
        );
        // An ended playlist reports nothing further.
        let ended = low_latency_reporting(&segments, 0, false, true, &reports);
        assert!(!ended.contains("RENDITION-REPORT"), "{ended}");
    }

    #[test]
    fn versions_and_skips_are_as_rfc_8216bis_says() {
        let segments: Vec<_> = (0..8).map(|n| segment(n, 2000, false)).collect();
        let full = low_latency_with(&segments, 0, false, false);
        assert!(
            full.contains("#EXT-X-VERSION:6\n"),
            "parts need 6, not 9: {full}"
        );
        assert_eq!(
            full.matches("#EXT-X-MAP:").count(),
            1,
            "one map per playlist"
        );
        let delta = low_latency_with(&segments, 2, false, false);
        assert!(delta.contains("#EXT-X-VERSION:9\n"));
        assert!(
            delta.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=2\n"),
            "{delta}"
        );
        let v2 = low_latency_with(&segments, 2, true, false);
        assert!(
            v2.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=2,RECENTLY-REMOVED-DATERANGES=\"\"\n"),
            "{v2}"
        );
        // The preload hint names what comes next: the next segment's first part.
        assert!(
            full.ends_with("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"b-8.0.m4s\"\n"),
            "{full}"
        );
    }

    /// A publisher came back after a drop: the playlist carries on with a discontinuity,
    /// the new timeline's map, and the count of discontinuities already gone from it.
    #[test]
    fn a_return_is_a_discontinuity_with_its_own_map() {
        let segments = [
            on_timeline(10, 2000, false, 2),
            on_timeline(11, 1000, true, 3),
        ];
        let full = low_latency_with(&segments, 0, false, false);
        let expected = "#EXT-X-DISCONTINUITY-SEQUENCE:2\n#EXT-X-MAP:URI=\"b-init-2.mp4\"\n";
        assert!(full.contains(expected), "{full}");
        let at_return = full.find("#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"b-init-3.mp4\"\n");
        assert!(
            at_return.is_some_and(|at| at > full.find("b-10.m4s").unwrap_or(usize::MAX)),
            "{full}"
        );
        let classic = media(&MediaPlaylist {
            target_duration: 2,
            segments: &segments[1..],
            ended: false,
            segment_uri: &|s| format!("b-{}.ts", s.sequence),
        });
        assert!(
            classic.contains("#EXT-X-MEDIA-SEQUENCE:11\n#EXT-X-DISCONTINUITY-SEQUENCE:2\n"),
            "its own DISCONTINUITY counts as the third: {classic}"
        );
    }
}
