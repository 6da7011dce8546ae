//! Where central keeps what the boxes send: every event once, per box, in sequence order.
//!
//! Behind the small [`Storage`] trait: SQLite here (the embedded default, one file); a
//! fleet large enough for several central replicas puts PostgreSQL behind the same trait.
//! A batch is stored in one transaction, committed durably, and only then acknowledged
//! (the caller acks what [`Storage::store_batch`] returns).
//!
//! Each event is stored under `PRIMARY KEY (box_id, seq)` and `UNIQUE (box_id, event_id)`:
//! - the same event again (a resend) is a duplicate, acknowledged again, stored once;
//! - the same `seq` with a different event id means the box's data was reset or forged:
//!   the box is quarantined (its events are kept apart, not acknowledged) until an admin
//!   looks;
//! - a box whose `floor` passes a sequence central never stored has lost events: a gap is
//!   recorded.

use fleet_proto::{BoxId, Desired, DesiredChannel, EventsBatch, Reported, Status};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use std::path::Path;

pub mod postgres;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("PostgreSQL: {0}")]
    Postgres(String),
}

/// Opens the storage `db` names: a `postgres://` URL, or a SQLite file's path.
pub fn open(db: &str) -> Result<Box<dyn Storage>, StorageError> {
    if db.starts_with("postgres://") || db.starts_with("postgresql://") {
        Ok(Box::new(postgres::Postgres::open(db)?))
    } else {
        Ok(Box::new(Sqlite::open(Path::new(db))?))
    }
}

/// What storing a batch did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stored {
    /// Event ids to acknowledge: stored now or before.
    pub acknowledge: Vec<String>,
    pub new: usize,
    pub duplicates: usize,
    /// Sequences that came back with another event id (the box is quarantined).
    pub conflicts: Vec<i64>,
    /// The highest sequence held with nothing missing below it.
    pub high_water: i64,
    /// Sequences the box no longer holds that central never stored.
    pub gap: Option<(i64, i64)>,
    /// The box's clock is this far from central's (only when past a minute).
    pub clock_skew_seconds: Option<f64>,
}

/// A box's desired state after `change` to one channel: the stored one (version and
/// channels as JSON, if any) with that channel replaced, and the next version.
fn next_desired(box_id: &BoxId, current: Option<(i64, String)>, change: DesiredChannel) -> Desired {
    let (version, mut channels) = match current {
        Some((version, text)) => (
            u64::try_from(version).unwrap_or(0),
            serde_json::from_str::<Vec<DesiredChannel>>(&text).unwrap_or_default(),
        ),
        None => (0, Vec::new()),
    };
    channels.retain(|c| c.slug != change.slug);
    channels.push(change);
    channels.sort_by(|a, b| a.slug.cmp(&b.slug));
    Desired {
        box_id: box_id.clone(),
        version: version + 1,
        channels,
    }
}

/// Whether a status is taken: a last will (offline) from an older session than the
/// newest status seen arrives after the box is already back, and is stale.
fn takes_status(newest_session: Option<i64>, status: &Status) -> bool {
    let session = i64::try_from(status.session).unwrap_or(i64::MAX);
    status.online || newest_session.is_none_or(|newest| newest <= session)
}

/// A box's clock off by more than this is flagged.
pub const SKEW_FLAG_SECONDS: f64 = 60.0;

/// `box_time - central_time`, seconds, if both read as RFC 3339.
fn skew_seconds(box_time: &str, central_time: &str) -> Option<f64> {
    let at = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok();
    let (b, c) = (at(box_time)?, at(central_time)?);
    Some(b.signed_duration_since(c).num_milliseconds() as f64 / 1000.0)
}

/// A box as central knows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BoxRow {
    pub box_id: String,
    pub high_water: i64,
    pub events: i64,
    pub online: Option<bool>,
    pub session: Option<i64>,
    pub last_status: Option<serde_json::Value>,
    pub last_seen: Option<String>,
    pub quarantined: Option<String>,
    /// The box's clock minus central's, when it was off by more than a minute at its last
    /// batch (a box with no real-time clock and no NTP). Its events are taken in sequence
    /// order all the same; their `at` is the box's.
    pub clock_skew_seconds: Option<f64>,
}

/// One stored event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRow {
    pub box_id: String,
    pub seq: i64,
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub v: i64,
    pub at: String,
    pub payload: serde_json::Value,
    pub received_at: String,
}

/// Which events to list.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub box_id: Option<String>,
    pub kind: Option<String>,
    /// Received at or after this (RFC 3339).
    pub since: Option<String>,
    pub limit: usize,
}

/// A recorded gap: a box's sequences central will never get.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GapRow {
    pub box_id: String,
    pub from_seq: i64,
    pub to_seq: i64,
    pub found_at: String,
}

pub trait Storage: Send {
    /// Stores a batch in one durable transaction; see the module docs.
    fn store_batch(&mut self, batch: &EventsBatch, now: &str) -> Result<Stored, StorageError>;
    /// Records a box's status, ignoring a last will from an older session than the newest
    /// status seen. Whether it was taken.
    fn note_status(&mut self, status: &Status, now: &str) -> Result<bool, StorageError>;
    fn boxes(&mut self) -> Result<Vec<BoxRow>, StorageError>;
    fn events(&mut self, filter: &EventFilter) -> Result<Vec<EventRow>, StorageError>;
    fn gaps(&mut self) -> Result<Vec<GapRow>, StorageError>;
    /// Changes one channel of a box's desired state and bumps its version: the state to
    /// publish (retained) on the box's `desired` topic.
    fn provision(
        &mut self,
        box_id: &BoxId,
        change: DesiredChannel,
    ) -> Result<Desired, StorageError>;
    /// Records what a box reports it has.
    fn note_reported(&mut self, reported: &Reported) -> Result<(), StorageError>;
    /// What a box last reported.
    fn reported(&mut self, box_id: &BoxId) -> Result<Option<Reported>, StorageError>;
}

pub struct Sqlite {
    conn: Connection,
}

impl Sqlite {
    pub fn open(path: &Path) -> Result<Sqlite, StorageError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS events (
                 box_id TEXT NOT NULL,
                 seq INTEGER NOT NULL,
                 event_id TEXT NOT NULL,
                 type TEXT NOT NULL,
                 v INTEGER NOT NULL,
                 at TEXT NOT NULL,
                 payload TEXT NOT NULL,
                 received_at TEXT NOT NULL,
                 PRIMARY KEY (box_id, seq),
                 UNIQUE (box_id, event_id)
             );
             CREATE INDEX IF NOT EXISTS events_by_type ON events (type, received_at);
             CREATE TABLE IF NOT EXISTS boxes (
                 box_id TEXT PRIMARY KEY,
                 high_water INTEGER NOT NULL DEFAULT 0,
                 online INTEGER,
                 session INTEGER,
                 last_status TEXT,
                 last_seen TEXT,
                 quarantined TEXT,
                 clock_skew_seconds REAL,
                 reported TEXT
             );
             CREATE TABLE IF NOT EXISTS desired (
                 box_id TEXT PRIMARY KEY,
                 version INTEGER NOT NULL,
                 channels TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS quarantine (
                 box_id TEXT NOT NULL,
                 seq INTEGER NOT NULL,
                 event_id TEXT NOT NULL,
                 payload TEXT NOT NULL,
                 received_at TEXT NOT NULL,
                 UNIQUE (box_id, event_id)
             );
             CREATE TABLE IF NOT EXISTS gaps (
                 box_id TEXT NOT NULL,
                 from_seq INTEGER NOT NULL,
                 to_seq INTEGER NOT NULL,
                 found_at TEXT NOT NULL,
                 PRIMARY KEY (box_id, from_seq)
             );",
        )?;
        Ok(Sqlite { conn })
    }
}

fn ensure_box(tx: &rusqlite::Transaction<'_>, box_id: &BoxId) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT OR IGNORE INTO boxes (box_id) VALUES (?1)",
        [box_id.as_str()],
    )?;
    Ok(())
}

impl Storage for Sqlite {
    fn store_batch(&mut self, batch: &EventsBatch, now: &str) -> Result<Stored, StorageError> {
        let box_id = batch.box_id.as_str();
        // Take the write lock first: replicas sharing the file wait their turn rather than
        // fail to upgrade a read (SQLITE_BUSY_SNAPSHOT).
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        ensure_box(&tx, &batch.box_id)?;
        let mut stored = Stored::default();
        for event in &batch.events {
            let existing: Option<String> = tx
                .query_row(
                    "SELECT event_id FROM events WHERE box_id = ?1 AND seq = ?2",
                    params![box_id, event.seq],
                    |row| row.get(0),
                )
                .optional()?;
            match existing {
                Some(id) if id == event.event_id => {
                    stored.duplicates += 1;
                    stored.acknowledge.push(event.event_id.clone());
                }
                Some(_) => stored.conflicts.push(event.seq),
                None => {
                    let payload = event.payload.to_string();
                    let inserted = tx.execute(
                        "INSERT OR IGNORE INTO events
                             (box_id, seq, event_id, type, v, at, payload, received_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                        params![
                            box_id,
                            event.seq,
                            event.event_id,
                            event.kind,
                            event.v,
                            event.at,
                            payload,
                            now
                        ],
                    )?;
                    if inserted == 1 {
                        stored.new += 1;
                        stored.acknowledge.push(event.event_id.clone());
                    } else {
                        // The event id is already stored under another seq.
                        stored.conflicts.push(event.seq);
                    }
                }
            }
        }
        for seq in &stored.conflicts {
            if let Some(event) = batch.events.iter().find(|e| e.seq == *seq) {
                tx.execute(
                    "INSERT OR IGNORE INTO quarantine (box_id, seq, event_id, payload, received_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![box_id, seq, event.event_id, event.payload.to_string(), now],
                )?;
            }
            tx.execute(
                "UPDATE boxes SET quarantined = ?2 WHERE box_id = ?1 AND quarantined IS NULL",
                params![
                    box_id,
                    format!("seq {seq} came back with another event id at {now}")
                ],
            )?;
        }
        // Advance the high water over what is now contiguous, starting where the box says
        // everything below was already acknowledged.
        let mut high: i64 = tx.query_row(
            "SELECT high_water FROM boxes WHERE box_id = ?1",
            [box_id],
            |row| row.get(0),
        )?;
        if batch.floor - 1 > high {
            stored.gap = Some((high + 1, batch.floor - 1));
            tx.execute(
                "INSERT OR IGNORE INTO gaps (box_id, from_seq, to_seq, found_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![box_id, high + 1, batch.floor - 1, now],
            )?;
            high = batch.floor - 1;
        }
        loop {
            let next: Option<i64> = tx
                .query_row(
                    "SELECT seq FROM events WHERE box_id = ?1 AND seq = ?2",
                    params![box_id, high + 1],
                    |row| row.get(0),
                )
                .optional()?;
            match next {
                Some(seq) => high = seq,
                None => break,
            }
        }
        let skew = skew_seconds(&batch.sent_at, now).filter(|s| s.abs() > SKEW_FLAG_SECONDS);
        stored.clock_skew_seconds = skew;
        tx.execute(
            "UPDATE boxes SET high_water = ?2, last_seen = ?3, clock_skew_seconds = ?4
             WHERE box_id = ?1",
            params![box_id, high, now, skew],
        )?;
        tx.commit()?;
        stored.high_water = high;
        Ok(stored)
    }

    fn note_status(&mut self, status: &Status, now: &str) -> Result<bool, StorageError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        ensure_box(&tx, &status.box_id)?;
        let newest: Option<i64> = tx.query_row(
            "SELECT session FROM boxes WHERE box_id = ?1",
            [status.box_id.as_str()],
            |row| row.get(0),
        )?;
        if !takes_status(newest, status) {
            return Ok(false);
        }
        let session = i64::try_from(status.session).unwrap_or(i64::MAX);
        let text = serde_json::to_string(status).unwrap_or_default();
        tx.execute(
            "UPDATE boxes SET online = ?2, session = MAX(COALESCE(session, 0), ?3),
                 last_status = ?4, last_seen = ?5 WHERE box_id = ?1",
            params![status.box_id.as_str(), status.online, session, text, now],
        )?;
        tx.commit()?;
        Ok(true)
    }

    fn boxes(&mut self) -> Result<Vec<BoxRow>, StorageError> {
        let mut statement = self.conn.prepare(
            "SELECT b.box_id, b.high_water, (SELECT COUNT(*) FROM events e WHERE e.box_id = b.box_id),
                    b.online, b.session, b.last_status, b.last_seen, b.quarantined,
                    b.clock_skew_seconds
             FROM boxes b ORDER BY b.box_id",
        )?;
        let rows = statement.query_map([], |row| {
            let status: Option<String> = row.get(5)?;
            Ok(BoxRow {
                box_id: row.get(0)?,
                high_water: row.get(1)?,
                events: row.get(2)?,
                online: row.get(3)?,
                session: row.get(4)?,
                last_status: status.and_then(|s| serde_json::from_str(&s).ok()),
                last_seen: row.get(6)?,
                quarantined: row.get(7)?,
                clock_skew_seconds: row.get(8)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn events(&mut self, filter: &EventFilter) -> Result<Vec<EventRow>, StorageError> {
        let mut statement = self.conn.prepare(
            "SELECT box_id, seq, event_id, type, v, at, payload, received_at FROM events
             WHERE (?1 IS NULL OR box_id = ?1) AND (?2 IS NULL OR type = ?2)
               AND (?3 IS NULL OR received_at >= ?3)
             ORDER BY box_id, seq LIMIT ?4",
        )?;
        let limit = i64::try_from(filter.limit).unwrap_or(i64::MAX);
        let rows = statement.query_map(
            params![filter.box_id, filter.kind, filter.since, limit],
            |row| {
                let payload: String = row.get(6)?;
                Ok(EventRow {
                    box_id: row.get(0)?,
                    seq: row.get(1)?,
                    event_id: row.get(2)?,
                    kind: row.get(3)?,
                    v: row.get(4)?,
                    at: row.get(5)?,
                    payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null),
                    received_at: row.get(7)?,
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn provision(
        &mut self,
        box_id: &BoxId,
        change: DesiredChannel,
    ) -> Result<Desired, StorageError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let current: Option<(i64, String)> = tx
            .query_row(
                "SELECT version, channels FROM desired WHERE box_id = ?1",
                [box_id.as_str()],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        let desired = next_desired(box_id, current, change);
        tx.execute(
            "INSERT INTO desired (box_id, version, channels) VALUES (?1, ?2, ?3)
             ON CONFLICT (box_id) DO UPDATE SET version = excluded.version, channels = excluded.channels",
            params![
                box_id.as_str(),
                i64::try_from(desired.version).unwrap_or(i64::MAX),
                serde_json::to_string(&desired.channels).unwrap_or_default()
            ],
        )?;
        tx.commit()?;
        Ok(desired)
    }

    fn note_reported(&mut self, reported: &Reported) -> Result<(), StorageError> {
        let tx = self.conn.transaction()?;
        ensure_box(&tx, &reported.box_id)?;
        tx.execute(
            "UPDATE boxes SET reported = ?2 WHERE box_id = ?1",
            params![
                reported.box_id.as_str(),
                serde_json::to_string(reported).unwrap_or_default()
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn reported(&mut self, box_id: &BoxId) -> Result<Option<Reported>, StorageError> {
        let text: Option<Option<String>> = self
            .conn
            .query_row(
                "SELECT reported FROM boxes WHERE box_id = ?1",
                [box_id.as_str()],
                |row| row.get(0),
            )
            .optional()?;
        Ok(text.flatten().and_then(|t| serde_json::from_str(&t).ok()))
    }

    fn gaps(&mut self) -> Result<Vec<GapRow>, StorageError> {
        let mut statement = self.conn.prepare(
            "SELECT box_id, from_seq, to_seq, found_at FROM gaps ORDER BY box_id, from_seq",
        )?;
        let rows = statement.query_map([], |row| {
            Ok(GapRow {
                box_id: row.get(0)?,
                from_seq: row.get(1)?,
                to_seq: row.get(2)?,
                found_at: row.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_proto::WireEvent;

    fn batch(floor: i64, events: &[(i64, &str)]) -> EventsBatch {
        EventsBatch {
            box_id: BoxId::new("hall-1").unwrap_or_else(|e| panic!("{e}")),
            floor,
            sent_at: "2026-12-05T00:00:00Z".into(),
            events: events
                .iter()
                .map(|(seq, id)| WireEvent {
                    seq: *seq,
                    event_id: (*id).into(),
                    kind: "grant".into(),
                    v: 1,
                    at: "2026-12-05T00:00:00Z".into(),
                    payload: serde_json::json!({"type": "grant", "points": seq}),
                })
                .collect(),
        }
    }

    fn storage() -> (tempfile::TempDir, Sqlite) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let storage =
            Sqlite::open(&dir.path().join("central.db")).unwrap_or_else(|e| panic!("{e}"));
        (dir, storage)
    }

    #[test]
    fn each_event_is_stored_once_and_acknowledged_every_time() {
        let (_dir, mut s) = storage();
        let first = s
            .store_batch(&batch(1, &[(1, "a"), (2, "b")]), "t1")
            .unwrap_or_default();
        assert_eq!((first.new, first.duplicates, first.high_water), (2, 0, 2));
        let again = s
            .store_batch(&batch(1, &[(2, "b"), (3, "c")]), "t2")
            .unwrap_or_default();
        assert_eq!((again.new, again.duplicates, again.high_water), (1, 1, 3));
        assert_eq!(again.acknowledge, vec!["b", "c"]);
        let events = s.events(&EventFilter {
            limit: 100,
            ..EventFilter::default()
        });
        assert_eq!(events.map(|e| e.len()).unwrap_or(0), 3);
    }

    #[test]
    fn a_sequence_with_another_event_id_quarantines_the_box() {
        let (_dir, mut s) = storage();
        let _ = s.store_batch(&batch(1, &[(1, "a")]), "t1");
        let reset = s
            .store_batch(&batch(1, &[(1, "z")]), "t2")
            .unwrap_or_default();
        assert_eq!(reset.conflicts, vec![1]);
        assert!(reset.acknowledge.is_empty(), "not acknowledged");
        let boxes = s.boxes().unwrap_or_default();
        assert!(boxes[0].quarantined.is_some());
    }

    #[test]
    fn a_floor_past_what_central_stored_is_a_gap() {
        let (_dir, mut s) = storage();
        let _ = s.store_batch(&batch(1, &[(1, "a")]), "t1");
        let skipped = s
            .store_batch(&batch(5, &[(5, "e")]), "t2")
            .unwrap_or_default();
        assert_eq!(skipped.gap, Some((2, 4)));
        assert_eq!(skipped.high_water, 5);
        assert_eq!(s.gaps().unwrap_or_default().len(), 1);
    }

    #[test]
    fn a_stale_last_will_is_ignored() {
        let (_dir, mut s) = storage();
        let id = BoxId::new("hall-1").unwrap_or_else(|e| panic!("{e}"));
        let mut online = Status::will(id.clone(), 5, "t".into());
        online.online = true;
        assert!(s.note_status(&online, "t1").unwrap_or(false));
        assert!(!s
            .note_status(&Status::will(id.clone(), 4, "t".into()), "t2")
            .unwrap_or(true));
        assert!(s
            .note_status(&Status::will(id, 5, "t".into()), "t3")
            .unwrap_or(false));
        assert_eq!(s.boxes().unwrap_or_default()[0].online, Some(false));
    }
}
