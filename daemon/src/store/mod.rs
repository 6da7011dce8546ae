//! The store: one SQLite file in WAL mode, versioned migrations, and the thread that owns it.
//!
//! SQLite calls block, so the daemon never makes them on the async runtime: a single
//! `store` thread owns the connection and runs closures sent to it over a bounded queue
//! ([`StoreHandle::call`]). That thread is also the one writer the ledger will rely on:
//! every write is serialised through it by construction. Operator commands (`commeowd
//! channel …`) open the same file directly; WAL and the busy timeout let both coexist.

mod channels;
mod chat;
mod users;

pub use channels::{Channel, StreamKey};
pub use chat::{ChatRoomRecord, Restriction};
pub use users::{RefreshRefused, Role, Session, User};

use rusqlite::Connection;
use rusqlite_migration::{Migrations, M};
use std::path::Path;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database migration: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("channel `{0}` already exists")]
    ChannelExists(String),
    #[error("no channel `{0}`")]
    NoSuchChannel(String),
    #[error("invalid channel slug `{0}`: use 1-32 characters a-z, 0-9 and '-', starting with a letter or digit")]
    InvalidSlug(String),
    #[error("invalid channel title: {0}")]
    InvalidTitle(&'static str),
    #[error("username `{0}` is taken")]
    UsernameTaken(String),
    #[error("no user `{0}`")]
    NoSuchUser(String),
    #[error("invalid {field}: {reason}")]
    Invalid {
        field: &'static str,
        reason: &'static str,
    },
    #[error("the store thread has stopped")]
    Closed,
}

/// Schema history. Append only: a released migration is never edited.
fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(
            "CREATE TABLE channels (
            id              INTEGER PRIMARY KEY,
            slug            TEXT NOT NULL UNIQUE,
            title           TEXT NOT NULL,
            -- SHA-256 of the stream key: a leaked database leaks no usable key.
            stream_key_hash BLOB NOT NULL UNIQUE,
            created_at      TEXT NOT NULL
        ) STRICT;",
        ),
        M::up(
            "CREATE TABLE users (
            id            INTEGER PRIMARY KEY,
            username      TEXT NOT NULL UNIQUE,     -- lower case
            nickname      TEXT NOT NULL,
            password_hash TEXT NOT NULL,            -- argon2id, PHC string
            role          TEXT NOT NULL CHECK (role IN ('viewer', 'streamer', 'admin')),
            created_at    TEXT NOT NULL
        ) STRICT;
        -- One row per refresh token. Rotation marks the old one used and adds a new one to
        -- the same family; presenting a used one revokes the family (it was stolen).
        CREATE TABLE refresh_tokens (
            id         INTEGER PRIMARY KEY,
            token_hash BLOB NOT NULL UNIQUE,        -- SHA-256: the token itself is never stored
            family     TEXT NOT NULL,
            user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            expires_at INTEGER NOT NULL,            -- Unix seconds
            used_at    INTEGER,
            revoked    INTEGER NOT NULL DEFAULT 0
        ) STRICT;
        CREATE INDEX refresh_tokens_family ON refresh_tokens (family);
        CREATE TABLE secrets (
            name  TEXT PRIMARY KEY,
            value BLOB NOT NULL
        ) STRICT;",
        ),
        // Channels created over the API belong to a streamer; the operator's have no owner.
        M::up(
            "ALTER TABLE channels ADD COLUMN owner_id INTEGER REFERENCES users (id) ON DELETE SET NULL;",
        ),
        // Chat bans and timeouts: a moderator's decision must survive a restart.
        M::up(
            "CREATE TABLE chat_restrictions (
            channel_id INTEGER NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
            user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            until      INTEGER,                     -- Unix seconds; NULL: banned until lifted
            by_user    INTEGER REFERENCES users (id) ON DELETE SET NULL,
            created_at INTEGER NOT NULL,
            PRIMARY KEY (channel_id, user_id)
        ) STRICT;",
        ),
    ])
}

/// An open database, migrated to the current schema.
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating if needed) `<data_dir>/commeow.db`.
    pub fn open_in(data_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        Store::open(&data_dir.join("commeow.db"))
    }

    /// A fresh database in a temporary directory, for tests; the directory lives as long as
    /// the returned guard.
    #[cfg(test)]
    pub(crate) fn temporary() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open_in(dir.path()).expect("open");
        (dir, store)
    }

    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // NORMAL is durable in WAL mode against a process crash; only an OS crash can lose
        // the last commits, and it never corrupts the file.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrations().to_latest(&mut conn)?;
        Ok(Store { conn })
    }

    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    pub(crate) fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

type Job = Box<dyn FnOnce(&mut Store) + Send>;

/// How many requests may wait for the store thread. Callers wait (async) when it is full:
/// store work is short, so backpressure is the right policy, not dropping requests.
const STORE_QUEUE: usize = 256;

/// A cheap, cloneable way to run work on the store thread from async code.
#[derive(Clone)]
pub struct StoreHandle {
    jobs: mpsc::Sender<Job>,
}

impl StoreHandle {
    /// Moves `store` onto its own thread. The thread ends when every handle is dropped,
    /// closing the connection (which checkpoints the WAL).
    pub fn spawn(store: Store) -> std::io::Result<(StoreHandle, std::thread::JoinHandle<()>)> {
        let (jobs, mut inbox) = mpsc::channel::<Job>(STORE_QUEUE);
        let thread = std::thread::Builder::new()
            .name("store".into())
            .spawn(move || {
                let mut store = store;
                while let Some(job) = inbox.blocking_recv() {
                    job(&mut store);
                }
                drop(store);
                tracing::debug!("store closed");
            })?;
        Ok((StoreHandle { jobs }, thread))
    }

    /// Runs `work` on the store thread and returns its result.
    pub async fn call<R, F>(&self, work: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Store) -> Result<R, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |store| {
            // The caller may have gone away (a dropped request); nothing to do then.
            let _ = reply.send(work(store));
        });
        self.jobs.send(job).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}
