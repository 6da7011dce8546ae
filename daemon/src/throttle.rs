//! Slows down whoever keeps failing: addresses sending wrong stream keys, addresses and
//! accounts with wrong passwords.
//!
//! Each failure doubles the wait imposed on that key's next attempts, up to a cap; a quiet
//! period forgives it. The table is bounded: when full, the entry that failed longest ago is
//! forgotten, so a flood of spoofed addresses or made-up usernames costs memory once, not
//! forever.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const FORGIVE_AFTER: Duration = Duration::from_secs(600);
const MAX_TRACKED: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    last: Instant,
}

/// Recent failures per key (an address, an account).
#[derive(Debug)]
pub struct Throttle<K> {
    first_penalty: Duration,
    max_penalty: Duration,
    // std Mutex: held for a map lookup, never across an .await.
    records: Mutex<HashMap<K, Record>>,
}

impl<K> Throttle<K> {
    /// The first failure costs `first_penalty`; each further one doubles it, up to
    /// `max_penalty`.
    pub fn new(first_penalty: Duration, max_penalty: Duration) -> Throttle<K> {
        Throttle {
            first_penalty,
            max_penalty,
            records: Mutex::new(HashMap::new()),
        }
    }

    fn penalty_for(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let doublings = (failures - 1).min(16);
        self.first_penalty
            .saturating_mul(1 << doublings)
            .min(self.max_penalty)
    }
}

impl<K: Hash + Eq + Clone> Throttle<K> {
    /// How long this key's next attempt should wait: its penalty, in full.
    pub fn penalty(&self, addr: &K, now: Instant) -> Duration {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        match records.get(addr) {
            Some(r) if now.duration_since(r.last) < FORGIVE_AFTER => self.penalty_for(r.failures),
            _ => Duration::ZERO,
        }
    }

    /// What is left of this key's penalty, counted from its last failure: `None` when it
    /// may try again now.
    pub fn retry_after(&self, key: &K, now: Instant) -> Option<Duration> {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        let record = records.get(key)?;
        let free_at = record.last + self.penalty_for(record.failures);
        (free_at > now).then(|| free_at - now)
    }

    /// Records a failure; returns how many this address has made recently.
    pub fn record_failure(&self, addr: &K, now: Instant) -> u32 {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        if records.len() >= MAX_TRACKED && !records.contains_key(addr) {
            records.retain(|_, r| now.duration_since(r.last) < FORGIVE_AFTER);
            if records.len() >= MAX_TRACKED {
                if let Some(oldest) = records
                    .iter()
                    .min_by_key(|(_, r)| r.last)
                    .map(|(a, _)| a.clone())
                {
                    records.remove(&oldest);
                }
            }
        }
        let record = records.entry(addr.clone()).or_insert(Record {
            failures: 0,
            last: now,
        });
        if now.duration_since(record.last) >= FORGIVE_AFTER {
            record.failures = 0;
        }
        record.failures = record.failures.saturating_add(1);
        record.last = now;
        record.failures
    }

    /// A success clears the key's record.
    pub fn record_success(&self, addr: &K) {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records.remove(addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    const FIRST_PENALTY: Duration = Duration::from_millis(250);
    const MAX_PENALTY: Duration = Duration::from_secs(10);

    #[test]
    fn penalty_grows_then_caps_then_is_forgiven() {
        let throttle = Throttle::<IpAddr>::new(FIRST_PENALTY, MAX_PENALTY);
        let addr: IpAddr = [10, 0, 0, 9].into();
        let t0 = Instant::now();
        assert_eq!(throttle.penalty(&addr, t0), Duration::ZERO);
        throttle.record_failure(&addr, t0);
        assert_eq!(throttle.penalty(&addr, t0), FIRST_PENALTY);
        throttle.record_failure(&addr, t0);
        assert_eq!(throttle.penalty(&addr, t0), FIRST_PENALTY * 2);
        for _ in 0..40 {
            throttle.record_failure(&addr, t0);
        }
        assert_eq!(throttle.penalty(&addr, t0), MAX_PENALTY);
        assert_eq!(throttle.penalty(&addr, t0 + FORGIVE_AFTER), Duration::ZERO);
        assert_eq!(throttle.record_failure(&addr, t0 + FORGIVE_AFTER), 1);
        throttle.record_success(&addr);
        assert_eq!(throttle.penalty(&addr, t0 + FORGIVE_AFTER), Duration::ZERO);
    }

    #[test]
    fn retry_after_counts_down_from_the_last_failure() {
        let throttle = Throttle::<String>::new(FIRST_PENALTY, MAX_PENALTY);
        let t0 = Instant::now();
        let key = "alice".to_string();
        assert_eq!(throttle.retry_after(&key, t0), None);
        throttle.record_failure(&key, t0);
        assert_eq!(throttle.retry_after(&key, t0), Some(FIRST_PENALTY));
        assert_eq!(
            throttle.retry_after(&key, t0 + FIRST_PENALTY / 2),
            Some(FIRST_PENALTY / 2)
        );
        assert_eq!(throttle.retry_after(&key, t0 + FIRST_PENALTY), None);
    }

    #[test]
    fn other_addresses_are_not_slowed() {
        let throttle = Throttle::<IpAddr>::new(FIRST_PENALTY, MAX_PENALTY);
        let now = Instant::now();
        throttle.record_failure(&[10, 0, 0, 1].into(), now);
        assert_eq!(throttle.penalty(&[10, 0, 0, 2].into(), now), Duration::ZERO);
    }

    #[test]
    fn table_stays_bounded() {
        let throttle = Throttle::<IpAddr>::new(FIRST_PENALTY, MAX_PENALTY);
        let now = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 100) {
            throttle.record_failure(
                &IpAddr::from(i.to_be_bytes()),
                now + Duration::from_millis(u64::from(i)),
            );
        }
        let len = throttle.records.lock().map(|r| r.len()).unwrap_or(0);
        assert!(len <= MAX_TRACKED, "{len}");
    }
}
