//! HTTP: playlists and segments for players, the JSON API, health.
//!
//! `app(state)` builds the router, so tests can drive it without a socket. Errors are JSON
//! `{"error": {"code", "message"}}` with a fitting status, built in one place ([`ApiError`]).

use crate::hls::Broadcasts;
use crate::store::{StoreError, StoreHandle};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use std::sync::Arc;

const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";
const SEGMENT_TYPE: &str = "video/mp2t";
/// Playlists change every segment: players must revalidate.
const PLAYLIST_CACHE: &str = "no-cache";
/// Segment names are unique per publish, so their bytes never change.
const SEGMENT_CACHE: &str = "public, max-age=86400, immutable";

#[derive(Clone)]
pub struct AppState {
    pub store: StoreHandle,
    pub broadcasts: Arc<Broadcasts>,
}

pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/channels", get(list_channels))
        .route("/hls/{slug}/master.m3u8", get(master_playlist))
        .route("/hls/{slug}/{rendition}/{file}", get(rendition_file))
        .fallback(|| async { ApiError::not_found("no such page") })
        .with_state(state)
}

/// An API error: status, stable code, human message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: message.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        tracing::error!(error = %e, "store error while answering a request");
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "store_unavailable",
            message: "the database is unavailable".into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, Json(body)).into_response()
    }
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

#[derive(Debug, Serialize)]
struct ChannelView {
    slug: String,
    title: String,
    live: bool,
}

async fn list_channels(State(state): State<AppState>) -> Result<Json<Vec<ChannelView>>, ApiError> {
    let channels = state.store.call(|store| store.list_channels()).await?;
    let mut views: Vec<ChannelView> = channels
        .into_iter()
        .map(|c| ChannelView {
            live: state.broadcasts.get(&c.slug).is_some_and(|b| b.is_live()),
            slug: c.slug,
            title: c.title,
        })
        .collect();
    // Live channels first, then by slug (the store's order, kept by a stable sort).
    views.sort_by_key(|v| !v.live);
    Ok(Json(views))
}

fn playlist_response(text: impl Into<Body>) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(PLAYLIST_TYPE),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static(PLAYLIST_CACHE),
            ),
        ],
        text.into(),
    )
        .into_response()
}

async fn master_playlist(
    State(state): State<AppState>,
    Path(slug): Path<String>,
) -> Result<Response, ApiError> {
    let broadcast = state
        .broadcasts
        .get(&slug)
        .ok_or_else(|| ApiError::not_found(format!("channel `{slug}` is not live")))?;
    let text = broadcast.master_playlist().ok_or_else(|| {
        ApiError::not_found(format!(
            "channel `{slug}` is starting; try again in a moment"
        ))
    })?;
    Ok(playlist_response(text))
}

async fn rendition_file(
    State(state): State<AppState>,
    Path((slug, rendition, file)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let broadcast = state
        .broadcasts
        .get(&slug)
        .ok_or_else(|| ApiError::not_found(format!("channel `{slug}` is not live")))?;
    let rendition = broadcast
        .rendition(&rendition)
        .ok_or_else(|| ApiError::not_found(format!("no rendition `{rendition}`")))?;
    if file == "index.m3u8" {
        return Ok(playlist_response(rendition.media_playlist()));
    }
    let segment = rendition
        .parse_segment_name(&file)
        .and_then(|sequence| rendition.segment(sequence))
        .ok_or_else(|| ApiError::not_found("no such segment (it may have expired)"))?;
    // The parts are sent as they are held: no copy of the media per request.
    let length = segment.len();
    let parts = segment
        .parts
        .iter()
        .map(|p| Ok::<_, std::convert::Infallible>(p.data.clone()))
        .collect::<Vec<_>>();
    let body = Body::from_stream(futures_util::stream::iter(parts));
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(SEGMENT_TYPE)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static(SEGMENT_CACHE),
            ),
            (header::CONTENT_LENGTH, HeaderValue::from(length)),
        ],
        body,
    )
        .into_response())
}
