//! The store: one SQLite file in WAL mode, versioned migrations, and the thread that owns it.
//!
//! SQLite calls block, so the daemon never makes them on the async runtime: a single
//! `store` thread owns the connection and runs closures sent to it over a bounded queue.
//! That thread is the one writer the ledger relies on: every write is serialised through
//! it by construction, and writes waiting at the same moment are committed together, one
//! fsync for all ([`StoreHandle::write`]). Operator commands (`commeowd channel …`) open
//! the same file directly; WAL and the busy timeout let both coexist.

mod admin;
mod channels;
mod chat;
mod ledger;
pub mod outbox;
mod payments;
mod schema;
mod users;
mod venue;

pub use admin::{now_ms, Account, AuditEntry, MoneyRow};
pub use channels::{Channel, StreamKey};
pub use chat::{ChatRoomRecord, Restriction};
pub use ledger::{Donation, DonationRefused, DonationRequest, Entry, ReceivedDonation, Wallet};
pub use payments::{Order, OrderState, Verdict};
pub use users::{normalize_username, validate_nickname, RefreshRefused, Role, Session, User};
pub use venue::{OnboardingRefused, Venue};

use rusqlite::Connection;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sqlite(rusqlite::Error),
    /// The disk holding the database is full: the write did not happen.
    #[error("the storage is full: nothing was written")]
    StorageFull,
    /// The database file is damaged; the daemon will not start on it, nor replace it.
    #[error("the database {path} is damaged ({detail}). commeowd will not start on it and will not replace it: restore it from a backup (stop commeowd, copy the backup over {path}), or, to start over with no accounts, channels or points, move it aside (mv {path} {path}.damaged)")]
    Damaged {
        path: std::path::PathBuf,
        detail: String,
    },
    #[error("database migration: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create the database {path}: {source}")]
    DatabaseFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("channel `{0}` already exists")]
    ChannelExists(String),
    #[error("a streamer may have at most {0} channels")]
    TooManyChannels(usize),
    #[error("no channel `{0}`")]
    NoSuchChannel(String),
    #[error("channel `{0}` has donations: it is kept for the ledger")]
    ChannelHasDonations(String),
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
    /// The venue would be left with no admin who can log in.
    #[error("`{0}` is the last admin: make another account admin first")]
    LastAdmin(String),
    #[error("the store thread has stopped")]
    Closed,
    #[error("the write could not be committed: {0}")]
    CommitFailed(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
            StoreError::StorageFull
        } else {
            StoreError::Sqlite(e)
        }
    }
}

impl StoreError {
    /// Whether the database says its file is not a sound database.
    fn is_damage(&self) -> bool {
        matches!(self, StoreError::Sqlite(e) if matches!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
        )) || matches!(self, StoreError::Migration(rusqlite_migration::Error::RusqliteError { err, .. })
            if matches!(err.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)))
    }
}

/// An open database, migrated to the current schema.
pub struct Store {
    conn: Connection,
}

/// Bytes SQLite holds in this process: every connection's page cache, its statements and
/// its own allocations. Bounded by the connections' `cache_size` (32 + 8 + 2 MB), and
/// filling towards it as the database grows, by design; `/metrics` reports it so the
/// process's memory can be read net of it (bench/soak.sh does).
pub fn sqlite_memory_bytes() -> i64 {
    // SAFETY: reads SQLite's global memory counter, which it keeps under its own mutex
    // (the bundled build has SQLITE_DEFAULT_MEMSTATUS=1); no pointer is involved.
    unsafe { rusqlite::ffi::sqlite3_memory_used() }
}

impl Store {
    /// Opens (creating if needed) `<data_dir>/commeow.db`.
    pub fn open_in(data_dir: &Path) -> Result<Store, StoreError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .map_err(|source| StoreError::DataDir {
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

    /// The database file, for readers that open their own connection (the fleet relay).
    pub fn path(&self) -> Option<std::path::PathBuf> {
        self.conn.path().map(std::path::PathBuf::from)
    }

    pub fn open(path: &Path) -> Result<Store, StoreError> {
        // The file holds the token signing key and password hashes: readable by the daemon's
        // user only, under systemd or not (SQLite gives its -wal and -shm files the same
        // mode). An existing file keeps whatever mode the operator gave it.
        {
            use std::os::unix::fs::OpenOptionsExt;
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
            {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    // The daemon never leaves an empty database behind (it migrates at once),
                    // so an existing empty one was truncated: SQLite would take it for new.
                    if std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
                        return Err(StoreError::Damaged {
                            path: path.to_path_buf(),
                            detail: "the file is empty: it was truncated".into(),
                        });
                    }
                }
                Err(source) => {
                    return Err(StoreError::DatabaseFile {
                        path: path.to_path_buf(),
                        source,
                    })
                }
            }
        }
        Store::open_checked(path).map_err(|e| {
            if e.is_damage() {
                StoreError::Damaged {
                    path: path.to_path_buf(),
                    detail: e.to_string(),
                }
            } else {
                e
            }
        })
    }

    fn open_checked(path: &Path) -> Result<Store, StoreError> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a commit is on disk (the WAL fsynced) before anyone is told it happened. A
        // donation answered 201 must survive a power cut, not only a crash. The cost is one
        // fsync per commit, which the store thread's group commit shares among all the
        // writes waiting at that moment (StoreHandle::write).
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Checkpoint (copy the WAL into the database) every ~16 MB of WAL rather than the
        // default 4 MB: a page rewritten by many commits is then copied once, not once per
        // commit. The WAL is truncated back after each checkpoint.
        conn.pragma_update(None, "wal_autocheckpoint", 4000)?;
        conn.pragma_update(None, "journal_size_limit", 16 * 1024 * 1024)?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // 32 MB of page cache (the default is 2 MB): the ledger's indexes are touched at
        // scattered places (one leaf per donor), and a page found in the cache is a page
        // not read back from the OS before every change.
        conn.pragma_update(None, "cache_size", -32 * 1024)?;
        // Every page read once: a file cut short or overwritten is found now, with a clear
        // word, not later in the middle of a donation.
        let check: String = conn.query_row("PRAGMA quick_check", [], |row| row.get(0))?;
        if check != "ok" {
            return Err(StoreError::Damaged {
                path: path.to_path_buf(),
                detail: format!("SQLite's check says: {check}"),
            });
        }
        schema::migrations().to_latest(&mut conn)?;
        Ok(Store { conn })
    }

    /// A read-only connection to the same file, for the store thread's reads.
    fn open_reader(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "cache_size", -8 * 1024)?;
        Ok(Store { conn })
    }

    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    pub(crate) fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

/// Work for the store thread.
enum Job {
    /// A read, on the thread's read-only connection: it cannot write, by SQLite's word.
    Read(Box<dyn FnOnce(&Store) + Send>),
    /// Runs inside the thread's current group-commit transaction, in a savepoint of its own;
    /// returns how to answer once the commit is known. Given `None` when the group's
    /// transaction is already lost: then it must write nothing and answer with an error.
    Grouped(GroupedWork),
}

/// Tells a grouped write's caller how it ended, once the commit is known.
type Answer = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

type GroupedWork = Box<dyn FnOnce(Option<&mut Store>) -> Grouped + Send>;

/// A grouped write's outcome: whether to keep its changes, and its answer, to be sent
/// only after the transaction commits (or with the commit's error).
struct Grouped {
    keep: bool,
    answer: Answer,
}

/// How many requests may wait for the store thread. Callers wait (async) when it is full:
/// store work is short, so backpressure is the right policy, not dropping requests.
const STORE_QUEUE: usize = 1024;
/// Writes committed together at most.
const GROUP_LIMIT: usize = 256;

/// How often the checkpointer copies committed WAL pages into the database file.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

/// Copies committed pages from the WAL into the database file on a connection and thread
/// of its own (a passive checkpoint: it never waits for, nor blocks, the writer). Without
/// it, the writer's automatic checkpoint copies ~16 MB at once after some commit, and the
/// donations waiting behind that commit wait tens of milliseconds more. The writer keeps
/// its automatic checkpoint, which now finds nearly everything copied already: it only
/// finishes the tail, so the WAL can restart from the beginning.
struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn spawn(path: &Path) -> std::io::Result<Checkpointer> {
        let conn = Connection::open(path).map_err(std::io::Error::other)?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_INTERVAL)
                {
                    let done = conn
                        .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0));
                    if let Err(error) = done {
                        tracing::warn!(%error, "WAL checkpoint failed");
                    }
                }
            })?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Told when each piece of the store thread's work begins and ends. The store knows no
/// watchdog: the daemon hands it one through this.
pub trait Progress: Send + Sync {
    fn begin(&self);
    fn end(&self);
}

struct Unwatched;

impl Progress for Unwatched {
    fn begin(&self) {}
    fn end(&self) {}
}

/// Ends a piece of work when dropped (also when the work panics).
struct Ended<'a>(&'a dyn Progress);

impl Drop for Ended<'_> {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// A cheap, cloneable way to run work on the store thread from async code.
#[derive(Clone)]
pub struct StoreHandle {
    jobs: mpsc::Sender<Job>,

    /// Bumped after every group commit that wrote something: the outbox relay's wake-up.
    commits: tokio::sync::watch::Receiver<u64>,
}

impl StoreHandle {
    /// Moves `store` onto its own thread. The thread ends when every handle is dropped,
    /// closing the connection (which checkpoints the WAL).
    pub fn spawn(store: Store) -> std::io::Result<(StoreHandle, std::thread::JoinHandle<()>)> {
        StoreHandle::spawn_watched(store, Arc::new(Unwatched))
    }

    /// [`StoreHandle::spawn`], telling `progress` when each piece of work begins and ends
    /// (the daemon's watchdog notices a store thread stuck in one).
    pub fn spawn_watched(
        store: Store,
        progress: Arc<dyn Progress>,
    ) -> std::io::Result<(StoreHandle, std::thread::JoinHandle<()>)> {
        let (jobs, mut inbox) = mpsc::channel::<Job>(STORE_QUEUE);

        let path = store
            .conn()
            .path()
            .filter(|p| !p.is_empty())
            .map(Path::new)
            .ok_or_else(|| std::io::Error::other("the store thread needs a database file"))?;
        let checkpointer = Checkpointer::spawn(path)?;
        let reader = Store::open_reader(path).map_err(std::io::Error::other)?;
        let (committed, commits) = tokio::sync::watch::channel(0u64);
        let thread = std::thread::Builder::new()
            .name("store".into())
            .spawn(move || {
                let mut store = store;
                let mut pending = std::collections::VecDeque::new();
                while let Some(job) = pending.pop_front().or_else(|| inbox.blocking_recv()) {
                    progress.begin();
                    let _idle = Ended(&*progress);
                    match job {
                        Job::Read(work) => work(&reader),
                        Job::Grouped(first) => {
                            let (ok, deferred) = group_commit(&mut store, first, &mut inbox);
                            if ok {
                                committed.send_modify(|n| *n += 1);
                            }
                            pending.extend(deferred);
                        }
                    }
                }
                // The checkpointer and the reader first, so the writer's connection is the
                // last one and its close checkpoints what is left.
                drop(checkpointer);
                drop(reader);
                drop(store);
                tracing::debug!("store closed");
            })?;
        Ok((StoreHandle { jobs, commits }, thread))
    }

    /// Changes after each group commit: wait on it to learn that new rows may be there
    /// (the outbox relay does).
    pub fn commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.commits.clone()
    }

    /// Runs `work`, a read, on the store thread and returns its result. It gets a
    /// read-only connection: a write attempted here fails (SQLite refuses it). Writes go
    /// through [`StoreHandle::write`].
    pub async fn read<R, F>(&self, work: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Store) -> Result<R, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Job::Read(Box::new(move |store| {
            // The caller may have gone away (a dropped request); nothing to do then.
            let _ = reply.send(work(store));
        }));
        self.jobs.send(job).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `work` as a durable write: inside a transaction shared with the other writes
    /// waiting at that moment (group commit: one fsync for all of them), in a savepoint of
    /// its own so an `Err` undoes only its changes. The result comes back only after the
    /// commit is on disk. `work` must not begin or end transactions itself.
    pub async fn write<R, F>(&self, work: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Store) -> Result<R, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Job::Grouped(Box::new(move |store: Option<&mut Store>| {
            let result = match store {
                Some(store) => work(store),
                None => Err(StoreError::CommitFailed("the transaction failed".into())),
            };
            Grouped {
                keep: result.is_ok(),
                answer: Box::new(move |committed| {
                    let _ = reply.send(committed.and(result));
                }),
            }
        }));
        self.jobs.send(job).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

/// Runs `first` and every grouped write already queued behind it (up to [`GROUP_LIMIT`])
/// in one transaction, then answers them all. Other jobs found in the queue meanwhile
/// (reads, mostly) do not cut the group short: they are returned, in order, to run right
/// after the commit. Returns whether the group committed, and those jobs.
fn group_commit(
    store: &mut Store,
    first: GroupedWork,
    inbox: &mut mpsc::Receiver<Job>,
) -> (bool, Vec<Job>) {
    let mut answers = Vec::new();
    let mut deferred = Vec::new();
    let mut began = store
        .conn()
        .execute_batch("BEGIN IMMEDIATE")
        .map_err(StoreError::from);
    let mut work = Some(first);
    while let Some(job) = work.take() {
        if began.is_ok() {
            let (answer, sound) = run_in_savepoint(store, job);
            answers.push(answer);
            if !sound {
                began = Err(StoreError::CommitFailed("a savepoint failed".into()));
            }
        } else {
            // The group is already lost: write nothing, answer with the error.
            answers.push(job(None).answer);
        }
        while answers.len() < GROUP_LIMIT && deferred.len() < GROUP_LIMIT {
            match inbox.try_recv() {
                Ok(Job::Grouped(next)) => {
                    work = Some(next);
                    break;
                }
                Ok(other) => deferred.push(other),
                Err(_) => break,
            }
        }
    }
    let commit_started = std::time::Instant::now();
    let committed = began.and_then(|()| {
        store
            .conn()
            .execute_batch("COMMIT")
            .map_err(StoreError::from)
    });
    metrics::histogram!("commeow_store_commit_seconds")
        .record(commit_started.elapsed().as_secs_f64());
    metrics::histogram!("commeow_store_group_commit_writes").record(answers.len() as f64);
    if let Err(e) = &committed {
        tracing::error!(error = %e, writes = answers.len(), "group commit failed");
        let _ = store.conn().execute_batch("ROLLBACK");
    }
    for answer in answers {
        let outcome = match &committed {
            Ok(()) => Ok(()),
            // Said as what it is, so the caller can tell the client (503 storage_full).
            Err(StoreError::StorageFull) => Err(StoreError::StorageFull),
            Err(e) => Err(StoreError::CommitFailed(e.to_string())),
        };
        answer(outcome);
    }
    (committed.is_ok(), deferred)
}

/// Runs one grouped write in a savepoint, undoing it alone if it failed. Returns its answer,
/// and `false` if the savepoint itself failed (then the whole group must roll back).
fn run_in_savepoint(store: &mut Store, job: GroupedWork) -> (Answer, bool) {
    // Cached statements: this runs for every write, thousands of times a second.
    let run = |store: &Store, sql: &str| {
        store
            .conn()
            .prepare_cached(sql)
            .and_then(|mut statement| statement.execute([]))
            .is_ok()
    };
    let sound = run(store, "SAVEPOINT write");
    let grouped = job(Some(store));
    let undone = grouped.keep || run(store, "ROLLBACK TO write");
    let released = run(store, "RELEASE write");
    (grouped.answer, sound && undone && released)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_written_before_the_chains_are_chained_by_the_migration() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("commeow.db");
        let mut conn = Connection::open(&path).expect("open");
        schema::migrations()
            .to_version(&mut conn, 6)
            .expect("schema 6");
        conn.execute_batch(
            "INSERT INTO users (id, username, nickname, password_hash, role, created_at)
                 VALUES (1, 'fan', 'Fan', 'x', 'viewer', 'now');
             INSERT INTO ledger_accounts (id, kind, user_id, balance) VALUES
                 (1, 'promotions', NULL, -300), (2, 'wallet', 1, 300);
             INSERT INTO ledger_transactions (id, kind, memo, created_at) VALUES
                 (1, 'grant', '', 'now'), (2, 'grant', '', 'now');
             INSERT INTO ledger_entries (id, transaction_id, account_id, amount) VALUES
                 (1, 1, 1, -100), (2, 1, 2, 100), (3, 2, 1, -200), (4, 2, 2, 200);",
        )
        .expect("old rows");
        drop(conn);
        let store = Store::open(&path).expect("migrate to the latest");
        assert!(store.ledger_problems().expect("check").is_empty());
        let wallet = store.wallet(1, 10).expect("wallet");
        assert_eq!(wallet.balance, 300);
        let amounts: Vec<i64> = wallet.entries.iter().map(|e| e.amount).collect();
        assert_eq!(amounts, [200, 100], "newest first, the user's entries only");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_cannot_write() {
        let (_dir, store) = Store::temporary();
        let (handle, thread) = StoreHandle::spawn(store).expect("spawn");
        // `&Store` already keeps out the `&mut self` writers; SQLite refuses the rest.
        let sneaky = handle
            .read(|store| Ok(store.conn().execute_batch("CREATE TABLE sneaky (x)")?))
            .await;
        assert!(
            matches!(sneaky, Err(StoreError::Sqlite(_))),
            "a write through read() must fail: {sneaky:?}"
        );
        handle
            .write(|store| store.add_channel("stage", ""))
            .await
            .expect("a write through write()");
        let listed = handle
            .read(|store| store.list_channels())
            .await
            .expect("read");
        assert_eq!(
            listed.len(),
            1,
            "the read connection sees what was committed"
        );
        drop(handle);
        thread.join().expect("join");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn grouped_writes_commit_together_and_a_failure_undoes_only_itself() {
        let (_dir, store) = Store::temporary();
        let (handle, thread) = StoreHandle::spawn(store).expect("spawn");
        let mut writes = Vec::new();
        for n in 0..500 {
            let handle = handle.clone();
            writes.push(tokio::spawn(async move {
                handle
                    .write(move |store| {
                        store.add_channel(&format!("c{n}"), "")?;
                        if n % 10 == 0 {
                            // Written, then failed: its savepoint must undo the channel.
                            return Err(StoreError::Invalid {
                                field: "test",
                                reason: "refused",
                            });
                        }
                        Ok(n)
                    })
                    .await
            }));
        }
        let mut ok = 0;
        for write in writes {
            match write.await.expect("task") {
                Ok(_) => ok += 1,
                Err(StoreError::Invalid { .. }) => {}
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!(ok, 450);
        let listed = handle
            .read(|store| store.list_channels())
            .await
            .expect("list");
        assert_eq!(listed.len(), 450);
        assert!(listed.iter().all(|c| !c.slug.ends_with('0')));
        drop(handle);
        thread.join().expect("join");
    }
}
