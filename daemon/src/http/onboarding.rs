//! Onboarding over HTTP: a fresh box's first visitor types the setup code (from the card's
//! boot partition or the console), names the venue and creates the admin account, and is
//! logged in as that admin. It works once; after that the box is set up.
//!
//! `GET /api/onboarding` → `{needed, venue}`; `POST /api/onboarding {setup_code,
//! venue_name, username, password}` → 201 with a token pair.

use super::{ApiError, ApiJson, AppState};
use crate::auth::{self, TokenPair};
use crate::store::{OnboardingRefused, StoreError};
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::time::Instant;

/// The one-time code, kept as a digest so comparing it says nothing about its characters.
/// `Debug` never shows it.
#[derive(Clone)]
pub struct SetupCode([u8; 32]);

impl SetupCode {
    /// Reads the code from its file: one line, at least 8 letters or digits.
    pub fn read(path: &std::path::Path) -> anyhow::Result<SetupCode> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read the setup code {}: {e}", path.display()))?;
        let code = normalize(&text);
        if code.len() < 8 {
            anyhow::bail!(
                "the setup code in {} is too short (at least 8 letters or digits)",
                path.display()
            );
        }
        Ok(SetupCode(digest(&code)))
    }

    fn matches(&self, typed: &str) -> bool {
        digest(&normalize(typed)) == self.0
    }
}

impl std::fmt::Debug for SetupCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SetupCode(<redacted>)")
    }
}

/// People type codes as they like: `abcde-23456`, `ABCDE 23456`.
fn normalize(code: &str) -> String {
    code.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

fn digest(code: &str) -> [u8; 32] {
    Sha256::digest(code.as_bytes()).into()
}

#[derive(Debug, Serialize)]
pub struct Status {
    /// The page should show onboarding instead of the channel list.
    needed: bool,
    venue: Option<String>,
}

pub async fn status(State(state): State<AppState>) -> Result<Json<Status>, ApiError> {
    let (open, venue) = state
        .store
        .read(|store| Ok((store.onboarding_open()?, store.venue()?)))
        .await?;
    Ok(Json(Status {
        needed: open && state.setup_code.is_some(),
        venue: venue.map(|v| v.name),
    }))
}

#[derive(Debug, Deserialize)]
pub struct OnboardRequest {
    setup_code: String,
    venue_name: String,
    username: String,
    password: String,
}

pub async fn onboard(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(request): ApiJson<OnboardRequest>,
) -> Result<(StatusCode, Json<TokenPair>), ApiError> {
    let Some(code) = &state.setup_code else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "onboarding_off",
            "this box has no setup code; the operator creates the admin with \
             `commeowd user add NAME --role admin`",
        ));
    };
    let address = peer.ip();
    let attempt = state
        .login_by_address
        .reserve(&address, Instant::now())
        .map_err(ApiError::too_many_attempts)?;
    if !code.matches(&request.setup_code) {
        attempt.count();
        tracing::warn!(%address, "onboarding refused: wrong setup code");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "wrong_setup_code",
            "that is not this box's setup code (see commeow-setup.txt on the card, or the console)",
        ));
    }
    let hash = super::auth::password_hash(&state, request.password).await?;
    let (venue_name, username) = (request.venue_name, request.username);
    let session = auth::new_session_id();
    let (refresh, refresh_hash) = auth::new_refresh_token();
    let expires = (auth::now_seconds() + state.auth.refresh_ttl.as_secs()) as i64;
    let family = session.clone();
    let keep = state.sessions_per_user;
    let onboarded = state
        .store
        .write(move |store| {
            let (venue, admin) = match store.onboard(&venue_name, &username, &hash) {
                Ok(done) => done,
                Err(OnboardingRefused::Store(e)) => return Err(e),
                Err(OnboardingRefused::AlreadyDone) => return Ok(None),
            };
            store.start_session(admin.id, &family, &refresh_hash, expires, keep)?;
            store.note_seen(admin.id)?;
            // The audit log's first row: who set the box up, and from where.
            let actor = crate::console::Actor {
                name: admin.username.clone(),
                address: address.to_string(),
            };
            crate::console::record(
                store,
                &actor,
                "onboard",
                &venue.name,
                "venue named, admin made",
            )?;
            Ok(Some((venue, admin)))
        })
        .await
        .map_err(|e| match e {
            StoreError::Invalid { .. } => ApiError::bad_request(e.to_string()),
            other => other.into(),
        })?;
    let Some((venue, admin)) = onboarded else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_onboarded",
            "this box is already set up; log in instead",
        ));
    };
    attempt.clear();
    tracing::info!(venue = %venue.name, admin = %admin.username, "onboarding done");
    let pair = state
        .auth
        .pair(&admin, &session, refresh)
        .map_err(|_| ApiError::internal())?;
    Ok((StatusCode::CREATED, Json(pair)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_however_they_are_typed_and_never_show() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("setup-code");
        std::fs::write(&path, "ABCDE-23456\n").expect("write");
        let code = SetupCode::read(&path).expect("read");
        assert!(code.matches("abcde 23456"));
        assert!(code.matches("ABCDE23456"));
        assert!(!code.matches("ABCDE-23457"));
        assert!(!code.matches(""));
        assert_eq!(format!("{code:?}"), "SetupCode(<redacted>)");
        std::fs::write(&path, "short\n").expect("write");
        assert!(SetupCode::read(&path).is_err());
    }
}
