//! What a member's status report means for failover: a takeover request it
//! carried out is done, and a member that just became active for a
//! failover reason is recorded in the site's history, once.

use super::store::{self, NewFailover};
use sqlx::PgConnection;
use uuid::Uuid;
use vpcmesh_protocol::{HaReason, HaRole, HaStatus, Member, StatusReport};

/// The longest a member may say it has had its role: ten years, in ms
/// (keeps role-since a date Postgres can hold).
const MAX_ROLE_FOR_MS: u64 = 10 * 365 * 24 * 3600 * 1000;

/// The role each reason belongs to (see `HaReason`).
pub fn role_for(reason: HaReason) -> HaRole {
    match reason {
        HaReason::HoldsAddress
        | HaReason::Claimed
        | HaReason::PartnerSilent
        | HaReason::Requested
        | HaReason::HandedOver => HaRole::Active,
        HaReason::Starting
        | HaReason::PartnerActive
        | HaReason::AddressTaken
        | HaReason::HandingOver => HaRole::Passive,
    }
}

/// Refuses HA status that cannot be true: (field, what is wrong).
pub fn check(role: HaRole, ha: &HaStatus) -> Result<(), (&'static str, String)> {
    if ha.role_for_ms > MAX_ROLE_FOR_MS {
        return Err((
            "ha.role_for_ms",
            format!("{} ms is more than ten years", ha.role_for_ms),
        ));
    }
    if ha.take_over_done.is_some_and(|n| n > i64::MAX as u64) {
        return Err((
            "ha.take_over_done",
            "not a takeover number this server issued".into(),
        ));
    }
    if role_for(ha.reason) != role {
        let (reason_role, role) = match role {
            HaRole::Active => ("passive", "active"),
            HaRole::Passive => ("active", "passive"),
        };
        return Err((
            "ha.reason",
            format!(
                "{} is a reason of a {reason_role} member, but ha_role is {role}",
                ha.reason.as_str()
            ),
        ));
    }
    Ok(())
}

/// The appliance that reported.
#[derive(Clone, Copy, Debug)]
pub struct Reporter {
    pub appliance_id: Uuid,
    pub site_id: Uuid,
    pub member: Member,
}

/// Takes a checked report into account, in the transaction that stored it
/// (`previous`: the role the appliance had reported before).
pub async fn record(
    tx: &mut PgConnection,
    who: Reporter,
    previous: Option<HaRole>,
    report: &StatusReport,
) -> Result<(), sqlx::Error> {
    let Some(ha) = &report.ha else {
        return Ok(());
    };
    if let Some(done) = ha.take_over_done {
        let marked = store::mark_done(&mut *tx, who.site_id, who.appliance_id, done).await?;
        if marked > 0 {
            tracing::info!(site_id = %who.site_id, appliance_id = %who.appliance_id, done, "takeover request carried out");
        }
    }
    // A failover is the moment a member becomes active for a failover
    // reason. Later reports of the same role (and a restart of the same
    // active, which reports why it holds the address) are not one.
    let became_active = report.ha_role == HaRole::Active && previous != Some(HaRole::Active);
    if !became_active || !ha.reason.is_failover() {
        return Ok(());
    }
    let from = store::previous_active(&mut *tx, who.site_id, who.member).await?;
    let request = match ha.reason {
        HaReason::Requested => {
            store::request_carried_out(&mut *tx, who.appliance_id, ha.take_over_done).await?
        }
        _ => None,
    };
    let at = store::insert_failover(
        tx,
        NewFailover {
            site_id: who.site_id,
            from,
            to: who.appliance_id,
            reason: ha.reason.as_str(),
            request: request.as_ref(),
        },
    )
    .await?;
    tracing::warn!(
        site_id = %who.site_id,
        from = ?from,
        to = %who.appliance_id,
        member = who.member.as_str(),
        reason = ha.reason.as_str(),
        request = ?request.as_ref().map(|r| r.number),
        took_role_at = %at,
        "failover: the site has a new active appliance"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ha(reason: HaReason) -> HaStatus {
        HaStatus {
            reason,
            role_for_ms: 1_500,
            take_over_done: None,
            partner_heard_ms_ago: Some(40),
        }
    }

    #[test]
    fn every_failover_reason_belongs_to_an_active_member() {
        for r in [
            HaReason::PartnerSilent,
            HaReason::Requested,
            HaReason::HandedOver,
        ] {
            assert!(r.is_failover());
            assert_eq!(role_for(r), HaRole::Active);
        }
    }

    #[test]
    fn a_reason_of_the_other_role_or_an_impossible_duration_is_refused_by_field() {
        assert_eq!(check(HaRole::Active, &ha(HaReason::Claimed)), Ok(()));
        assert_eq!(check(HaRole::Passive, &ha(HaReason::Starting)), Ok(()));
        let (field, message) =
            check(HaRole::Passive, &ha(HaReason::PartnerSilent)).expect_err("refused");
        assert_eq!(field, "ha.reason");
        assert!(message.contains("partner_silent"), "{message}");
        let mut long = ha(HaReason::Claimed);
        long.role_for_ms = u64::MAX;
        assert_eq!(
            check(HaRole::Active, &long).map_err(|(f, _)| f),
            Err("ha.role_for_ms")
        );
        let mut done = ha(HaReason::Requested);
        done.take_over_done = Some(u64::MAX);
        assert_eq!(
            check(HaRole::Active, &done).map_err(|(f, _)| f),
            Err("ha.take_over_done")
        );
    }
}
