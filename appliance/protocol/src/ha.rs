//! The HA pair in the wire protocol: what the server tells a member about
//! its partner and asks of it (`HaConfig`), and what a member reports about
//! its role (`HaStatus`). Heartbeats between the members never pass through
//! the server; their format is the agent's own (`crate::ha::heartbeat`).

use super::Member;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

/// The UDP port of the heartbeats between a site's members (the stack's
/// security group admits it from the site's CIDRs only).
pub const HEARTBEAT_PORT: u16 = 4800;
/// Allowed heartbeat intervals: fast enough for sub-second detection, never
/// so fast that a hostile server makes members flood each other.
pub const HEARTBEAT_INTERVALS_MS: RangeInclusive<u32> = 20..=5000;
/// Allowed numbers of missed heartbeats before the partner counts as gone.
pub const DEAD_AFTER_BEATS: RangeInclusive<u32> = 2..=50;
/// The defaults the server sends: a dead active is noticed after 300 ms.
pub const DEFAULT_HEARTBEAT_MS: u32 = 100;
pub const DEFAULT_DEAD_AFTER: u32 = 3;

/// How this member runs its site's pair.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaConfig {
    /// The other member, once it registered: where heartbeats go.
    #[serde(default)]
    pub partner: Option<HaPartner>,
    /// Interval between heartbeats (both members send them).
    pub heartbeat_ms: u32,
    /// Heartbeats missed in a row before the partner counts as gone.
    pub dead_after: u32,
    /// A takeover the server asks of this member (its health monitor's
    /// backstop, or an admin's "Fail over now"). The member carries out each
    /// value once: it takes the site's address and routes, and reports the
    /// value back in [`HaStatus::take_over_done`]. Values only grow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub take_over: Option<u64>,
}

/// The other member of the pair, as it registered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaPartner {
    pub member: Member,
    pub instance_id: String,
    pub private_ip: Ipv4Addr,
}

/// Why an HA config was refused (the whole config is refused with it).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HaConfigError {
    #[error("ha.heartbeat_ms: {0} ms; between 20 and 5000 ms are allowed")]
    Interval(u32),
    #[error("ha.dead_after: {0} beats; between 2 and 50 are allowed")]
    DeadAfter(u32),
    #[error("ha.partner: member {0} is this appliance itself")]
    PartnerIsSelf(&'static str),
    #[error(
        "ha.partner.private_ip: {0} is not a usable unicast address, or is this appliance's own"
    )]
    PartnerAddress(Ipv4Addr),
    #[error("ha.partner.instance_id: {0:?} is not an EC2 instance id")]
    PartnerInstance(String),
}

impl HaConfig {
    pub fn validate(&self, member: Member, own_address: Ipv4Addr) -> Result<(), HaConfigError> {
        if !HEARTBEAT_INTERVALS_MS.contains(&self.heartbeat_ms) {
            return Err(HaConfigError::Interval(self.heartbeat_ms));
        }
        if !DEAD_AFTER_BEATS.contains(&self.dead_after) {
            return Err(HaConfigError::DeadAfter(self.dead_after));
        }
        if let Some(p) = &self.partner {
            if p.member == member {
                return Err(HaConfigError::PartnerIsSelf(member.as_str()));
            }
            let a = p.private_ip;
            if a.is_unspecified()
                || a.is_broadcast()
                || a.is_multicast()
                || a.is_loopback()
                || a == own_address
            {
                return Err(HaConfigError::PartnerAddress(a));
            }
            let id = p.instance_id.as_str();
            let hex = id.strip_prefix("i-").unwrap_or("");
            if hex.len() < 8 || hex.len() > 17 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(HaConfigError::PartnerInstance(p.instance_id.clone()));
            }
        }
        Ok(())
    }

    /// How long the partner may stay silent before it counts as gone.
    pub fn dead_after_ms(&self) -> u64 {
        u64::from(self.heartbeat_ms) * u64::from(self.dead_after)
    }
}

/// Why a member has the role it reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HaReason {
    /// Passive until it has applied a config and asked EC2 who holds the
    /// site's address.
    Starting,
    /// Active: EC2 showed the address on this instance when it started.
    HoldsAddress,
    /// Active: the address was free (or on an instance that is gone), so it
    /// claimed it.
    Claimed,
    /// Active: the partner's heartbeats stopped (a failover).
    PartnerSilent,
    /// Active: the server asked for it ([`HaConfig::take_over`]).
    Requested,
    /// Active: the partner handed over (a spot interruption notice, or a
    /// graceful stop).
    HandedOver,
    /// Passive: EC2 shows the address on the partner.
    PartnerActive,
    /// Passive: it was active, and found the address taken by the partner.
    AddressTaken,
    /// Passive: it handed the site to its partner (spot notice).
    HandingOver,
}

impl HaReason {
    /// True for the reasons an active member gives after a failover (the
    /// server records those in the site's history).
    pub fn is_failover(self) -> bool {
        matches!(
            self,
            HaReason::PartnerSilent | HaReason::Requested | HaReason::HandedOver
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            HaReason::Starting => "starting",
            HaReason::HoldsAddress => "holds_address",
            HaReason::Claimed => "claimed",
            HaReason::PartnerSilent => "partner_silent",
            HaReason::Requested => "requested",
            HaReason::HandedOver => "handed_over",
            HaReason::PartnerActive => "partner_active",
            HaReason::AddressTaken => "address_taken",
            HaReason::HandingOver => "handing_over",
        }
    }
}

/// A member's HA state, in every status report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaStatus {
    pub reason: HaReason,
    /// How long it has had its role, in ms (its own monotonic clock; the
    /// server turns this into a time by its own clock).
    pub role_for_ms: u64,
    /// The last [`HaConfig::take_over`] value it carried out.
    #[serde(default)]
    pub take_over_done: Option<u64>,
    /// ms since the partner's last valid heartbeat (None: not heard since
    /// this agent started).
    #[serde(default)]
    pub partner_heard_ms_ago: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ha() -> HaConfig {
        HaConfig {
            partner: Some(HaPartner {
                member: Member::B,
                instance_id: "i-0123456789abcdef0".into(),
                private_ip: Ipv4Addr::new(10, 1, 2, 10),
            }),
            heartbeat_ms: DEFAULT_HEARTBEAT_MS,
            dead_after: DEFAULT_DEAD_AFTER,
            take_over: None,
        }
    }

    #[test]
    fn a_sound_ha_config_is_accepted_and_every_bad_field_is_named() {
        let own = Ipv4Addr::new(10, 1, 1, 10);
        assert_eq!(ha().validate(Member::A, own), Ok(()));
        assert_eq!(ha().dead_after_ms(), 300);
        let mut c = ha();
        c.heartbeat_ms = 5;
        assert_eq!(c.validate(Member::A, own), Err(HaConfigError::Interval(5)));
        let mut c = ha();
        c.dead_after = 1;
        assert_eq!(c.validate(Member::A, own), Err(HaConfigError::DeadAfter(1)));
        assert_eq!(
            ha().validate(Member::B, own),
            Err(HaConfigError::PartnerIsSelf("b"))
        );
        let mut c = ha();
        if let Some(p) = c.partner.as_mut() {
            p.private_ip = own;
        }
        assert_eq!(
            c.validate(Member::A, own),
            Err(HaConfigError::PartnerAddress(own))
        );
        let mut c = ha();
        if let Some(p) = c.partner.as_mut() {
            p.instance_id = "eni-12345678".into();
        }
        assert!(c
            .validate(Member::A, own)
            .unwrap_err()
            .to_string()
            .contains("ha.partner.instance_id"));
    }

    #[test]
    fn only_taking_over_from_a_live_pair_counts_as_a_failover() {
        assert!(HaReason::PartnerSilent.is_failover());
        assert!(HaReason::Requested.is_failover());
        assert!(HaReason::HandedOver.is_failover());
        assert!(!HaReason::Claimed.is_failover());
        assert!(!HaReason::HoldsAddress.is_failover());
        assert_eq!(
            serde_json::to_string(&HaReason::PartnerSilent)
                .ok()
                .as_deref(),
            Some("\"partner_silent\"")
        );
    }
}
