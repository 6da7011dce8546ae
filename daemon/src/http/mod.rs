//! HTTP: playlists and segments for players, the JSON API, health.
//!
//! `app(state)` builds the router, so tests can drive it without a socket. Errors are JSON
//! `{"error": {"code", "message"}}` with a fitting status, built in one place ([`ApiError`]).

use crate::hls::playlist::Rendered;
use crate::hls::{Broadcast, Broadcasts, Packaging, Rendition};
use crate::store::{StoreError, StoreHandle};
use crate::throttle::Throttle;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tower_http::cors::{Any, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";
const TS_TYPE: &str = "video/mp2t";
const FMP4_TYPE: &str = "video/mp4";
/// Playlists change every segment: players must revalidate.
const PLAYLIST_CACHE: &str = "no-cache";
/// Segment and part names are unique per publish, so their bytes never change.
const MEDIA_CACHE: &str = "public, max-age=86400, immutable";

mod auth;
mod channels;
mod chat;
mod onboarding;
mod payments;
mod wallet;
mod web;

pub use auth::CurrentUser;
pub use onboarding::SetupCode;

#[derive(Clone)]
pub struct AppState {
    pub store: StoreHandle,
    pub broadcasts: Arc<Broadcasts>,
    pub auth: Arc<crate::auth::Authority>,
    /// Failed logins (and setup codes) per client address, and per account at an address.
    pub login_by_address: Arc<Throttle<IpAddr>>,
    pub login_by_account: Arc<Throttle<(String, IpAddr)>>,
    /// Accounts made per client address.
    pub signup_by_address: Arc<Throttle<IpAddr>>,
    /// Password hashing, bounded in threads and so in memory.
    pub passwords: Arc<crate::auth::Passwords>,
    /// Live sessions one account may keep.
    pub sessions_per_user: usize,
    /// Channels one streamer may own.
    pub channels_per_streamer: usize,
    /// Where OBS connects: the RTMP port, and the host to name when the request's own
    /// `Host` does not say.
    pub rtmp_port: u16,
    pub rtmp_host: String,
    /// The HLS segment target: the keyframe interval OBS should use.
    pub segment_seconds: f64,
    pub chat: Arc<crate::chat::Chat>,
    pub points: crate::config::PointsConfig,
    pub payments: Arc<crate::payments::Payments>,
    /// A fresh box's one-time onboarding code, if it has one.
    pub setup_code: Option<SetupCode>,
    /// Long-lived connections (chat sockets) hold a token of this, so shutdown waits for
    /// their goodbyes; they watch `shutdown` to say them.
    pub tracker: tokio_util::task::TaskTracker,
    pub shutdown: tokio_util::sync::CancellationToken,
}

pub fn app(state: AppState) -> Router {
    // Streams are public on the venue network: any page may play them (a venue's own
    // site, a signage screen), as with any HLS server.
    let hls = Router::new()
        .route("/hls/{slug}/{master}", get(master_playlist))
        .route("/hls/{slug}/{rendition}/{file}", get(rendition_file))
        .layer(
            CorsLayer::new()
                .allow_origin(Any)
                .allow_methods([Method::GET, Method::HEAD]),
        );
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/channels", get(channels::list).post(channels::create))
        .route(
            "/api/channels/{slug}/stream-key/rotate",
            post(channels::rotate_key),
        )
        .route("/api/channels/{slug}/chat", get(chat::connect))
        .route(
            "/api/channels/{slug}/donations",
            post(wallet::donate).get(wallet::recent),
        )
        .route("/api/wallet", get(wallet::wallet))
        .route("/api/payments/products", get(payments::products))
        .route("/api/payments/kakao/ready", post(payments::ready))
        .route("/api/payments/kakao/approve", get(payments::approve))
        .route("/api/payments/kakao/cancel", get(payments::payer_returned))
        .route("/api/payments/kakao/fail", get(payments::payer_returned))
        .route("/api/payments/{order_id}", get(payments::order))
        .route("/api/auth/signup", post(auth::signup))
        .route("/api/auth/login", post(auth::login))
        .route("/api/auth/refresh", post(auth::refresh))
        .route("/api/auth/logout", post(auth::logout))
        .route("/api/me", get(auth::me))
        .route(
            "/api/onboarding",
            get(onboarding::status).post(onboarding::onboard),
        )
        .route("/api/obs", get(channels::obs_settings))
        .route("/assets/{name}", get(web::asset))
        .merge(hls)
        .fallback(fallback)
        // Every request body the API takes is a small JSON object; a larger one is refused
        // (413) before it is read into memory.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        // Whatever a response is, a browser must not guess another type for it, and an
        // answer that is not a page (JSON, media) may run nothing and be framed nowhere.
        // Pages set their own policy (see `web`), which these leave in place.
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(NO_CONTENT_POLICY),
        ))
        .with_state(state)
}

/// Largest request body, in bytes: a donation message or a sign-up is well under 2 KiB.
const MAX_BODY: usize = 16 * 1024;
/// The policy of every response that is not a page of the web app.
const NO_CONTENT_POLICY: &str = "default-src 'none'; frame-ancestors 'none'";

/// An API error: status, stable code, human message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Seconds, for `Retry-After` on a 429.
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn internal() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "something went wrong on the box",
        )
    }

    fn too_many_attempts(wait: Duration) -> ApiError {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let seconds = seconds.max(1);
        ApiError {
            retry_after: Some(seconds),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                format!("too many attempts from here; try again in {seconds} s"),
            )
        }
    }

    /// The password hashing threads are all taken: a `503` with `Retry-After`.
    fn busy(busy: crate::auth::Busy) -> ApiError {
        ApiError {
            retry_after: Some(busy.0.as_secs().max(1)),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", busy.to_string())
        }
    }
}

/// A JSON request body, or a JSON 400 saying what is wrong with it.
fn body<T>(
    payload: Result<Json<T>, axum::extract::rejection::JsonRejection>,
) -> Result<T, ApiError> {
    payload.map(|Json(v)| v).map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("request bodies are at most {MAX_BODY} bytes"),
            )
        } else {
            ApiError::bad_request(e.body_text())
        }
    })
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        tracing::error!(error = %e, "store error while answering a request");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the database is unavailable",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Unknown API and media paths are JSON 404s; any other GET is a page of the web app.
async fn fallback(method: Method, uri: axum::http::Uri, headers: HeaderMap) -> Response {
    let path = uri.path();
    let api =
        path.starts_with("/api/") || path.starts_with("/hls/") || path.starts_with("/assets/");
    // A file name (`/favicon.ico`, `/robots.txt`) is not a page of the app.
    let file = path
        .rsplit('/')
        .next()
        .is_some_and(|last| last.contains('.'));
    if method == Method::GET && !api && !file {
        return web::page(&headers);
    }
    ApiError::not_found("no such page").into_response()
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Whether the client takes gzip (`Accept-Encoding`, honouring `q=0`).
fn accepts_gzip(headers: &HeaderMap) -> bool {
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
async fn master_playlist(
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

async fn rendition_file(
    State(state): State<AppState>,
    Path((slug, rendition, file)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let broadcast = live_broadcast(&state, &slug)?;
    let rendition = broadcast
        .rendition(&rendition)
        .ok_or_else(|| ApiError::not_found(format!("no rendition `{rendition}`")))?;
    if file == "index.m3u8" {
        return media_playlist(rendition, &query, accepts_gzip(&headers)).await;
    }
    if file == rendition.init_name() {
        let init = rendition
            .init()
            .ok_or_else(|| ApiError::not_found("no initialization segment yet"))?;
        return Ok(media_response(FMP4_TYPE, init.len(), Body::from(init)));
    }
    let gone = || ApiError::not_found("no such segment or part (it may have expired)");
    let (sequence, part) = rendition.parse_media_name(&file).ok_or_else(gone)?;
    let content_type = match rendition.packaging {
        Packaging::Classic => TS_TYPE,
        Packaging::LowLatency { .. } => FMP4_TYPE,
    };
    if let Some(index) = part {
        // The part named by EXT-X-PRELOAD-HINT is requested before it exists: hold the
        // request until it does. Anything further ahead is not coming soon: 404.
        let hinted = rendition.next_part() == Some((sequence, index));
        if hinted {
            wait_for(rendition, sequence, Some(index)).await?;
        }
        let data = rendition.part(sequence, index).ok_or_else(gone)?;
        return Ok(media_response(content_type, data.len(), Body::from(data)));
    }
    let segment = rendition.segment(sequence).ok_or_else(gone)?;
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
    rendition: &Rendition,
    query: &HashMap<String, String>,
    gzip: bool,
) -> Result<Response, ApiError> {
    let Packaging::LowLatency { part_target } = rendition.packaging else {
        return Ok(playlist_response(rendition.media_playlist(), gzip));
    };
    let number = |key: &str| -> Result<Option<u64>, ApiError> {
        query
            .get(key)
            .map(|v| {
                crate::hls::canonical_number::<u64>(v)
                    .ok_or_else(|| ApiError::bad_request(format!("{key} must be a whole number")))
            })
            .transpose()
    };
    let msn = number("_HLS_msn")?;
    let part = number("_HLS_part")?;
    let skip = match query.get("_HLS_skip").map(String::as_str) {
        None => false,
        Some("YES" | "v2") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "_HLS_skip={other}: expected YES or v2"
            )))
        }
    };
    match (msn, part) {
        (None, Some(_)) => return Err(ApiError::bad_request("_HLS_part needs _HLS_msn")),
        (Some(msn), part) => {
            let part = part.map(|p| usize::try_from(p).unwrap_or(usize::MAX));
            if let Some(newest) = rendition.newest_sequence() {
                // RFC 8216bis: more than two segments, or more parts than the Advance Part
                // Limit, past the end of the playlist is a request that cannot be met soon.
                let advance_part_limit = if part_target < 1.0 {
                    (3.0 / part_target).floor() as usize
                } else {
                    3
                };
                let newest_part = rendition
                    .newest_part()
                    .filter(|(s, _)| *s == msn)
                    .map_or(0, |(_, p)| p);
                let too_far = msn > newest + 2
                    || (msn == newest
                        && part.is_some_and(|p| p > newest_part + advance_part_limit));
                if too_far && !rendition.is_ended() {
                    return Err(ApiError::bad_request(format!(
                        "_HLS_msn={msn} is too far ahead of the live edge (segment {newest})"
                    )));
                }
            }
            wait_for(rendition, msn, part).await?;
        }
        (None, None) => {}
    }
    let playlist = if skip {
        rendition.delta_playlist()
    } else {
        rendition.media_playlist()
    };
    Ok(playlist_response(playlist, gzip))
}

/// Holds a request until segment `sequence` (or its part) exists or the stream ends; gives
/// up with 503 after three target durations.
async fn wait_for(
    rendition: &Rendition,
    sequence: u64,
    part: Option<usize>,
) -> Result<(), ApiError> {
    let limit = Duration::from_secs(3 * rendition.target_duration().max(1));
    let deadline = tokio::time::Instant::now() + limit;
    let mut changes = rendition.subscribe();
    while !rendition.has(sequence, part) && !rendition.is_ended() {
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
