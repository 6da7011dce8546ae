//! Points: a double-entry ledger and donations. Every ledger transaction writes its
//! [`Event`] to the outbox (`outbox.rs`) in the same SQL transaction.
//!
//! Accounts: each user's `wallet` (spendable points) and `earnings` (points received as a
//! streamer), and two system accounts: `promotions` (points a venue hands out) and
//! `kakao_pay` (the clearing account top-ups are paid from). A ledger transaction is a set
//! of entries that sum to zero; each account's `balance` column is updated in the same SQL
//! transaction as its entries, so balances always equal the sum of their entries. User
//! accounts can never go below zero (checked by the debit's `WHERE` and again by a `CHECK`);
//! system accounts are sources and go negative by design.
//!
//! Every function here runs inside the caller's transaction: [`Store::in_transaction`] for
//! the operator CLI and tests, or the store thread's group commit (`StoreHandle::write`), which
//! is the one writer: no two ledger transactions ever interleave.

use super::outbox::Event;
use super::{Store, StoreError};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

/// The kinds of ledger account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountKind {
    Wallet,
    Earnings,
    Promotions,
    /// Where top-ups come from: its balance is minus the points sold through Kakao Pay.
    KakaoPay,
}

impl AccountKind {
    fn as_str(self) -> &'static str {
        match self {
            AccountKind::Wallet => "wallet",
            AccountKind::Earnings => "earnings",
            AccountKind::Promotions => "promotions",
            AccountKind::KakaoPay => "kakao_pay",
        }
    }
}

/// One line of a user's statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub transaction_id: i64,
    /// `wallet` or `earnings`.
    pub account: String,
    /// Positive: points in; negative: points out.
    pub amount: i64,
    /// `donation`, `grant`, `topup`.
    pub kind: String,
    pub memo: String,
    pub at: String,
}

/// A user's points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Wallet {
    pub balance: i64,
    pub earnings: i64,
    /// Newest first.
    pub entries: Vec<Entry>,
}

/// A donation as it was committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Donation {
    pub id: i64,
    pub channel: String,
    pub donor_id: i64,
    pub donor_nickname: String,
    pub amount: i64,
    pub message: String,
    pub created_at: String,
    /// The donor's balance right after this donation (on a replay: now).
    pub balance: i64,
}

/// A donation as its streamer sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReceivedDonation {
    pub id: i64,
    pub donor_nickname: String,
    pub amount: i64,
    pub message: String,
    pub created_at: String,
}

/// Why a donation was not made (nothing was written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DonationRefused {
    #[error("no channel `{0}`")]
    NoSuchChannel(String),
    #[error("this channel has no streamer to receive donations")]
    NoStreamer,
    #[error("streamers cannot donate to their own channel")]
    OwnChannel,
    #[error("not enough points: the balance is {balance}")]
    InsufficientFunds { balance: i64 },
    #[error("this Idempotency-Key was already used for a different donation")]
    KeyReused,
}

/// What a donation asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DonationRequest {
    pub channel: String,
    pub donor_id: i64,
    /// As shown with the donation (from the donor's token).
    pub donor_nickname: String,
    pub amount: i64,
    pub message: String,
    pub idempotency_key: String,
}

pub(super) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Store {
    /// Runs `work` in one immediate transaction of its own: committed if it returns `Ok`,
    /// rolled back otherwise. Only for callers outside the daemon's store thread (the
    /// operator's CLI, benchmarks, tests); in the daemon, every write goes through
    /// [`super::StoreHandle::write`] and its group commit.
    pub fn in_transaction<R>(
        &mut self,
        work: impl FnOnce(&mut Store) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.conn().execute_batch("BEGIN IMMEDIATE")?;
        match work(self) {
            Ok(result) => {
                self.conn().execute_batch("COMMIT")?;
                Ok(result)
            }
            Err(e) => {
                let _ = self.conn().execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Takes `amount` from an account. A user's account must hold it (else `None`, and
    /// nothing changes); a system account is a source and may go negative (created on
    /// first use). Returns the account id and its new balance.
    fn debit(
        &self,
        kind: AccountKind,
        user: Option<i64>,
        amount: i64,
    ) -> Result<Option<(i64, i64)>, StoreError> {
        let conn = self.conn();
        let row = match user {
            Some(user) => conn
                .prepare_cached(
                    "UPDATE ledger_accounts SET balance = balance - ?1
                     WHERE kind = ?2 AND user_id = ?3 AND balance >= ?1
                     RETURNING id, balance",
                )?
                .query_row(params![amount, kind.as_str(), user], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?,
            None => Some(
                conn.prepare_cached(
                    "INSERT INTO ledger_accounts (kind, user_id, balance) VALUES (?2, NULL, -?1)
                     ON CONFLICT (kind) WHERE user_id IS NULL
                     DO UPDATE SET balance = balance - ?1
                     RETURNING id, balance",
                )?
                .query_row(params![amount, kind.as_str()], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?,
            ),
        };
        Ok(row)
    }

    /// Adds `amount` to an account, creating it on first use. Returns the account id.
    fn credit(&self, kind: AccountKind, user: Option<i64>, amount: i64) -> Result<i64, StoreError> {
        let conn = self.conn();
        let id = match user {
            Some(user) => conn
                .prepare_cached(
                    "INSERT INTO ledger_accounts (kind, user_id, balance) VALUES (?2, ?3, ?1)
                     ON CONFLICT (kind, user_id) DO UPDATE SET balance = balance + ?1
                     RETURNING id",
                )?
                .query_row(params![amount, kind.as_str(), user], |r| r.get(0))?,
            None => conn
                .prepare_cached(
                    "INSERT INTO ledger_accounts (kind, user_id, balance) VALUES (?2, NULL, ?1)
                     ON CONFLICT (kind) WHERE user_id IS NULL
                     DO UPDATE SET balance = balance + ?1
                     RETURNING id",
                )?
                .query_row(params![amount, kind.as_str()], |r| r.get(0))?,
        };
        Ok(id)
    }

    fn balance(&self, kind: AccountKind, user: i64) -> Result<i64, StoreError> {
        Ok(self
            .conn()
            .prepare_cached("SELECT balance FROM ledger_accounts WHERE kind = ?1 AND user_id = ?2")?
            .query_row(params![kind.as_str(), user], |r| r.get(0))
            .optional()?
            .unwrap_or(0))
    }

    /// Records a ledger transaction moving `amount` between two accounts, with its outbox
    /// event. Returns the transaction id, its time and the source's new balance, or `None`
    /// if the source is a user's account without enough points (then nothing is written).
    pub(super) fn transfer(
        &self,
        kind: &str,
        from: (AccountKind, Option<i64>),
        to: (AccountKind, Option<i64>),
        amount: i64,
        memo: &str,
        event: impl FnOnce(i64, &str) -> Event,
    ) -> Result<Option<(i64, String, i64)>, StoreError> {
        let Some((source, balance)) = self.debit(from.0, from.1, amount)? else {
            return Ok(None);
        };
        let target = self.credit(to.0, to.1, amount)?;
        let conn = self.conn();
        let at = now();
        conn.prepare_cached(
            "INSERT INTO ledger_transactions (kind, memo, created_at) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![kind, memo, at])?;
        let transaction = conn.last_insert_rowid();
        // Each entry joins its account's chain (see the migration): it names the account's
        // previous entry, and becomes the account's newest.
        let mut entry = conn.prepare_cached(
            "INSERT INTO ledger_entries (transaction_id, account_id, amount, prev_entry_id)
             VALUES (?1, ?2, ?3, (SELECT last_entry_id FROM ledger_accounts WHERE id = ?2))",
        )?;
        let mut newest =
            conn.prepare_cached("UPDATE ledger_accounts SET last_entry_id = ?2 WHERE id = ?1")?;
        for (account, change) in [(source, -amount), (target, amount)] {
            entry.execute(params![transaction, account, change])?;
            newest.execute(params![account, conn.last_insert_rowid()])?;
        }
        self.add_event(&event(transaction, &at))?;
        Ok(Some((transaction, at, balance)))
    }

    /// Gives a user points from the venue's promotions account.
    pub fn grant(
        &mut self,
        username: &str,
        points: i64,
        reason: &str,
    ) -> Result<Wallet, StoreError> {
        if points <= 0 {
            return Err(StoreError::Invalid {
                field: "points",
                reason: "must be a positive whole number",
            });
        }
        let user = self
            .user_by_name(username)?
            .ok_or_else(|| StoreError::NoSuchUser(username.to_string()))?;
        self.transfer(
            "grant",
            (AccountKind::Promotions, None),
            (AccountKind::Wallet, Some(user.id)),
            points,
            reason,
            |transaction_id, at| Event::Grant {
                user_id: user.id,
                user: user.username.clone(),
                points,
                reason: reason.to_string(),
                transaction_id,
                at: at.to_string(),
            },
        )?;
        self.wallet(user.id, 20)
    }

    /// A user's balances and their newest `limit` entries.
    pub fn wallet(&self, user_id: i64, limit: usize) -> Result<Wallet, StoreError> {
        let entries = self
            .conn()
            .prepare_cached(
                // Walks each of the user's accounts' chains back `limit` entries, then
                // takes the newest `limit` of those.
                "WITH RECURSIVE chain (id, depth) AS (
                     SELECT last_entry_id, 1 FROM ledger_accounts
                     WHERE user_id = ?1 AND last_entry_id IS NOT NULL
                     UNION ALL
                     SELECT e.prev_entry_id, chain.depth + 1
                     FROM chain JOIN ledger_entries e ON e.id = chain.id
                     WHERE e.prev_entry_id IS NOT NULL AND chain.depth < ?2
                 )
                 SELECT t.id, a.kind, e.amount, t.kind, t.memo, t.created_at
                 FROM chain
                 JOIN ledger_entries e ON e.id = chain.id
                 JOIN ledger_accounts a ON a.id = e.account_id
                 JOIN ledger_transactions t ON t.id = e.transaction_id
                 ORDER BY e.id DESC LIMIT ?2",
            )?
            .query_map(params![user_id, limit as i64], |r| {
                Ok(Entry {
                    transaction_id: r.get(0)?,
                    account: r.get(1)?,
                    amount: r.get(2)?,
                    kind: r.get(3)?,
                    memo: r.get(4)?,
                    at: r.get(5)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(Wallet {
            balance: self.balance(AccountKind::Wallet, user_id)?,
            earnings: self.balance(AccountKind::Earnings, user_id)?,
            entries,
        })
    }

    /// Makes a donation, exactly once per `(donor, idempotency key)`: a retry returns the
    /// first donation (`true` in the answer means it is that earlier one).
    pub fn donate(
        &mut self,
        request: &DonationRequest,
    ) -> Result<Result<(Donation, bool), DonationRefused>, StoreError> {
        if let Some(earlier) = self.donation_by_key(request.donor_id, &request.idempotency_key)? {
            let same = earlier.channel == request.channel
                && earlier.amount == request.amount
                && earlier.message == request.message;
            return Ok(if same {
                Ok((earlier, true))
            } else {
                Err(DonationRefused::KeyReused)
            });
        }
        let Some((channel_id, owner)) = self.channel_id_and_owner(&request.channel)? else {
            return Ok(Err(DonationRefused::NoSuchChannel(request.channel.clone())));
        };
        let Some(streamer) = owner else {
            return Ok(Err(DonationRefused::NoStreamer));
        };
        if streamer == request.donor_id {
            return Ok(Err(DonationRefused::OwnChannel));
        }
        let name = |id| -> Result<String, StoreError> {
            Ok(self.user_by_id(id)?.map(|u| u.username).unwrap_or_default())
        };
        let (donor_name, streamer_name) = (name(request.donor_id)?, name(streamer)?);
        let memo = format!("donation to {}", request.channel);
        let Some((transaction, at, balance)) = self.transfer(
            "donation",
            (AccountKind::Wallet, Some(request.donor_id)),
            (AccountKind::Earnings, Some(streamer)),
            request.amount,
            &memo,
            |transaction_id, at| Event::Donation {
                channel: request.channel.clone(),
                donor_id: request.donor_id,
                streamer_id: streamer,
                donor: donor_name.clone(),
                streamer: streamer_name.clone(),
                amount: request.amount,
                message: request.message.clone(),
                transaction_id,
                at: at.to_string(),
            },
        )?
        else {
            let balance = self.balance(AccountKind::Wallet, request.donor_id)?;
            return Ok(Err(DonationRefused::InsufficientFunds { balance }));
        };
        self.conn()
            .prepare_cached(
                "INSERT INTO donations (transaction_id, channel_id, donor_id, amount, message,
                                        idempotency_key, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                transaction,
                channel_id,
                request.donor_id,
                request.amount,
                request.message,
                request.idempotency_key,
                at
            ])?;
        let donation = Donation {
            id: self.conn().last_insert_rowid(),
            channel: request.channel.clone(),
            donor_id: request.donor_id,
            donor_nickname: request.donor_nickname.clone(),
            amount: request.amount,
            message: request.message.clone(),
            created_at: at,
            balance,
        };
        Ok(Ok((donation, false)))
    }

    /// A channel's newest donations, for its streamer's dashboard.
    pub fn recent_donations(
        &self,
        channel: &str,
        limit: usize,
    ) -> Result<Vec<ReceivedDonation>, StoreError> {
        let donations = self
            .conn()
            .prepare_cached(
                "SELECT d.id, u.nickname, d.amount, d.message, d.created_at
                 FROM donations d
                 JOIN channels c ON c.id = d.channel_id
                 JOIN users u ON u.id = d.donor_id
                 WHERE c.slug = ?1
                 ORDER BY d.id DESC LIMIT ?2",
            )?
            .query_map(params![channel, limit as i64], |r| {
                Ok(ReceivedDonation {
                    id: r.get(0)?,
                    donor_nickname: r.get(1)?,
                    amount: r.get(2)?,
                    message: r.get(3)?,
                    created_at: r.get(4)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(donations)
    }

    fn donation_by_key(&self, donor: i64, key: &str) -> Result<Option<Donation>, StoreError> {
        let donation = self
            .conn()
            .prepare_cached(
                "SELECT d.id, c.slug, d.donor_id, u.nickname, d.amount, d.message, d.created_at,
                        (SELECT balance FROM ledger_accounts WHERE kind = 'wallet' AND user_id = d.donor_id)
                 FROM donations d
                 JOIN channels c ON c.id = d.channel_id
                 JOIN users u ON u.id = d.donor_id
                 WHERE d.donor_id = ?1 AND d.idempotency_key = ?2",
            )?
            .query_row(params![donor, key], |r| {
                Ok(Donation {
                    id: r.get(0)?,
                    channel: r.get(1)?,
                    donor_id: r.get(2)?,
                    donor_nickname: r.get(3)?,
                    amount: r.get(4)?,
                    message: r.get(5)?,
                    created_at: r.get(6)?,
                    balance: r.get(7)?,
                })
            })
            .optional()?;
        Ok(donation)
    }

    /// The ledger's invariants, for tests and `commeowd check`: every transaction sums to
    /// zero, every balance equals the sum of its entries, and no user account is negative.
    /// Returns what is wrong, or nothing.
    pub fn ledger_problems(&self) -> Result<Vec<String>, StoreError> {
        let mut problems = Vec::new();
        let unbalanced: Vec<(i64, i64)> = self
            .conn()
            .prepare(
                "SELECT transaction_id, SUM(amount) FROM ledger_entries
                 GROUP BY transaction_id HAVING SUM(amount) != 0",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        for (id, sum) in unbalanced {
            problems.push(format!("transaction {id} sums to {sum}"));
        }
        let drifted: Vec<(i64, i64, i64)> = self
            .conn()
            .prepare(
                "SELECT a.id, a.balance, COALESCE(s.total, 0) FROM ledger_accounts a
                 LEFT JOIN (SELECT account_id, SUM(amount) AS total FROM ledger_entries
                            GROUP BY account_id) s ON s.account_id = a.id
                 WHERE a.balance != COALESCE(s.total, 0)",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        for (id, balance, sum) in drifted {
            problems.push(format!(
                "account {id} has balance {balance} but entries sum to {sum}"
            ));
        }
        // The chains the statements walk: every entry on its account's chain, once.
        let unchained: i64 = self.conn().query_row(
            "WITH RECURSIVE chain (id) AS (
                 SELECT last_entry_id FROM ledger_accounts WHERE last_entry_id IS NOT NULL
                 UNION ALL
                 SELECT e.prev_entry_id FROM chain JOIN ledger_entries e ON e.id = chain.id
                 WHERE e.prev_entry_id IS NOT NULL
             )
             SELECT (SELECT COUNT(*) FROM ledger_entries) - (SELECT COUNT(DISTINCT id) FROM chain)",
            [],
            |r| r.get(0),
        )?;
        if unchained != 0 {
            problems.push(format!(
                "{unchained} entries are missing from their account's chain"
            ));
        }
        let negative: i64 = self.conn().query_row(
            "SELECT COUNT(*) FROM ledger_accounts WHERE user_id IS NOT NULL AND balance < 0",
            [],
            |r| r.get(0),
        )?;
        if negative > 0 {
            problems.push(format!("{negative} user accounts are negative"));
        }
        let total: i64 = self.conn().query_row(
            "SELECT COALESCE(SUM(balance), 0) FROM ledger_accounts",
            [],
            |r| r.get(0),
        )?;
        if total != 0 {
            problems.push(format!("balances sum to {total}, not 0"));
        }
        Ok(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Role;

    fn setup() -> (tempfile::TempDir, Store, i64, i64) {
        let (dir, mut store) = Store::temporary();
        let streamer = store
            .add_user("djay", "DJ", "hash", Role::Streamer)
            .expect("streamer");
        let fan = store
            .add_user("fan", "Fan", "hash", Role::Viewer)
            .expect("fan");
        store
            .add_channel_owned("stage", "", Some(streamer.id), None)
            .expect("channel");
        (dir, store, streamer.id, fan.id)
    }

    fn request(donor: i64, amount: i64, key: &str) -> DonationRequest {
        DonationRequest {
            channel: "stage".into(),
            donor_id: donor,
            donor_nickname: "Fan".into(),
            amount,
            message: "love it".into(),
            idempotency_key: key.into(),
        }
    }

    #[test]
    fn grants_and_donations_move_points_and_balance_to_zero() {
        let (_dir, mut store, streamer, fan) = setup();
        let wallet = store
            .in_transaction(|s| s.grant("fan", 500, "opening night"))
            .expect("grant");
        assert_eq!(wallet.balance, 500);
        assert_eq!(wallet.entries[0].memo, "opening night");
        let (donation, replay) = store
            .in_transaction(|s| s.donate(&request(fan, 200, "k1")))
            .expect("store")
            .expect("donated");
        assert!(!replay);
        assert_eq!(
            (
                donation.amount,
                donation.balance,
                donation.donor_nickname.as_str()
            ),
            (200, 300, "Fan")
        );
        // The same key again: the same donation, not a second one.
        let (again, replay) = store
            .in_transaction(|s| s.donate(&request(fan, 200, "k1")))
            .expect("store")
            .expect("replayed");
        assert!(replay);
        assert_eq!(again.id, donation.id);
        assert_eq!(
            store
                .in_transaction(|s| s.donate(&request(fan, 999, "k1")))
                .expect("store"),
            Err(DonationRefused::KeyReused)
        );
        assert_eq!(
            store
                .in_transaction(|s| s.donate(&request(fan, 301, "k2")))
                .expect("store"),
            Err(DonationRefused::InsufficientFunds { balance: 300 })
        );
        assert_eq!(
            store
                .in_transaction(|s| s.donate(&request(streamer, 1, "k3")))
                .expect("store"),
            Err(DonationRefused::OwnChannel)
        );
        assert_eq!(store.wallet(streamer, 10).expect("wallet").earnings, 200);
        let fan_wallet = store.wallet(fan, 10).expect("wallet");
        assert_eq!(fan_wallet.balance, 300);
        assert_eq!(fan_wallet.entries.len(), 2);
        assert_eq!(fan_wallet.entries[0].amount, -200);
        assert!(store.ledger_problems().expect("check").is_empty());
        let events: i64 = store
            .conn()
            .query_row(
                "SELECT COUNT(*) FROM outbox WHERE type IN ('grant', 'donation')",
                [],
                |r| r.get(0),
            )
            .expect("outbox");
        assert_eq!(events, 2, "one outbox event per ledger transaction");
    }

    #[test]
    fn the_check_finds_a_ledger_that_does_not_balance() {
        let (_dir, mut store, _streamer, fan) = setup();
        store
            .in_transaction(|s| s.grant("fan", 500, ""))
            .expect("grant");
        assert!(store.ledger_problems().expect("check").is_empty());
        store
            .conn()
            .execute(
                "UPDATE ledger_accounts SET balance = balance + 1 WHERE user_id = ?1",
                params![fan],
            )
            .expect("tamper");
        let problems = store.ledger_problems().expect("check");
        assert!(
            problems.iter().any(|p| p.contains("entries sum to 500")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("balances sum to 1")),
            "{problems:?}"
        );
        store
            .conn()
            .execute(
                "UPDATE ledger_entries SET amount = amount + 7 WHERE id = 1",
                [],
            )
            .expect("tamper");
        let problems = store.ledger_problems().expect("check");
        assert!(
            problems.iter().any(|p| p.contains("sums to 7")),
            "{problems:?}"
        );
    }

    #[test]
    fn a_refused_or_failed_write_leaves_nothing_behind() {
        let (_dir, mut store, _streamer, fan) = setup();
        assert!(matches!(
            store.in_transaction(|s| s.grant("ghost", 10, "")),
            Err(StoreError::NoSuchUser(_))
        ));
        assert!(store.in_transaction(|s| s.grant("fan", 0, "")).is_err());
        let outcome = store.in_transaction(|s| {
            s.grant("fan", 50, "")?;
            Err::<(), _>(StoreError::Closed)
        });
        assert!(outcome.is_err());
        assert_eq!(store.wallet(fan, 10).expect("wallet").balance, 0);
        assert!(store.ledger_problems().expect("check").is_empty());
    }

    /// The seed's scenario through the real writer: 1,000 donors at once, each 100 points,
    /// to one streamer; and one donor with 500 points firing 1,000 donations at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_donations_are_exact() {
        let (_dir, mut store, streamer, fan) = setup();
        let mut donors = Vec::new();
        for n in 0..1000 {
            let donor = store
                .add_user(&format!("donor{n}"), "Donor", "hash", Role::Viewer)
                .expect("donor");
            store
                .in_transaction(|s| s.grant(&donor.username, 100, "welcome"))
                .expect("grant");
            donors.push(donor.id);
        }
        store
            .in_transaction(|s| s.grant("fan", 500, "welcome"))
            .expect("grant");
        let (handle, thread) = crate::store::StoreHandle::spawn(store).expect("spawn");
        let donate = |donor: i64, key: String| {
            let handle = handle.clone();
            tokio::spawn(async move {
                handle
                    .write(move |s| s.donate(&request(donor, 100, &key)))
                    .await
            })
        };
        let many: Vec<_> = donors.iter().map(|&d| donate(d, "once".into())).collect();
        let greedy: Vec<_> = (0..1000).map(|n| donate(fan, format!("k{n}"))).collect();
        for task in many {
            assert!(task.await.expect("task").expect("store").is_ok());
        }
        let mut succeeded = 0;
        for task in greedy {
            match task.await.expect("task").expect("store") {
                Ok(_) => succeeded += 1,
                Err(DonationRefused::InsufficientFunds { balance: 0 }) => {}
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(succeeded, 5);
        let (earnings, balance, problems) = handle
            .read(move |s| {
                Ok((
                    s.wallet(streamer, 1)?.earnings,
                    s.wallet(fan, 1)?.balance,
                    s.ledger_problems()?,
                ))
            })
            .await
            .expect("read");
        assert_eq!(earnings, 100_000 + 500);
        assert_eq!(balance, 0);
        assert_eq!(problems, Vec::<String>::new());
        drop(handle);
        thread.join().expect("join");
    }
}
