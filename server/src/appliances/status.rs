//! Status reports: what the appliance's kernel has, stored for the console
//! and for the rotation decisions they drive.

use super::{rotation, store, store::ApplianceRow, ApplianceError};
use crate::failover;
use appliance::protocol::{StatusReport, MAX_EPOCHS_IN_PLAY, MAX_TUNNELS};
use sqlx::PgPool;
use std::time::Duration;

pub async fn record(
    pool: &PgPool,
    appliance: &ApplianceRow,
    report: StatusReport,
    rotation_grace: Duration,
) -> Result<(), ApplianceError> {
    if report.tunnels.len() > MAX_TUNNELS {
        return Err(ApplianceError::InvalidInput {
            field: "tunnels",
            message: format!("at most {MAX_TUNNELS} tunnels"),
        });
    }
    if report.agent_version.is_empty() || report.agent_version.len() > 64 {
        return Err(ApplianceError::InvalidInput {
            field: "agent_version",
            message: "must be 1 to 64 characters".into(),
        });
    }
    if report.config_error.as_ref().is_some_and(|e| e.len() > 2048) {
        return Err(ApplianceError::InvalidInput {
            field: "config_error",
            message: "at most 2048 characters".into(),
        });
    }
    if report.applied_version.is_some_and(|v| v > i64::MAX as u64) {
        return Err(ApplianceError::InvalidInput {
            field: "applied_version",
            message: "not a version this server issued".into(),
        });
    }
    let epoch_ok = |e: &u32| (1..=i32::MAX as u32).contains(e);
    if report.epochs.len() > MAX_EPOCHS_IN_PLAY
        || !report.epochs.iter().all(epoch_ok)
        // 0: an agent that did not say (counts as not sending with any).
        || !report.tunnels.iter().all(|t| t.out_epoch <= i32::MAX as u32)
    {
        return Err(ApplianceError::InvalidInput {
            field: "epochs",
            message: format!("at most {MAX_EPOCHS_IN_PLAY} key epochs, each a positive number"),
        });
    }
    if report.tunnels.iter().any(|t| {
        t.inbound_spis
            .as_ref()
            .is_some_and(|s| s.len() > 4 * MAX_EPOCHS_IN_PLAY)
    }) {
        return Err(ApplianceError::InvalidInput {
            field: "inbound_spis",
            message: format!("at most {} inbound SAs per tunnel", 4 * MAX_EPOCHS_IN_PLAY),
        });
    }
    if let Some(ha) = &report.ha {
        failover::status::check(report.ha_role, ha)
            .map_err(|(field, message)| ApplianceError::InvalidInput { field, message })?;
    }
    // The report and what it means for failover commit together: a
    // failover is recorded exactly once, by the report that first shows it.
    let mut tx = pool.begin().await?;
    let previous = store::record_status(&mut tx, appliance.id, &report).await?;
    let member = failover::status::Reporter {
        appliance_id: appliance.id,
        site_id: appliance.site_id,
        member: appliance.member,
    };
    failover::status::record(&mut tx, member, previous, &report).await?;
    tx.commit().await?;
    rotation::advance(pool, appliance.network_id, rotation_grace).await?;
    Ok(())
}
