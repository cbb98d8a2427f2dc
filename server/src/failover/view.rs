//! Failover as the console and API show it: the history of a network's
//! failovers and each site's latest takeover request.

use super::{store, Source};
use crate::networks::store::rfc3339;
use app::api::{FailoverEntry, RequestedBy, TakeoverView};
use sqlx::PgPool;
use uuid::Uuid;

/// How many failovers a network's page lists.
pub const HISTORY_LIMIT: i64 = 50;

fn requested_by(source: Source, email: Option<String>) -> RequestedBy {
    match source {
        Source::User => RequestedBy::User { email },
        Source::HealthMonitor => RequestedBy::HealthMonitor,
    }
}

pub fn takeover(r: &store::TakeoverRow) -> TakeoverView {
    TakeoverView {
        site_id: r.site_id.to_string(),
        number: r.number,
        member: r.member.as_str().to_string(),
        instance_id: r.instance_id.clone(),
        requested_at: rfc3339(r.requested_at),
        requested_by: requested_by(r.source, r.requested_by_email.clone()),
        done_at: r.done_at.map(rfc3339),
    }
}

/// Newest first, at most [`HISTORY_LIMIT`].
pub async fn history(pool: &PgPool, network_id: Uuid) -> Result<Vec<FailoverEntry>, sqlx::Error> {
    let rows = store::history(pool, network_id, HISTORY_LIMIT).await?;
    Ok(rows
        .into_iter()
        .map(|f| {
            // A source this server does not know is stored by no version of
            // it; such a row says nothing about who asked.
            let by = f.request_source.as_deref().and_then(|s| match s {
                "user" => Some(requested_by(Source::User, f.requested_by_email.clone())),
                "health_monitor" => Some(RequestedBy::HealthMonitor),
                _ => None,
            });
            FailoverEntry {
                site_id: f.site_id.to_string(),
                site_name: f.site_name,
                region: f.region,
                from_instance_id: f.from_instance_id,
                from_member: f.from_member,
                to_instance_id: f.to_instance_id,
                to_member: f.to_member,
                reason: f.reason,
                requested_by: by,
                at: rfc3339(f.took_role_at),
                recorded_at: rfc3339(f.recorded_at),
            }
        })
        .collect())
}

/// Per site, its latest takeover request.
pub async fn takeovers(pool: &PgPool, network_id: Uuid) -> Result<Vec<TakeoverView>, sqlx::Error> {
    Ok(store::latest_requests(pool, network_id)
        .await?
        .iter()
        .map(takeover)
        .collect())
}
