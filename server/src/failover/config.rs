//! The `ha` part of a member's desired config: its partner (where the
//! heartbeats go), the heartbeat timing, and a takeover the server asks of it.

use super::store;
use appliance::protocol::{HaConfig, HaPartner, Member};
use sqlx::PgPool;
use std::net::Ipv4Addr;
use uuid::Uuid;

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

/// The member's HA config. The partner is the other member's registered
/// appliance (None until it registers; a replacement shows up as soon as
/// it registers). The agent refuses a config whose `ha` it finds unsound as
/// a whole, so a partner it would refuse is left out rather than costing
/// the member every other change.
pub async fn for_member(
    pool: &PgPool,
    to: Recipient,
    timing: Timing,
) -> Result<Option<HaConfig>, sqlx::Error> {
    let members = store::live_members(pool, to.site_id).await?;
    let partner = members
        .iter()
        .find(|m| m.member != to.member)
        .map(|p| HaPartner {
            member: p.member,
            instance_id: p.instance_id.clone(),
            private_ip: p.private_ip,
        });
    let take_over = store::take_over_for(pool, to.site_id, to.appliance_id).await?;
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
        return Ok(None);
    }
    Ok(Some(ha))
}
