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
    /// Username: unique, unlike the nickname (tokens issued before it was added lack it).
    #[serde(default)]
    pub name: String,
    pub iat: u64,
    /// Issued at, in milliseconds: an account change (role, disabled) refuses the tokens
    /// issued up to it, and seconds would also refuse the one issued just after.
    #[serde(default)]
    pub iat_ms: i64,
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
    /// expired yet, each with the time (Unix seconds) after which no access token naming it
    /// can still be valid. The store has them too; this copy lets every request check its
    /// token without a database read (the store thread is the donation path's bottleneck).
    /// Entries past that time are pruned, so logouts do not grow it without end.
    revoked: std::sync::RwLock<std::collections::HashMap<String, u64>>,
    /// Accounts changed (role, disabled, password reset) while their access tokens may
    /// still be unexpired: user id → (the change's time in ms, Unix seconds after which no
    /// token issued before it can be valid). A token issued up to the change is stale: its
    /// holder refreshes and gets the account as it is now (or nothing, if disabled). Kept in
    /// memory like `revoked`, fed by the console at once and by the store's record of
    /// changes (the CLI's, the fleet's) within seconds.
    changed: std::sync::RwLock<std::collections::HashMap<i64, (i64, u64)>>,
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
            changed: Default::default(),
        }
    }

    /// Notes that an account changed at `at_ms` (the store's `changed_at_ms`): access
    /// tokens issued up to then are refused as stale.
    pub fn account_changed(&self, user_id: i64, at_ms: i64) {
        let now = now_seconds();
        let until = now + self.access_ttl.as_secs() + 1;
        let mut changed = self.changed.write().unwrap_or_else(|e| e.into_inner());
        changed.retain(|_, (_, until)| *until > now);
        let entry = changed.entry(user_id).or_insert((at_ms, until));
        *entry = (entry.0.max(at_ms), until);
    }

    /// Whether a token was issued before its account last changed.
    pub fn is_stale(&self, claims: &Claims) -> bool {
        let Some(user) = claims.user_id() else {
            return true;
        };
        self.changed
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&user)
            .is_some_and(|(at_ms, _)| claims.iat_ms <= *at_ms)
    }

    /// Marks a session ended, after the store has recorded it: its access tokens stop
    /// working at once.
    pub fn revoke(&self, session: &str) {
        let now = now_seconds();
        // An access token issued just before this moment lives access_ttl from now at most.
        let until = now + self.access_ttl.as_secs() + 1;
        let mut revoked = self.revoked.write().unwrap_or_else(|e| e.into_inner());
        revoked.retain(|_, until| *until > now);
        revoked.insert(session.to_string(), until);
    }

    pub fn is_revoked(&self, session: &str) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(session)
    }

    /// Ended sessions still remembered (for tests and status).
    pub fn revoked_count(&self) -> usize {
        self.revoked.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// A new random signing key (for the store to keep).
    pub fn generate_key() -> Vec<u8> {
        let mut key = vec![0u8; 32];
        rand::rng().fill_bytes(&mut key);
        key
    }

    pub fn issue_access(&self, user: &User, session: &str) -> Result<String, TokenError> {
        let iat_ms = chrono::Utc::now().timestamp_millis();
        let iat = (iat_ms / 1000).max(0) as u64;
        let claims = Claims {
            sub: user.id.to_string(),
            sid: session.to_string(),
            role: user.role,
            nick: user.nickname.clone(),
            name: user.username.clone(),
            iat,
            iat_ms,
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

/// The longest password an account may have, in characters.
pub const MAX_PASSWORD_CHARS: usize = 128;

pub fn validate_password(password: &str) -> Result<(), &'static str> {
    match password.chars().count() {
        0..=7 => Err("use at least 8 characters"),
        n if n > MAX_PASSWORD_CHARS => Err("use at most 128 characters"),
        _ => Ok(()),
    }
}

/// argon2id memory per hash, in KiB: OWASP's minimum for argon2id (19 MiB), with
/// [`ARGON2_PASSES`] passes and one lane. About 50 ms on this machine, 150-250 ms on a
/// Raspberry Pi 4. Each hash in progress holds this much memory, which is why
/// [`Passwords`] bounds how many run at once.
pub const ARGON2_MEMORY_KIB: u32 = 19 * 1024;
pub const ARGON2_PASSES: u32 = 2;

fn argon2() -> Argon2<'static> {
    let params = argon2::Params::new(ARGON2_MEMORY_KIB, ARGON2_PASSES, 1, None).unwrap_or_default();
    Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

/// Hashes a password (argon2id, [`ARGON2_MEMORY_KIB`]). Blocking and memory-hungry: call it
/// through [`Passwords`] (or from the operator's CLI, one at a time).
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(argon2()
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
    // The parameters come from the stored hash, so hashes made with other ones still verify.
    argon2()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
        && real
}

/// The box is busy hashing passwords: try again in a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the box is busy checking passwords; try again in {} s", .0.as_secs().max(1))]
pub struct Busy(pub Duration);

type Job = Box<dyn FnOnce() + Send>;

/// Password hashing with a memory bound: a fixed set of threads, each running one argon2
/// at a time, so at most `threads` × [`ARGON2_MEMORY_KIB`] is ever in use for it, however
/// many logins arrive. A caller waits at most `wait` for a thread, then gets [`Busy`]
/// (HTTP 503 with `Retry-After`) instead of joining an unbounded queue.
///
/// Dedicated threads rather than the runtime's blocking pool: the allocator keeps a freed
/// 19 MiB block per thread that used it, so hashing on whichever of the pool's threads is
/// free would leave one such block on each of them.
pub struct Passwords {
    permits: std::sync::Arc<tokio::sync::Semaphore>,
    wait: Duration,
    jobs: std::sync::mpsc::Sender<Job>,
}

impl Passwords {
    pub fn new(threads: usize, wait: Duration) -> std::io::Result<Passwords> {
        let threads = threads.max(1);
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = std::sync::Arc::new(std::sync::Mutex::new(queue));
        for i in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("password-{i}"))
                .spawn(move || loop {
                    // The lock is held only to take the next job; the daemon dropping its
                    // sender ends the thread.
                    let job = match queue.lock() {
                        Ok(queue) => queue.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                })?;
        }
        Ok(Passwords {
            permits: std::sync::Arc::new(tokio::sync::Semaphore::new(threads)),
            wait,
            jobs,
        })
    }

    /// Runs `work` on a hashing thread, waiting at most `self.wait` for one.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let busy = Busy(self.wait.max(Duration::from_secs(1)));
        let permit = tokio::time::timeout(self.wait, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| busy)?
            .map_err(|_| busy)?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = reply.send(work());
            // The thread is free again only once the work is done, whoever waits for it.
            drop(permit);
        });
        self.jobs.send(job).map_err(|_| busy)?;
        answer.await.map_err(|_| busy)
    }

    /// Hashes a new password.
    pub async fn hash(&self, password: String) -> Result<Option<String>, Busy> {
        self.run(move || hash_password(&password).ok()).await
    }

    /// Checks a password against the stored hash (`None`: no such account, a decoy hash).
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<bool, Busy> {
        self.run(move || verify_password(&password, stored.as_deref()))
            .await
    }
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
    fn ended_sessions_are_forgotten_once_their_tokens_have_expired() {
        let authority = Authority::new(
            b"0123456789abcdef0123456789abcdef",
            Duration::ZERO,
            Duration::from_secs(600),
        );
        authority.revoke("a");
        assert!(authority.is_revoked("a"));
        std::thread::sleep(Duration::from_millis(2100));
        authority.revoke("b");
        assert!(!authority.is_revoked("a"), "a's tokens have all expired");
        assert!(authority.is_revoked("b"));
        assert_eq!(authority.revoked_count(), 1);
    }

    #[test]
    fn a_changed_account_refuses_tokens_issued_up_to_the_change_only() {
        let authority = Authority::new(
            b"0123456789abcdef0123456789abcdef",
            Duration::from_secs(60),
            Duration::from_secs(600),
        );
        let before = authority.issue_access(&user(), "fam").expect("issue");
        let before = authority.verify_access(&before).expect("verify");
        assert!(!authority.is_stale(&before));
        authority.account_changed(7, before.iat_ms);
        assert!(authority.is_stale(&before));
        std::thread::sleep(Duration::from_millis(2));
        let after = authority.issue_access(&user(), "fam").expect("issue");
        let after = authority.verify_access(&after).expect("verify");
        assert!(!authority.is_stale(&after), "issued after the change");
        // An older change learned later does not move the mark back.
        authority.account_changed(7, 0);
        assert!(authority.is_stale(&before) && !authority.is_stale(&after));
    }

    #[test]
    fn password_hashing_is_bounded_and_says_busy() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let passwords =
                std::sync::Arc::new(Passwords::new(1, Duration::from_millis(20)).expect("threads"));
            let hash = passwords
                .hash("correct horse".into())
                .await
                .expect("not busy")
                .expect("hash");
            assert!(passwords
                .verify("correct horse".into(), Some(hash.clone()))
                .await
                .expect("not busy"));
            // One thread: while it works, a second caller waits 20 ms, then hears busy.
            let (release, held) = std::sync::mpsc::channel::<()>();
            let (started, running) = tokio::sync::oneshot::channel::<()>();
            let first = tokio::spawn({
                let passwords = passwords.clone();
                async move {
                    passwords
                        .run(move || {
                            let _ = started.send(());
                            held.recv().is_ok()
                        })
                        .await
                }
            });
            running.await.expect("the thread took the first job");
            let second = passwords.hash("another one".into()).await;
            assert_eq!(second, Err(Busy(Duration::from_secs(1))));
            release.send(()).expect("release");
            assert_eq!(first.await.expect("task"), Ok(true));
            assert!(
                passwords.hash("and again".into()).await.is_ok(),
                "free again"
            );
        });
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
