//! Accounts over HTTP: sign up, log in, refresh, log out, who am I; and [`CurrentUser`], the
//! extractor every authenticated endpoint uses. Identity comes from the token only.

use super::{ApiError, ApiJson, AppState};
use crate::auth::{self, TokenError, TokenPair};
use crate::store::{normalize_username, validate_nickname, RefreshRefused, Role, StoreError, User};
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
    if state.auth.is_stale(&claims) {
        return Err(unauthorized(
            "token_stale",
            "your account changed (its role, or it was disabled); refresh the token",
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

/// A new account's password, as the API refuses one.
fn check_password(password: &str) -> Result<(), ApiError> {
    auth::validate_password(password)
        .map_err(|reason| ApiError::bad_request(format!("invalid password: {reason}")))
}

/// Checks a new account's password and hashes it (argon2id, slow and memory-hungry by
/// design: on the bounded hashing threads, never on the runtime or the store thread).
pub async fn password_hash(state: &AppState, password: String) -> Result<String, ApiError> {
    check_password(&password)?;
    state
        .passwords
        .hash(password)
        .await
        .map_err(ApiError::busy)?
        .ok_or_else(ApiError::internal)
}

#[derive(Debug, Deserialize)]
pub struct SignupRequest {
    username: String,
    password: String,
    nickname: String,
}

pub async fn signup(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(request): ApiJson<SignupRequest>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    // What costs nothing is checked before what costs a hash.
    let username = normalize_username(&request.username).map_err(invalid)?;
    validate_nickname(&request.nickname).map_err(invalid)?;
    check_password(&request.password)?;
    // A taken name is answered from a read; the insert below still decides a race.
    let name = username.clone();
    if state
        .store
        .read(move |store| store.user_by_name(&name))
        .await?
        .is_some()
    {
        return Err(invalid(StoreError::UsernameTaken(username)));
    }
    // Every account made from an address counts against it: a phone makes one or two, a
    // script making hundreds waits longer for each.
    let attempt = state
        .signup_by_address
        .reserve(&peer.ip(), Instant::now())
        .map_err(ApiError::too_many_attempts)?;
    let hash = password_hash(&state, request.password).await?;
    let created = state
        .store
        .write(move |store| {
            store.add_user(&request.username, &request.nickname, &hash, Role::Viewer)
        })
        .await;
    attempt.count();
    let user = created.map_err(invalid)?;
    tracing::info!(user = %user.username, "account created");
    Ok((StatusCode::CREATED, Json(user)))
}

#[derive(Debug, Deserialize)]
pub struct LoginRequest {
    username: String,
    password: String,
}

fn wrong_credentials() -> ApiError {
    unauthorized("invalid_credentials", "wrong username or password")
}

/// Logs in. The throttle holds an attempt for the address and for this account at this
/// address from before the store read until the verdict, so a burst of guesses gets one
/// evaluation and the rest `429`. Failures slow the address (any account) and this account
/// at this address; they never slow the account's owner at another address, so nobody can
/// lock someone else out.
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(request): ApiJson<LoginRequest>,
) -> Result<Json<TokenPair>, ApiError> {
    // A name no account can have, or a password no account can have, is wrong without a
    // store read or a hash, and never becomes a throttle key.
    let (Ok(account), true) = (
        normalize_username(&request.username),
        request.password.chars().count() <= auth::MAX_PASSWORD_CHARS,
    ) else {
        return Err(wrong_credentials());
    };
    let address = peer.ip();
    let now = Instant::now();
    let pair = (account.clone(), address);
    // Retry-After names the longer of the two waits, so a client that honours it is not
    // refused again by the other key.
    let by_address = state
        .login_by_address
        .reserve(&address, now)
        .map_err(|wait| {
            let pair_wait = state.login_by_account.retry_after(&pair, now);
            ApiError::too_many_attempts(pair_wait.map_or(wait, |w| w.max(wait)))
        })?;
    let by_account = state
        .login_by_account
        .reserve(&pair, now)
        .map_err(ApiError::too_many_attempts)?;
    let name = account.clone();
    let found = state
        .store
        .read(move |store| store.credentials(&name))
        .await?;
    let stored = found.as_ref().map(|(_, hash)| hash.clone());
    let matches = state
        .passwords
        .verify(request.password, stored)
        .await
        .map_err(ApiError::busy)?;
    let user = match found {
        Some((user, _)) if matches => user,
        _ => {
            let failures = by_account.count();
            by_address.count();
            tracing::warn!(%address, failures, "login refused: wrong username or password");
            return Err(wrong_credentials());
        }
    };
    by_account.clear();
    by_address.clear();
    let id = user.id;
    if state
        .store
        .read(move |store| store.account_disabled(id))
        .await?
        == Some(true)
    {
        tracing::warn!(user = %user.username, "login refused: the account is disabled");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "account_disabled",
            "this account has been disabled; ask the venue",
        ));
    }
    let session = auth::new_session_id();
    let (refresh, hash) = auth::new_refresh_token();
    let expires = (auth::now_seconds() + state.auth.refresh_ttl.as_secs()) as i64;
    let (user_id, family) = (user.id, session.clone());
    let keep = state.sessions_per_user;
    let ended = state
        .store
        .write(move |store| {
            store.note_seen(user_id)?;
            store.start_session(user_id, &family, &hash, expires, keep)
        })
        .await?;
    for family in &ended {
        state.auth.revoke(family);
    }
    tracing::info!(user = %user.username, ended = ended.len(), "logged in");
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
    ApiJson(request): ApiJson<RefreshRequest>,
) -> Result<Json<TokenPair>, ApiError> {
    let old = auth::refresh_token_hash(&request.refresh_token);
    let (refresh, new) = auth::new_refresh_token();
    let now = auth::now_seconds() as i64;
    let expires = now + state.auth.refresh_ttl.as_secs() as i64;
    let rotated = state
        .store
        .write(move |store| {
            let rotated = store.rotate_refresh_token(&old, &new, now, expires)?;
            if let Ok(session) = &rotated {
                store.note_seen(session.user.id)?;
            }
            Ok(rotated)
        })
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
        .write(move |store| store.revoke_session(&session))
        .await?;
    state.auth.revoke(&claims.sid);
    Ok(StatusCode::NO_CONTENT)
}

pub async fn me(
    State(state): State<AppState>,
    CurrentUser(claims): CurrentUser,
) -> Result<Json<User>, ApiError> {
    let id = claims.user_id().ok_or_else(invalid_token)?;
    let user = state.store.read(move |store| store.user_by_id(id)).await?;
    user.map(Json)
        .ok_or_else(|| unauthorized("invalid_token", "this account no longer exists"))
}

#[derive(Debug, Deserialize)]
pub struct ResetRequest {
    username: String,
    code: String,
    password: String,
}

/// `POST /api/auth/reset {username, code, password}`: a one-time code an admin made in
/// the console sets a new password and ends the account's other sessions. Failures count
/// against the address like wrong passwords (a code is a password for a day).
pub async fn reset_password(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(request): ApiJson<ResetRequest>,
) -> Result<StatusCode, ApiError> {
    check_password(&request.password)?;
    let attempt = state
        .login_by_address
        .reserve(&peer.ip(), Instant::now())
        .map_err(ApiError::too_many_attempts)?;
    let hash = password_hash(&state, request.password).await?;
    let code = crate::console::reset_code_hash(&request.code);
    let now = auth::now_seconds() as i64;
    let name = request.username.clone();
    let redeemed = state
        .store
        .write(move |store| store.redeem_reset_code(&name, &code, &hash, now))
        .await?;
    let Some((user, ended)) = redeemed else {
        attempt.count();
        return Err(unauthorized(
            "invalid_reset_code",
            "that code does not open this account (wrong, used or expired): ask the venue for a new one",
        ));
    };
    attempt.clear();
    for family in &ended {
        state.auth.revoke(family);
    }
    let id = user.id;
    if let Some(at) = state.store.read(move |s| s.account_changed_at(id)).await? {
        state.auth.account_changed(id, at);
    }
    tracing::info!(user = %user.username, "password reset with a one-time code");
    Ok(StatusCode::NO_CONTENT)
}
