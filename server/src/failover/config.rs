//! The `ha` part of a member's desired config: its partner (where the
//! heartbeats go), the heartbeat timing, and a takeover the server asks of it.

use super::store;
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use uuid::Uuid;
use vpcmesh_protocol::{HaConfig, HaPartner, Member};

/// Heartbeat timing from the server's settings (checked at start-up
/// against the protocol's ranges).
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub heartbeat_ms: u32,
    pub dead_after: u32,
}

/// Who the config is for.
#[derive(Clone, Copy, Debug)]
pub struct Recipient {
    pub appliance_id: Uuid,
    pub site_id: Uuid,
    pub member: Member,
    pub private_ip: Ipv4Addr,
}

/// What a network's HA pairs give their members' configs: each site's
/// registered appliances and open takeover request, read once per network
/// (in its snapshot, see `appliances::snapshots`), not by every poll.
#[derive(Debug, Default)]
pub struct Pairs {
    members: BTreeMap<Uuid, Vec<store::PairMember>>,
    takeovers: BTreeMap<Uuid, (u64, Uuid)>,
}

impl Pairs {
    pub async fn load(pool: &PgPool, network_id: Uuid) -> Result<Pairs, sqlx::Error> {
        Ok(Pairs {
            members: store::live_members_by_site(pool, network_id).await?,
            takeovers: store::open_takeovers(pool, network_id).await?,
        })
    }

    /// The member's HA config. The partner is the other member's
    /// registered appliance (None until it registers; a replacement shows
    /// up as soon as it registers). The agent refuses a config whose `ha`
    /// it finds unsound as a whole, so a partner it would refuse is left
    /// out rather than costing the member every other change.
    pub fn for_member(&self, to: Recipient, timing: Timing) -> Option<HaConfig> {
        let partner = self
            .members
            .get(&to.site_id)
            .into_iter()
            .flatten()
            .find(|m| m.member != to.member)
            .map(|p| HaPartner {
                member: p.member,
                instance_id: p.instance_id.clone(),
                private_ip: p.private_ip,
            });
        let take_over = self
            .takeovers
            .get(&to.site_id)
            .filter(|(_, appliance)| *appliance == to.appliance_id)
            .map(|(n, _)| *n);
        let mut ha = HaConfig {
            partner,
            heartbeat_ms: timing.heartbeat_ms,
            dead_after: timing.dead_after,
            take_over,
        };
        if let Err(e) = ha.validate(to.member, to.private_ip) {
            tracing::error!(appliance_id = %to.appliance_id, site_id = %to.site_id, error = %e,
                "the partner would make the member refuse its config; leaving it out");
            ha.partner = None;
        }
        if let Err(e) = ha.validate(to.member, to.private_ip) {
            tracing::error!(appliance_id = %to.appliance_id, error = %e, "no HA config: its timing is unsound");
            return None;
        }
        Some(ha)
    }
}
