//! Identity: argon2id passwords, short-lived signed access tokens, rotating refresh tokens.
//!
//! An access token is a JWT (HS256) naming the user, their role and nickname, and the
//! session (refresh-token family) it came from; it lives minutes. Because it names its
//! session, logging out or a stolen refresh token being detected revokes it at once, not
//! when it expires. Refresh tokens are 256 random bits, stored only as SHA-256.

use crate::store::{Role, User};
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::SaltString;
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What an access token says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// User id (a string, as JWT's `sub` is).
    pub sub: String,
    /// Session: the refresh-token family this token was issued from.
    pub sid: String,
    pub role: Role,
    pub nick: String,
    pub iat: u64,
    pub exp: u64,
    /// Random: no two tokens are alike, even issued in the same second.
    pub jti: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid")]
    Invalid,
}

/// A fresh pair, as the API returns it.
#[derive(Debug, Clone, Serialize)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    /// Seconds the access token lives.
    pub expires_in: u64,
    pub token_type: &'static str,
}

/// Issues and checks tokens with the box's signing key.
pub struct Authority {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    /// Ended sessions (logout, a stolen refresh token) whose access tokens may not have
    /// expired yet. The store has them too; this copy lets every request check its token
    /// without a database read (the store thread is the donation path's bottleneck).
    revoked: std::sync::RwLock<std::collections::HashSet<String>>,
}

pub fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Claims {
    pub fn user_id(&self) -> Option<i64> {
        self.sub.parse().ok()
    }
}

impl Authority {
    pub fn new(signing_key: &[u8], access_ttl: Duration, refresh_ttl: Duration) -> Authority {
        let mut validation = Validation::new(Algorithm::HS256);
        // The box is the only issuer and checker, on one clock: no leeway needed.
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Authority {
            encoding: EncodingKey::from_secret(signing_key),
            decoding: DecodingKey::from_secret(signing_key),
            validation,
            access_ttl,
            refresh_ttl,
            revoked: Default::default(),
        }
    }

    /// Marks a session ended, after the store has recorded it: its access tokens stop
    /// working at once.
    pub fn revoke(&self, session: &str) {
        self.revoked
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(session.to_string());
    }

    pub fn is_revoked(&self, session: &str) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(session)
    }

    /// A new random signing key (for the store to keep).
    pub fn generate_key() -> Vec<u8> {
        let mut key = vec![0u8; 32];
        rand::rng().fill_bytes(&mut key);
        key
    }

    pub fn issue_access(&self, user: &User, session: &str) -> Result<String, TokenError> {
        let iat = now_seconds();
        let claims = Claims {
            sub: user.id.to_string(),
            sid: session.to_string(),
            role: user.role,
            nick: user.nickname.clone(),
            iat,
            exp: iat + self.access_ttl.as_secs(),
            jti: new_session_id(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|_| TokenError::Invalid)
    }

    pub fn verify_access(&self, token: &str) -> Result<Claims, TokenError> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })
    }

    /// The API's answer for a session: a new access token and the given refresh token.
    pub fn pair(
        &self,
        user: &User,
        session: &str,
        refresh_token: String,
    ) -> Result<TokenPair, TokenError> {
        Ok(TokenPair {
            access_token: self.issue_access(user, session)?,
            refresh_token,
            expires_in: self.access_ttl.as_secs(),
            token_type: "Bearer",
        })
    }
}

/// A new refresh token and the hash the store keeps of it.
pub fn new_refresh_token() -> (String, Vec<u8>) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!("rt_{}", hex::encode(bytes));
    let hash = refresh_token_hash(&token);
    (token, hash)
}

pub fn refresh_token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A new session (refresh-token family) id.
pub fn new_session_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

pub fn validate_password(password: &str) -> Result<(), &'static str> {
    match password.chars().count() {
        0..=7 => Err("use at least 8 characters"),
        129.. => Err("use at most 128 characters"),
        _ => Ok(()),
    }
}

/// argon2id with the crate's defaults (19 MiB, 2 passes): ~50 ms here. Blocking: call it
/// from a blocking thread.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// Checks a password against a stored hash; `None` (no such account) still spends the same
/// time on a decoy hash, so response times do not reveal which usernames exist. Blocking.
pub fn verify_password(password: &str, stored: Option<&str>) -> bool {
    static DECOY: OnceLock<String> = OnceLock::new();
    let decoy =
        DECOY.get_or_init(|| hash_password("decoy password, never matches").unwrap_or_default());
    let (hash, real) = match stored {
        Some(hash) => (hash, true),
        None => (decoy.as_str(), false),
    };
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
        && real
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        User {
            id: 7,
            username: "alice".into(),
            nickname: "앨리스".into(),
            role: Role::Streamer,
        }
    }

    #[test]
    fn tokens_verify_and_carry_identity() {
        let authority = Authority::new(
            b"0123456789abcdef0123456789abcdef",
            Duration::from_secs(60),
            Duration::from_secs(600),
        );
        let token = authority.issue_access(&user(), "fam").expect("issue");
        let claims = authority.verify_access(&token).expect("verify");
        assert_eq!(
            (
                claims.user_id(),
                claims.sid.as_str(),
                claims.role,
                claims.nick.as_str()
            ),
            (Some(7), "fam", Role::Streamer, "앨리스")
        );
    }

    #[test]
    fn tampered_foreign_and_expired_tokens_are_refused() {
        let authority = Authority::new(
            b"0123456789abcdef0123456789abcdef",
            Duration::from_secs(60),
            Duration::from_secs(600),
        );
        let token = authority.issue_access(&user(), "fam").expect("issue");
        // Change the role in the payload, keep the signature.
        let mut parts: Vec<String> = token.split('.').map(String::from).collect();
        parts[1] = parts[1].replacen('e', "f", 1);
        assert_eq!(
            authority.verify_access(&parts.join(".")).err(),
            Some(TokenError::Invalid)
        );
        let other = Authority::new(
            b"another key, another box........",
            Duration::from_secs(60),
            Duration::from_secs(600),
        );
        assert_eq!(other.verify_access(&token).err(), Some(TokenError::Invalid));
        let expired = Authority::new(
            b"0123456789abcdef0123456789abcdef",
            Duration::ZERO,
            Duration::from_secs(600),
        );
        let token = expired.issue_access(&user(), "fam").expect("issue");
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(
            expired.verify_access(&token).err(),
            Some(TokenError::Expired)
        );
        assert_eq!(
            authority.verify_access("not.a.jwt").err(),
            Some(TokenError::Invalid)
        );
    }

    #[test]
    fn passwords_hash_and_verify() {
        let hash = hash_password("correct horse").expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", Some(&hash)));
        assert!(!verify_password("wrong horse", Some(&hash)));
        assert!(!verify_password("correct horse", None));
        assert!(validate_password("short").is_err());
        assert!(validate_password("long enough").is_ok());
    }

    #[test]
    fn refresh_tokens_are_random_and_hashed() {
        let (a, hash) = new_refresh_token();
        let (b, _) = new_refresh_token();
        assert_ne!(a, b);
        assert_eq!(refresh_token_hash(&a), hash);
        assert_ne!(hash, a.as_bytes());
    }
}
