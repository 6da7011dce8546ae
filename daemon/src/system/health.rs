//! Is the daemon making progress? Each thread that does blocking work (the store, every
//! media pipeline) marks when it starts a piece of work and when it is done with it; the
//! async runtime is probed with a task that must get to run. Work that has been going on
//! for longer than the stall limit means its thread is wedged (a libav call that never
//! returns, a disk that hangs), and the watchdog stops telling systemd that all is well.
//!
//! Waiting for work is not a stall: an idle pipeline blocked on its empty queue is healthy.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

/// Milliseconds since the first use in this process, plus one (0 means "not busy").
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis())
        .unwrap_or(u64::MAX - 1)
        .saturating_add(1)
}

/// One thread's (or the runtime's) current piece of work.
#[derive(Debug)]
pub struct Activity {
    name: String,
    /// When the current piece of work started ([`now_ms`]), or 0 while idle.
    busy_since: AtomicU64,
}

impl Activity {
    pub fn new(name: impl Into<String>) -> Arc<Activity> {
        Arc::new(Activity {
            name: name.into(),
            busy_since: AtomicU64::new(0),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Marks a piece of work as started; it ends when the guard is dropped.
    pub fn begin(&self) -> Busy<'_> {
        self.mark_busy();
        Busy(self)
    }

    /// Marks work as started unless some already is (the earlier start counts).
    pub fn mark_busy(&self) {
        let _ = self
            .busy_since
            .compare_exchange(0, now_ms(), Ordering::AcqRel, Ordering::Acquire);
    }

    pub fn mark_idle(&self) {
        self.busy_since.store(0, Ordering::Release);
    }

    /// How long the current piece of work has been going on, `None` while idle.
    pub fn busy_for(&self) -> Option<Duration> {
        match self.busy_since.load(Ordering::Acquire) {
            0 => None,
            since => Some(Duration::from_millis(now_ms().saturating_sub(since))),
        }
    }
}

/// Work in progress on an [`Activity`]; dropping it marks the activity idle.
#[derive(Debug)]
pub struct Busy<'a>(&'a Activity);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.mark_idle();
    }
}

/// A piece of work that has gone on for too long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    pub activity: String,
    pub busy_for: Duration,
}

impl std::fmt::Display for Stall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} has been busy for {} s",
            self.activity,
            self.busy_for.as_secs()
        )
    }
}

/// Every activity the watchdog looks at. An activity drops out by itself when its owner
/// (a pipeline that ended) drops it.
#[derive(Debug, Default)]
pub struct Health {
    watched: Mutex<Vec<Weak<Activity>>>,
}

impl Health {
    pub fn new() -> Arc<Health> {
        Arc::new(Health::default())
    }

    /// A new activity called `name`, watched from now on.
    pub fn register(&self, name: impl Into<String>) -> Arc<Activity> {
        let activity = Activity::new(name);
        self.watch(&activity);
        activity
    }

    /// Watches an activity made elsewhere (the store's).
    pub fn watch(&self, activity: &Arc<Activity>) {
        let mut watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        watched.retain(|a| a.strong_count() > 0);
        watched.push(Arc::downgrade(activity));
    }

    /// Every watched activity by name, with how long its current piece of work has run
    /// (`None`: idle), as the watchdog sees them (for `/metrics`).
    pub fn activities(&self) -> Vec<(String, Option<Duration>)> {
        let mut watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        watched.retain(|a| a.strong_count() > 0);
        watched
            .iter()
            .filter_map(Weak::upgrade)
            .map(|a| (a.name.clone(), a.busy_for()))
            .collect()
    }

    /// The longest-running piece of work past `limit`, if any.
    pub fn stalled(&self, limit: Duration) -> Option<Stall> {
        let mut watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        watched.retain(|a| a.strong_count() > 0);
        watched
            .iter()
            .filter_map(Weak::upgrade)
            .filter_map(|a| a.busy_for().map(|busy_for| (a, busy_for)))
            .filter(|(_, busy_for)| *busy_for > limit)
            .max_by_key(|(_, busy_for)| *busy_for)
            .map(|(a, busy_for)| Stall {
                activity: a.name.clone(),
                busy_for,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_is_healthy_and_long_work_is_a_stall_until_it_ends() {
        let health = Health::new();
        let media = health.register("media stage");
        assert_eq!(health.stalled(Duration::ZERO), None, "idle");
        let busy = media.begin();
        std::thread::sleep(Duration::from_millis(30));
        let stall = health.stalled(Duration::from_millis(10)).expect("stalled");
        assert_eq!(stall.activity, "media stage");
        assert!(stall.busy_for >= Duration::from_millis(30));
        assert_eq!(
            health.stalled(Duration::from_secs(5)),
            None,
            "under the limit"
        );
        drop(busy);
        assert_eq!(health.stalled(Duration::ZERO), None, "done");
    }

    #[test]
    fn an_outstanding_start_is_not_renewed_and_dropped_activities_are_forgotten() {
        let health = Health::new();
        let runtime = health.register("runtime");
        runtime.mark_busy();
        std::thread::sleep(Duration::from_millis(30));
        runtime.mark_busy();
        assert!(runtime.busy_for().expect("busy") >= Duration::from_millis(30));
        drop(runtime);
        assert_eq!(health.stalled(Duration::ZERO), None);
        let _next = health.register("media next");
        assert_eq!(health.watched.lock().expect("lock").len(), 1, "pruned");
    }
}
