//! A step's retry budget. Only failed attempts (errors retried with backoff)
//! count against it and show as tries; a turn that finds AWS still working
//! (a stack in `CREATE_IN_PROGRESS`) is a poll, which is healthy and costs
//! nothing, so a slow stack can never use up the retries a throttle needs.

use std::time::Duration;

/// How often a step may fail, and how long it backs off in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Failed attempts a step may have; the one that reaches it fails the step.
    pub max_failures: i32,
    /// The pause after the first failure; it doubles with every further one.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// About five minutes of backoff in all (2 s doubling to 64 s) before a
    /// step gives up: long enough to ride out throttling or a regional blip.
    fn default() -> Self {
        RetryPolicy {
            max_failures: 10,
            first_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(64),
        }
    }
}

/// What a failed attempt leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Try again after this pause.
    RetryIn(Duration),
    /// The budget is spent: the step fails.
    GiveUp,
}

impl RetryPolicy {
    /// The step failed again after `failed_before` earlier failed attempts
    /// (polls are not among them). `jitter` in `[0, 1)` spreads retries of
    /// many steps apart by adding up to half the backoff.
    pub fn after_failure(&self, failed_before: i32, jitter: f64) -> AfterFailure {
        let failure = failed_before.max(0).saturating_add(1);
        if failure >= self.max_failures {
            return AfterFailure::GiveUp;
        }
        let doublings = (failure - 1).min(30) as u32;
        let backoff = self
            .first_backoff
            .saturating_mul(2u32.saturating_pow(doublings))
            .min(self.max_backoff);
        AfterFailure::RetryIn(backoff + backoff.mul_f64(jitter.clamp(0.0, 0.999) / 2.0))
    }

    /// Transient failures the step may not give up on (the control plane's
    /// own database): the same backoff, without the budget.
    pub fn backoff(&self, failed_before: i32, jitter: f64) -> Duration {
        let unlimited = RetryPolicy {
            max_failures: i32::MAX,
            ..*self
        };
        match unlimited.after_failure(failed_before, jitter) {
            AfterFailure::RetryIn(d) => d,
            AfterFailure::GiveUp => self.max_backoff,
        }
    }
}

/// "1 failed attempt", "3 failed attempts".
pub fn failed_attempts(n: i32) -> String {
    if n == 1 {
        "1 failed attempt".into()
    } else {
        format!("{n} failed attempts")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(d: AfterFailure) -> f64 {
        match d {
            AfterFailure::RetryIn(d) => d.as_secs_f64(),
            AfterFailure::GiveUp => panic!("gave up"),
        }
    }

    #[test]
    fn backoff_doubles_per_failure_up_to_the_cap() {
        let p = RetryPolicy::default();
        let seen: Vec<f64> = (0..9).map(|n| secs(p.after_failure(n, 0.0))).collect();
        assert_eq!(seen, [2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 64.0, 64.0, 64.0]);
    }

    #[test]
    fn the_failure_that_reaches_the_budget_gives_up() {
        let p = RetryPolicy {
            max_failures: 3,
            ..RetryPolicy::default()
        };
        assert!(matches!(p.after_failure(0, 0.5), AfterFailure::RetryIn(_)));
        assert!(matches!(p.after_failure(1, 0.5), AfterFailure::RetryIn(_)));
        assert_eq!(p.after_failure(2, 0.5), AfterFailure::GiveUp);
        assert_eq!(p.after_failure(50, 0.5), AfterFailure::GiveUp);
    }

    #[test]
    fn jitter_adds_at_most_half_the_backoff() {
        let p = RetryPolicy::default();
        for j in [0.0, 0.25, 0.999, 7.0, -1.0] {
            let s = secs(p.after_failure(2, j));
            assert!((8.0..12.0).contains(&s), "jitter {j}: {s}");
        }
    }

    #[test]
    fn database_failures_back_off_without_a_budget() {
        let p = RetryPolicy {
            max_failures: 2,
            ..RetryPolicy::default()
        };
        assert_eq!(p.backoff(0, 0.0), Duration::from_secs(2));
        assert_eq!(p.backoff(1_000, 0.0), Duration::from_secs(64));
        assert_eq!(p.backoff(i32::MAX, 0.0), Duration::from_secs(64));
    }

    #[test]
    fn failed_attempts_are_counted_in_words() {
        assert_eq!(failed_attempts(1), "1 failed attempt");
        assert_eq!(failed_attempts(10), "10 failed attempts");
    }
}
