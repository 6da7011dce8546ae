//! The outbox: events for the central side, written in the same transaction as what they
//! report (a donation, a grant, a Kakao Pay verdict), read in order by the fleet relay and
//! deleted only when the central side acknowledges them by event id.
//!
//! Each event is an [`Event`], serialized as JSON with its `type` and a `v` (its payload's
//! version, per type), and gets the box's next `sequence` number in that same transaction
//! (`AUTOINCREMENT`: increasing, never reused, even after the newest rows are deleted).
//!
//! The relay reads through an [`OutboxReader`]: a read-only connection of its own, on a
//! blocking thread, so it never queues behind the store thread's group commits. It learns of
//! new events from [`super::StoreHandle::commits`] (a tick after every group commit), and
//! polls as well, for rows the operator's CLI writes from its own process.

use super::{Store, StoreError};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What happened, for the central side. Field names are the wire format: renaming one is a
/// new `v` for that type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The venue gave a user points (`commeowd wallet grant`).
    Grant {
        user_id: i64,
        /// The user's username, so central can name them across boxes (ids are the box's).
        #[serde(default)]
        user: String,
        points: i64,
        reason: String,
        transaction_id: i64,
        at: String,
    },
    /// A viewer's points went to a streamer.
    Donation {
        channel: String,
        donor_id: i64,
        streamer_id: i64,
        /// Usernames, so central can name people across boxes (ids are the box's).
        #[serde(default)]
        donor: String,
        #[serde(default)]
        streamer: String,
        amount: i64,
        message: String,
        transaction_id: i64,
        at: String,
    },
    /// Kakao Pay approved a top-up at the catalog price; the points were credited.
    TopupApproved {
        #[serde(flatten)]
        order: OrderFacts,
        aid: String,
        /// What Kakao Pay reported (amounts, approval time).
        kakao_pay: serde_json::Value,
        transaction_id: i64,
        at: String,
    },
    /// Kakao Pay's approval did not match the order: canceled there, nothing credited.
    TopupRejected(TopupEnded),
    /// The payer stopped.
    TopupCanceled(TopupEnded),
    /// Kakao Pay declined or could not start the payment.
    TopupFailed(TopupEnded),
    /// More about a settled order (a refund's outcome).
    PaymentNote {
        order_id: String,
        detail: String,
        kakao_pay: serde_json::Value,
        at: String,
    },
    /// A channel was made (on the box: its dashboard, or the operator's CLI). Its stream
    /// key is not here: keys never leave the box.
    ChannelCreated {
        channel: String,
        title: String,
        owner_id: Option<i64>,
        /// The owner's username, so central can name them across boxes.
        owner: Option<String>,
        at: String,
    },
    /// A channel's stream key was replaced (the new key stays on the box).
    StreamKeyRotated { channel: String, at: String },
    /// A channel got a new title (fleet provisioning).
    ChannelRetitled {
        channel: String,
        title: String,
        at: String,
    },
    /// A channel with no donations was removed (fleet provisioning, the venue's console).
    ChannelRemoved { channel: String, at: String },
    /// An admin acted on the box (the console or the operator's CLI): the audit log's row,
    /// so the fleet sees who did what, when, and from where. Never holds a secret.
    AdminAction {
        actor: String,
        address: String,
        action: String,
        target: String,
        detail: String,
        at: String,
    },
}

/// The order an event is about, as the box stored it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderFacts {
    pub order_id: String,
    pub user_id: i64,
    pub product_id: String,
    pub points: i64,
    pub price_krw: i64,
    pub tid: Option<String>,
}

/// A top-up that ended without points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopupEnded {
    #[serde(flatten)]
    pub order: OrderFacts,
    pub detail: String,
    pub kakao_pay: serde_json::Value,
    pub at: String,
}

impl Event {
    /// The payload's version for this event's type. Bump it for that type when its fields
    /// change meaning; the central side reads every version it has seen.
    pub fn version(&self) -> u32 {
        1
    }

    /// The `type` on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Grant { .. } => "grant",
            Event::Donation { .. } => "donation",
            Event::TopupApproved { .. } => "topup_approved",
            Event::TopupRejected(_) => "topup_rejected",
            Event::TopupCanceled(_) => "topup_canceled",
            Event::TopupFailed(_) => "topup_failed",
            Event::PaymentNote { .. } => "payment_note",
            Event::ChannelCreated { .. } => "channel_created",
            Event::StreamKeyRotated { .. } => "stream_key_rotated",
            Event::ChannelRetitled { .. } => "channel_retitled",
            Event::ChannelRemoved { .. } => "channel_removed",
            Event::AdminAction { .. } => "admin_action",
        }
    }
}

/// An event as the outbox holds it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stored {
    /// The box's sequence number: increasing, never reused.
    pub seq: i64,
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub v: u32,
    pub at: String,
    /// The event's fields (with `type`), as written.
    pub payload: serde_json::Value,
}

impl Stored {
    /// The typed event, if this build knows its type and version.
    pub fn event(&self) -> Option<Event> {
        serde_json::from_value(self.payload.clone()).ok()
    }
}

/// An event id: time-ordered (microseconds, hex) then random, unique across boxes.
pub(super) fn event_id() -> String {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    format!("{micros:014x}{:016x}", rand::random::<u64>())
}

const COLUMNS: &str = "sequence, event_id, type, v, created_at, payload";

fn stored(row: &rusqlite::Row<'_>) -> rusqlite::Result<Stored> {
    let payload: String = row.get(5)?;
    Ok(Stored {
        seq: row.get(0)?,
        event_id: row.get(1)?,
        kind: row.get(2)?,
        v: row.get(3)?,
        at: row.get(4)?,
        payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null),
    })
}

fn pending_on(conn: &Connection, after: i64, limit: usize) -> Result<Vec<Stored>, StoreError> {
    let sql =
        format!("SELECT {COLUMNS} FROM outbox WHERE sequence > ?1 ORDER BY sequence LIMIT ?2");
    let rows = conn
        .prepare_cached(&sql)?
        .query_map(params![after, limit as i64], stored)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

impl Store {
    /// The fleet relay's next session number: bumped on every connect to the broker and
    /// kept across restarts, so central can tell a stale last will from the box's newest
    /// status.
    pub fn next_fleet_session(&mut self) -> Result<u64, StoreError> {
        let tx = self.conn_mut().savepoint()?;
        let last: Option<Vec<u8>> = tx
            .query_row(
                "SELECT value FROM secrets WHERE name = 'fleet_session'",
                [],
                |row| row.get(0),
            )
            .optional()?;
        let last = last
            .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
            .map_or(0, u64::from_be_bytes);
        let next = last + 1;
        tx.execute(
            "INSERT INTO secrets (name, value) VALUES ('fleet_session', ?1)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            params![next.to_be_bytes().to_vec()],
        )?;
        tx.commit()?;
        Ok(next)
    }

    /// A fleet command's recorded `(status, result)`, if it already ran here.
    pub fn fleet_command(&self, id: &str) -> Result<Option<(String, String)>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT status, result FROM fleet_commands WHERE id = ?1",
                params![id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?)
    }

    /// Records a fleet command's outcome, in the caller's transaction (with its effect).
    pub fn record_fleet_command(
        &self,
        id: &str,
        name: &str,
        status: &str,
        result: &str,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO fleet_commands (id, name, status, result, done_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                id,
                name,
                status,
                result,
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            ],
        )?;
        Ok(())
    }

    /// How many events wait for central's acknowledgement.
    pub fn outbox_depth(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT COUNT(*) FROM outbox", [], |row| row.get(0))?)
    }

    /// Balances by account kind, for the fleet's `ledger_summary` (central reconciles
    /// them with the events it holds).
    pub fn ledger_summary(&self) -> Result<Vec<(String, i64, i64)>, StoreError> {
        let mut statement = self.conn().prepare(
            "SELECT kind, COUNT(*), COALESCE(SUM(balance), 0) FROM ledger_accounts
             GROUP BY kind ORDER BY kind",
        )?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The last fleet `desired` version applied (0: none).
    pub fn fleet_desired_version(&self) -> Result<u64, StoreError> {
        let stored: Option<Vec<u8>> = self
            .conn()
            .query_row(
                "SELECT value FROM secrets WHERE name = 'fleet_desired_version'",
                [],
                |row| row.get(0),
            )
            .optional()?;
        Ok(stored
            .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    /// Records the `desired` version applied, in the caller's transaction.
    pub fn set_fleet_desired_version(&self, version: u64) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO secrets (name, value) VALUES ('fleet_desired_version', ?1)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            params![version.to_be_bytes().to_vec()],
        )?;
        Ok(())
    }

    /// Appends `event` with the box's next sequence number, in the caller's transaction.
    /// Returns its event id.
    pub fn add_event(&self, event: &Event) -> Result<String, StoreError> {
        let event_id = event_id();
        let payload = serde_json::to_string(event)
            .map_err(|e| StoreError::CommitFailed(format!("an event did not serialize: {e}")))?;
        self.conn()
            .prepare_cached(
                "INSERT INTO outbox (event_id, type, v, payload, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                event_id,
                event.kind(),
                event.version(),
                payload,
                super::ledger::now()
            ])?;
        Ok(event_id)
    }

    /// Events after sequence `after`, oldest first, at most `limit`.
    pub fn pending_events(&self, after: i64, limit: usize) -> Result<Vec<Stored>, StoreError> {
        pending_on(self.conn(), after, limit)
    }

    /// The lowest sequence number the outbox still holds (`None` when it is empty).
    pub fn outbox_floor(&self) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT MIN(sequence) FROM outbox", [], |r| r.get(0))
            .optional()?
            .flatten())
    }

    /// The central side has these events: they leave the outbox. Ids it acknowledges
    /// twice, or that were never here, change nothing. Returns how many went.
    pub fn acknowledge_events(&self, event_ids: &[String]) -> Result<usize, StoreError> {
        let mut delete = self
            .conn()
            .prepare_cached("DELETE FROM outbox WHERE event_id = ?1")?;
        let mut gone = 0;
        for id in event_ids {
            gone += delete.execute(params![id])?;
        }
        Ok(gone)
    }
}

/// How often the reader looks for events even without a commit signal: the operator's CLI
/// writes from another process, which signals nothing.
pub const POLL: Duration = Duration::from_secs(2);

/// The relay's view of the outbox: its own read-only connection, used on a blocking
/// thread, so reading never waits for the store thread.
#[derive(Clone)]
pub struct OutboxReader {
    conn: Arc<Mutex<Connection>>,
    commits: tokio::sync::watch::Receiver<u64>,
}

impl OutboxReader {
    pub fn open(
        path: &Path,
        commits: tokio::sync::watch::Receiver<u64>,
    ) -> Result<OutboxReader, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        Ok(OutboxReader {
            conn: Arc::new(Mutex::new(conn)),
            commits,
        })
    }

    /// How many events wait for central's acknowledgement, and when the oldest was made.
    pub async fn depth(&self) -> Result<(u64, Option<String>), StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let conn = conn.lock().map_err(|_| StoreError::Closed)?;
            let (count, oldest): (i64, Option<String>) =
                conn.query_row("SELECT COUNT(*), MIN(created_at) FROM outbox", [], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })?;
            Ok((u64::try_from(count).unwrap_or(0), oldest))
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }

    /// Events after `after`, oldest first, at most `limit`, read now.
    pub async fn pending(&self, after: i64, limit: usize) -> Result<Vec<Stored>, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let conn = conn.lock().map_err(|_| StoreError::Closed)?;
            pending_on(&conn, after, limit)
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }

    /// Waits until there are events after `after`, then returns up to `limit` of them:
    /// woken by each group commit of the daemon, and every [`POLL`] for other writers.
    pub async fn next(&mut self, after: i64, limit: usize) -> Result<Vec<Stored>, StoreError> {
        loop {
            // Marked seen before reading, so a commit landing during the read wakes us.
            self.commits.borrow_and_update();
            let events = self.pending(after, limit).await?;
            if !events.is_empty() {
                return Ok(events);
            }
            tokio::select! {
                changed = self.commits.changed() => {
                    if changed.is_err() {
                        // The store thread is gone: keep polling until the caller stops.
                        tokio::time::sleep(POLL).await;
                    }
                }
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreHandle;

    fn grant(n: i64) -> Event {
        Event::Grant {
            user_id: 1,
            user: "fan".into(),
            points: n,
            reason: format!("r{n}"),
            transaction_id: n,
            at: "2026-12-04T00:00:00.000Z".into(),
        }
    }

    /// Rows written before an added field read back typed (the field empty): within a
    /// version, fields are only added.
    #[test]
    fn rows_from_before_an_added_field_still_read() {
        let old = serde_json::json!({"type": "donation", "channel": "stage", "donor_id": 2,
            "streamer_id": 1, "amount": 100, "message": "", "transaction_id": 7,
            "at": "2026-12-04T00:00:00.000Z"});
        let event: Event = serde_json::from_value(old).expect("reads");
        assert!(matches!(event, Event::Donation { ref donor, .. } if donor.is_empty()));
    }

    #[test]
    fn events_carry_their_type_and_version_and_read_back_typed() {
        let (_dir, store) = Store::temporary();
        store.add_event(&grant(5)).expect("add");
        let [event] = store
            .pending_events(0, 10)
            .expect("read")
            .try_into()
            .expect("one");
        assert_eq!((event.kind.as_str(), event.v), ("grant", 1));
        assert_eq!(event.payload["type"], "grant");
        assert_eq!(event.payload["points"], 5);
        assert_eq!(event.event(), Some(grant(5)));
        let ended = Event::TopupCanceled(TopupEnded {
            order: OrderFacts {
                order_id: "o1".into(),
                user_id: 1,
                product_id: "points-1000".into(),
                points: 1000,
                price_krw: 1000,
                tid: Some("T1".into()),
            },
            detail: "the payer stopped".into(),
            kakao_pay: serde_json::json!({"status": "QUIT_PAYMENT"}),
            at: "2026-12-04T00:00:00.000Z".into(),
        });
        let json = serde_json::to_value(&ended).expect("json");
        assert_eq!(json["type"], "topup_canceled");
        assert_eq!(json["order_id"], "o1", "order facts sit beside the others");
        assert_eq!(serde_json::from_value::<Event>(json).ok(), Some(ended));
    }

    #[test]
    fn events_come_out_in_order_once_per_acknowledgement_and_survive_a_restart() {
        let (dir, mut store) = Store::temporary();
        store
            .in_transaction(|s| {
                for n in 1..=5 {
                    s.add_event(&grant(n))?;
                }
                Ok(())
            })
            .expect("write");
        let first = store.pending_events(0, 3).expect("read");
        let seqs: Vec<i64> = first.iter().map(|e| e.seq).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        assert_eq!(first.len(), 3);
        let rest = store.pending_events(seqs[2], 10).expect("read");
        assert_eq!(rest.len(), 2, "the next batch starts after the last one");

        let ids: Vec<String> = first.iter().map(|e| e.event_id.clone()).collect();
        assert_eq!(store.acknowledge_events(&ids).expect("ack"), 3);
        assert_eq!(store.acknowledge_events(&ids).expect("ack again"), 0);
        assert_eq!(store.outbox_floor().expect("floor"), Some(rest[0].seq));

        // Restart: the unacknowledged events are there, and new ones number on.
        let newest = rest[1].seq;
        store
            .acknowledge_events(&[rest[1].event_id.clone()])
            .expect("ack the newest");
        drop(store);
        let store = Store::open_in(dir.path()).expect("reopen");
        let left = store.pending_events(0, 10).expect("read");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].event_id, rest[0].event_id);
        store.add_event(&grant(6)).expect("add");
        let after = store.pending_events(left[0].seq, 10).expect("read");
        assert!(after[0].seq > newest, "a sequence number is never reused");
    }

    #[test]
    fn events_written_before_types_were_named_get_todays_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("commeow.db");
        let mut conn = Connection::open(&path).expect("open");
        super::super::schema::migrations()
            .to_version(&mut conn, 9)
            .expect("schema 9");
        conn.execute_batch(
            r#"INSERT INTO outbox (event_id, type, payload, created_at) VALUES
                 ('a', 'topup', '{"order_id":"o1"}', 'now'),
                 ('b', 'payment', '{"order_id":"o2","state":"canceled"}', 'now'),
                 ('c', 'donation', '{"amount":100}', 'now');"#,
        )
        .expect("old rows");
        drop(conn);
        let store = Store::open(&path).expect("migrate");
        let kinds: Vec<(String, String, u32)> = store
            .pending_events(0, 10)
            .expect("read")
            .into_iter()
            .map(|e| {
                (
                    e.kind,
                    e.payload["type"].as_str().unwrap_or("").to_string(),
                    e.v,
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("topup_approved".into(), "topup_approved".into(), 1),
                ("topup_canceled".into(), "topup_canceled".into(), 1),
                ("donation".into(), "donation".into(), 1),
            ]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_reader_wakes_on_a_commit_and_never_waits_for_the_writer() {
        let (dir, store) = Store::temporary();
        let (handle, thread) = StoreHandle::spawn(store).expect("spawn");
        let mut reader =
            OutboxReader::open(&dir.path().join("commeow.db"), handle.commits()).expect("reader");
        let waiting = tokio::spawn(async move { reader.next(0, 10).await });
        handle
            .write(|s| s.add_event(&grant(1)))
            .await
            .expect("write");
        let got = tokio::time::timeout(Duration::from_millis(POLL.as_millis() as u64 / 2), waiting)
            .await
            .expect("woken by the commit, before the poll")
            .expect("task")
            .expect("read");
        assert_eq!(got.len(), 1);
        drop(handle);
        thread.join().expect("join");
    }
}
