//! Asking for a check and reading the latest, with their authorization:
//! any signed-in user of the organization that owns the network.

use super::{pairs, store, SiteName};
use crate::appliances::rotation::LIVE_WITHIN;
use crate::networks::{
    store::{self as networks, rfc3339},
    view,
};
use crate::{audit, identity::users::UserRecord, internal::OrInternal, state::AppState};
use app::api::{ConnectivityCheck, ConsoleError};
use sqlx::PgPool;
use std::time::Duration;
use time::OffsetDateTime;
use uuid::Uuid;
use vpcmesh_protocol::MAX_PROBE_TARGETS;

/// Echoes each appliance sends to each peer, and their spacing: a second
/// of pinging, enough to see loss without loading the tunnels.
pub const ECHOES: u16 = 5;
pub const INTERVAL_MS: u32 = 200;

/// Starts a check of network `raw`. Refused with 409 while the network is
/// not provisioned, when fewer than two sites have appliances or none is
/// live, and while another check of it runs (one at a time per network:
/// each check puts a probe into every appliance's config).
#[tracing::instrument(skip_all, fields(org_id = %user.org_id))]
pub async fn request(
    state: &AppState,
    user: &UserRecord,
    raw: &str,
) -> Result<ConnectivityCheck, ConsoleError> {
    let id = view::parse_id(raw)?;
    let pool = &state.pool;
    let mut tx = pool.begin().await.or_internal("begin a transaction")?;
    // The network row is the lock: two replicas never start two checks.
    let net: Option<(String, String)> = sqlx::query_as(
        "SELECT name, status FROM networks WHERE org_id = $1 AND id = $2 FOR UPDATE",
    )
    .bind(user.org_id)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await
    .or_internal("lock a network")?;
    let (name, status) = net.ok_or_else(|| ConsoleError::not_found("Network"))?;
    if status != "ready" {
        return Err(ConsoleError::Conflict {
            message: format!(
                "The network is {status}, not provisioned: check connectivity once it is ready."
            ),
        });
    }
    if let Some(running) = store::running(&mut *tx, id)
        .await
        .or_internal("look for a running check")?
    {
        let left = (running.deadline_at - OffsetDateTime::now_utc())
            .whole_seconds()
            .max(1);
        return Err(ConsoleError::Conflict {
            message: format!(
                "A connectivity check is already running (asked at {}); its results are in within {left} s.",
                rfc3339(running.requested_at)
            ),
        });
    }
    let participants = store::participants(&mut *tx, id, LIVE_WITHIN)
        .await
        .or_internal("find the appliances of a check")?;
    if !participants.iter().any(|p| p.live) {
        return Err(ConsoleError::Conflict {
            message: "No appliance of this network is live (none reported in the last 45 s): there is nothing to ping from.".into(),
        });
    }
    if participants.len() < 2 {
        return Err(ConsoleError::Conflict {
            message:
                "Only one site has appliances so far: a check needs two sites to ping between."
                    .into(),
        });
    }
    if participants.len() > MAX_PROBE_TARGETS + 1 {
        return Err(ConsoleError::Conflict {
            message: format!(
                "The network has {} sites with appliances; a check covers at most {}.",
                participants.len(),
                MAX_PROBE_TARGETS + 1
            ),
        });
    }
    let sites: Vec<Uuid> = participants.iter().map(|p| p.site_id).collect();
    let check = store::insert(
        &mut *tx,
        store::NewCheck {
            id: Uuid::new_v4(),
            network_id: id,
            requested_by: user.id,
            count: ECHOES,
            interval_ms: INTERVAL_MS,
            sites: &sites,
            report_within: report_within(state.settings.connectivity_grace),
        },
    )
    .await
    .or_internal("store a check")?;
    audit::record(
        &mut *tx,
        user.org_id,
        Some(user.id),
        "network.connectivity_checked",
        Some(&name),
    )
    .await
    .or_internal("audit a check")?;
    tx.commit().await.or_internal("commit a check")?;
    tracing::info!(
        network_id = %id,
        check_id = %check.id,
        sites = sites.len(),
        live = participants.iter().filter(|p| p.live).count(),
        "connectivity check requested"
    );
    latest_of(pool, id).await?.ok_or(ConsoleError::Internal)
}

/// The echoes' own time plus `grace` for the probes to start and report.
fn report_within(grace: Duration) -> Duration {
    Duration::from_millis(u64::from(ECHOES) * u64::from(INTERVAL_MS)) + grace
}

/// The latest check of the caller's organization's network `raw`.
pub async fn latest(
    pool: &PgPool,
    user: &UserRecord,
    raw: &str,
) -> Result<Option<ConnectivityCheck>, ConsoleError> {
    let id = view::owned(pool, user.org_id, raw).await?;
    latest_of(pool, id).await
}

/// The latest check of network `id` (whose ownership the caller checked).
pub async fn latest_of(pool: &PgPool, id: Uuid) -> Result<Option<ConnectivityCheck>, ConsoleError> {
    let Some(check) = store::latest(pool, id)
        .await
        .or_internal("load the latest check")?
    else {
        return Ok(None);
    };
    let results = store::results(pool, check.id)
        .await
        .or_internal("load a check's results")?;
    let sites: Vec<SiteName> = networks::sites(pool, id)
        .await
        .or_internal("load sites")?
        .into_iter()
        .filter(|s| check.sites.contains(&s.id))
        .map(|s| SiteName {
            id: s.id,
            name: s.name,
            region: s.region,
        })
        .collect();
    let running = check.running(OffsetDateTime::now_utc());
    Ok(Some(ConnectivityCheck {
        id: check.id.to_string(),
        requested_at: rfc3339(check.requested_at),
        requested_by: check.requested_by,
        deadline_at: rfc3339(check.deadline_at),
        finished_at: check.finished_at.map(rfc3339),
        running,
        count: check.count,
        interval_ms: check.interval_ms,
        pairs: pairs(&sites, &results, running),
    }))
}
