//! Points over HTTP: the caller's wallet, and donations to a channel's streamer.
//!
//! A donation is exactly-once per `Idempotency-Key`: a client that lost the answer retries
//! with the same key and gets the first donation back (with `Idempotency-Replayed: true`),
//! never a second one. The donor is the token's user. The chat hears about a donation only
//! after its commit is on disk.

use super::auth::invalid_token;
use super::{body, ApiError, AppState, CurrentUser};
use crate::chat::{clean_text, Author, Refusal};
use crate::store::{DonationRefused, DonationRequest, ReceivedDonation, Role, Wallet};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

/// Statement lines `GET /api/wallet` returns.
const STATEMENT_LINES: usize = 50;
/// Donations `GET /api/channels/<slug>/donations` returns.
const RECENT_DONATIONS: usize = 20;

/// `GET /api/wallet`: `{balance, earnings, entries}`.
pub async fn wallet(
    State(state): State<AppState>,
    CurrentUser(claims): CurrentUser,
) -> Result<Json<Wallet>, ApiError> {
    let user = claims.user_id().ok_or_else(invalid_token)?;
    let wallet = state
        .store
        .read(move |store| store.wallet(user, STATEMENT_LINES))
        .await?;
    Ok(Json(wallet))
}

#[derive(Debug, Deserialize)]
pub struct DonateRequest {
    amount: i64,
    #[serde(default)]
    message: String,
}

/// The `Idempotency-Key` header: 1 to 100 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .unwrap_or("");
    let valid = (1..=100).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic());
    if !valid {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "idempotency_key_required",
            "send an Idempotency-Key header (1-100 visible characters, new for each donation) \
             so a retry can never donate twice",
        ));
    }
    Ok(key.to_string())
}

/// `POST /api/channels/<slug>/donations {amount, message}` with `Idempotency-Key`.
pub async fn donate(
    State(state): State<AppState>,
    CurrentUser(claims): CurrentUser,
    Path(slug): Path<String>,
    headers: HeaderMap,
    payload: Result<Json<DonateRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let donor = Author::from_claims(&claims).ok_or_else(invalid_token)?;
    let key = idempotency_key(&headers)?;
    let request = body(payload)?;
    let limits = &state.points;
    if !(limits.donation_min..=limits.donation_max).contains(&request.amount) {
        return Err(ApiError::bad_request(format!(
            "amount must be {} to {} points",
            limits.donation_min, limits.donation_max
        )));
    }
    let message = match clean_text(&request.message, limits.message_max_chars) {
        Ok(message) => message,
        Err(Refusal::Empty) => String::new(),
        Err(refusal) => return Err(ApiError::bad_request(format!("message: {refusal}"))),
    };
    // The message follows the chat's rules: a donor who may not speak in this channel's
    // chat may still donate, but without words. Refused before any points move.
    if !message.is_empty() {
        if let Some(room) = state.chat.room(&slug, &state.store).await? {
            if let Err(refusal) = room.may_speak(&donor) {
                return Err(ApiError {
                    retry_after: refusal.retry_after(),
                    ..ApiError::new(
                        StatusCode::FORBIDDEN,
                        refusal.code(),
                        format!("{refusal}: donate without a message"),
                    )
                });
            }
        }
    }
    let donation = DonationRequest {
        channel: slug,
        donor_id: donor.id,
        donor_nickname: donor.nickname.clone(),
        amount: request.amount,
        message,
        idempotency_key: key,
    };
    let outcome = state
        .store
        .write(move |store| store.donate(&donation))
        .await?;
    let (donation, replayed) = outcome.map_err(|refused| {
        let (status, code) = match &refused {
            DonationRefused::NoSuchChannel(_) => (StatusCode::NOT_FOUND, "not_found"),
            DonationRefused::NoStreamer => (StatusCode::CONFLICT, "no_streamer"),
            DonationRefused::OwnChannel => (StatusCode::FORBIDDEN, "own_channel"),
            DonationRefused::InsufficientFunds { .. } => {
                (StatusCode::CONFLICT, "insufficient_funds")
            }
            DonationRefused::KeyReused => {
                (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
            }
        };
        ApiError::new(status, code, refused.to_string())
    })?;
    if !replayed {
        tracing::info!(
            channel = %donation.channel,
            donor = %donor.nickname,
            amount = donation.amount,
            "donation"
        );
        // The commit is on disk: now the room may hear of it.
        // (A donor banned meanwhile is not announced: the room applies its rule again.)
        if let Ok(Some(room)) = state.chat.room(&donation.channel, &state.store).await {
            let announced = room.donation(
                &donor,
                donation.amount,
                &donation.message,
                &donation.created_at,
            );
            if !announced {
                tracing::info!(channel = %donation.channel, "donation from a restricted donor: not shown in chat");
            }
        }
    }
    let mut response = (StatusCode::CREATED, Json(&donation)).into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotency-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// `GET /api/channels/<slug>/donations`: the channel's newest donations (donor, amount,
/// message), for its streamer (or an admin).
pub async fn recent(
    State(state): State<AppState>,
    CurrentUser(claims): CurrentUser,
    Path(slug): Path<String>,
) -> Result<Json<Vec<ReceivedDonation>>, ApiError> {
    let name = slug.clone();
    let owner = state
        .store
        .read(move |store| store.channel_owner(&name))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no channel `{slug}`")))?;
    if owner.is_none_or(|owner| Some(owner) != claims.user_id()) && claims.role != Role::Admin {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only the channel's streamer sees its donations",
        ));
    }
    let donations = state
        .store
        .read(move |store| store.recent_donations(&slug, RECENT_DONATIONS))
        .await?;
    Ok(Json(donations))
}
