//! Top-ups over HTTP: the catalog, starting a Kakao Pay payment, the payer's returns
//! (approval, cancel, fail) and the order's state for the page to poll.
//!
//! Kakao Pay sends the payer's browser back to the approve, cancel and fail URLs; such a
//! navigation carries no token (the phone that scanned the QR code is not logged in), so
//! these work without one: the order id and Kakao Pay's pg_token are the proof, and points
//! only ever go to the user who placed the order. A logged-in caller who is someone else is
//! refused. Navigations are answered with a redirect to the order's page; API calls (the
//! page's fetch) get JSON.

use super::auth::{authenticate, bearer, invalid_token};
use super::{ApiError, ApiJson, AppState, CurrentUser};
use crate::payments::{PaymentError, Started};
use crate::store::{Order, OrderState};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use serde::Deserialize;

/// `GET /api/payments/products`: `{enabled, products: [{id, points, price_krw}]}`.
pub async fn products(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "enabled": state.payments.enabled(),
        "products": state.payments.products(),
    }))
}

#[derive(Debug, Deserialize)]
pub struct ReadyRequest {
    product_id: String,
}

/// `POST /api/payments/kakao/ready {product_id}` → 201 `{order_id, redirect_pc_url,
/// redirect_mobile_url, qr_svg}`.
pub async fn ready(
    State(state): State<AppState>,
    CurrentUser(claims): CurrentUser,
    headers: HeaderMap,
    ApiJson(request): ApiJson<ReadyRequest>,
) -> Result<(StatusCode, Json<Started>), ApiError> {
    let user = claims.user_id().ok_or_else(invalid_token)?;
    let origin = origin(&headers)?;
    let started = state
        .payments
        .start(user, &request.product_id, &origin)
        .await
        .map_err(payment_error)?;
    Ok((StatusCode::CREATED, Json(started)))
}

#[derive(Debug, Deserialize)]
pub struct Return {
    order_id: String,
    pg_token: Option<String>,
}

/// `GET /api/payments/kakao/approve?order_id=…&pg_token=…`: Kakao Pay's approval URL.
pub async fn approve(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<Return>,
) -> Result<Response, ApiError> {
    let token = query
        .pg_token
        .as_deref()
        .filter(|t| (1..=100).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_alphanumeric()))
        .ok_or_else(|| ApiError::bad_request("pg_token is missing or malformed"))?;
    let order = returning_order(&state, &headers, &query.order_id).await?;
    let outcome = state.payments.approve(order, Some(token)).await;
    answer(&headers, &query.order_id, outcome)
}

/// `GET /api/payments/kakao/cancel?order_id=…` and `…/fail?order_id=…`.
pub async fn payer_returned(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<Return>,
) -> Result<Response, ApiError> {
    let order = returning_order(&state, &headers, &query.order_id).await?;
    let outcome = state.payments.payer_returned(order).await;
    answer(&headers, &query.order_id, outcome)
}

/// `GET /api/payments/<order_id>`: the order, for its owner (or an admin). A pending order
/// whose payer has returned is confirmed with Kakao Pay again first.
pub async fn order(
    State(state): State<AppState>,
    CurrentUser(claims): CurrentUser,
    Path(order_id): Path<String>,
) -> Result<Json<Order>, ApiError> {
    let order = state
        .payments
        .order(&order_id)
        .await
        .map_err(payment_error)?;
    let mine = claims
        .role
        .owner_or_admin(claims.user_id(), Some(order.user_id));
    if !mine {
        // Someone else's order is not theirs to know about.
        return Err(payment_error(PaymentError::NoSuchOrder));
    }
    let order = state.payments.recheck(order).await.map_err(payment_error)?;
    Ok(Json(order))
}

/// The order a payer's return names. Anonymous returns are fine; a logged-in someone else
/// is refused (403 `not_your_order`).
async fn returning_order(
    state: &AppState,
    headers: &HeaderMap,
    order_id: &str,
) -> Result<Order, ApiError> {
    let order = state
        .payments
        .order(order_id)
        .await
        .map_err(payment_error)?;
    if let Some(token) = bearer(headers) {
        let claims = authenticate(state, token).await?;
        if claims.user_id() != Some(order.user_id) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "not_your_order",
                "this payment belongs to another account",
            ));
        }
    }
    Ok(order)
}

/// A browser navigation (Kakao Pay's redirect) goes on to the order's page; the page asks
/// the API for the outcome. API callers get the outcome here.
fn answer(
    headers: &HeaderMap,
    order_id: &str,
    outcome: Result<Order, PaymentError>,
) -> Result<Response, ApiError> {
    let navigation = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
        && bearer(headers).is_none();
    if navigation {
        // The order id was found in the store: `o` and hex, safe in a path.
        return Ok(Redirect::to(&format!("/payments/{order_id}")).into_response());
    }
    let order = outcome.map_err(payment_error)?;
    let refusal = |status, code| Err(ApiError::new(status, code, order.detail.clone()));
    match order.state {
        OrderState::Approved => Ok(Json(order).into_response()),
        OrderState::Pending => Ok((StatusCode::ACCEPTED, Json(order)).into_response()),
        OrderState::Rejected => refusal(StatusCode::CONFLICT, "payment_rejected"),
        OrderState::Canceled => refusal(StatusCode::CONFLICT, "payment_canceled"),
        OrderState::Failed => refusal(StatusCode::CONFLICT, "payment_failed"),
    }
}

/// `http://<Host>` as the viewer reached the box: where Kakao Pay sends the payer back.
fn origin(headers: &HeaderMap) -> Result<String, ApiError> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // Only what a host name, IPv4/IPv6 address and port are made of: the value ends up in
    // URLs that Kakao Pay will send a browser to.
    let valid = (1..=255).contains(&host.len())
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    if !valid {
        return Err(ApiError::bad_request(
            "the request's Host header is missing or malformed",
        ));
    }
    Ok(format!("http://{host}"))
}

fn payment_error(error: PaymentError) -> ApiError {
    let message = error.to_string();
    match error {
        PaymentError::Disabled => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "payments_disabled",
            message,
        ),
        PaymentError::NoSuchProduct(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "no_such_product", message)
        }
        PaymentError::NoSuchOrder => ApiError::not_found(message),
        PaymentError::StartUnavailable(_) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "payment_provider_unavailable",
            message,
        ),
        PaymentError::StartRefused(_) => {
            ApiError::new(StatusCode::BAD_GATEWAY, "payment_provider_refused", message)
        }
        PaymentError::Undecided { unreachable, .. } => {
            let (status, code) = if unreachable {
                (StatusCode::BAD_GATEWAY, "payment_provider_unavailable")
            } else {
                (StatusCode::CONFLICT, "payment_pending")
            };
            ApiError::new(status, code, message)
        }
        PaymentError::Store(e) => e.into(),
    }
}
