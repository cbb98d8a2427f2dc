//! Tunnel state and counters read from the kernel's SAs.

use super::reconcile::ObservedState;
use crate::protocol::{
    DesiredConfig, HaRole, HaStatus, StatusReport, Tunnel, TunnelState, TunnelStatus,
};
use crate::xfrm::{ObservedSa, SaId};
use std::collections::BTreeSet;
use uuid::Uuid;

pub fn tunnel_status(config: &DesiredConfig, observed: &ObservedState) -> Vec<TunnelStatus> {
    config
        .tunnels
        .iter()
        .map(|t| {
            let out = observed.sas.get(&SaId {
                dst: t.peer_address,
                spi: t.out.spi,
            });
            let ins = inbound_sas(config, t, observed);
            let mut status = TunnelStatus {
                peer_site: t.peer_site,
                out_epoch: t.out.epoch,
                out_spi: out.map(|o| o.id.spi),
                inbound_spis: Some(ins.iter().flatten().map(|i| i.id.spi).collect()),
                ..Default::default()
            };
            if let Some(o) = out {
                status.out_bytes = o.counters.bytes;
                status.out_packets = o.counters.packets;
            }
            for i in ins.iter().flatten() {
                status.in_bytes += i.counters.bytes;
                status.in_packets += i.counters.packets;
                status.in_errors += i.counters.replay_drops + i.counters.integrity_failures;
            }
            let epochs: BTreeSet<u32> = t
                .inbound
                .iter()
                .map(|i| i.epoch)
                .chain([t.out.epoch])
                .collect();
            // A carried SA may be gone (this kernel started over): the
            // tunnel is down only if a current one is missing.
            let current_missing = t
                .inbound
                .iter()
                .zip(&ins)
                .any(|(i, o)| !i.carried && o.is_none());
            status.state = if out.is_none() || current_missing {
                TunnelState::Down
            } else if status.in_packets == 0 {
                TunnelState::Pending
            } else if epochs.len() > 1 {
                TunnelState::Rekeying
            } else {
                TunnelState::Up
            };
            status
        })
        .collect()
}

/// The kernel's SAs for a tunnel's inbound SAs, in the config's order.
fn inbound_sas<'a>(
    config: &DesiredConfig,
    t: &Tunnel,
    observed: &'a ObservedState,
) -> Vec<Option<&'a ObservedSa>> {
    t.inbound
        .iter()
        .map(|i| {
            observed.sas.get(&SaId {
                dst: config.local_address,
                spi: i.spi,
            })
        })
        .collect()
}

/// Inbound drops per tunnel, told apart: (peer site, replay-window drops,
/// integrity failures). The status report sends only their sum.
pub fn inbound_drops(config: &DesiredConfig, observed: &ObservedState) -> Vec<(Uuid, u64, u64)> {
    config
        .tunnels
        .iter()
        .map(|t| {
            let sas = inbound_sas(config, t, observed);
            let (replay, integrity) = sas.iter().flatten().fold((0, 0), |(r, i), sa| {
                (
                    r + sa.counters.replay_drops,
                    i + sa.counters.integrity_failures,
                )
            });
            (t.peer_site, replay, integrity)
        })
        .collect()
}

/// The report an agent sends (or writes): the applied config's version and
/// its tunnels as `observed` shows them (none without an observation).
pub fn status_report(
    applied: Option<&DesiredConfig>,
    config_error: Option<String>,
    ha_role: HaRole,
    ha: Option<HaStatus>,
    observed: Option<&ObservedState>,
) -> StatusReport {
    let tunnels = match (applied, observed) {
        (Some(c), Some(o)) => tunnel_status(c, o),
        _ => Vec::new(),
    };
    StatusReport {
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        applied_version: applied.map(|c| c.version),
        config_error,
        ha_role,
        epochs: applied.map(DesiredConfig::epochs).unwrap_or_default(),
        tunnels,
        ha,
        repairs: None,
    }
}
