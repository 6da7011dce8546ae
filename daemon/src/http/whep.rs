//! WHEP (WebRTC-HTTP Egress Protocol, draft-ietf-wish-whep, on RFC 9725's model): a
//! viewer posts an SDP offer to `/whep/<channel>` and gets the answer, with the box's
//! host candidates in it (no trickle ICE: the box is ICE-lite), and the session's resource
//! in `Location`; `DELETE` on it ends the session. Public, as the HLS playlists are.

use super::{ApiError, AppState};
use crate::webrtc::JoinError;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;

const SDP: &str = "application/sdp";

pub async fn offer(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.to_ascii_lowercase().starts_with(SDP) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "a WHEP offer is application/sdp",
        ));
    }
    let offer = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("the SDP offer is not UTF-8"))?
        .to_string();
    let webrtc = state.webrtc.clone();
    let client = peer.ip();
    let joining = slug.clone();
    // Making the session's DTLS certificate is a few milliseconds of CPU: off the runtime.
    let joined = tokio::task::spawn_blocking(move || webrtc.join(&joining, &offer, client))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(|e| match e {
            JoinError::Off => ApiError::not_found(e.to_string()),
            JoinError::NotLive(_) => ApiError::not_found(e.to_string()),
            JoinError::Full(_) => ApiError {
                retry_after: Some(10),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "webrtc_full",
                    e.to_string(),
                )
            },
            JoinError::NoVideo(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "webrtc_unsuitable",
                e.to_string(),
            ),
            JoinError::BadOffer(_) => ApiError::bad_request(e.to_string()),
        })?;
    let location = format!("/whep/{}/{}", urlencode(&slug), joined.id);
    let mut response = (StatusCode::CREATED, joined.answer).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
    if let Ok(location) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, location);
    }
    Ok(response)
}

pub async fn end(
    State(state): State<AppState>,
    Path((slug, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    if state.webrtc.leave(&slug, &id) {
        Ok(StatusCode::OK)
    } else {
        Err(ApiError::not_found("no such WebRTC session"))
    }
}

/// Trickle ICE and ICE restarts: the box offers all its candidates in the answer, and a
/// viewer that lost its path starts a new session (RFC 9725 §4.3.1 allows 405).
pub async fn patch() -> Result<StatusCode, ApiError> {
    Err(ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this WHEP server does not take trickle ICE or ICE restarts",
    ))
}

fn urlencode(slug: &str) -> String {
    // Slugs are a-z, 0-9 and '-' (see `text`); anything else is escaped to be safe.
    slug.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
