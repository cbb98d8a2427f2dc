//! Status reports: what the appliance's kernel has, stored for the console
//! and for the rotation decisions they drive.

use super::{rotation, store, store::ApplianceRow, ApplianceError};
use crate::failover;
use sqlx::PgPool;
use std::time::Duration;
use vpcmesh_protocol::{StatusReport, MAX_EPOCHS_IN_PLAY, MAX_TUNNELS};

/// The oldest last repair a report may name (an agent up for a year).
const MAX_REPAIR_AGO_MS: u64 = 366 * 24 * 3600 * 1000;

pub async fn record(
    pool: &PgPool,
    appliance: &ApplianceRow,
    report: StatusReport,
    rotation_grace: Duration,
) -> Result<(), ApplianceError> {
    check(&report)?;
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

/// Bounds on every list and string of a report; a refusal names the field.
pub fn check(report: &StatusReport) -> Result<(), ApplianceError> {
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
    if let Some(r) = &report.repairs {
        if r.count == 0
            || r.count > i64::MAX as u64
            || r.last_changes > i32::MAX as u32
            || r.last_ago_ms > MAX_REPAIR_AGO_MS
        {
            return Err(ApplianceError::InvalidInput {
                field: "repairs",
                message: "a count of at least 1, changes that fit the kernel and a last repair within a year".into(),
            });
        }
    }
    if let Some(ha) = &report.ha {
        failover::status::check(report.ha_role, ha)
            .map_err(|(field, message)| ApplianceError::InvalidInput { field, message })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn any_report() -> impl Strategy<Value = serde_json::Value> {
        let tunnel = (
            any::<u32>(),
            proptest::option::of(proptest::collection::vec(any::<u32>(), 0..12)),
            any::<u64>(),
        )
            .prop_map(|(out_epoch, inbound, bytes)| {
                json!({"peer_site": uuid::Uuid::from_u64_pair(bytes, 1), "state": "up",
                       "out_epoch": out_epoch, "out_bytes": bytes, "out_packets": 1,
                       "in_bytes": 1, "in_packets": 1, "in_errors": 0, "inbound_spis": inbound})
            });
        (
            ".{0,80}",
            proptest::option::of(any::<u64>()),
            proptest::option::of(".{0,40}"),
            proptest::collection::vec(any::<u32>(), 0..5),
            proptest::collection::vec(tunnel, 0..4),
            prop_oneof![Just("active"), Just("passive")],
            proptest::option::of((any::<u64>(), any::<u32>(), any::<u64>())),
        )
            .prop_map(|(version, applied, error, epochs, tunnels, role, repairs)| {
                json!({"agent_version": version, "applied_version": applied,
                       "config_error": error.map(|e| e.repeat(60)), "ha_role": role,
                       "epochs": epochs, "tunnels": tunnels,
                       "repairs": repairs.map(|(count, last_changes, last_ago_ms)|
                           json!({"count": count, "last_changes": last_changes, "last_ago_ms": last_ago_ms}))})
            })
    }

    proptest! {
        /// Any report that parses is taken or refused naming its field;
        /// nothing panics.
        #[test]
        fn every_report_is_taken_or_refused_by_field(raw in any_report()) {
            let report: StatusReport = serde_json::from_value(raw).expect("the strategy makes reports");
            match check(&report) {
                Ok(()) => {
                    prop_assert!(!report.agent_version.is_empty() && report.agent_version.len() <= 64);
                    prop_assert!(report.epochs.len() <= MAX_EPOCHS_IN_PLAY);
                    if let Some(r) = report.repairs {
                        prop_assert!(r.count >= 1 && r.count <= i64::MAX as u64);
                        prop_assert!(r.last_changes <= i32::MAX as u32 && r.last_ago_ms <= MAX_REPAIR_AGO_MS);
                    }
                }
                Err(ApplianceError::InvalidInput { field, message }) => {
                    prop_assert!(!field.is_empty() && !message.is_empty());
                }
                Err(other) => prop_assert!(false, "refused without a field: {other}"),
            }
        }
    }

    #[test]
    fn repairs_that_cannot_be_true_are_refused_by_name() {
        let report = |repairs: serde_json::Value| -> StatusReport {
            serde_json::from_value(json!({"agent_version": "1", "applied_version": 1,
                "ha_role": "active", "tunnels": [], "repairs": repairs}))
            .expect("a report")
        };
        let ok = json!({"count": 2, "last_changes": 1, "last_ago_ms": 1500});
        assert!(check(&report(ok)).is_ok());
        for bad in [
            json!({"count": 0, "last_changes": 1, "last_ago_ms": 0}),
            json!({"count": u64::MAX, "last_changes": 1, "last_ago_ms": 0}),
            json!({"count": 1, "last_changes": u32::MAX, "last_ago_ms": 0}),
            json!({"count": 1, "last_changes": 1, "last_ago_ms": MAX_REPAIR_AGO_MS + 1}),
        ] {
            match check(&report(bad.clone())) {
                Err(ApplianceError::InvalidInput { field, .. }) => {
                    assert_eq!(field, "repairs", "{bad}")
                }
                other => panic!("{bad} was not refused by name: {other:?}"),
            }
        }
    }
}
