//! Exponential backoff with full jitter, for a server that is away.

use rand::Rng;
use std::time::Duration;

pub struct Backoff {
    attempt: u32,
    base: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            attempt: 0,
            base,
            max,
        }
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// A random wait in [0, min(max, base * 2^attempt)], growing per call.
    pub fn next_wait(&mut self) -> Duration {
        let cap = self
            .base
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let millis = cap.as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(0..=millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_to_the_cap_and_reset() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let waits: Vec<Duration> = (0..12).map(|_| b.next_wait()).collect();
        assert!(waits.iter().all(|w| *w <= Duration::from_secs(2)));
        assert!(waits[0] <= Duration::from_millis(100));
        // Jitter: later waits are not all equal.
        assert!(waits[6..].windows(2).any(|w| w[0] != w[1]));
        b.reset();
        assert!(b.next_wait() <= Duration::from_millis(100));
    }
}
