//! The periodic drift check. Between config versions the agent plans its
//! last applied config against the kernel again, on a timer, and puts back
//! what someone deleted or changed behind its back (a policy flushed by
//! hand, a route removed, SAs lost): a kernel that drifted does not wait
//! for the next config to be whole again. What it repaired goes into the
//! status report ([`Repairs`]), the log and the metrics.

use crate::protocol::Repairs;
use std::time::{Duration, Instant};

/// How often the kernel is checked when no config came (`--drift-check-secs`).
pub const CHECK_EVERY: Duration = Duration::from_secs(30);

/// When the next check is due, and what the checks repaired so far.
#[derive(Debug)]
pub struct DriftCheck {
    every: Duration,
    last: Instant,
    /// The check that found lost SAs asked for a fresh generation: the
    /// apply of that generation completes its repair.
    renewing: bool,
    repaired: Option<Repaired>,
}

/// The repairs since the agent started (see [`Repairs`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repaired {
    count: u64,
    last_changes: u32,
    at: Instant,
}

impl Repaired {
    /// As the status report says it at `now`.
    pub fn report(&self, now: Instant) -> Repairs {
        Repairs {
            count: self.count,
            last_changes: self.last_changes,
            last_ago_ms: now.saturating_duration_since(self.at).as_millis() as u64,
        }
    }
}

impl DriftCheck {
    pub fn new(every: Duration, now: Instant) -> Self {
        DriftCheck {
            every,
            last: now,
            renewing: false,
            repaired: None,
        }
    }

    /// How long a config poll may wait at `now` (at most `longest`): until
    /// the check is due, but at least a second.
    pub fn poll_wait(&self, longest: Duration, now: Instant) -> Duration {
        let due_in = (self.last + self.every).saturating_duration_since(now);
        due_in.clamp(Duration::from_secs(1), longest.max(Duration::from_secs(1)))
    }

    pub fn due(&self, now: Instant) -> bool {
        now >= self.last + self.every
    }

    /// The kernel was planned against the applied config at `now` (a check,
    /// or any config applied: that plans the whole kernel too).
    pub fn checked(&mut self, now: Instant) {
        self.last = now;
    }

    /// A check found lost SAs; the fresh generation's apply repairs them.
    pub fn renewing(&mut self) {
        self.renewing = true;
    }

    /// Whether an apply of `changes` kernel changes was a repair: one from a
    /// check that changed something, or the apply that completes a renewal
    /// a check asked for. Records it at `now` if so.
    pub fn applied(&mut self, from_check: bool, changes: usize, now: Instant) -> Option<Repaired> {
        let renewed = std::mem::take(&mut self.renewing);
        self.checked(now);
        if !(renewed || (from_check && changes > 0)) {
            return None;
        }
        let last_changes = if from_check {
            u32::try_from(changes).unwrap_or(u32::MAX)
        } else {
            0
        };
        let r = Repaired {
            count: self.repaired.map_or(1, |r| r.count + 1),
            last_changes,
            at: now,
        };
        self.repaired = Some(r);
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY: Duration = Duration::from_secs(30);

    #[test]
    fn polls_wait_until_the_check_is_due_and_the_check_comes_on_time() {
        let t0 = Instant::now();
        let d = DriftCheck::new(EVERY, t0);
        assert_eq!(
            d.poll_wait(Duration::from_secs(25), t0),
            Duration::from_secs(25)
        );
        let t = t0 + Duration::from_secs(20);
        assert_eq!(
            d.poll_wait(Duration::from_secs(25), t),
            Duration::from_secs(10)
        );
        assert!(!d.due(t));
        let late = t0 + Duration::from_secs(31);
        assert!(d.due(late));
        assert_eq!(
            d.poll_wait(Duration::from_secs(25), late),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn any_apply_postpones_the_check() {
        let t0 = Instant::now();
        let mut d = DriftCheck::new(EVERY, t0);
        let t = t0 + Duration::from_secs(29);
        assert_eq!(
            d.applied(false, 12, t),
            None,
            "a new config is not a repair"
        );
        assert!(!d.due(t0 + Duration::from_secs(31)));
        assert!(d.due(t + EVERY));
    }

    #[test]
    fn only_checks_that_changed_something_and_completed_renewals_are_repairs() {
        let t0 = Instant::now();
        let mut d = DriftCheck::new(EVERY, t0);
        assert_eq!(d.applied(true, 0, t0), None, "a clean kernel");
        let first = d.applied(true, 3, t0).expect("a repair");
        assert_eq!(
            first.report(t0 + Duration::from_millis(1500)),
            Repairs {
                count: 1,
                last_changes: 3,
                last_ago_ms: 1500
            }
        );
        d.renewing();
        let renewed = d
            .applied(false, 40, t0 + Duration::from_secs(1))
            .expect("the fresh generation completes the repair");
        assert_eq!(renewed.report(t0 + Duration::from_secs(1)).count, 2);
        assert_eq!(renewed.report(t0 + Duration::from_secs(1)).last_changes, 0);
        assert_eq!(d.applied(false, 5, t0), None, "renewals count once");
    }
}
