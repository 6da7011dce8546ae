//! HLS over HTTP: master playlists, media playlists with LL-HLS blocking reload and delta
//! updates, init segments, segments and parts, all from memory.

use super::{ApiError, AppState};
use crate::hls::playlist::Rendered;
use crate::hls::request::{PlaylistRequest, RequestError, Skip};
use crate::hls::{Broadcast, Packaged, Packaging};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";
const TS_TYPE: &str = "video/mp2t";
const FMP4_TYPE: &str = "video/mp4";
/// Playlists change every segment: players must revalidate.
const PLAYLIST_CACHE: &str = "no-cache";
/// Segment and part names are unique per publish, so their bytes never change.
const MEDIA_CACHE: &str = "public, max-age=86400, immutable";

/// Whether the client takes gzip (`Accept-Encoding`, honouring `q=0`).
pub(super) fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut fields = coding.split(';').map(str::trim);
            let name = fields.next().unwrap_or("");
            let quality = fields
                .find_map(|f| f.strip_prefix("q="))
                .map_or(1.0, |q| q.trim().parse::<f32>().unwrap_or(0.0));
            (name.eq_ignore_ascii_case("gzip") || name == "*") && quality > 0.0
        })
}

/// A playlist, gzip-compressed when the client takes it. Playlists are compressed once
/// when they change (see [`Rendered`]); media is never compressed (it would not shrink).
fn playlist_response(playlist: Rendered, gzip: bool) -> Response {
    let mut headers = vec![
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static(PLAYLIST_TYPE),
        ),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static(PLAYLIST_CACHE),
        ),
        (header::VARY, HeaderValue::from_static("accept-encoding")),
    ];
    let body = if gzip && !playlist.gzip.is_empty() {
        headers.push((header::CONTENT_ENCODING, HeaderValue::from_static("gzip")));
        playlist.gzip
    } else {
        playlist.plain
    };
    let mut response = Body::from(body).into_response();
    response.headers_mut().extend(headers);
    response
}

fn media_response(content_type: &'static str, length: usize, body: Body) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static(MEDIA_CACHE)),
            (header::CONTENT_LENGTH, HeaderValue::from(length)),
        ],
        body,
    )
        .into_response()
}

fn live_broadcast(state: &AppState, slug: &str) -> Result<Arc<Broadcast>, ApiError> {
    state
        .broadcasts
        .get(slug)
        .ok_or_else(|| ApiError::not_found(format!("channel `{slug}` is not live")))
}

fn starting(slug: &str) -> ApiError {
    ApiError::not_found(format!(
        "channel `{slug}` is starting; try again in a moment"
    ))
}

/// `master.m3u8` (LL-HLS) or `classic.m3u8` (MPEG-TS).
pub async fn master_playlist(
    State(state): State<AppState>,
    Path((slug, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let broadcast = live_broadcast(&state, &slug)?;
    let playlist = match name.as_str() {
        "master.m3u8" => broadcast.master_playlist(),
        "classic.m3u8" => broadcast.classic_master_playlist(),
        _ => return Err(ApiError::not_found(format!("no `{name}`: try master.m3u8"))),
    };
    let playlist = playlist.ok_or_else(|| starting(&slug))?;
    Ok(playlist_response(playlist, accepts_gzip(&headers)))
}

/// A media playlist, an init segment, a segment or a part of one packaging.
pub async fn media_file(
    State(state): State<AppState>,
    Path((slug, path, file)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let broadcast = live_broadcast(&state, &slug)?;
    let packaged = broadcast
        .packaged(&path)
        .ok_or_else(|| ApiError::not_found(format!("no `{path}` in this broadcast")))?;
    if file == "index.m3u8" {
        // No playlist for a stream with nothing to start on yet (a publish whose
        // configuration cannot be muxed never will have): players are told it is starting.
        if !packaged.is_playable() {
            return Err(starting(&slug));
        }
        return media_playlist(&state, &packaged, &query, accepts_gzip(&headers)).await;
    }
    if let Some(timeline) = packaged.parse_init_name(&file) {
        let init = packaged
            .init(timeline)
            .ok_or_else(|| ApiError::not_found("no such initialization segment"))?;
        return Ok(media_response(FMP4_TYPE, init.len(), Body::from(init)));
    }
    let gone = || ApiError::not_found("no such segment or part (it may have expired)");
    let (sequence, part) = packaged.parse_media_name(&file).ok_or_else(gone)?;
    let content_type = match packaged.packaging {
        Packaging::Classic => TS_TYPE,
        Packaging::LowLatency { .. } => FMP4_TYPE,
    };
    if let Some(index) = part {
        // The part named by EXT-X-PRELOAD-HINT is requested before it exists: hold the
        // request until it does. Anything further ahead is not coming soon: 404.
        let hinted = packaged.next_part() == Some((sequence, index));
        if hinted {
            wait_for(&state, &packaged, sequence, Some(index)).await?;
        }
        let data = packaged.part(sequence, index).ok_or_else(gone)?;
        return Ok(media_response(content_type, data.len(), Body::from(data)));
    }
    // A gap (EXT-X-GAP) has no media: players must not ask, and get a 404 if they do.
    let segment = packaged
        .segment(sequence)
        .filter(|s| !s.gap)
        .ok_or_else(gone)?;
    // The parts are sent as they are held: no copy of the media per request.
    let length = segment.len();
    let parts: Vec<_> = segment
        .parts
        .iter()
        .map(|p| Ok::<_, std::convert::Infallible>(p.data.clone()))
        .collect();
    Ok(media_response(
        content_type,
        length,
        Body::from_stream(futures_util::stream::iter(parts)),
    ))
}

/// A media playlist; for LL-HLS with blocking reload (`_HLS_msn`, `_HLS_part`) and delta
/// updates (`_HLS_skip`), per RFC 8216bis §6.2.5.
async fn media_playlist(
    state: &AppState,
    packaged: &Packaged,
    query: &HashMap<String, String>,
    gzip: bool,
) -> Result<Response, ApiError> {
    if !matches!(packaged.packaging, Packaging::LowLatency { .. }) {
        return Ok(playlist_response(packaged.media_playlist(), gzip));
    }
    let bad = |e: RequestError| ApiError::bad_request(e.to_string());
    let request = PlaylistRequest::parse(query).map_err(bad)?;
    packaged.check_reach(&request).map_err(bad)?;
    if let Some(msn) = request.msn {
        wait_for(state, packaged, msn, request.part).await?;
    }
    // A delta update of an ended playlist is not one (RFC 8216bis: ignore _HLS_skip then).
    let playlist = match request.skip {
        Some(_) if packaged.is_ended() => packaged.media_playlist(),
        Some(Skip::V2) => packaged.delta_v2_playlist(),
        Some(Skip::Yes) => packaged.delta_playlist(),
        None => packaged.media_playlist(),
    };
    Ok(playlist_response(playlist, gzip))
}

/// Holds a request until segment `sequence` (or its part) exists or the stream ends; gives
/// up with 503 after three target durations. Held requests have a bound of their own
/// (`hls.max_held_requests`): past it, 503 with `Retry-After` at once. What is already
/// there is answered without taking a place.
async fn wait_for(
    state: &AppState,
    packaged: &Packaged,
    sequence: u64,
    part: Option<usize>,
) -> Result<(), ApiError> {
    if packaged.has(sequence, part) || packaged.is_ended() {
        return Ok(());
    }
    let Ok(_held) = state.held_requests.clone().try_acquire_owned() else {
        return Err(ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_waiting",
                "the box holds as many waiting playlist requests as it may; ask again in a second",
            )
        });
    };
    let limit = Duration::from_secs(3 * packaged.target_duration().max(1));
    let deadline = tokio::time::Instant::now() + limit;
    let mut changes = packaged.subscribe();
    while !packaged.has(sequence, part) && !packaged.is_ended() {
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => break, // the broadcast is gone
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_available_yet",
                    format!("segment {sequence} did not appear within {limit:?}"),
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(value: &str) -> bool {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(value).expect("header"),
        );
        accepts_gzip(&headers)
    }

    #[test]
    fn accept_encoding_is_read_as_browsers_send_it() {
        assert!(accepts("gzip, deflate, br, zstd"));
        assert!(accepts("br;q=1.0, gzip;q=0.8"));
        assert!(accepts("*"));
        assert!(!accepts("gzip;q=0"));
        assert!(!accepts("identity"));
        assert!(!accepts("br"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
