//! Status reports: what the appliance's kernel has, stored for the console.

use super::{store, store::ApplianceRow, ApplianceError};
use appliance::protocol::{StatusReport, MAX_TUNNELS};
use sqlx::PgPool;

pub async fn record(
    pool: &PgPool,
    appliance: &ApplianceRow,
    report: StatusReport,
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
    store::record_status(pool, appliance.id, &report).await?;
    Ok(())
}
