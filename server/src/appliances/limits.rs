//! What one caller may ask of the appliance API, per server process:
//! registrations and unknown credentials per client address, requests and
//! waiting config long-polls per appliance. The numbers are configuration
//! (`--appliance-*` flags); an agent within them never meets a limit.

use super::ApplianceError;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use uuid::Uuid;

const WINDOW: Duration = Duration::from_secs(60);
/// Counters past their window are swept once a map holds this many.
const SWEEP_AT: usize = 4096;

/// The numbers, per minute unless said otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSettings {
    /// Config long-polls one appliance may have waiting at once.
    pub polls_per_appliance: u32,
    /// Requests of one appliance (polls, status, probes, generations).
    pub requests_per_appliance: u32,
    /// Registration attempts from one address.
    pub registrations_per_address: u32,
    /// Missing or unknown credentials from one address; past it, unknown
    /// credentials from that address are refused before any lookup.
    pub failed_credentials_per_address: u32,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            polls_per_appliance: 2,
            requests_per_appliance: 600,
            registrations_per_address: 30,
            failed_credentials_per_address: 20,
        }
    }
}

/// Fixed one-minute windows per key.
struct Windows<K>(HashMap<K, (Instant, u32)>);

impl<K: Hash + Eq + Copy> Windows<K> {
    fn new() -> Self {
        Windows(HashMap::new())
    }

    /// Counts one hit; `Err(seconds to wait)` once `limit` hits are in the window.
    fn hit(&mut self, key: K, limit: u32, now: Instant) -> Result<(), u64> {
        self.sweep(now);
        let (start, count) = self.0.entry(key).or_insert((now, 0));
        if now.duration_since(*start) >= WINDOW {
            *start = now;
            *count = 0;
        }
        if *count >= limit {
            return Err(retry_after(*start, now));
        }
        *count += 1;
        Ok(())
    }

    /// `Err(seconds to wait)` when `key` used up `limit` in its window.
    fn check(&self, key: K, limit: u32, now: Instant) -> Result<(), u64> {
        match self.0.get(&key) {
            Some((start, count)) if now.duration_since(*start) < WINDOW && *count >= limit => {
                Err(retry_after(*start, now))
            }
            _ => Ok(()),
        }
    }

    fn sweep(&mut self, now: Instant) {
        if self.0.len() >= SWEEP_AT {
            self.0
                .retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        }
    }
}

fn retry_after(start: Instant, now: Instant) -> u64 {
    (start + WINDOW)
        .saturating_duration_since(now)
        .as_secs()
        .max(1)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while counting leaves a counter, not a broken invariant.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub struct Limits {
    settings: LimitSettings,
    registrations: Mutex<Windows<IpAddr>>,
    failures: Mutex<Windows<IpAddr>>,
    requests: Mutex<Windows<Uuid>>,
    polls: Mutex<HashMap<Uuid, u32>>,
}

impl Limits {
    pub fn new(settings: LimitSettings) -> Arc<Self> {
        Arc::new(Limits {
            settings,
            registrations: Mutex::new(Windows::new()),
            failures: Mutex::new(Windows::new()),
            requests: Mutex::new(Windows::new()),
            polls: Mutex::new(HashMap::new()),
        })
    }

    pub fn registration(&self, from: IpAddr) -> Result<(), ApplianceError> {
        lock(&self.registrations)
            .hit(
                from,
                self.settings.registrations_per_address,
                Instant::now(),
            )
            .map_err(|retry_after| {
                tracing::warn!(client_ip = %from, "registrations limited");
                ApplianceError::RateLimited {
                    what: "registration attempts from this address",
                    retry_after,
                }
            })
    }

    /// Before an unknown credential is looked up.
    pub fn lookup_allowed(&self, from: IpAddr) -> Result<(), ApplianceError> {
        lock(&self.failures)
            .check(
                from,
                self.settings.failed_credentials_per_address,
                Instant::now(),
            )
            .map_err(|retry_after| ApplianceError::RateLimited {
                what: "unknown credentials from this address",
                retry_after,
            })
    }

    pub fn failed_credential(&self, from: IpAddr) {
        // Counted up to the limit; the check refuses the rest.
        let _ = lock(&self.failures).hit(
            from,
            self.settings.failed_credentials_per_address,
            Instant::now(),
        );
    }

    pub fn request(&self, appliance: Uuid) -> Result<(), ApplianceError> {
        lock(&self.requests)
            .hit(
                appliance,
                self.settings.requests_per_appliance,
                Instant::now(),
            )
            .map_err(|retry_after| {
                tracing::warn!(appliance_id = %appliance, "appliance requests limited");
                ApplianceError::RateLimited {
                    what: "requests of this appliance",
                    retry_after,
                }
            })
    }

    /// A place among the appliance's waiting long-polls, given back on drop.
    pub fn poll(self: &Arc<Self>, appliance: Uuid) -> Result<PollSlot, ApplianceError> {
        let mut polls = lock(&self.polls);
        let waiting = polls.entry(appliance).or_insert(0);
        if *waiting >= self.settings.polls_per_appliance {
            return Err(ApplianceError::TooManyPolls(
                self.settings.polls_per_appliance,
            ));
        }
        *waiting += 1;
        Ok(PollSlot {
            limits: self.clone(),
            appliance,
        })
    }

    /// Long-polls waiting in this process, over all appliances.
    pub fn polls_waiting(&self) -> u64 {
        lock(&self.polls).values().map(|n| u64::from(*n)).sum()
    }
}

pub struct PollSlot {
    limits: Arc<Limits>,
    appliance: Uuid,
}

impl Drop for PollSlot {
    fn drop(&mut self) {
        let mut polls = lock(&self.limits.polls);
        if let Some(n) = polls.get_mut(&self.appliance) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                polls.remove(&self.appliance);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_refuses_past_its_limit_and_opens_again_a_minute_later() {
        let mut w = Windows::new();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(w.hit('a', 3, t0), Ok(()));
        }
        assert_eq!(w.hit('a', 3, t0 + Duration::from_secs(15)), Err(45));
        assert_eq!(w.check('a', 3, t0 + Duration::from_secs(59)), Err(1));
        assert_eq!(w.hit('b', 3, t0), Ok(()), "another key has its own window");
        assert_eq!(w.check('a', 3, t0 + WINDOW), Ok(()));
        assert_eq!(w.hit('a', 3, t0 + WINDOW), Ok(()));
    }

    #[test]
    fn old_windows_are_swept_once_the_map_is_large() {
        let mut w = Windows::new();
        let t0 = Instant::now();
        for k in 0..SWEEP_AT as u32 {
            w.hit(k, 1, t0).expect("first hit");
        }
        w.hit(u32::MAX, 1, t0 + WINDOW).expect("first hit");
        assert_eq!(w.0.len(), 1, "only the fresh window is left");
    }

    #[test]
    fn poll_slots_are_given_back_when_dropped() {
        let limits = Limits::new(LimitSettings {
            polls_per_appliance: 2,
            ..LimitSettings::default()
        });
        let id = Uuid::new_v4();
        let first = limits.poll(id).expect("first");
        let _second = limits.poll(id).expect("second");
        assert!(matches!(
            limits.poll(id),
            Err(ApplianceError::TooManyPolls(2))
        ));
        assert!(
            limits.poll(Uuid::new_v4()).is_ok(),
            "others are not held up"
        );
        drop(first);
        let _third = limits.poll(id).expect("a slot was given back");
        assert_eq!(limits.polls_waiting(), 2);
    }
}
