//! When the agent sends a status report. It reads its tunnels from the
//! kernel every [`OBSERVE_EVERY`] and reports at once when a tunnel's
//! state changed since the last report the server took (a tunnel that
//! first carries traffic shows *up* on the console within a second, not
//! at the next periodic report), when asked to (a config was applied, the
//! HA role moved), and otherwise every `every` (counters, liveness). A
//! report that failed is tried again only at the next period: a server
//! that is away is not asked once a second.

use crate::protocol::{TunnelState, TunnelStatus};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How often the tunnels are read from the kernel (one SA dump).
pub const OBSERVE_EVERY: Duration = Duration::from_secs(1);

/// Each tunnel's state, by peer site, in the config's order.
type States = Vec<(Uuid, TunnelState)>;

pub fn states(tunnels: &[TunnelStatus]) -> States {
    tunnels.iter().map(|t| (t.peer_site, t.state)).collect()
}

#[derive(Debug)]
pub struct Cadence {
    every: Duration,
    last_try: Option<Instant>,
    /// What the server last took; `None` before the first delivery.
    delivered: Option<States>,
    last_failed: bool,
}

impl Cadence {
    pub fn new(every: Duration) -> Self {
        Cadence {
            every,
            last_try: None,
            delivered: None,
            last_failed: false,
        }
    }

    /// Whether a report with `states` should go now; `asked` when
    /// something asked for one.
    pub fn due(&self, states: &States, asked: bool, now: Instant) -> bool {
        let Some(last_try) = self.last_try else {
            return true;
        };
        let period_over = now.saturating_duration_since(last_try) >= self.every;
        let changed = self.delivered.as_ref() != Some(states);
        asked || period_over || (changed && !self.last_failed)
    }

    /// A report with `states` was tried at `now`; `delivered` if the
    /// server took it.
    pub fn tried(&mut self, states: States, delivered: bool, now: Instant) {
        self.last_try = Some(now);
        self.last_failed = !delivered;
        if delivered {
            self.delivered = Some(states);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn the_first_report_goes_at_once_then_one_per_period_while_nothing_changes() {
        let every = Duration::from_secs(10);
        let mut c = Cadence::new(every);
        let t0 = Instant::now();
        let pending = vec![(site(1), TunnelState::Pending)];
        assert!(c.due(&pending, false, t0));
        c.tried(pending.clone(), true, t0);
        for s in 1..10 {
            assert!(
                !c.due(&pending, false, t0 + Duration::from_secs(s)),
                "at {s} s"
            );
        }
        assert!(c.due(&pending, false, t0 + every));
    }

    #[test]
    fn a_tunnel_that_comes_up_is_reported_at_the_next_look_not_the_next_period() {
        let mut c = Cadence::new(Duration::from_secs(10));
        let t0 = Instant::now();
        c.tried(
            vec![
                (site(1), TunnelState::Pending),
                (site(2), TunnelState::Pending),
            ],
            true,
            t0,
        );
        let one_up = vec![(site(1), TunnelState::Up), (site(2), TunnelState::Pending)];
        let t1 = t0 + OBSERVE_EVERY;
        assert!(c.due(&one_up, false, t1));
        c.tried(one_up.clone(), true, t1);
        // Reported: nothing more until the next change or the period.
        assert!(!c.due(&one_up, false, t1 + OBSERVE_EVERY));
        let down = vec![
            (site(1), TunnelState::Down),
            (site(2), TunnelState::Pending),
        ];
        assert!(c.due(&down, false, t1 + OBSERVE_EVERY));
    }

    #[test]
    fn a_failed_report_is_tried_again_at_the_period_even_if_states_change() {
        let every = Duration::from_secs(10);
        let mut c = Cadence::new(every);
        let t0 = Instant::now();
        let up = vec![(site(1), TunnelState::Up)];
        c.tried(up.clone(), false, t0);
        let rekeying = vec![(site(1), TunnelState::Rekeying)];
        assert!(!c.due(&up, false, t0 + OBSERVE_EVERY));
        assert!(!c.due(&rekeying, false, t0 + OBSERVE_EVERY));
        assert!(c.due(&rekeying, false, t0 + every));
        // Asked for (a config was applied): at once, failed or not.
        assert!(c.due(&rekeying, true, t0 + OBSERVE_EVERY));
    }
}
