//! Accounts and their sessions (refresh-token families), and the secrets the daemon keeps.
//!
//! Passwords arrive here already hashed (argon2id is slow by design, so hashing happens on
//! a blocking pool, not on the store thread). Refresh tokens arrive hashed too: the database
//! never holds anything a thief could present.

use super::{Store, StoreError};
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Streamer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Streamer => "streamer",
            Role::Admin => "admin",
        }
    }

    pub const ALL: [Role; 3] = [Role::Viewer, Role::Streamer, Role::Admin];

    /// The one rule for who speaks for something a user owns (a channel, an order): its
    /// owner, or an admin. With no owner (an operator's channel), only admins. HTTP, chat
    /// moderation and the chat's protections all ask this.
    pub fn owner_or_admin(self, actor: Option<i64>, owner: Option<i64>) -> bool {
        self == Role::Admin || (actor.is_some() && actor == owner)
    }

    /// A role by its name, as the CLI and the API spell it.
    pub fn from_name(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }

    fn parse(text: &str) -> Role {
        match text {
            "admin" => Role::Admin,
            "streamer" => Role::Streamer,
            // The CHECK constraint allows nothing else; the least privilege otherwise.
            _ => Role::Viewer,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub nickname: String,
    pub role: Role,
}

/// A refresh-token family: one login, followed through its rotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub family: String,
    pub user: User,
}

/// Usernames are case-insensitive: stored and compared in lower case.
pub fn normalize_username(username: &str) -> Result<String, StoreError> {
    let name = username.trim().to_lowercase();
    let ok = (3..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
    if ok {
        Ok(name)
    } else {
        Err(StoreError::Invalid {
            field: "username",
            reason: "use 3-32 characters a-z, 0-9, '_', '.' and '-'",
        })
    }
}

pub fn validate_nickname(nickname: &str) -> Result<String, StoreError> {
    let nick = nickname.trim();
    let count = nick.chars().count();
    if count == 0 || count > 32 {
        return Err(StoreError::Invalid {
            field: "nickname",
            reason: "use 1-32 characters",
        });
    }
    crate::text::check_name(nick).map_err(|unfit| StoreError::Invalid {
        field: "nickname",
        reason: unfit.reason(),
    })?;
    Ok(nick.to_string())
}

pub(super) fn user_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        username: row.get(1)?,
        nickname: row.get(2)?,
        role: Role::parse(&row.get::<_, String>(3)?),
    })
}

/// Spent refresh tokens remembered per session, newest first. Presenting one of them
/// revokes the session (it was stolen); one older than that is merely unknown. With
/// 15-minute access tokens this covers the last 16 hours of a session's rotations.
const SPENT_KEPT: i64 = 64;

/// Seconds after a rotation during which the old token presented again is taken for the
/// same client racing itself, not for a thief (see `rotate_refresh_token`).
pub const REUSE_GRACE_SECONDS: i64 = 10;

/// Why a refresh token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshRefused {
    Unknown,
    Expired,
    Revoked,
    /// Presented a second time: the family (named here) has now been revoked.
    Reused {
        family: String,
    },
}

impl Store {
    /// Creates an account; `password_hash` is the argon2id PHC string.
    pub fn add_user(
        &mut self,
        username: &str,
        nickname: &str,
        password_hash: &str,
        role: Role,
    ) -> Result<User, StoreError> {
        let username = normalize_username(username)?;
        let nickname = validate_nickname(nickname)?;
        let created_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let inserted = self.conn().execute(
            "INSERT INTO users (username, nickname, password_hash, role, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (username) DO NOTHING",
            params![username, nickname, password_hash, role.as_str(), created_at],
        )?;
        if inserted == 0 {
            return Err(StoreError::UsernameTaken(username));
        }
        Ok(User {
            id: self.conn().last_insert_rowid(),
            username,
            nickname,
            role,
        })
    }

    pub fn set_role(&mut self, username: &str, role: Role) -> Result<User, StoreError> {
        let username = normalize_username(username)?;
        let updated = self.conn().execute(
            "UPDATE users SET role = ?1 WHERE username = ?2",
            params![role.as_str(), username],
        )?;
        if updated == 0 {
            return Err(StoreError::NoSuchUser(username));
        }
        self.user_by_name(&username)?
            .ok_or(StoreError::NoSuchUser(username))
    }

    /// The account and its password hash, for a login.
    pub fn credentials(&self, username: &str) -> Result<Option<(User, String)>, StoreError> {
        let Ok(username) = normalize_username(username) else {
            return Ok(None);
        };
        let found = self
            .conn()
            .prepare_cached(
                "SELECT id, username, nickname, role, password_hash FROM users WHERE username = ?1",
            )?
            .query_row(params![username], |row| {
                Ok((user_from_row(row)?, row.get(4)?))
            })
            .optional()?;
        Ok(found)
    }

    pub fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError> {
        Ok(self.credentials(username)?.map(|(user, _)| user))
    }

    pub fn user_by_id(&self, id: i64) -> Result<Option<User>, StoreError> {
        let user = self
            .conn()
            .prepare_cached("SELECT id, username, nickname, role FROM users WHERE id = ?1")?
            .query_row(params![id], user_from_row)
            .optional()?;
        Ok(user)
    }

    /// Starts a session (a new family) with its first refresh token. The account keeps at
    /// most `keep` live sessions: the ones used longest ago beyond that are ended, and
    /// returned so their access tokens can be refused at once.
    pub fn start_session(
        &mut self,
        user_id: i64,
        family: &str,
        token_hash: &[u8],
        expires_at: i64,
        keep: usize,
    ) -> Result<Vec<String>, StoreError> {
        // A savepoint: onboarding starts a session inside its own write.
        let tx = self.conn_mut().savepoint()?;
        tx.execute(
            "INSERT INTO refresh_tokens (token_hash, family, user_id, expires_at) VALUES (?1, ?2, ?3, ?4)",
            params![token_hash, family, user_id, expires_at],
        )?;
        // A live session has exactly one unused, unrevoked, unexpired token: its newest.
        let now = chrono::Utc::now().timestamp();
        let ended: Vec<String> = tx
            .prepare(
                "SELECT family FROM refresh_tokens
                 WHERE user_id = ?1 AND used_at IS NULL AND revoked = 0 AND expires_at > ?2
                 ORDER BY id DESC LIMIT -1 OFFSET ?3",
            )?
            .query_map(params![user_id, now, keep as i64], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        for family in &ended {
            tx.execute(
                "UPDATE refresh_tokens SET revoked = 1 WHERE family = ?1",
                params![family],
            )?;
        }
        tx.commit()?;
        Ok(ended)
    }

    /// Deletes refresh-token rows nobody can present any more: expired longer ago than an
    /// access token lives (so a revoked family no longer needs remembering either).
    /// Returns how many went.
    pub fn forget_expired_sessions(
        &mut self,
        access_ttl_seconds: i64,
    ) -> Result<usize, StoreError> {
        let horizon = chrono::Utc::now().timestamp() - access_ttl_seconds;
        Ok(self.conn().execute(
            "DELETE FROM refresh_tokens WHERE expires_at <= ?1",
            params![horizon],
        )?)
    }

    /// Trades a refresh token for a new one in the same family, in one transaction. A token
    /// presented twice revokes its whole family: one of the two presenters stole it.
    pub fn rotate_refresh_token(
        &mut self,
        old_hash: &[u8],
        new_hash: &[u8],
        now: i64,
        expires_at: i64,
    ) -> Result<Result<Session, RefreshRefused>, StoreError> {
        // A savepoint: inside the store thread's group transaction, or a transaction of its
        // own when called alone.
        let tx = self.conn_mut().savepoint()?;
        let row = tx
            .query_row(
                "SELECT id, family, user_id, expires_at, used_at, revoked FROM refresh_tokens WHERE token_hash = ?1",
                params![old_hash],
                |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?,
                        row.get::<_, i64>(3)?,
                        row.get::<_, Option<i64>>(4)?,
                        row.get::<_, bool>(5)?,
                    ))
                },
            )
            .optional()?;
        let Some((id, family, user_id, expires, used_at, revoked)) = row else {
            return Ok(Err(RefreshRefused::Unknown));
        };
        // Two requests of one client racing with the same token (a page's parallel calls,
        // two tabs): the second arrives moments after the first rotated it, and nothing
        // newer in the family has been used yet. That is not theft; it gets a token of its
        // own in the same family, as identity providers' reuse intervals allow.
        let racing = |used_at: i64| -> Result<bool, StoreError> {
            if now - used_at > REUSE_GRACE_SECONDS {
                return Ok(false);
            }
            let newer_used: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM refresh_tokens WHERE family = ?1 AND id > ?2 AND used_at IS NOT NULL)",
                params![family, id],
                |row| row.get(0),
            )?;
            Ok(!newer_used)
        };
        let refused = if revoked {
            Some(RefreshRefused::Revoked)
        } else if expires <= now {
            Some(RefreshRefused::Expired)
        } else {
            match used_at {
                None => None,
                Some(used_at) if racing(used_at)? => None,
                Some(_) => {
                    tx.execute(
                        "UPDATE refresh_tokens SET revoked = 1 WHERE family = ?1",
                        params![family],
                    )?;
                    Some(RefreshRefused::Reused {
                        family: family.clone(),
                    })
                }
            }
        };
        if let Some(refused) = refused {
            tx.commit()?;
            return Ok(Err(refused));
        }
        tx.execute(
            "UPDATE refresh_tokens SET used_at = ?1 WHERE id = ?2 AND used_at IS NULL",
            params![now, id],
        )?;
        tx.execute(
            "INSERT INTO refresh_tokens (token_hash, family, user_id, expires_at) VALUES (?1, ?2, ?3, ?4)",
            params![new_hash, family, user_id, expires_at],
        )?;
        // Spent tokens are kept to catch a stolen one presented later, but only the family's
        // newest SPENT_KEPT: a client refreshing in a loop cannot grow the table.
        tx.execute(
            "DELETE FROM refresh_tokens WHERE family = ?1 AND used_at IS NOT NULL AND id NOT IN
             (SELECT id FROM refresh_tokens WHERE family = ?1 AND used_at IS NOT NULL
              ORDER BY id DESC LIMIT ?2)",
            params![family, SPENT_KEPT],
        )?;
        let user = tx
            .query_row(
                "SELECT id, username, nickname, role FROM users WHERE id = ?1",
                params![user_id],
                user_from_row,
            )
            .optional()?;
        tx.commit()?;
        Ok(user
            .map(|user| Session { family, user })
            .ok_or(RefreshRefused::Unknown))
    }

    /// Ends a session: every refresh token of the family, and every access token naming it.
    pub fn revoke_session(&mut self, family: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE refresh_tokens SET revoked = 1 WHERE family = ?1",
            params![family],
        )?;
        Ok(())
    }

    /// Revoked sessions whose access tokens may still be unexpired (issued up to
    /// `access_ttl_seconds` ago): the ones the token checker must know about at startup.
    pub fn revoked_sessions(
        &self,
        now: i64,
        access_ttl_seconds: i64,
    ) -> Result<Vec<String>, StoreError> {
        // A family's last token was issued at most refresh_ttl before its expiry; a family
        // whose every token expired over an access-token lifetime ago has no live token.
        let horizon = now - access_ttl_seconds;
        let families = self
            .conn()
            .prepare(
                "SELECT DISTINCT family FROM refresh_tokens WHERE revoked = 1 AND expires_at > ?1",
            )?
            .query_map(params![horizon], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(families)
    }

    pub fn session_revoked(&self, family: &str) -> Result<bool, StoreError> {
        let revoked = self
            .conn()
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM refresh_tokens WHERE family = ?1 AND revoked = 1)",
            )?
            .query_row(params![family], |row| row.get(0))?;
        Ok(revoked)
    }

    /// A named secret, created with `make` the first time it is asked for.
    pub fn secret(
        &mut self,
        name: &str,
        make: impl FnOnce() -> Vec<u8>,
    ) -> Result<Vec<u8>, StoreError> {
        let tx = self.conn_mut().savepoint()?;
        let existing: Option<Vec<u8>> = tx
            .query_row(
                "SELECT value FROM secrets WHERE name = ?1",
                params![name],
                |row| row.get(0),
            )
            .optional()?;
        let value = match existing {
            Some(value) => value,
            None => {
                let value = make();
                tx.execute(
                    "INSERT INTO secrets (name, value) VALUES (?1, ?2)",
                    params![name, value],
                )?;
                value
            }
        };
        tx.commit()?;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_unique_case_insensitively() {
        let (_dir, mut store) = Store::temporary();
        let alice = store
            .add_user("Alice", "앨리스", "hash", Role::Viewer)
            .expect("add");
        assert_eq!(alice.username, "alice");
        assert!(matches!(
            store.add_user("ALICE", "x", "hash", Role::Viewer),
            Err(StoreError::UsernameTaken(_))
        ));
        assert_eq!(
            store.user_by_name("aLiCe").expect("lookup").map(|u| u.id),
            Some(alice.id)
        );
        for bad in ["ab", "has space", "semi;colon", &"x".repeat(33)] {
            assert!(
                store.add_user(bad, "x", "hash", Role::Viewer).is_err(),
                "{bad:?}"
            );
        }
        assert!(
            store.add_user("bob", "   ", "hash", Role::Viewer).is_err(),
            "blank nickname"
        );
    }

    #[test]
    fn rotation_chains_and_a_reused_token_revokes_the_family() {
        let (_dir, mut store) = Store::temporary();
        let user = store
            .add_user("alice", "A", "hash", Role::Viewer)
            .expect("add");
        store
            .start_session(user.id, "fam", b"t1", 1_000, 10)
            .expect("start");
        let first = store
            .rotate_refresh_token(b"t1", b"t2", 10, 1_000)
            .expect("db");
        assert_eq!(first.map(|s| s.family), Ok("fam".to_string()));
        let second = store
            .rotate_refresh_token(b"t2", b"t3", 11, 1_000)
            .expect("db");
        assert!(second.is_ok());
        assert!(!store.session_revoked("fam").expect("db"));
        // t1 again: stolen. The family dies, including the newest token t3.
        assert_eq!(
            store
                .rotate_refresh_token(b"t1", b"t9", 12, 1_000)
                .expect("db"),
            Err(RefreshRefused::Reused {
                family: "fam".into()
            })
        );
        assert!(store.session_revoked("fam").expect("db"));
        assert_eq!(
            store
                .rotate_refresh_token(b"t3", b"t4", 13, 1_000)
                .expect("db"),
            Err(RefreshRefused::Revoked)
        );
        assert_eq!(
            store
                .rotate_refresh_token(b"nope", b"t5", 13, 1_000)
                .expect("db"),
            Err(RefreshRefused::Unknown)
        );
    }

    #[test]
    fn a_token_presented_again_right_after_its_rotation_is_a_race_not_a_theft() {
        let (_dir, mut store) = Store::temporary();
        let user = store
            .add_user("alice", "A", "hash", Role::Viewer)
            .expect("add");
        store
            .start_session(user.id, "fam", b"t1", 1_000, 10)
            .expect("start");
        assert!(store
            .rotate_refresh_token(b"t1", b"t2", 10, 1_000)
            .expect("db")
            .is_ok());
        // The same client's second request, moments later, before t2 was ever used.
        assert!(store
            .rotate_refresh_token(b"t1", b"t2b", 12, 1_000)
            .expect("db")
            .is_ok());
        assert!(!store.session_revoked("fam").expect("db"));
        // Past the grace, it is a copy.
        assert!(matches!(
            store
                .rotate_refresh_token(b"t1", b"t9", 10 + REUSE_GRACE_SECONDS + 1, 1_000)
                .expect("db"),
            Err(RefreshRefused::Reused { .. })
        ));
    }

    #[test]
    fn expired_sessions_are_deleted() {
        let (_dir, mut store) = Store::temporary();
        let user = store
            .add_user("alice", "A", "hash", Role::Viewer)
            .expect("add");
        let now = chrono::Utc::now().timestamp();
        store
            .start_session(user.id, "old", b"t1", now - 1_000, 10)
            .expect("start");
        store
            .start_session(user.id, "new", b"t2", now + 1_000, 10)
            .expect("start");
        // Expired 1,000 s ago: gone once no access token (900 s) can name it.
        assert_eq!(store.forget_expired_sessions(900).expect("db"), 1);
        assert_eq!(store.forget_expired_sessions(900).expect("db"), 0);
        assert!(store
            .rotate_refresh_token(b"t2", b"t3", now, now + 1_000)
            .expect("db")
            .is_ok());
    }

    #[test]
    fn expired_refresh_tokens_are_refused() {
        let (_dir, mut store) = Store::temporary();
        let user = store
            .add_user("alice", "A", "hash", Role::Viewer)
            .expect("add");
        store
            .start_session(user.id, "fam", b"t1", 100, 10)
            .expect("start");
        assert_eq!(
            store
                .rotate_refresh_token(b"t1", b"t2", 100, 200)
                .expect("db"),
            Err(RefreshRefused::Expired)
        );
    }

    #[test]
    fn a_secret_is_made_once_and_kept() {
        let (dir, mut store) = Store::temporary();
        let first = store.secret("key", || vec![1, 2, 3]).expect("make");
        drop(store);
        let mut store = Store::open_in(dir.path()).expect("reopen");
        assert_eq!(store.secret("key", || vec![9]).expect("read"), first);
    }
}
