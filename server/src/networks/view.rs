//! Networks as the console and API show them.

use super::store::{self, rfc3339, SiteRow};
use crate::internal::OrInternal;
use app::api::{ConsoleError, KeyEpochState, NetworkSummary, SiteSummary};
use sqlx::PgPool;
use uuid::Uuid;

pub fn parse_id(raw: &str) -> Result<Uuid, ConsoleError> {
    raw.parse()
        .map_err(|_| ConsoleError::invalid("network", "is not a network id"))
}

fn site_summary(s: &SiteRow) -> SiteSummary {
    SiteSummary {
        id: s.id.to_string(),
        name: s.name.clone(),
        account_id: s.account_id.clone().unwrap_or_default(),
        region: s.region.clone(),
        vpc_id: s.vpc_id.clone(),
        cidrs: s.cidrs.clone(),
        role: s.role(),
        edge_site_id: s.edge_site_id.map(|id| id.to_string()),
        availability_zones: s.discovered.0.azs(),
        outputs: serde_json::Value::Object(s.outputs.0.clone()),
    }
}

/// The id of the caller's organization's network `raw`; any other is "not found".
pub async fn owned(pool: &PgPool, org_id: Uuid, raw: &str) -> Result<Uuid, ConsoleError> {
    let id = parse_id(raw)?;
    store::find(pool, org_id, id)
        .await
        .or_internal("load a network")?
        .map(|n| n.id)
        .ok_or_else(|| ConsoleError::not_found("Network"))
}

pub async fn summary(
    pool: &PgPool,
    org_id: Uuid,
    id: Uuid,
) -> Result<NetworkSummary, ConsoleError> {
    let row = store::find(pool, org_id, id)
        .await
        .or_internal("load a network")?
        .ok_or_else(|| ConsoleError::not_found("Network"))?;
    summary_of(pool, row).await
}

async fn summary_of(pool: &PgPool, row: store::NetworkRow) -> Result<NetworkSummary, ConsoleError> {
    let sites = store::sites(pool, row.id).await.or_internal("load sites")?;
    let mut key_epochs = store::key_epochs(pool, row.id)
        .await
        .or_internal("load key epochs")?;
    if key_epochs
        .iter()
        .any(|k| k.state == KeyEpochState::Retiring)
    {
        if let Some(active) = key_epochs
            .iter_mut()
            .find(|k| k.state == KeyEpochState::Active)
        {
            let p = crate::appliances::rotation::progress(pool, row.id, active.epoch)
                .await
                .or_internal("load a rotation's progress")?;
            let waiting = crate::appliances::rotation::laggards(pool, row.id, active.epoch)
                .await
                .or_internal("load who a rotation waits for")?;
            active.rotation = Some(app::api::RotationProgress {
                live: p.live,
                accepting: p.accepting,
                sending: p.sending,
                sites_cut_off: p.sites_cut_off,
                waiting,
            });
        }
    }
    let appliances = crate::appliances::summaries(pool, row.id)
        .await
        .or_internal("load appliances")?;
    let (rotate_every_days, next_rotation_at): (Option<i32>, Option<time::OffsetDateTime>) =
        sqlx::query_as(
            "SELECT n.rotate_every_days, e.created_at + make_interval(days => n.rotate_every_days)
               FROM networks n
               LEFT JOIN key_epochs e ON e.network_id = n.id AND e.state = 'active'
              WHERE n.id = $1",
        )
        .bind(row.id)
        .fetch_one(pool)
        .await
        .or_internal("load the rotation schedule")?;
    let connectivity = super::connectivity::latest_of(pool, row.id).await?;
    let failovers = crate::failover::view::history(pool, row.id)
        .await
        .or_internal("load the failover history")?;
    let takeovers = crate::failover::view::takeovers(pool, row.id)
        .await
        .or_internal("load takeover requests")?;
    Ok(NetworkSummary {
        id: row.id.to_string(),
        name: row.name,
        topology: row.topology,
        status: row.status,
        status_note: row.status_note,
        options: row.options,
        sites: sites.iter().map(site_summary).collect(),
        key_epochs,
        created_at: rfc3339(row.created_at),
        appliances,
        rotate_every_days: rotate_every_days.map(|d| d as u32),
        next_rotation_at: next_rotation_at.map(rfc3339),
        connectivity,
        failovers,
        takeovers,
    })
}

pub async fn list(pool: &PgPool, org_id: Uuid) -> Result<Vec<NetworkSummary>, ConsoleError> {
    let rows = store::list(pool, org_id)
        .await
        .or_internal("list networks")?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        out.push(summary_of(pool, row).await?);
    }
    Ok(out)
}
