//! The retry schedule of one file: how long to wait before the next attempt, and when to give
//! up.
//!
//! The exponential curve (initial delay, multiplier, cap, attempt count) comes from `backon`.
//! Its own jitter only ever lengthens a delay, so the `[retry] jitter` randomisation factor is
//! applied here instead: a delay `d` becomes uniform in `[d·(1−jitter), d·(1+jitter)]`, the
//! classic definition operators know from other backoff libraries. A server's `Retry-After` is
//! a floor: the wait is never shorter than what the server asked for.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

use crate::config::RetryPolicy;

/// The remaining schedule of one file.
#[derive(Debug)]
pub struct Schedule {
    curve: ExponentialBackoff,
    jitter: f64,
    max_elapsed: Duration,
}

/// Why no further attempt will be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhausted {
    /// `max_attempts` attempts were made.
    Attempts(u32),
    /// The next attempt would start after `max_elapsed`.
    Elapsed(Duration),
}

impl std::fmt::Display for Exhausted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exhausted::Attempts(n) => write!(f, "gave up after {n} attempts (retry.max_attempts)"),
            Exhausted::Elapsed(d) => write!(
                f,
                "gave up because retrying would pass {} (retry.max_elapsed)",
                humantime::format_duration(*d)
            ),
        }
    }
}

impl Schedule {
    /// A schedule for a file that has already had `attempts_made` attempts (after a restart the
    /// curve continues where it was).
    pub fn new(policy: &RetryPolicy, attempts_made: u32) -> Schedule {
        let mut curve = ExponentialBuilder::new()
            .with_min_delay(policy.initial_delay)
            .with_max_delay(policy.max_delay)
            .with_factor(policy.multiplier as f32)
            .with_max_times(policy.max_attempts.saturating_sub(1) as usize)
            .build();
        // One delay follows each attempt made, so a resumed file's next delay is the one after
        // its attempt `attempts_made + 1`.
        for _ in 0..attempts_made {
            curve.next();
        }
        Schedule {
            curve,
            jitter: policy.jitter,
            max_elapsed: policy.max_elapsed,
        }
    }

    /// The wait before the next attempt, given the attempts made so far, the time spent on the
    /// file since it was claimed and the server's `Retry-After`, or why there is none.
    pub fn next_delay(
        &mut self,
        attempts_made: u32,
        elapsed: Duration,
        retry_after: Option<Duration>,
    ) -> Result<Duration, Exhausted> {
        let Some(base) = self.curve.next() else {
            return Err(Exhausted::Attempts(attempts_made));
        };
        let factor = 1.0 + self.jitter * (2.0 * fastrand::f64() - 1.0);
        let mut delay = base.mul_f64(factor.max(0.0));
        if let Some(floor) = retry_after {
            delay = delay.max(floor);
        }
        if elapsed + delay > self.max_elapsed {
            return Err(Exhausted::Elapsed(self.max_elapsed));
        }
        Ok(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            multiplier: 2.0,
            jitter: 0.0,
            max_attempts: 6,
            max_elapsed: Duration::from_secs(3600),
        }
    }

    #[test]
    fn delays_grow_to_the_cap_and_stop_after_max_attempts() {
        let mut s = Schedule::new(&policy(), 0);
        let mut delays = Vec::new();
        let mut attempts = 1;
        while let Ok(d) = s.next_delay(attempts, Duration::ZERO, None) {
            delays.push(d.as_millis());
            attempts += 1;
        }
        assert_eq!(delays, vec![100, 200, 400, 800, 1000]);
        assert_eq!(attempts, 6);
        assert_eq!(
            s.next_delay(6, Duration::ZERO, None),
            Err(Exhausted::Attempts(6))
        );
    }

    #[test]
    fn resumed_schedule_continues_the_curve() {
        // Three attempts made before a restart: the fourth follows at once, then the delay
        // that follows a fourth attempt.
        let mut s = Schedule::new(&policy(), 3);
        assert_eq!(
            s.next_delay(4, Duration::ZERO, None).map(|d| d.as_millis()),
            Ok(800)
        );
    }

    /// Regression: a restart used to grant one attempt more than `max_attempts`.
    #[test]
    fn a_resumed_file_gets_no_more_than_max_attempts() {
        // max_attempts = 6; five made before the restart, so the sixth is the last.
        let mut s = Schedule::new(&policy(), 5);
        assert_eq!(
            s.next_delay(6, Duration::ZERO, None),
            Err(Exhausted::Attempts(6))
        );
    }

    #[test]
    fn retry_after_is_a_floor() {
        let mut s = Schedule::new(&policy(), 0);
        assert_eq!(
            s.next_delay(1, Duration::ZERO, Some(Duration::from_secs(1))),
            Ok(Duration::from_secs(1))
        );
    }

    #[test]
    fn max_elapsed_stops_retries() {
        let mut p = policy();
        p.max_elapsed = Duration::from_millis(150);
        let mut s = Schedule::new(&p, 0);
        assert_eq!(
            s.next_delay(1, Duration::from_millis(100), None),
            Err(Exhausted::Elapsed(Duration::from_millis(150)))
        );
    }

    #[test]
    fn jitter_stays_within_the_factor() {
        let mut p = policy();
        p.jitter = 0.5;
        p.max_attempts = 2;
        for _ in 0..200 {
            let d = Schedule::new(&p, 0)
                .next_delay(1, Duration::ZERO, None)
                .map(|d| d.as_millis())
                .unwrap_or(0);
            assert!((50..=150).contains(&d), "{d}");
        }
    }
}
