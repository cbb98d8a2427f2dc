//! "Fail over now": an admin asks a site's passive appliance to take over
//! (a drill, or to move traffic off an instance). The request travels in
//! that appliance's config as `ha.take_over`; the site's history shows the
//! failover once the appliance reports it.

use super::{store, view, Source};
use crate::appliances::rotation::LIVE_WITHIN;
use crate::networks::view as networks;
use crate::{audit, identity::users::UserRecord, internal::OrInternal, state::AppState};
use app::api::{ConsoleError, TakeoverView};
use time::OffsetDateTime;
use uuid::Uuid;
use vpcmesh_protocol::GENERATIONS_PROTOCOL_VERSION;

/// "2026-12-02 04:56:50" (UTC), as the console shows times.
fn to_second(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Why a site has nobody to fail over to, in words that say what to do.
fn target<'a>(
    members: &'a [store::PairMember],
    site: &str,
    now: OffsetDateTime,
) -> Result<&'a store::PairMember, String> {
    let name = |m: &store::PairMember| {
        format!(
            "member {} ({})",
            m.member.as_str().to_uppercase(),
            m.instance_id
        )
    };
    match members {
        [] => return Err(format!("No appliance of site {site} has registered yet: there is nothing to fail over.")),
        [only] => return Err(format!(
            "Site {site} has no registered passive partner: only {} has registered. A failover needs both members of the pair (high availability on, and the second instance running).",
            name(only)
        )),
        _ => {}
    }
    let passive: Vec<&store::PairMember> = members
        .iter()
        .filter(|m| m.ha_role.as_deref() == Some("passive"))
        .collect();
    let t = match passive.as_slice() {
        [t] => *t,
        [] if members.iter().any(|m| m.ha_role.is_none()) => {
            return Err(format!("Site {site} has no registered passive partner yet: not every member has reported its role. Try again once both appliances report."))
        }
        [] => return Err(format!("Both members of site {site} report active: EC2 settles it within a heartbeat. Try again in a moment.")),
        _ => return Err(format!("Neither member of site {site} reports active: there is nothing to fail over from (they are starting up or handing over).")),
    };
    if t.ha_reason.is_none()
        || t.protocol
            .is_some_and(|p| p < GENERATIONS_PROTOCOL_VERSION as i16)
    {
        return Err(format!(
            "The passive {} runs an agent from before failover: it cannot take over on request. Update its agent (replace the instance) first.",
            name(t)
        ));
    }
    let live = t.last_seen_at.is_some_and(|at| now - at < LIVE_WITHIN);
    if !live {
        return Err(format!(
            "The passive {} has not reported in the last {} s: it may be down, and would not take over.",
            name(t),
            LIVE_WITHIN.as_secs()
        ));
    }
    Ok(t)
}

/// Asks the passive appliance of site `site_raw` of network `network_raw`
/// to take over. `user` is an admin (the caller checked). Refused with 409
/// while a request of the site is in progress (younger than the retry
/// bound) and when the site has no live passive partner that can take over.
#[tracing::instrument(skip_all, fields(org_id = %user.org_id))]
pub async fn fail_over(
    state: &AppState,
    user: &UserRecord,
    network_raw: &str,
    site_raw: &str,
) -> Result<TakeoverView, ConsoleError> {
    let network_id = networks::owned(&state.pool, user.org_id, network_raw).await?;
    let site_id: Uuid = site_raw
        .parse()
        .map_err(|_| ConsoleError::invalid("site", "is not a site id"))?;
    let mut tx = state
        .pool
        .begin()
        .await
        .or_internal("begin a transaction")?;
    // The site row is the lock: requests of a site are decided one at a
    // time, by users and every replica's health monitor alike.
    let site: Option<(String, String, String)> = sqlx::query_as(
        "SELECT n.name, n.status, s.name FROM sites s JOIN networks n ON n.id = s.network_id
          WHERE n.org_id = $1 AND n.id = $2 AND s.id = $3
            FOR NO KEY UPDATE OF s",
    )
    .bind(user.org_id)
    .bind(network_id)
    .bind(site_id)
    .fetch_optional(&mut *tx)
    .await
    .or_internal("lock a site")?;
    let (network_name, status, site_name) = site.ok_or_else(|| ConsoleError::not_found("Site"))?;
    if status == "deleting" || status == "deleted" {
        return Err(ConsoleError::Conflict {
            message: "The network is being deleted: its sites no longer fail over.".into(),
        });
    }
    let members = store::live_members(&mut *tx, site_id)
        .await
        .or_internal("load a site's appliances")?;
    let now = OffsetDateTime::now_utc();
    let to = target(&members, &site_name, now)
        .map_err(|message| ConsoleError::Conflict { message })?
        .clone();
    let latest = store::latest_request(&mut *tx, site_id)
        .await
        .or_internal("load a site's takeover request")?;
    if let Some(p) = latest
        .as_ref()
        .filter(|p| p.pending() && now - p.requested_at < state.settings.failover_retry)
    {
        return Err(ConsoleError::Conflict {
            message: format!(
                "A takeover by member {} ({}) was asked for at {} UTC and is not done yet. Wait for it, or try again after {} s.",
                p.member.as_str().to_uppercase(),
                p.instance_id,
                to_second(p.requested_at),
                state.settings.failover_retry.as_secs()
            ),
        });
    }
    let number = latest.as_ref().map_or(1, |l| l.number + 1);
    let request = store::NewRequest {
        site_id,
        number,
        member: to.member,
        appliance_id: to.id,
        source: Source::User,
        requested_by: Some(user.id),
        silent: None,
        attempt: 1,
    };
    let requested_at = store::insert_request(&mut *tx, &request)
        .await
        .or_internal("store a takeover request")?
        .ok_or_else(|| ConsoleError::Conflict {
            message: "Another takeover of this site was asked for at the same moment; reload the page to see it.".into(),
        })?;
    let what = format!(
        "{network_name} / {site_name}: member {} ({}) takes over (request {number})",
        to.member.as_str().to_uppercase(),
        to.instance_id
    );
    audit::record(
        &mut *tx,
        user.org_id,
        Some(user.id),
        "network.site.failover",
        Some(&what),
    )
    .await
    .or_internal("audit a takeover request")?;
    tx.commit().await.or_internal("commit a takeover request")?;
    tracing::info!(%network_id, %site_id, number, to = %to.id, member = to.member.as_str(), "takeover requested by a user");
    Ok(view::takeover(&store::TakeoverRow {
        site_id,
        number,
        member: to.member,
        appliance_id: to.id,
        instance_id: to.instance_id.clone(),
        appliance_live: true,
        requested_at,
        source: Source::User,
        requested_by: Some(user.id),
        requested_by_email: Some(user.email.clone()),
        silent_appliance_id: None,
        silent_seen_at: None,
        attempt: 1,
        done_at: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use vpcmesh_protocol::Member;

    fn member(m: Member, role: Option<&str>, seen_ago: u64) -> store::PairMember {
        store::PairMember {
            id: Uuid::new_v4(),
            member: m,
            instance_id: format!("i-0000000{}", m.index()),
            private_ip: [10, 1, 1, 10 + m.index() as u8].into(),
            ha_role: role.map(str::to_string),
            ha_reason: role.map(|r| {
                if r == "active" {
                    "holds_address".into()
                } else {
                    "partner_active".into()
                }
            }),
            last_seen_at: Some(OffsetDateTime::now_utc() - Duration::from_secs(seen_ago)),
            protocol: Some(3),
        }
    }

    #[test]
    fn the_target_is_the_one_live_passive_member_of_a_registered_pair() {
        let now = OffsetDateTime::now_utc();
        let pair = [
            member(Member::A, Some("active"), 1),
            member(Member::B, Some("passive"), 1),
        ];
        assert_eq!(target(&pair, "east", now).map(|t| t.member), Ok(Member::B));
        // A silent active is what failing over is for.
        let pair = [
            member(Member::A, Some("active"), 600),
            member(Member::B, Some("passive"), 2),
        ];
        assert_eq!(target(&pair, "east", now).map(|t| t.member), Ok(Member::B));
    }

    #[test]
    fn a_site_without_a_passive_partner_that_can_take_over_says_why() {
        let now = OffsetDateTime::now_utc();
        let why = |m: &[store::PairMember]| target(m, "east", now).map(|t| t.member).unwrap_err();
        assert!(why(&[member(Member::A, Some("active"), 1)]).contains("only member A"));
        assert!(why(&[]).contains("No appliance"));
        assert!(why(&[
            member(Member::A, Some("active"), 1),
            member(Member::B, None, 1)
        ])
        .contains("not every member has reported"));
        assert!(why(&[
            member(Member::A, Some("active"), 1),
            member(Member::B, Some("passive"), 600)
        ])
        .contains("has not reported in the last 45 s"));
        let mut old = member(Member::B, Some("passive"), 1);
        old.protocol = Some(2);
        assert!(why(&[member(Member::A, Some("active"), 1), old]).contains("from before failover"));
    }
}
