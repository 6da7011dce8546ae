//! Points over HTTP: the caller's wallet, and donations to a channel's streamer.
//!
//! A donation is exactly-once per `Idempotency-Key`: a client that lost the answer retries
//! with the same key and gets the first donation back (with `Idempotency-Replayed: true`),
//! never a second one. The donor is the token's user. The rules are `donations::donate`'s;
//! this maps them to HTTP.

use super::auth::invalid_token;
use super::{ApiError, ApiJson, AppState, CurrentUser};
use crate::chat::Author;
use crate::donations::{self, Ask, Refused};
use crate::store::{DonationRefused, ReceivedDonation, Wallet};
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
    ApiJson(request): ApiJson<DonateRequest>,
) -> Result<Response, ApiError> {
    let donor = Author::from_claims(&claims).ok_or_else(invalid_token)?;
    let ask = Ask {
        channel: slug,
        amount: request.amount,
        message: request.message,
        idempotency_key: idempotency_key(&headers)?,
    };
    let outcome = donations::donate(&state.store, &state.chat, &state.points, &donor, ask).await?;
    let (donation, replayed) = outcome.map_err(|refused| {
        let (status, code) = match &refused {
            Refused::Amount { .. } | Refused::Message(_) => {
                (StatusCode::BAD_REQUEST, "bad_request")
            }
            Refused::Muted(refusal) => (StatusCode::FORBIDDEN, refusal.code()),
            Refused::Ledger(DonationRefused::NoSuchChannel(_)) => {
                (StatusCode::NOT_FOUND, "not_found")
            }
            Refused::Ledger(DonationRefused::NoStreamer) => (StatusCode::CONFLICT, "no_streamer"),
            Refused::Ledger(DonationRefused::OwnChannel) => (StatusCode::FORBIDDEN, "own_channel"),
            Refused::Ledger(DonationRefused::InsufficientFunds { .. }) => {
                (StatusCode::CONFLICT, "insufficient_funds")
            }
            Refused::Ledger(DonationRefused::KeyReused) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
            }
        };
        let retry_after = match &refused {
            Refused::Muted(refusal) => refusal.retry_after(),
            _ => None,
        };
        ApiError {
            retry_after,
            ..ApiError::new(status, code, refused.to_string())
        }
    })?;
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
    super::channels::owner_or_admin(
        &state,
        &claims,
        &slug,
        "only the channel's streamer sees its donations",
    )
    .await?;
    let donations = state
        .store
        .read(move |store| store.recent_donations(&slug, RECENT_DONATIONS))
        .await?;
    Ok(Json(donations))
}
