//! The same [`Storage`] on PostgreSQL: for a fleet whose central runs several replicas
//! (they share the database; each batch's box row is locked for its transaction, so two
//! replicas storing batches of one box take turns) or outgrows one SQLite file. Same rules
//! and the same tables as the SQLite one.

use super::{
    next_desired, skew_seconds, takes_status, BoxRow, EventFilter, EventRow, GapRow, Storage,
    StorageError, Stored, SKEW_FLAG_SECONDS,
};
use fleet_proto::{BoxId, Desired, DesiredChannel, EventsBatch, Reported, Status};
use postgres::{Client, NoTls};

pub struct Postgres {
    client: Client,
}

fn db(error: postgres::Error) -> StorageError {
    StorageError::Postgres(error.to_string())
}

impl Postgres {
    /// Connects (`postgres://user@host:port/db`) and creates the tables if needed.
    pub fn open(url: &str) -> Result<Postgres, StorageError> {
        let mut client = Client::connect(url, NoTls).map_err(db)?;
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS events (
                     box_id TEXT NOT NULL,
                     seq BIGINT NOT NULL,
                     event_id TEXT NOT NULL,
                     type TEXT NOT NULL,
                     v BIGINT NOT NULL,
                     at TEXT NOT NULL,
                     payload TEXT NOT NULL,
                     received_at TEXT NOT NULL,
                     PRIMARY KEY (box_id, seq),
                     UNIQUE (box_id, event_id)
                 );
                 CREATE INDEX IF NOT EXISTS events_by_type ON events (type, received_at);
                 CREATE TABLE IF NOT EXISTS boxes (
                     box_id TEXT PRIMARY KEY,
                     high_water BIGINT NOT NULL DEFAULT 0,
                     online BOOLEAN,
                     session BIGINT,
                     last_status TEXT,
                     last_seen TEXT,
                     quarantined TEXT,
                     clock_skew_seconds DOUBLE PRECISION,
                     reported TEXT
                 );
                 CREATE TABLE IF NOT EXISTS desired (
                     box_id TEXT PRIMARY KEY,
                     version BIGINT NOT NULL,
                     channels TEXT NOT NULL
                 );
                 CREATE TABLE IF NOT EXISTS quarantine (
                     box_id TEXT NOT NULL,
                     seq BIGINT NOT NULL,
                     event_id TEXT NOT NULL,
                     payload TEXT NOT NULL,
                     received_at TEXT NOT NULL,
                     UNIQUE (box_id, event_id)
                 );
                 CREATE TABLE IF NOT EXISTS gaps (
                     box_id TEXT NOT NULL,
                     from_seq BIGINT NOT NULL,
                     to_seq BIGINT NOT NULL,
                     found_at TEXT NOT NULL,
                     PRIMARY KEY (box_id, from_seq)
                 );",
            )
            .map_err(db)?;
        Ok(Postgres { client })
    }
}

/// Creates the box's row if needed and locks it for the transaction.
fn lock_box(tx: &mut postgres::Transaction<'_>, box_id: &str) -> Result<(), StorageError> {
    tx.execute(
        "INSERT INTO boxes (box_id) VALUES ($1) ON CONFLICT DO NOTHING",
        &[&box_id],
    )
    .map_err(db)?;
    tx.execute(
        "SELECT 1 FROM boxes WHERE box_id = $1 FOR UPDATE",
        &[&box_id],
    )
    .map_err(db)?;
    Ok(())
}

impl Storage for Postgres {
    fn store_batch(&mut self, batch: &EventsBatch, now: &str) -> Result<Stored, StorageError> {
        let box_id = batch.box_id.as_str();
        let mut tx = self.client.transaction().map_err(db)?;
        lock_box(&mut tx, box_id)?;
        let mut stored = Stored::default();
        for event in &batch.events {
            let existing = tx
                .query_opt(
                    "SELECT event_id FROM events WHERE box_id = $1 AND seq = $2",
                    &[&box_id, &event.seq],
                )
                .map_err(db)?
                .map(|row| row.get::<_, String>(0));
            match existing {
                Some(id) if id == event.event_id => {
                    stored.duplicates += 1;
                    stored.acknowledge.push(event.event_id.clone());
                }
                Some(_) => stored.conflicts.push(event.seq),
                None => {
                    let inserted = tx
                        .execute(
                            "INSERT INTO events (box_id, seq, event_id, type, v, at, payload, received_at)
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                            &[
                                &box_id,
                                &event.seq,
                                &event.event_id,
                                &event.kind,
                                &i64::from(event.v),
                                &event.at,
                                &event.payload.to_string(),
                                &now,
                            ],
                        )
                        .map_err(db)?;
                    if inserted == 1 {
                        stored.new += 1;
                        stored.acknowledge.push(event.event_id.clone());
                    } else {
                        stored.conflicts.push(event.seq);
                    }
                }
            }
        }
        for seq in &stored.conflicts {
            if let Some(event) = batch.events.iter().find(|e| e.seq == *seq) {
                tx.execute(
                    "INSERT INTO quarantine (box_id, seq, event_id, payload, received_at)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    &[
                        &box_id,
                        seq,
                        &event.event_id,
                        &event.payload.to_string(),
                        &now,
                    ],
                )
                .map_err(db)?;
            }
            tx.execute(
                "UPDATE boxes SET quarantined = $2 WHERE box_id = $1 AND quarantined IS NULL",
                &[
                    &box_id,
                    &format!("seq {seq} came back with another event id at {now}"),
                ],
            )
            .map_err(db)?;
        }
        let mut high: i64 = tx
            .query_one("SELECT high_water FROM boxes WHERE box_id = $1", &[&box_id])
            .map_err(db)?
            .get(0);
        if batch.floor - 1 > high {
            stored.gap = Some((high + 1, batch.floor - 1));
            tx.execute(
                "INSERT INTO gaps (box_id, from_seq, to_seq, found_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING",
                &[&box_id, &(high + 1), &(batch.floor - 1), &now],
            )
            .map_err(db)?;
            high = batch.floor - 1;
        }
        // The contiguous run above the high water, in one query.
        let run: Option<i64> = tx
            .query_one(
                "WITH RECURSIVE run (seq) AS (
                     SELECT seq FROM events WHERE box_id = $1 AND seq = $2::BIGINT + 1
                     UNION ALL
                     SELECT e.seq FROM events e JOIN run ON e.box_id = $1 AND e.seq = run.seq + 1
                 )
                 SELECT MAX(seq) FROM run",
                &[&box_id, &high],
            )
            .map_err(db)?
            .get(0);
        high = run.unwrap_or(high);
        let skew = skew_seconds(&batch.sent_at, now).filter(|s| s.abs() > SKEW_FLAG_SECONDS);
        stored.clock_skew_seconds = skew;
        tx.execute(
            "UPDATE boxes SET high_water = $2, last_seen = $3, clock_skew_seconds = $4
             WHERE box_id = $1",
            &[&box_id, &high, &now, &skew],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        stored.high_water = high;
        Ok(stored)
    }

    fn note_status(&mut self, status: &Status, now: &str) -> Result<bool, StorageError> {
        let box_id = status.box_id.as_str();
        let mut tx = self.client.transaction().map_err(db)?;
        lock_box(&mut tx, box_id)?;
        let newest: Option<i64> = tx
            .query_one("SELECT session FROM boxes WHERE box_id = $1", &[&box_id])
            .map_err(db)?
            .get(0);
        if !takes_status(newest, status) {
            return Ok(false);
        }
        let session = i64::try_from(status.session).unwrap_or(i64::MAX);
        let text = serde_json::to_string(status).unwrap_or_default();
        tx.execute(
            "UPDATE boxes SET online = $2, session = GREATEST(COALESCE(session, 0), $3),
                 last_status = $4, last_seen = $5 WHERE box_id = $1",
            &[&box_id, &status.online, &session, &text, &now],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(true)
    }

    fn boxes(&mut self) -> Result<Vec<BoxRow>, StorageError> {
        let rows = self
            .client
            .query(
                "SELECT b.box_id, b.high_water,
                        (SELECT COUNT(*) FROM events e WHERE e.box_id = b.box_id),
                        b.online, b.session, b.last_status, b.last_seen, b.quarantined,
                        b.clock_skew_seconds
                 FROM boxes b ORDER BY b.box_id",
                &[],
            )
            .map_err(db)?;
        Ok(rows
            .iter()
            .map(|row| BoxRow {
                box_id: row.get(0),
                high_water: row.get(1),
                events: row.get(2),
                online: row.get(3),
                session: row.get(4),
                last_status: row
                    .get::<_, Option<String>>(5)
                    .and_then(|s| serde_json::from_str(&s).ok()),
                last_seen: row.get(6),
                quarantined: row.get(7),
                clock_skew_seconds: row.get(8),
            })
            .collect())
    }

    fn events(&mut self, filter: &EventFilter) -> Result<Vec<EventRow>, StorageError> {
        let limit = i64::try_from(filter.limit).unwrap_or(i64::MAX);
        let rows = self
            .client
            .query(
                "SELECT box_id, seq, event_id, type, v, at, payload, received_at FROM events
                 WHERE ($1::TEXT IS NULL OR box_id = $1) AND ($2::TEXT IS NULL OR type = $2)
                   AND ($3::TEXT IS NULL OR received_at >= $3)
                 ORDER BY box_id, seq LIMIT $4",
                &[&filter.box_id, &filter.kind, &filter.since, &limit],
            )
            .map_err(db)?;
        Ok(rows
            .iter()
            .map(|row| EventRow {
                box_id: row.get(0),
                seq: row.get(1),
                event_id: row.get(2),
                kind: row.get(3),
                v: row.get(4),
                at: row.get(5),
                payload: serde_json::from_str(&row.get::<_, String>(6))
                    .unwrap_or(serde_json::Value::Null),
                received_at: row.get(7),
            })
            .collect())
    }

    fn gaps(&mut self) -> Result<Vec<GapRow>, StorageError> {
        let rows = self
            .client
            .query(
                "SELECT box_id, from_seq, to_seq, found_at FROM gaps ORDER BY box_id, from_seq",
                &[],
            )
            .map_err(db)?;
        Ok(rows
            .iter()
            .map(|row| GapRow {
                box_id: row.get(0),
                from_seq: row.get(1),
                to_seq: row.get(2),
                found_at: row.get(3),
            })
            .collect())
    }

    fn provision(
        &mut self,
        box_id: &BoxId,
        change: DesiredChannel,
    ) -> Result<Desired, StorageError> {
        let id = box_id.as_str();
        let mut tx = self.client.transaction().map_err(db)?;
        lock_box(&mut tx, id)?;
        let current = tx
            .query_opt(
                "SELECT version, channels FROM desired WHERE box_id = $1",
                &[&id],
            )
            .map_err(db)?
            .map(|row| (row.get::<_, i64>(0), row.get::<_, String>(1)));
        let desired = next_desired(box_id, current, change);
        tx.execute(
            "INSERT INTO desired (box_id, version, channels) VALUES ($1, $2, $3)
             ON CONFLICT (box_id) DO UPDATE SET version = excluded.version, channels = excluded.channels",
            &[
                &id,
                &i64::try_from(desired.version).unwrap_or(i64::MAX),
                &serde_json::to_string(&desired.channels).unwrap_or_default(),
            ],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(desired)
    }

    fn note_reported(&mut self, reported: &Reported) -> Result<(), StorageError> {
        let id = reported.box_id.as_str();
        let mut tx = self.client.transaction().map_err(db)?;
        lock_box(&mut tx, id)?;
        tx.execute(
            "UPDATE boxes SET reported = $2 WHERE box_id = $1",
            &[&id, &serde_json::to_string(reported).unwrap_or_default()],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(())
    }

    fn reported(&mut self, box_id: &BoxId) -> Result<Option<Reported>, StorageError> {
        let text: Option<String> = self
            .client
            .query_opt(
                "SELECT reported FROM boxes WHERE box_id = $1",
                &[&box_id.as_str()],
            )
            .map_err(db)?
            .and_then(|row| row.get(0));
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }
}
