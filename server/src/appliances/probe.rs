//! Connectivity checks, the appliances' side: while a check runs, the active
//! appliance of each of its sites finds a probe in its config naming every
//! other site's active appliance by its inside (private) address; it pings
//! them through the tunnels and posts what it measured. The console's side
//! is `networks::connectivity`.

use super::rotation::LIVE_WITHIN;
use super::{store::ApplianceRow, ApplianceError};
use crate::networks::connectivity::store::{self, CheckRow};
use sqlx::PgPool;
use std::net::Ipv4Addr;
use vpcmesh_protocol::{ConnectivityProbe, ProbeReport, ProbeTarget};

/// A check of the network in progress and who takes part in it: read once
/// per network, in its snapshot.
#[derive(Clone, Debug)]
pub struct Running {
    check: CheckRow,
    participants: Vec<store::Participant>,
}

/// The network's check in progress, if any, with its participants.
pub async fn running(
    pool: &PgPool,
    network_id: uuid::Uuid,
) -> Result<Option<Running>, sqlx::Error> {
    let Some(check) = store::running(pool, network_id).await? else {
        return Ok(None);
    };
    let participants = store::participants(pool, network_id, LIVE_WITHIN).await?;
    Ok(Some(Running {
        check,
        participants,
    }))
}

/// The probe for `appliance`'s config: only while a check of its network
/// runs, only for its site's active appliance, and only when some other
/// site of the check has an appliance to ping.
pub fn for_config(
    running: Option<&Running>,
    appliance: &ApplianceRow,
) -> Option<ConnectivityProbe> {
    let Running {
        check,
        participants,
    } = running?;
    if !check.sites.contains(&appliance.site_id) {
        return None;
    }
    let active = participants
        .iter()
        .any(|p| p.site_id == appliance.site_id && p.appliance_id == appliance.id);
    if !active {
        return None;
    }
    let targets: Vec<ProbeTarget> = participants
        .iter()
        .filter(|p| p.site_id != appliance.site_id && check.sites.contains(&p.site_id))
        .map(|p| ProbeTarget {
            peer_site: p.site_id,
            address: p.private_ip,
        })
        .collect();
    (!targets.is_empty()).then_some(ConnectivityProbe {
        id: check.id,
        count: check.count,
        interval_ms: check.interval_ms,
        targets,
    })
}

/// What a report from a site of `check` may name: every other site of it.
fn expected(check: &CheckRow, appliance: &ApplianceRow) -> ConnectivityProbe {
    ConnectivityProbe {
        id: check.id,
        count: check.count,
        interval_ms: check.interval_ms,
        targets: check
            .sites
            .iter()
            .filter(|s| **s != appliance.site_id)
            .map(|s| ProbeTarget {
                peer_site: *s,
                address: Ipv4Addr::UNSPECIFIED,
            })
            .collect(),
    }
}

/// Stores a report. A check unknown to this appliance's network, or one
/// its site was not asked to run, is 404; a report naming other peers or
/// inconsistent numbers is 400. Reports after the deadline still count:
/// the pairs they complete show their results.
pub async fn record(
    pool: &PgPool,
    appliance: &ApplianceRow,
    report: ProbeReport,
) -> Result<(), ApplianceError> {
    let check = store::find(pool, appliance.network_id, report.probe_id)
        .await?
        .filter(|c| c.sites.contains(&appliance.site_id))
        .ok_or(ApplianceError::UnknownProbe(report.probe_id))?;
    report
        .validate(&expected(&check, appliance))
        .map_err(|e| ApplianceError::InvalidInput {
            field: "results",
            message: e.to_string(),
        })?;
    let finished = store::record(pool, check.id, appliance.site_id, &report.results).await?;
    let received: u32 = report.results.iter().map(|r| u32::from(r.received)).sum();
    let sent: u32 = report.results.iter().map(|r| u32::from(r.sent)).sum();
    tracing::info!(
        check_id = %check.id,
        appliance_id = %appliance.id,
        peers = report.results.len(),
        sent,
        received,
        finished,
        "connectivity report recorded"
    );
    Ok(())
}
