//! Channels over HTTP: the public list, and streamers creating channels and rotating their
//! stream keys. A key is shown once, in the answer that made it.

use super::{ApiError, ApiJson, AppState, CurrentUser};
use crate::store::{Role, StoreError, StreamKey};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use sha2::Digest;

#[derive(Debug, Serialize)]
pub struct ChannelView {
    slug: String,
    title: String,
    live: bool,
    /// The streamer who owns the channel: `{id, nickname}`, or null for an operator's.
    streamer: Option<Streamer>,
    /// Sockets open on the channel's chat: the people watching the page.
    viewers: usize,
}

#[derive(Debug, Serialize)]
struct Streamer {
    id: i64,
    nickname: String,
}

/// `GET /api/channels`. Every open page polls it, so it carries an `ETag`: the browser's
/// cache revalidates with `If-None-Match` and an unchanged list costs a `304` and no body.
pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let channels = state.store.read(|store| store.channel_listing()).await?;
    let mut views: Vec<ChannelView> = channels
        .into_iter()
        .map(|(c, owner)| ChannelView {
            live: state.broadcasts.get(&c.slug).is_some_and(|b| b.is_live()),
            viewers: state.chat.viewers(&c.slug),
            streamer: owner.map(|(id, nickname)| Streamer { id, nickname }),
            slug: c.slug,
            title: c.title,
        })
        .collect();
    // Live channels first, then by slug (the store's order, kept by a stable sort).
    views.sort_by_key(|v| !v.live);
    let body = serde_json::to_vec(&views).map_err(|_| ApiError::internal())?;
    let tag = format!("\"{}\"", hex::encode(&sha2::Sha256::digest(&body)[..12]));
    let unchanged = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().trim_start_matches("W/") == tag);
    let cache = [
        (header::ETAG, tag),
        (header::CACHE_CONTROL, "no-cache".to_string()),
    ];
    if unchanged {
        return Ok((StatusCode::NOT_MODIFIED, cache).into_response());
    }
    Ok((
        cache,
        [(header::CONTENT_TYPE, "application/json".to_string())],
        body,
    )
        .into_response())
}

/// A stream key, shown once, with where to use it.
#[derive(Debug, Serialize)]
pub(super) struct KeyAnswer {
    slug: String,
    stream_key: String,
    /// OBS's "Server": rtmp://<the host the streamer reached the box on>:<port>/live.
    rtmp_url: String,
}

pub(super) fn key_answer(
    state: &AppState,
    headers: &HeaderMap,
    slug: String,
    key: &StreamKey,
) -> KeyAnswer {
    KeyAnswer {
        slug,
        stream_key: key.as_str().to_string(),
        rtmp_url: obs_server(state, headers),
    }
}

/// OBS's "Server" for a streamer whose browser reached the box at this request's `Host`.
pub(super) fn obs_server(state: &AppState, headers: &HeaderMap) -> String {
    // The streamer's browser reached the box by some name or address; OBS on the same
    // network can use the same one.
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(|h| match h.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => h,
        })
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        .filter(|h| !h.is_empty())
        .unwrap_or(&state.rtmp_host);
    crate::obs::server_url(host, state.rtmp_port)
}

/// `GET /api/obs`: the OBS settings the dashboard shows (the key is shown only when made).
pub async fn obs_settings(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "server": obs_server(&state, &headers),
        // One keyframe per segment: segments are cut at keyframes.
        "keyframe_interval_seconds": state.segment_seconds.round().max(1.0),
        // What venue Wi-Fi carries to many phones comfortably.
        "video_bitrate_kbps": 4500,
        "resolution": "1920x1080 30fps",
    }))
}

fn forbidden(message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

/// The channel's streamer or an admin may go on (the one rule, `Role::owner_or_admin`);
/// anyone else gets 403 saying `refusal`, and an unknown channel 404.
pub(super) async fn owner_or_admin(
    state: &AppState,
    claims: &crate::auth::Claims,
    slug: &str,
    refusal: &str,
) -> Result<(), ApiError> {
    let name = slug.to_string();
    let owner = state
        .store
        .read(move |store| store.channel_owner(&name))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no channel `{slug}`")))?;
    if claims.role.owner_or_admin(claims.user_id(), owner) {
        Ok(())
    } else {
        Err(forbidden(refusal))
    }
}

fn channel_error(error: StoreError) -> ApiError {
    match error {
        StoreError::InvalidSlug(_) | StoreError::InvalidTitle(_) => {
            ApiError::bad_request(error.to_string())
        }
        StoreError::ChannelExists(_) => {
            ApiError::new(StatusCode::CONFLICT, "channel_exists", error.to_string())
        }
        StoreError::TooManyChannels(_) => {
            ApiError::new(StatusCode::CONFLICT, "too_many_channels", error.to_string())
        }
        StoreError::NoSuchChannel(_) => ApiError::not_found(error.to_string()),
        other => other.into(),
    }
}

#[derive(Debug, Deserialize)]
pub struct CreateChannel {
    slug: String,
    #[serde(default)]
    title: String,
}

/// `POST /api/channels`: a streamer (or admin) creates a channel they own.
pub async fn create(
    State(state): State<AppState>,
    CurrentUser(claims): CurrentUser,
    headers: HeaderMap,
    ApiJson(request): ApiJson<CreateChannel>,
) -> Result<(StatusCode, Json<KeyAnswer>), ApiError> {
    if !matches!(claims.role, Role::Streamer | Role::Admin) {
        return Err(forbidden("only streamers and admins create channels"));
    }
    let owner = claims.user_id();
    // Admins run the venue and may make as many as it needs; a streamer has a bound.
    let limit = (claims.role == Role::Streamer).then_some(state.channels_per_streamer);
    let (channel, key) = state
        .store
        .write(move |store| store.add_channel_owned(&request.slug, &request.title, owner, limit))
        .await
        .map_err(channel_error)?;
    tracing::info!(channel = %channel.slug, by = %claims.nick, "channel created");
    Ok((
        StatusCode::CREATED,
        Json(key_answer(&state, &headers, channel.slug, &key)),
    ))
}

/// `POST /api/channels/<slug>/stream-key/rotate`: the owner (or an admin) gets a new key;
/// the old one stops working at once, and a publish using it ends.
pub async fn rotate_key(
    State(state): State<AppState>,
    CurrentUser(claims): CurrentUser,
    Path(slug): Path<String>,
    headers: HeaderMap,
) -> Result<Json<KeyAnswer>, ApiError> {
    owner_or_admin(
        &state,
        &claims,
        &slug,
        "only the channel's streamer or an admin may rotate its key",
    )
    .await?;
    let name = slug.clone();
    let key = state
        .store
        .write(move |store| store.rotate_stream_key(&name))
        .await
        .map_err(channel_error)?;
    state.broadcasts.stop(&slug);
    tracing::info!(channel = %slug, by = %claims.nick, "stream key rotated");
    Ok(Json(key_answer(&state, &headers, slug, &key)))
}

/// `GET /api/channels/<slug>/health`: what the box measures of the live stream (keyframe
/// interval, codecs, resolution, frame rate, bitrate, B-frames, ingest lag) and the
/// warnings the dashboard explains, for the channel's streamer or an admin.
pub async fn health(
    State(state): State<AppState>,
    CurrentUser(claims): CurrentUser,
    Path(slug): Path<String>,
) -> Result<Json<crate::hls::health::Snapshot>, ApiError> {
    owner_or_admin(
        &state,
        &claims,
        &slug,
        "only the channel's streamer sees its stream's health",
    )
    .await?;
    let broadcast = state
        .broadcasts
        .get(&slug)
        .filter(|b| b.is_on_air())
        .ok_or_else(|| ApiError::not_found(format!("channel `{slug}` is not live")))?;
    Ok(Json(broadcast.health()))
}

/// `GET /api/channels/<slug>/notices`: what the streamer should know about their channel
/// that is not the stream itself: `old_key_seen_at`, when a publisher last tried the key
/// the channel had before its last rotation (OBS still has it); `refused {at, reason}`, the
/// last publish the box refused for its media (a codec it cannot serve), in words.
pub async fn notices(
    State(state): State<AppState>,
    CurrentUser(claims): CurrentUser,
    Path(slug): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    owner_or_admin(
        &state,
        &claims,
        &slug,
        "only the channel's streamer sees its notices",
    )
    .await?;
    let refused = state.broadcasts.last_refusal(&slug);
    let seen = state
        .store
        .read(move |store| store.previous_key_seen_at(&slug))
        .await?;
    Ok(Json(serde_json::json!({
        "old_key_seen_at": seen,
        "refused": refused.map(|(at, reason)| serde_json::json!({ "at": at, "reason": reason })),
    })))
}
