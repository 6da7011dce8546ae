//! Accounts over HTTP: sign up, log in, refresh, log out, who am I; and [`CurrentUser`], the
//! extractor every authenticated endpoint uses. Identity comes from the token only.

use super::{body, ApiError, AppState};
use crate::auth::{self, TokenError, TokenPair};
use crate::store::{RefreshRefused, Role, StoreError, User};
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Instant;

fn unauthorized(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, message)
}

/// The answer to an access token that does not check out.
pub fn invalid_token() -> ApiError {
    unauthorized("invalid_token", "the access token is not valid")
}

fn invalid(error: StoreError) -> ApiError {
    match error {
        StoreError::Invalid { .. } => ApiError::bad_request(error.to_string()),
        StoreError::UsernameTaken(_) => {
            ApiError::new(StatusCode::CONFLICT, "username_taken", error.to_string())
        }
        other => other.into(),
    }
}

/// The authenticated caller: a valid, unexpired access token whose session is not revoked.
#[derive(Debug, Clone)]
pub struct CurrentUser(pub auth::Claims);

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers).ok_or_else(|| {
            unauthorized(
                "unauthorized",
                "log in first (Authorization: Bearer <access token>)",
            )
        })?;
        let claims = authenticate(state, token).await?;
        Ok(CurrentUser(claims))
    }
}

/// Checks an access token: signature, expiry, and that its session was not ended.
pub async fn authenticate(state: &AppState, token: &str) -> Result<auth::Claims, ApiError> {
    let claims = state
        .auth
        .verify_access(token.trim())
        .map_err(|e| match e {
            TokenError::Expired => {
                unauthorized("token_expired", "the access token has expired; refresh it")
            }
            TokenError::Invalid => invalid_token(),
        })?;
    if state.auth.is_revoked(&claims.sid) {
        return Err(unauthorized(
            "session_revoked",
            "this session has ended; log in again",
        ));
    }
    Ok(claims)
}

/// The token in an `Authorization: Bearer …` header, if there is one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// Checks a new account's password and hashes it (argon2id, slow by design: on the
/// blocking pool, never on the runtime or the store thread).
pub async fn password_hash(password: String) -> Result<String, ApiError> {
    auth::validate_password(&password)
        .map_err(|reason| ApiError::bad_request(format!("invalid password: {reason}")))?;
    tokio::task::spawn_blocking(move || auth::hash_password(&password))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(|_| ApiError::internal())
}

#[derive(Debug, Deserialize)]
pub struct SignupRequest {
    username: String,
    password: String,
    nickname: String,
}

pub async fn signup(
    State(state): State<AppState>,
    payload: Result<Json<SignupRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    let request = body(payload)?;
    let hash = password_hash(request.password).await?;
    let user = state
        .store
        .call(move |store| {
            store.add_user(&request.username, &request.nickname, &hash, Role::Viewer)
        })
        .await
        .map_err(invalid)?;
    tracing::info!(user = %user.username, "account created");
    Ok((StatusCode::CREATED, Json(user)))
}

#[derive(Debug, Deserialize)]
pub struct LoginRequest {
    username: String,
    password: String,
}

pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    payload: Result<Json<LoginRequest>, JsonRejection>,
) -> Result<Json<TokenPair>, ApiError> {
    let request = body(payload)?;
    let account = request.username.trim().to_lowercase();
    let address = peer.ip();
    let now = Instant::now();
    let wait = state
        .login_by_address
        .retry_after(&address, now)
        .max(state.login_by_account.retry_after(&account, now));
    if let Some(wait) = wait {
        return Err(ApiError::too_many_attempts(wait));
    }
    let name = account.clone();
    let found = state
        .store
        .call(move |store| store.credentials(&name))
        .await?;
    let password = request.password;
    let stored = found.as_ref().map(|(_, hash)| hash.clone());
    let matches =
        tokio::task::spawn_blocking(move || auth::verify_password(&password, stored.as_deref()))
            .await
            .map_err(|_| ApiError::internal())?;
    let user = match found {
        Some((user, _)) if matches => user,
        _ => {
            let failures = state.login_by_account.record_failure(&account, now);
            state.login_by_address.record_failure(&address, now);
            tracing::warn!(%address, failures, "login refused: wrong username or password");
            return Err(unauthorized(
                "invalid_credentials",
                "wrong username or password",
            ));
        }
    };
    state.login_by_account.record_success(&account);
    state.login_by_address.record_success(&address);
    let session = auth::new_session_id();
    let (refresh, hash) = auth::new_refresh_token();
    let expires = (auth::now_seconds() + state.auth.refresh_ttl.as_secs()) as i64;
    let (user_id, family) = (user.id, session.clone());
    state
        .store
        .call(move |store| store.start_session(user_id, &family, &hash, expires))
        .await?;
    tracing::info!(user = %user.username, "logged in");
    Ok(Json(
        state
            .auth
            .pair(&user, &session, refresh)
            .map_err(|_| ApiError::internal())?,
    ))
}

#[derive(Debug, Deserialize)]
pub struct RefreshRequest {
    refresh_token: String,
}

pub async fn refresh(
    State(state): State<AppState>,
    payload: Result<Json<RefreshRequest>, JsonRejection>,
) -> Result<Json<TokenPair>, ApiError> {
    let request = body(payload)?;
    let old = auth::refresh_token_hash(&request.refresh_token);
    let (refresh, new) = auth::new_refresh_token();
    let now = auth::now_seconds() as i64;
    let expires = now + state.auth.refresh_ttl.as_secs() as i64;
    let rotated = state
        .store
        .call(move |store| store.rotate_refresh_token(&old, &new, now, expires))
        .await?;
    let session = rotated.map_err(|refused| match refused {
        RefreshRefused::Reused { family } => {
            state.auth.revoke(&family);
            tracing::warn!("a refresh token was presented twice: its session is revoked");
            unauthorized(
                "refresh_token_reused",
                "this refresh token was already used; the session has been ended, log in again",
            )
        }
        RefreshRefused::Expired => unauthorized(
            "refresh_token_expired",
            "the refresh token has expired; log in again",
        ),
        RefreshRefused::Revoked => {
            unauthorized("session_revoked", "this session has ended; log in again")
        }
        RefreshRefused::Unknown => unauthorized("invalid_token", "the refresh token is not valid"),
    })?;
    Ok(Json(
        state
            .auth
            .pair(&session.user, &session.family, refresh)
            .map_err(|_| ApiError::internal())?,
    ))
}

/// Ends the caller's session: its refresh tokens and its access tokens stop working.
pub async fn logout(
    State(state): State<AppState>,
    CurrentUser(claims): CurrentUser,
) -> Result<StatusCode, ApiError> {
    let session = claims.sid.clone();
    state
        .store
        .call(move |store| store.revoke_session(&session))
        .await?;
    state.auth.revoke(&claims.sid);
    Ok(StatusCode::NO_CONTENT)
}

pub async fn me(
    State(state): State<AppState>,
    CurrentUser(claims): CurrentUser,
) -> Result<Json<User>, ApiError> {
    let id = claims.user_id().ok_or_else(invalid_token)?;
    let user = state.store.call(move |store| store.user_by_id(id)).await?;
    user.map(Json)
        .ok_or_else(|| unauthorized("invalid_token", "this account no longer exists"))
}
