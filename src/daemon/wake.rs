//! When the main loop wakes up: never on a fixed tick, only when something is due — the
//! earliest waiting file can be ready, a rescan or a watchdog ping is due, a status refresh is
//! due while something changes — or when an event, a control message or a finished task
//! arrives. An idle daemon without a watchdog sleeps until its next rescan.
//!
//! Health: the loop no longer beats at a fixed rate, so [`Heartbeat`] holds a promise rather
//! than a pulse: before it sleeps the loop records when it will wake at the latest, and once
//! awake it records "now" until it sleeps again. It is healthy while that promise is less than
//! [`HEALTH_SLACK`] in the past, so a loop wedged in its work (or sleeping past its own
//! deadline) turns unhealthy, and an idle one that sleeps for an hour stays healthy.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// How late the main loop may be on its promise before the health check fails.
pub(super) const HEALTH_SLACK: Duration = Duration::from_secs(30);

/// How often the status line and the waiting metrics are refreshed while files wait or are
/// in progress: their counts and ages change without waking the loop. Idle, they are not.
pub(super) const STATUS_EVERY: Duration = Duration::from_millis(200);

/// Readiness deadlines this close together are met by one wake-up: a burst of files noted
/// within a few milliseconds of each other becomes ready together, not one wake-up each.
pub(super) const COALESCE: Duration = Duration::from_millis(5);

/// The earliest of the deadlines that are set; `None` when none is (sleep until woken).
pub(super) fn earliest(deadlines: impl IntoIterator<Item = Option<Instant>>) -> Option<Instant> {
    deadlines.into_iter().flatten().min()
}

/// Sleeps until `deadline`, or for ever when there is none.
pub(super) async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The main loop's promise to be awake again, shared with the health check (unix seconds;
/// `u64::MAX` while it sleeps with nothing due, to be woken only by an event).
#[derive(Debug)]
pub(super) struct Heartbeat(AtomicU64);

impl Heartbeat {
    /// A heartbeat of a loop awake now.
    pub(super) fn new() -> Heartbeat {
        Heartbeat(AtomicU64::new(unix_seconds()))
    }

    /// The loop is awake and working: it promises to be asleep (or awake again) soon.
    pub(super) fn awake(&self) {
        self.0.store(unix_seconds(), Ordering::Relaxed);
    }

    /// The loop goes to sleep until `deadline` (or until woken, when `None`).
    pub(super) fn asleep_until(&self, deadline: Option<Instant>) {
        let promise = match deadline {
            // Rounded up, so that a loop waking on time is never a second late.
            Some(at) => {
                let ahead = at.saturating_duration_since(Instant::now());
                unix_seconds().saturating_add(ahead.as_secs() + 1)
            }
            None => u64::MAX,
        };
        self.0.store(promise, Ordering::Relaxed);
    }

    /// Whether the loop kept its promise (within [`HEALTH_SLACK`]).
    pub(super) fn healthy(&self) -> bool {
        unix_seconds().saturating_sub(self.0.load(Ordering::Relaxed)) < HEALTH_SLACK.as_secs()
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earliest_deadline_set_wins_and_none_means_sleep_until_woken() {
        let now = Instant::now();
        let later = now + Duration::from_secs(5);
        assert_eq!(earliest([None, Some(later), Some(now)]), Some(now));
        assert_eq!(earliest([None, None]), None);
    }

    #[test]
    fn a_loop_asleep_until_its_deadline_is_healthy_and_one_far_behind_is_not() {
        let beat = Heartbeat::new();
        beat.asleep_until(Some(Instant::now() + Duration::from_secs(3600)));
        assert!(beat.healthy(), "an hour's sleep promised is healthy");
        beat.asleep_until(None);
        assert!(beat.healthy(), "asleep until an event is healthy");
        beat.0.store(unix_seconds() - 31, Ordering::Relaxed);
        assert!(!beat.healthy(), "31 s past its promise");
    }
}
