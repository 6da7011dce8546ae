//! Slows down addresses that keep failing to publish (wrong stream keys).
//!
//! Each failure doubles the wait imposed on that address's next attempts, up to a cap; a
//! quiet period forgives it. The table is bounded: when full, the entry that failed longest
//! ago is forgotten, so a flood of spoofed addresses costs memory once, not forever.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const FIRST_PENALTY: Duration = Duration::from_millis(250);
const MAX_PENALTY: Duration = Duration::from_secs(10);
const FORGIVE_AFTER: Duration = Duration::from_secs(600);
const MAX_TRACKED: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    last: Instant,
}

/// Failed publish attempts per source address.
#[derive(Debug, Default)]
pub struct PublishThrottle {
    // std Mutex: held for a map lookup, never across an .await.
    records: Mutex<HashMap<IpAddr, Record>>,
}

impl PublishThrottle {
    /// How long to make this address wait before its attempt is answered.
    pub fn penalty(&self, addr: IpAddr, now: Instant) -> Duration {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        match records.get(&addr) {
            Some(r) if now.duration_since(r.last) < FORGIVE_AFTER => penalty_for(r.failures),
            _ => Duration::ZERO,
        }
    }

    /// Records a failure; returns how many this address has made recently.
    pub fn record_failure(&self, addr: IpAddr, now: Instant) -> u32 {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        if records.len() >= MAX_TRACKED && !records.contains_key(&addr) {
            records.retain(|_, r| now.duration_since(r.last) < FORGIVE_AFTER);
            if records.len() >= MAX_TRACKED {
                if let Some(oldest) = records.iter().min_by_key(|(_, r)| r.last).map(|(a, _)| *a) {
                    records.remove(&oldest);
                }
            }
        }
        let record = records.entry(addr).or_insert(Record {
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

    /// A successful publish clears the address's record.
    pub fn record_success(&self, addr: IpAddr) {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records.remove(&addr);
    }
}

fn penalty_for(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let doublings = (failures - 1).min(16);
    FIRST_PENALTY
        .saturating_mul(1 << doublings)
        .min(MAX_PENALTY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn penalty_grows_then_caps_then_is_forgiven() {
        let throttle = PublishThrottle::default();
        let addr: IpAddr = [10, 0, 0, 9].into();
        let t0 = Instant::now();
        assert_eq!(throttle.penalty(addr, t0), Duration::ZERO);
        throttle.record_failure(addr, t0);
        assert_eq!(throttle.penalty(addr, t0), FIRST_PENALTY);
        throttle.record_failure(addr, t0);
        assert_eq!(throttle.penalty(addr, t0), FIRST_PENALTY * 2);
        for _ in 0..40 {
            throttle.record_failure(addr, t0);
        }
        assert_eq!(throttle.penalty(addr, t0), MAX_PENALTY);
        assert_eq!(throttle.penalty(addr, t0 + FORGIVE_AFTER), Duration::ZERO);
        assert_eq!(throttle.record_failure(addr, t0 + FORGIVE_AFTER), 1);
        throttle.record_success(addr);
        assert_eq!(throttle.penalty(addr, t0 + FORGIVE_AFTER), Duration::ZERO);
    }

    #[test]
    fn other_addresses_are_not_slowed() {
        let throttle = PublishThrottle::default();
        let now = Instant::now();
        throttle.record_failure([10, 0, 0, 1].into(), now);
        assert_eq!(throttle.penalty([10, 0, 0, 2].into(), now), Duration::ZERO);
    }

    #[test]
    fn table_stays_bounded() {
        let throttle = PublishThrottle::default();
        let now = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 100) {
            throttle.record_failure(
                IpAddr::from(i.to_be_bytes()),
                now + Duration::from_millis(u64::from(i)),
            );
        }
        let len = throttle.records.lock().map(|r| r.len()).unwrap_or(0);
        assert!(len <= MAX_TRACKED, "{len}");
    }
}
