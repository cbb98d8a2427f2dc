//! Who of a site's two members is active, decided from what each member can
//! see: its partner's heartbeats, EC2's answer to "who holds the site's
//! address", the server's takeover requests and a spot interruption notice.
//! Pure: the runtime (`super::run`) feeds events in and carries out the
//! actions that come back, so every rule is unit-tested here.
//!
//! The rules:
//! - EC2 is the arbiter. A member becomes active only through an action
//!   that moves the address to it (or finding it already there), and an
//!   active member that finds the address on its partner becomes passive.
//! - A passive member takes over when its partner's heartbeats stop, but
//!   only if it has heard the partner since it became passive ("armed"):
//!   a member that lost the address while the heartbeat path between the
//!   two is cut does not take it back (no flapping, no fail-back). The
//!   server's takeover request is the way out of that state. An agent that
//!   restarts while armed stays armed (see `resume_armed`): a partner that
//!   dies while this member's agent restarts is still failed over.
//! - While its partner is silent, an active member asks EC2 every interval
//!   whether it still holds the address, so two members never both believe
//!   they are active for longer than about one interval plus one EC2 call.
//! - A free address (or one on an instance that is neither member) is
//!   claimed by member A at once and by member B only after `CLAIM_GRACE`,
//!   and never from a partner heard active.
//! - A member given a spot notice while active asks its partner (in its
//!   heartbeats) to take over, and yields once the partner is active.
//! - An active member whose agent restarts says so in its last beats; its
//!   kernel forwards on meanwhile, so its partner holds its silence for
//!   `RESTART_GRACE` (a restart that never comes back is still failed over).

use crate::protocol::{HaReason, HaRole, Member};
use std::time::{Duration, Instant};

/// Member B leaves a free address to member A this long after starting.
pub const CLAIM_GRACE: Duration = Duration::from_secs(3);
/// How often a member asks EC2 who holds the address when nothing suggests
/// a change (drift: an address moved by hand, a partner gone without a
/// word while this member was not armed).
pub const CHECK_EVERY: Duration = Duration::from_secs(10);
/// A partner whose agent said it restarts may be silent this long (systemd
/// starts it again 2 s later; it fetches its config and beats again),
/// while its kernel forwards on: less than the server's backstop (25 s).
pub const RESTART_GRACE: Duration = Duration::from_secs(20);
/// After a failed takeover, the next attempt waits this long.
pub const RETRY_AFTER: Duration = Duration::from_millis(500);

/// Who EC2 says holds the site's address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    Me,
    Partner,
    /// Nobody, or an instance that is neither member (gone, or stopped).
    Elsewhere(Option<String>),
}

/// What the runtime is to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Move the address here, then own the routes.
    TakeOver(HaReason),
    /// Ask EC2 who holds the address, and call `on_holder`.
    CheckHolder,
}

/// The operation in flight, if any (one at a time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    TakeOver(HaReason, Option<u64>),
    Check,
}

/// What the applied config says about the pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub interval: Duration,
    pub dead_after: Duration,
    /// The config names the partner (it has registered).
    pub partner_known: bool,
    pub take_over: Option<u64>,
}

#[derive(Debug)]
pub struct Pair {
    me: Member,
    role: HaRole,
    reason: HaReason,
    since: Instant,
    started: Instant,
    /// Static roles (member A active): the server sends no HA config.
    legacy: bool,
    partner_known: bool,
    interval: Duration,
    dead_after: Duration,
    last_heard: Option<Instant>,
    partner_active: bool,
    partner_handover: bool,
    armed: bool,
    /// Armed before this agent restarted (see `resume_armed`).
    resumed_armed: bool,
    ready: bool,
    leaving: bool,
    take_over_done: Option<u64>,
    requested: Option<u64>,
    pending: Option<Pending>,
    next_check: Instant,
    /// While the partner is silent, an active member checks this often.
    next_fast_check: Instant,
    /// The partner's agent said it restarts: its silence until then is
    /// no failure.
    partner_restarting_until: Option<Instant>,
    /// A beat came since the last check it prompted.
    beat_unchecked: bool,
    not_before: Instant,
    /// After this member's own stall, the partner's silence counts only
    /// from here.
    quiet_until: Option<Instant>,
}

impl Pair {
    pub fn new(me: Member, now: Instant) -> Pair {
        Pair {
            me,
            role: HaRole::Passive,
            reason: HaReason::Starting,
            since: now,
            started: now,
            legacy: false,
            partner_known: false,
            interval: Duration::from_millis(100),
            dead_after: Duration::from_millis(300),
            last_heard: None,
            partner_active: false,
            partner_handover: false,
            armed: false,
            resumed_armed: false,
            ready: false,
            leaving: false,
            take_over_done: None,
            requested: None,
            pending: None,
            next_check: now,
            next_fast_check: now,
            partner_restarting_until: None,
            beat_unchecked: false,
            not_before: now,
            quiet_until: None,
        }
    }

    pub fn role(&self) -> HaRole {
        self.role
    }
    pub fn reason(&self) -> HaReason {
        self.reason
    }
    pub fn since(&self) -> Instant {
        self.since
    }
    pub fn take_over_done(&self) -> Option<u64> {
        self.take_over_done
    }
    pub fn last_heard(&self) -> Option<Instant> {
        self.last_heard
    }
    pub fn leaving(&self) -> bool {
        self.leaving
    }
    /// A passive member that heard its partner since it became passive:
    /// the partner's silence now means a failover.
    pub fn armed(&self) -> bool {
        self.role == HaRole::Passive && self.armed
    }
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// This member was armed when its agent last stopped, moments ago (its
    /// state file says so): once its config names the partner it is armed
    /// again, and the partner's silence counts from then, so the partner
    /// gets one dead time to be heard. Without this, a partner that dies
    /// while this agent restarts is never failed over (this member never
    /// hears it, so never arms), and only the server's backstop saves the
    /// site.
    pub fn resume_armed(&mut self) {
        self.resumed_armed = true;
    }

    /// A config was applied: this member forwards now. `ha` is None when
    /// the server sends no HA config (static roles: member A active).
    pub fn configure(&mut self, ha: Option<Settings>, now: Instant) {
        if !self.ready {
            // Member B's grace runs from when it can forward, as A's claim does.
            self.started = now;
        }
        self.ready = true;
        match ha {
            None => {
                self.resumed_armed = false;
                self.legacy = true;
                self.partner_known = false;
            }
            Some(Settings {
                interval,
                dead_after,
                partner_known,
                take_over,
            }) => {
                self.legacy = false;
                self.interval = interval;
                self.dead_after = dead_after;
                // Only the first config after the restart can resume.
                let resumed = std::mem::take(&mut self.resumed_armed);
                if !partner_known {
                    self.last_heard = None;
                    self.armed = false;
                } else if resumed {
                    self.armed = true;
                    self.last_heard = self.last_heard.or(Some(now));
                }
                self.partner_known = partner_known;
                self.requested = take_over;
            }
        }
    }

    /// This member's own loop ran late (its host was busy): the partner's
    /// beats may be late too, so its silence counts only after one more
    /// `dead_after`.
    pub fn on_stall(&mut self, now: Instant) {
        self.quiet_until = Some(now + self.dead_after);
    }

    fn silent(&self, now: Instant) -> bool {
        if self.quiet_until.is_some_and(|q| now < q)
            || self.partner_restarting_until.is_some_and(|u| now < u)
        {
            return false;
        }
        self.last_heard
            .is_none_or(|t| now.duration_since(t) > self.dead_after)
    }

    fn start(&mut self, p: Pending) -> Option<Action> {
        self.pending = Some(p);
        Some(match p {
            Pending::TakeOver(r, _) => Action::TakeOver(r),
            Pending::Check => Action::CheckHolder,
        })
    }

    fn become_(&mut self, role: HaRole, reason: HaReason, now: Instant) {
        if self.role != role {
            self.since = now;
            self.armed = false;
        }
        self.role = role;
        self.reason = reason;
    }

    /// A valid heartbeat from the partner.
    pub fn on_beat(&mut self, now: Instant, active: bool, handover: bool) -> Option<Action> {
        self.last_heard = Some(now);
        self.partner_active = active;
        self.partner_handover = handover;
        self.partner_restarting_until = None;
        self.beat_unchecked = true;
        if self.role == HaRole::Passive {
            self.armed = true;
        }
        self.next(now)
    }

    /// The partner's last beat said its agent restarts (after `on_beat`):
    /// its silence counts only after [`RESTART_GRACE`]; its next beat, from
    /// the new process, ends the grace.
    pub fn on_partner_restarting(&mut self, now: Instant) {
        self.partner_restarting_until = Some(now + RESTART_GRACE);
    }

    /// A spot interruption notice for this instance.
    pub fn on_leaving(&mut self, now: Instant) -> Option<Action> {
        self.leaving = true;
        self.next(now)
    }

    /// What to do now (called every interval, and after every event).
    pub fn next(&mut self, now: Instant) -> Option<Action> {
        if !self.ready || self.pending.is_some() || now < self.not_before {
            return None;
        }
        if self.legacy {
            return match (self.me, self.role) {
                (Member::A, HaRole::Passive) => {
                    self.start(Pending::TakeOver(HaReason::Claimed, None))
                }
                _ => None,
            };
        }
        if let Some(n) = self.requested {
            if self.take_over_done.is_none_or(|d| n > d) {
                return self.start(Pending::TakeOver(HaReason::Requested, Some(n)));
            }
        }
        let heard_live = !self.silent(now);
        match self.role {
            HaRole::Passive => {
                if self.reason == HaReason::Starting {
                    self.next_check = now + CHECK_EVERY;
                    return self.start(Pending::Check);
                }
                if heard_live && self.partner_handover && !self.leaving {
                    return self.start(Pending::TakeOver(HaReason::HandedOver, None));
                }
                if self.partner_known && self.armed && !heard_live && !self.leaving {
                    return self.start(Pending::TakeOver(HaReason::PartnerSilent, None));
                }
            }
            HaRole::Active => {
                // The partner says it is active too (it took over, or we
                // are handing over and it has): EC2 decides at once.
                if heard_live && self.partner_active && self.beat_unchecked {
                    self.beat_unchecked = false;
                    return self.start(Pending::Check);
                }
                if self.partner_known && !heard_live {
                    if now >= self.next_fast_check {
                        self.next_fast_check = now + self.interval;
                        return self.start(Pending::Check);
                    }
                    return None;
                }
            }
        }
        if now >= self.next_check {
            self.next_check = now + CHECK_EVERY;
            return self.start(Pending::Check);
        }
        None
    }

    /// EC2's answer to `CheckHolder`.
    pub fn on_holder(&mut self, now: Instant, holder: Option<Holder>) -> Option<Action> {
        self.pending = None;
        let Some(holder) = holder else {
            // EC2 did not answer: ask again after a pause.
            self.not_before = now + RETRY_AFTER;
            return None;
        };
        match holder {
            Holder::Me => {
                if self.role == HaRole::Passive {
                    self.become_(HaRole::Active, HaReason::HoldsAddress, now);
                }
            }
            Holder::Partner => {
                let reason = match (self.role, self.reason) {
                    (HaRole::Active, _) if self.leaving => HaReason::HandingOver,
                    (HaRole::Active, _) => HaReason::AddressTaken,
                    (HaRole::Passive, HaReason::Starting) => HaReason::PartnerActive,
                    (HaRole::Passive, r) => r,
                };
                self.become_(HaRole::Passive, reason, now);
                if self.reason == HaReason::PartnerActive && !self.silent(now) {
                    self.armed = true;
                }
            }
            Holder::Elsewhere(_) => {
                let partner_holds_on = !self.silent(now) && self.partner_active;
                let wait_for_a = self.me == Member::B
                    && self.partner_known
                    && now.duration_since(self.started) < CLAIM_GRACE;
                // An active member whose address went to nobody takes it
                // back; a passive one claims it unless its partner may.
                if self.role == HaRole::Active
                    || (!partner_holds_on && !wait_for_a && !self.leaving)
                {
                    return self.start(Pending::TakeOver(HaReason::Claimed, None));
                }
                if self.reason == HaReason::Starting {
                    self.reason = HaReason::PartnerActive;
                }
                self.next_check = now + Duration::from_millis(500);
            }
        }
        self.next(now)
    }

    /// The outcome of `TakeOver`: the address is here now (`true`).
    pub fn on_took_over(&mut self, now: Instant, moved: bool) -> Option<Action> {
        let Some(Pending::TakeOver(reason, request)) = self.pending.take() else {
            return self.next(now);
        };
        if !moved {
            self.not_before = now + RETRY_AFTER;
            return None;
        }
        if let Some(n) = request {
            self.take_over_done = Some(n);
        }
        let reason = if self.role == HaRole::Active && reason == HaReason::Requested {
            // Already active: the request changed nothing.
            self.reason
        } else {
            reason
        };
        self.become_(HaRole::Active, reason, now);
        self.next_check = now + CHECK_EVERY;
        self.next(now)
    }
}

#[cfg(test)]
mod tests;
