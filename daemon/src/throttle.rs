//! Slows down whoever keeps failing: addresses sending wrong stream keys or setup codes,
//! addresses and accounts with wrong passwords, addresses making account after account.
//!
//! One mechanism for all of them, built so that a burst cannot slip through: an attempt is
//! *reserved* before the work that judges it (a store read, an argon2 hash) and settled
//! after. While a key has an attempt in flight, or is serving a penalty, every other attempt
//! on it is refused at once. So 150 guesses released at the same instant get one
//! evaluation, not 150, whatever the order in which they finish.
//!
//! Each counted attempt doubles the wait imposed on that key's next one, up to a cap; a
//! quiet period forgives it; a success clears it. Keys are bounded values (addresses,
//! validated usernames), the table is bounded in entries, and entries are pruned by age.
//!
//! Why not the `governor` crate: it is a rate limiter (GCRA), which fits "N per minute" but
//! not this. It cannot tell an attempt still being judged from one that failed, so it
//! cannot refuse a burst while the first guess is in flight without also charging every
//! successful login; it has no backoff that grows with each failure and resets on success;
//! and its keyed state grows with every new key until `retain_recent` is called, with no
//! cap on entries. What we need is a small table with three operations under one lock.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A key with no counted attempt for this long starts afresh.
const FORGIVE_AFTER: Duration = Duration::from_secs(600);
/// Most keys remembered at once: a flood of made-up keys costs this much memory, no more.
const MAX_TRACKED: usize = 4096;
/// How often the table is swept of forgiven entries (on the next use after this long).
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// What `Retry-After` says while another attempt on the key is still being judged.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
struct Record {
    /// Counted attempts since the key was last forgiven or cleared.
    counted: u32,
    /// When the last one was counted (or the record was made).
    last: Instant,
    /// An attempt holds this key: it has been let through and not yet settled.
    in_flight: bool,
}

#[derive(Debug)]
struct Table<K> {
    records: HashMap<K, Record>,
    swept: Option<Instant>,
}

/// Recent counted attempts per key (an address, an account at an address).
#[derive(Debug)]
pub struct Throttle<K> {
    first_penalty: Duration,
    max_penalty: Duration,
    // std Mutex: held for a map lookup, never across an .await.
    table: Mutex<Table<K>>,
}

impl<K> Throttle<K> {
    /// The first counted attempt costs `first_penalty`; each further one doubles it, up to
    /// `max_penalty`.
    pub fn new(first_penalty: Duration, max_penalty: Duration) -> Throttle<K> {
        Throttle {
            first_penalty,
            max_penalty,
            table: Mutex::new(Table {
                records: HashMap::new(),
                swept: None,
            }),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table<K>> {
        // Nothing under this lock can be left half-done in a way that matters.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn penalty_for(&self, counted: u32) -> Duration {
        if counted == 0 {
            return Duration::ZERO;
        }
        let doublings = (counted - 1).min(16);
        self.first_penalty
            .saturating_mul(1 << doublings)
            .min(self.max_penalty)
    }

    /// What is left of a record's penalty at `now`, if any.
    fn wait(&self, record: &Record, now: Instant) -> Option<Duration> {
        if now.duration_since(record.last) >= FORGIVE_AFTER {
            return None;
        }
        let free_at = record.last + self.penalty_for(record.counted);
        (free_at > now).then(|| free_at - now)
    }
}

impl<K: Hash + Eq + Clone> Throttle<K> {
    /// Lets one attempt on `key` through, or says how long to wait: while the key serves a
    /// penalty, or another attempt on it has not been settled, the answer is `Err(wait)`.
    ///
    /// The returned [`Attempt`] holds the key until it is settled with [`Attempt::count`]
    /// or [`Attempt::clear`]; dropped unsettled (the work could not be done: the box was
    /// busy, the store down) it releases the key and counts nothing.
    pub fn reserve(&self, key: &K, now: Instant) -> Result<Attempt<'_, K>, Duration> {
        let mut table = self.table();
        self.sweep(&mut table, now);
        if let Some(record) = table.records.get_mut(key) {
            if record.in_flight {
                return Err(IN_FLIGHT_WAIT);
            }
            if let Some(wait) = self.wait(record, now) {
                return Err(wait);
            }
            if now.duration_since(record.last) >= FORGIVE_AFTER {
                record.counted = 0;
            }
            record.in_flight = true;
        } else {
            self.make_room(&mut table);
            table.records.insert(
                key.clone(),
                Record {
                    counted: 0,
                    last: now,
                    in_flight: true,
                },
            );
        }
        Ok(Attempt {
            throttle: self,
            key: Some(key.clone()),
        })
    }

    /// How long this key's next attempt must wait, without reserving anything.
    pub fn retry_after(&self, key: &K, now: Instant) -> Option<Duration> {
        let table = self.table();
        let record = table.records.get(key)?;
        if record.in_flight {
            return Some(IN_FLIGHT_WAIT);
        }
        self.wait(record, now)
    }

    /// Forgets entries that nothing holds and that have been quiet long enough to be
    /// forgiven; at most once per [`SWEEP_EVERY`].
    fn sweep(&self, table: &mut Table<K>, now: Instant) {
        if table
            .swept
            .is_some_and(|at| now.duration_since(at) < SWEEP_EVERY)
        {
            return;
        }
        table.swept = Some(now);
        table
            .records
            .retain(|_, r| r.in_flight || now.duration_since(r.last) < FORGIVE_AFTER);
    }

    /// Before a new key goes in: a full table forgets the entry counted longest ago that
    /// no attempt holds.
    fn make_room(&self, table: &mut Table<K>) {
        if table.records.len() < MAX_TRACKED {
            return;
        }
        let oldest = table
            .records
            .iter()
            .filter(|(_, r)| !r.in_flight)
            .min_by_key(|(_, r)| r.last)
            .map(|(k, _)| k.clone());
        if let Some(oldest) = oldest {
            table.records.remove(&oldest);
        }
    }

    fn settle(&self, key: &K, verdict: Verdict, now: Instant) -> u32 {
        let mut table = self.table();
        let Some(record) = table.records.get_mut(key) else {
            return 0;
        };
        record.in_flight = false;
        match verdict {
            Verdict::Count => {
                record.counted = record.counted.saturating_add(1);
                record.last = now;
                record.counted
            }
            Verdict::Clear => {
                table.records.remove(key);
                0
            }
            Verdict::Release => {
                let counted = record.counted;
                if counted == 0 {
                    table.records.remove(key);
                }
                counted
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Verdict {
    Count,
    Clear,
    Release,
}

/// An attempt let through by [`Throttle::reserve`]; it holds its key until settled.
#[derive(Debug)]
#[must_use = "an attempt holds its key until it is settled or dropped"]
pub struct Attempt<'a, K: Hash + Eq + Clone> {
    throttle: &'a Throttle<K>,
    /// `None` once settled.
    key: Option<K>,
}

impl<K: Hash + Eq + Clone> Attempt<'_, K> {
    /// The attempt counts against its key (a wrong password, a new account): the key's
    /// next attempt waits longer. Returns the key's recent count.
    pub fn count(mut self) -> u32 {
        self.settle(Verdict::Count)
    }

    /// The attempt succeeded: the key's record is cleared.
    pub fn clear(mut self) {
        self.settle(Verdict::Clear);
    }

    fn settle(&mut self, verdict: Verdict) -> u32 {
        match self.key.take() {
            Some(key) => self.throttle.settle(&key, verdict, Instant::now()),
            None => 0,
        }
    }
}

impl<K: Hash + Eq + Clone> Drop for Attempt<'_, K> {
    fn drop(&mut self) {
        self.settle(Verdict::Release);
    }
}

/// How many of something (open connections) each key (a client address) holds, against a
/// bound: a place is taken only if one is free, and given back when its [`Seat`] drops.
/// Entries go when their count does, so the table holds only keys with something open.
pub struct Occupancy<K: Hash + Eq + Clone> {
    held: Mutex<HashMap<K, usize>>,
}

/// A place taken in an [`Occupancy`].
pub struct Seat<K: Hash + Eq + Clone> {
    table: Arc<Occupancy<K>>,
    key: K,
}

impl<K: Hash + Eq + Clone> Default for Occupancy<K> {
    fn default() -> Self {
        Occupancy {
            held: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone> Occupancy<K> {
    /// A place for `key` if it holds fewer than `bound`.
    pub fn take(self: &Arc<Self>, key: K, bound: usize) -> Option<Seat<K>> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let count = held.entry(key.clone()).or_insert(0);
        if *count >= bound {
            return None;
        }
        *count += 1;
        Some(Seat {
            table: self.clone(),
            key,
        })
    }

    /// How many `key` holds now.
    pub fn held(&self, key: &K) -> usize {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.get(key).copied().unwrap_or(0)
    }
}

impl<K: Hash + Eq + Clone> Drop for Seat<K> {
    fn drop(&mut self) {
        let mut held = self.table.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = held.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn occupancy_holds_each_key_to_its_bound_and_forgets_empty_keys() {
        let table = Arc::new(Occupancy::default());
        let a: Vec<_> = (0..3).filter_map(|_| table.take("a", 2)).collect();
        assert_eq!(a.len(), 2, "the third is refused");
        assert!(table.take("b", 2).is_some(), "another key is not slowed");
        drop(a);
        assert_eq!(table.held(&"a"), 0);
        assert!(table.held.lock().map(|h| h.is_empty()).unwrap_or(false));
    }
    use std::net::IpAddr;
    use std::sync::Arc;

    const FIRST_PENALTY: Duration = Duration::from_millis(250);
    const MAX_PENALTY: Duration = Duration::from_secs(10);

    fn throttle<K>() -> Throttle<K> {
        Throttle::new(FIRST_PENALTY, MAX_PENALTY)
    }

    fn counted_at<K: Hash + Eq + Clone>(t: &Throttle<K>, key: &K, now: Instant) -> u32 {
        let mut table = t.table();
        let record = table.records.get_mut(key).expect("record");
        record.last = now;
        record.counted
    }

    #[test]
    fn penalty_grows_then_caps_then_is_forgiven() {
        let t = throttle::<IpAddr>();
        let addr: IpAddr = [10, 0, 0, 9].into();
        let t0 = Instant::now();
        assert_eq!(t.retry_after(&addr, t0), None);
        assert_eq!(t.reserve(&addr, t0).expect("first").count(), 1);
        counted_at(&t, &addr, t0);
        assert_eq!(t.retry_after(&addr, t0), Some(FIRST_PENALTY));
        let t1 = t0 + FIRST_PENALTY;
        assert_eq!(t.reserve(&addr, t1).expect("second").count(), 2);
        counted_at(&t, &addr, t1);
        assert_eq!(t.retry_after(&addr, t1), Some(FIRST_PENALTY * 2));
        let mut now = t1;
        for _ in 0..40 {
            now += MAX_PENALTY;
            t.reserve(&addr, now).expect("after the penalty").count();
            counted_at(&t, &addr, now);
        }
        assert_eq!(t.retry_after(&addr, now), Some(MAX_PENALTY));
        let later = now + FORGIVE_AFTER;
        assert_eq!(t.retry_after(&addr, later), None);
        assert_eq!(t.reserve(&addr, later).expect("forgiven").count(), 1);
    }

    #[test]
    fn an_attempt_in_flight_holds_the_key_until_settled() {
        let t = throttle::<String>();
        let now = Instant::now();
        let key = "alice".to_string();
        let first = t.reserve(&key, now).expect("first");
        assert_eq!(t.reserve(&key, now).err(), Some(IN_FLIGHT_WAIT));
        assert_eq!(t.retry_after(&key, now), Some(IN_FLIGHT_WAIT));
        first.clear();
        assert!(t.reserve(&key, now).is_ok(), "cleared: free again");
    }

    #[test]
    fn an_unsettled_attempt_counts_nothing() {
        let t = throttle::<String>();
        let now = Instant::now();
        let key = "alice".to_string();
        drop(t.reserve(&key, now).expect("first"));
        assert_eq!(t.retry_after(&key, now), None);
        assert!(t.table().records.is_empty(), "nothing left behind");
        // A key with a history keeps it when an attempt is released.
        t.reserve(&key, now).expect("second").count();
        counted_at(&t, &key, now);
        let later = now + FIRST_PENALTY;
        drop(t.reserve(&key, later).expect("after the penalty"));
        assert_eq!(counted_at(&t, &key, later), 1);
    }

    #[test]
    fn a_success_clears_the_key() {
        let t = throttle::<String>();
        let now = Instant::now();
        let key = "alice".to_string();
        t.reserve(&key, now).expect("first").count();
        counted_at(&t, &key, now);
        let later = now + FIRST_PENALTY;
        t.reserve(&key, later).expect("second").clear();
        assert_eq!(t.retry_after(&key, later), None);
        assert!(t.table().records.is_empty());
    }

    /// Hundreds of attempts released at the same instant from many threads: exactly one
    /// gets through, however the threads interleave.
    #[test]
    fn a_burst_gets_one_evaluation() {
        let t = Arc::new(throttle::<IpAddr>());
        let addr: IpAddr = [10, 0, 0, 7].into();
        let start = Arc::new(std::sync::Barrier::new(16));
        let through = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (t, start, through) = (t.clone(), start.clone(), through.clone());
                std::thread::spawn(move || {
                    start.wait();
                    for _ in 0..20 {
                        if let Ok(attempt) = t.reserve(&addr, Instant::now()) {
                            through.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            // Judged slowly, then wrong: the key is held all along.
                            std::thread::sleep(Duration::from_millis(5));
                            attempt.count();
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("thread");
        }
        assert_eq!(through.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn other_keys_are_not_slowed() {
        let t = throttle::<IpAddr>();
        let now = Instant::now();
        let _held = t.reserve(&[10, 0, 0, 1].into(), now).expect("first");
        assert!(t.reserve(&[10, 0, 0, 2].into(), now).is_ok());
    }

    #[test]
    fn table_stays_bounded_and_is_swept_by_age() {
        let t = throttle::<IpAddr>();
        let now = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 100) {
            let at = now + Duration::from_millis(u64::from(i));
            t.reserve(&IpAddr::from(i.to_be_bytes()), at)
                .expect("new key")
                .count();
        }
        assert!(t.table().records.len() <= MAX_TRACKED);
        // Forgiven entries go at the next sweep, without waiting for the table to fill.
        let later = now + FORGIVE_AFTER + Duration::from_secs(60);
        t.retry_after(&[1, 1, 1, 1].into(), later);
        drop(t.reserve(&[1, 1, 1, 1].into(), later));
        assert_eq!(t.table().records.len(), 0);
    }
}
