//! What the venue's console reads and changes that no other part of the box needs: the
//! account list with balances, disabling and one-time reset codes, the audit log, the
//! orders list and the accounting export. The rules about who may do what live above, in
//! `console`; these are the rows.

use super::outbox::Event;
use super::users::{normalize_username, user_from_row};
use super::{Role, Store, StoreError, User};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

/// An account as the console lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Account {
    pub id: i64,
    pub username: String,
    pub nickname: String,
    pub role: Role,
    pub created_at: String,
    pub last_seen_at: Option<String>,
    pub disabled: bool,
    /// Spendable points.
    pub balance: i64,
    /// Points received as a streamer.
    pub earnings: i64,
}

/// One row of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: String,
    pub actor: String,
    pub address: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

/// One money movement for the venue's accounting: a donation, a top-up or a grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MoneyRow {
    pub at: String,
    /// `donation`, `topup` or `grant`.
    pub kind: String,
    pub transaction_id: i64,
    /// Who paid or gave: the donor, the top-up's buyer, or `venue` for a grant.
    pub from: String,
    /// Who received: the channel's streamer (`channel/username`), or the user.
    pub to: String,
    pub points: i64,
    /// Won paid through Kakao Pay (top-ups only).
    pub krw: i64,
    /// The donation's message, the product, or the grant's reason.
    pub memo: String,
}

/// The milliseconds clock the token checker compares with (`auth::Claims::iat_ms`).
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Store {
    /// Accounts whose username or nickname contains `query` (all with an empty one), the
    /// newest first, at most `limit`.
    pub fn accounts(&self, query: &str, limit: usize) -> Result<Vec<Account>, StoreError> {
        let pattern = format!(
            "%{}%",
            query
                .trim()
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        let rows = self
            .conn()
            .prepare_cached(
                "SELECT u.id, u.username, u.nickname, u.role, u.created_at, u.last_seen_at,
                        u.disabled_at IS NOT NULL,
                        COALESCE((SELECT balance FROM ledger_accounts WHERE kind = 'wallet' AND user_id = u.id), 0),
                        COALESCE((SELECT balance FROM ledger_accounts WHERE kind = 'earnings' AND user_id = u.id), 0)
                 FROM users u
                 WHERE u.username LIKE ?1 ESCAPE '\\' OR lower(u.nickname) LIKE ?1 ESCAPE '\\'
                 ORDER BY u.id DESC LIMIT ?2",
            )?
            .query_map(params![pattern, limit as i64], |row| {
                let user = user_from_row(row)?;
                Ok(Account {
                    id: user.id,
                    username: user.username,
                    nickname: user.nickname,
                    role: user.role,
                    created_at: row.get(4)?,
                    last_seen_at: row.get(5)?,
                    disabled: row.get(6)?,
                    balance: row.get(7)?,
                    earnings: row.get(8)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Whether an account is disabled (`None`: no such account).
    pub fn account_disabled(&self, user_id: i64) -> Result<Option<bool>, StoreError> {
        let disabled = self
            .conn()
            .prepare_cached("SELECT disabled_at IS NOT NULL FROM users WHERE id = ?1")?
            .query_row(params![user_id], |row| row.get(0))
            .optional()?;
        Ok(disabled)
    }

    /// Admins whose accounts are not disabled: the venue must always keep one.
    pub fn active_admins(&self) -> Result<i64, StoreError> {
        Ok(self.conn().query_row(
            "SELECT COUNT(*) FROM users WHERE role = 'admin' AND disabled_at IS NULL",
            [],
            |row| row.get(0),
        )?)
    }

    /// Notes that an account changed in a way its open sessions must learn (role, disabled):
    /// access tokens issued up to this moment are refused, so their holders refresh.
    pub(crate) fn mark_account_changed(&self, user_id: i64) -> Result<i64, StoreError> {
        let at = now_ms();
        self.conn().execute(
            "UPDATE users SET changed_at_ms = MAX(changed_at_ms + 1, ?2) WHERE id = ?1",
            params![user_id, at],
        )?;
        Ok(self.conn().query_row(
            "SELECT changed_at_ms FROM users WHERE id = ?1",
            params![user_id],
            |row| row.get(0),
        )?)
    }

    /// When an account last changed (role, disabled, password reset), in ms.
    pub fn account_changed_at(&self, user_id: i64) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn()
            .prepare_cached("SELECT changed_at_ms FROM users WHERE id = ?1")?
            .query_row(params![user_id], |row| row.get(0))
            .optional()?)
    }

    /// Accounts changed after `after_ms` (ms), with when: how the daemon learns of changes
    /// the operator's CLI made from its own process.
    pub fn accounts_changed_since(&self, after_ms: i64) -> Result<Vec<(i64, i64)>, StoreError> {
        let rows = self
            .conn()
            .prepare_cached(
                "SELECT id, changed_at_ms FROM users WHERE changed_at_ms > ?1 ORDER BY changed_at_ms",
            )?
            .query_map(params![after_ms], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Disables or enables an account. Disabling ends every session it has (their ids are
    /// returned, so their access tokens can be refused at once).
    pub fn set_disabled(
        &mut self,
        username: &str,
        disabled: bool,
    ) -> Result<(User, Vec<String>), StoreError> {
        let user = self
            .user_by_name(username)?
            .ok_or_else(|| StoreError::NoSuchUser(username.to_string()))?;
        let at = super::ledger::now();
        self.conn().execute(
            "UPDATE users SET disabled_at = CASE WHEN ?2 THEN COALESCE(disabled_at, ?3) END
             WHERE id = ?1",
            params![user.id, disabled, at],
        )?;
        let ended = if disabled {
            self.end_sessions(user.id)?
        } else {
            Vec::new()
        };
        self.mark_account_changed(user.id)?;
        Ok((user, ended))
    }

    /// Ends every session of an account (its refresh tokens revoked); returns their ids, so
    /// their access tokens can be refused at once.
    fn end_sessions(&self, user_id: i64) -> Result<Vec<String>, StoreError> {
        let ended = self
            .conn()
            .prepare(
                "SELECT DISTINCT family FROM refresh_tokens WHERE user_id = ?1 AND revoked = 0",
            )?
            .query_map(params![user_id], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        self.conn().execute(
            "UPDATE refresh_tokens SET revoked = 1 WHERE user_id = ?1",
            params![user_id],
        )?;
        Ok(ended)
    }

    /// Sets an account's one-time reset code (its SHA-256), valid until `expires_at` (Unix
    /// seconds). A new code replaces the last.
    pub fn set_reset_code(
        &mut self,
        username: &str,
        code_hash: &[u8],
        expires_at: i64,
    ) -> Result<User, StoreError> {
        let user = self
            .user_by_name(username)?
            .ok_or_else(|| StoreError::NoSuchUser(username.to_string()))?;
        self.conn().execute(
            "UPDATE users SET reset_code_hash = ?2, reset_code_expires_at = ?3 WHERE id = ?1",
            params![user.id, code_hash, expires_at],
        )?;
        Ok(user)
    }

    /// Uses a reset code: if it is the account's and unexpired, the password becomes
    /// `password_hash`, the code is spent and every session ends (returned). `None`: the
    /// code does not open this account (wrong, spent, expired, or no such account).
    pub fn redeem_reset_code(
        &mut self,
        username: &str,
        code_hash: &[u8],
        password_hash: &str,
        now: i64,
    ) -> Result<Option<(User, Vec<String>)>, StoreError> {
        let Ok(username) = normalize_username(username) else {
            return Ok(None);
        };
        let found: Option<(i64, Option<Vec<u8>>, Option<i64>)> = self
            .conn()
            .query_row(
                "SELECT id, reset_code_hash, reset_code_expires_at FROM users
                 WHERE username = ?1 AND disabled_at IS NULL",
                params![username],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()?;
        let Some((id, Some(stored), Some(expires))) = found else {
            return Ok(None);
        };
        // Compared in constant time: the code is a password for a day.
        let same = stored.len() == code_hash.len()
            && stored
                .iter()
                .zip(code_hash)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same || expires <= now {
            return Ok(None);
        }
        self.conn().execute(
            "UPDATE users SET password_hash = ?2, reset_code_hash = NULL, reset_code_expires_at = NULL
             WHERE id = ?1",
            params![id, password_hash],
        )?;
        let ended = self.end_sessions(id)?;
        self.mark_account_changed(id)?;
        let user = self
            .user_by_id(id)?
            .ok_or(StoreError::NoSuchUser(username))?;
        Ok(Some((user, ended)))
    }

    /// Notes that an account was just used (a login, a token refresh), for the console's
    /// "last seen".
    pub fn note_seen(&self, user_id: i64) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE users SET last_seen_at = ?2 WHERE id = ?1",
            params![user_id, super::ledger::now()],
        )?;
        Ok(())
    }

    /// Gives a channel to another streamer (or admin). An admin's act: no per-streamer bound.
    pub fn give_channel(&mut self, slug: &str, username: &str) -> Result<User, StoreError> {
        let user = self
            .user_by_name(username)?
            .ok_or_else(|| StoreError::NoSuchUser(username.to_string()))?;
        if user.role == Role::Viewer {
            return Err(StoreError::Invalid {
                field: "owner",
                reason: "make the account a streamer first",
            });
        }
        let updated = self.conn().execute(
            "UPDATE channels SET owner_id = ?2 WHERE slug = ?1",
            params![slug, user.id],
        )?;
        if updated == 0 {
            return Err(StoreError::NoSuchChannel(slug.to_string()));
        }
        Ok(user)
    }

    /// Every channel with its owner's username, for the console.
    pub fn channels_for_console(
        &self,
    ) -> Result<Vec<(super::Channel, Option<String>)>, StoreError> {
        let rows = self
            .conn()
            .prepare_cached(
                "SELECT c.slug, c.title, c.created_at, u.username
                 FROM channels c LEFT JOIN users u ON u.id = c.owner_id ORDER BY c.slug",
            )?
            .query_map([], |row| {
                Ok((
                    super::Channel {
                        slug: row.get(0)?,
                        title: row.get(1)?,
                        created_at: row.get(2)?,
                    },
                    row.get(3)?,
                ))
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Records an admin action: a row of the audit log and its outbox event, in the caller's
    /// transaction (so the action and its record stand or fall together).
    pub fn audit(
        &self,
        actor: &str,
        address: &str,
        action: &str,
        target: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        let at = super::ledger::now();
        self.conn()
            .prepare_cached(
                "INSERT INTO audit_log (at, actor, address, action, target, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![at, actor, address, action, target, detail])?;
        self.add_event(&Event::AdminAction {
            actor: actor.to_string(),
            address: address.to_string(),
            action: action.to_string(),
            target: target.to_string(),
            detail: detail.to_string(),
            at,
        })?;
        Ok(())
    }

    /// The newest `limit` audit log rows, newest first.
    pub fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = self
            .conn()
            .prepare_cached(
                "SELECT id, at, actor, address, action, target, detail FROM audit_log
                 ORDER BY id DESC LIMIT ?1",
            )?
            .query_map(params![limit as i64], |row| {
                Ok(AuditEntry {
                    id: row.get(0)?,
                    at: row.get(1)?,
                    actor: row.get(2)?,
                    address: row.get(3)?,
                    action: row.get(4)?,
                    target: row.get(5)?,
                    detail: row.get(6)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Donations, top-ups and grants whose ledger transaction falls in `[from, to)` (RFC 3339
    /// or a date, compared as text: the ledger writes UTC `…Z` times), oldest first.
    pub fn money_movements(&self, from: &str, to: &str) -> Result<Vec<MoneyRow>, StoreError> {
        let rows = self
            .conn()
            .prepare(
                "SELECT t.created_at, t.kind, t.id,
                        CASE t.kind WHEN 'donation' THEN donor.username
                                    WHEN 'topup' THEN buyer.username
                                    ELSE 'venue' END,
                        CASE t.kind WHEN 'donation' THEN c.slug || '/' || COALESCE(streamer.username, '')
                                    ELSE COALESCE(credited.username, '') END,
                        (SELECT SUM(e.amount) FROM ledger_entries e WHERE e.transaction_id = t.id AND e.amount > 0),
                        COALESCE(o.price_krw, 0),
                        CASE t.kind WHEN 'donation' THEN d.message
                                    WHEN 'topup' THEN o.product_id
                                    ELSE t.memo END
                 FROM ledger_transactions t
                 LEFT JOIN donations d ON d.transaction_id = t.id
                 LEFT JOIN users donor ON donor.id = d.donor_id
                 LEFT JOIN channels c ON c.id = d.channel_id
                 LEFT JOIN users streamer ON streamer.id = c.owner_id
                 LEFT JOIN payment_orders o ON o.transaction_id = t.id
                 LEFT JOIN users buyer ON buyer.id = o.user_id
                 LEFT JOIN ledger_entries credit ON credit.transaction_id = t.id AND credit.amount > 0
                 LEFT JOIN ledger_accounts ca ON ca.id = credit.account_id
                 LEFT JOIN users credited ON credited.id = ca.user_id
                 WHERE t.created_at >= ?1 AND t.created_at < ?2
                 GROUP BY t.id ORDER BY t.id",
            )?
            .query_map(params![from, to], |row| {
                Ok(MoneyRow {
                    at: row.get(0)?,
                    kind: row.get(1)?,
                    transaction_id: row.get(2)?,
                    from: row.get::<_, Option<String>>(3)?.unwrap_or_default(),
                    to: row.get::<_, Option<String>>(4)?.unwrap_or_default(),
                    points: row.get::<_, Option<i64>>(5)?.unwrap_or(0),
                    krw: row.get(6)?,
                    memo: row.get::<_, Option<String>>(7)?.unwrap_or_default(),
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// The ledger's system accounts (`promotions`, `kakao_pay`) and the sum of users'
    /// `wallet` and `earnings` balances: what an export's totals are checked against.
    pub fn ledger_totals(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = self
            .conn()
            .prepare("SELECT kind, SUM(balance) FROM ledger_accounts GROUP BY kind ORDER BY kind")?
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin_and_viewer(store: &mut Store) -> (User, User) {
        let admin = store.add_user("boss", "Boss", "x", Role::Admin).unwrap();
        let viewer = store.add_user("vee", "Vee", "x", Role::Viewer).unwrap();
        (admin, viewer)
    }

    #[test]
    fn disabling_ends_every_session_and_marks_the_account_changed() {
        let (_dir, mut store) = Store::temporary();
        let (_, viewer) = admin_and_viewer(&mut store);
        store
            .start_session(viewer.id, "a", b"ta", i64::MAX, 10)
            .unwrap();
        store
            .start_session(viewer.id, "b", b"tb", i64::MAX, 10)
            .unwrap();
        let (_, mut ended) = store.set_disabled("vee", true).unwrap();
        ended.sort();
        assert_eq!(ended, ["a", "b"]);
        assert!(store.session_revoked("a").unwrap() && store.session_revoked("b").unwrap());
        assert_eq!(store.account_disabled(viewer.id).unwrap(), Some(true));
        let changed = store.accounts_changed_since(0).unwrap();
        assert_eq!(changed.iter().map(|c| c.0).collect::<Vec<_>>(), [viewer.id]);
        store.set_disabled("vee", false).unwrap();
        assert_eq!(store.account_disabled(viewer.id).unwrap(), Some(false));
        assert!(
            store.accounts_changed_since(changed[0].1).unwrap().len() == 1,
            "enabling is a change too, later than the first"
        );
    }

    #[test]
    fn a_reset_code_opens_its_account_once_and_only_before_it_expires() {
        let (_dir, mut store) = Store::temporary();
        admin_and_viewer(&mut store);
        store.start_session(2, "s", b"t", i64::MAX, 10).unwrap();
        store.set_reset_code("vee", b"code", 100).unwrap();
        assert!(store
            .redeem_reset_code("vee", b"nope", "h2", 50)
            .unwrap()
            .is_none());
        assert!(store
            .redeem_reset_code("boss", b"code", "h2", 50)
            .unwrap()
            .is_none());
        assert!(
            store
                .redeem_reset_code("vee", b"code", "h2", 100)
                .unwrap()
                .is_none(),
            "expired"
        );
        let (user, ended) = store
            .redeem_reset_code("vee", b"code", "h2", 99)
            .unwrap()
            .unwrap();
        assert_eq!(
            (user.username.as_str(), ended),
            ("vee", vec!["s".to_string()])
        );
        assert_eq!(store.credentials("vee").unwrap().unwrap().1, "h2");
        assert!(
            store
                .redeem_reset_code("vee", b"code", "h3", 99)
                .unwrap()
                .is_none(),
            "spent"
        );
    }

    #[test]
    fn accounts_search_by_name_and_escape_wildcards() {
        let (_dir, mut store) = Store::temporary();
        admin_and_viewer(&mut store);
        store.add_user("v_2", "Second", "x", Role::Viewer).unwrap();
        let names = |q: &str| -> Vec<String> {
            store
                .accounts(q, 50)
                .unwrap()
                .into_iter()
                .map(|a| a.username)
                .collect()
        };
        assert_eq!(names(""), ["v_2", "vee", "boss"]);
        assert_eq!(
            names("_"),
            ["v_2"],
            "an underscore is a character, not a wildcard"
        );
        assert_eq!(names("BOSS"), ["boss"]);
        assert_eq!(names("second"), ["v_2"], "nicknames match too");
    }
}
