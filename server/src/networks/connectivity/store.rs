//! The `connectivity_checks` and `connectivity_results` tables, and which
//! appliance of each site takes part.

use sqlx::{PgExecutor, PgPool};
use std::net::Ipv4Addr;
use std::time::Duration;
use time::OffsetDateTime;
use uuid::Uuid;
use vpcmesh_protocol::ProbeResult;

#[derive(Clone, Debug)]
pub struct CheckRow {
    pub id: Uuid,
    pub network_id: Uuid,
    pub requested_by: Option<String>,
    pub requested_at: OffsetDateTime,
    pub count: u16,
    pub interval_ms: u32,
    /// The edge sites asked to probe each other.
    pub sites: Vec<Uuid>,
    pub deadline_at: OffsetDateTime,
    pub finished_at: Option<OffsetDateTime>,
}

impl CheckRow {
    /// Waiting for reports: not every site reported and the deadline is ahead.
    pub fn running(&self, now: OffsetDateTime) -> bool {
        self.finished_at.is_none() && now < self.deadline_at
    }
}

type Row = (
    Uuid,
    Uuid,
    Option<String>,
    OffsetDateTime,
    i16,
    i32,
    Vec<Uuid>,
    OffsetDateTime,
    Option<OffsetDateTime>,
);

const COLUMNS: &str = "c.id, c.network_id, u.email, c.requested_at, c.count, c.interval_ms,
                       c.sites, c.deadline_at, c.finished_at
                  FROM connectivity_checks c LEFT JOIN users u ON u.id = c.requested_by";

fn check_of(r: Row) -> CheckRow {
    CheckRow {
        id: r.0,
        network_id: r.1,
        requested_by: r.2,
        requested_at: r.3,
        count: r.4.max(0) as u16,
        interval_ms: r.5.max(0) as u32,
        sites: r.6,
        deadline_at: r.7,
        finished_at: r.8,
    }
}

/// The network's latest check.
pub async fn latest(
    db: impl PgExecutor<'_>,
    network_id: Uuid,
) -> Result<Option<CheckRow>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} WHERE c.network_id = $1 ORDER BY c.requested_at DESC, c.id LIMIT 1"
    ))
    .bind(network_id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(check_of))
}

/// The network's check that still waits for reports, if any.
pub async fn running(
    db: impl PgExecutor<'_>,
    network_id: Uuid,
) -> Result<Option<CheckRow>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS}
          WHERE c.network_id = $1 AND c.finished_at IS NULL AND c.deadline_at > now()
          ORDER BY c.requested_at DESC LIMIT 1"
    ))
    .bind(network_id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(check_of))
}

/// A check of the network by id (appliances name it in their reports).
pub async fn find(
    db: impl PgExecutor<'_>,
    network_id: Uuid,
    id: Uuid,
) -> Result<Option<CheckRow>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} WHERE c.network_id = $1 AND c.id = $2"
    ))
    .bind(network_id)
    .bind(id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(check_of))
}

pub struct NewCheck<'a> {
    pub id: Uuid,
    pub network_id: Uuid,
    pub requested_by: Uuid,
    pub count: u16,
    pub interval_ms: u32,
    pub sites: &'a [Uuid],
    /// From now until reports are due.
    pub report_within: Duration,
}

/// Stores a check; the insert wakes the network's long-polls (0008).
pub async fn insert(db: impl PgExecutor<'_>, c: NewCheck<'_>) -> Result<CheckRow, sqlx::Error> {
    let (requested_at, deadline_at): (OffsetDateTime, OffsetDateTime) = sqlx::query_as(
        "INSERT INTO connectivity_checks (id, network_id, requested_by, count, interval_ms,
                                          sites, deadline_at)
         VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7))
         RETURNING requested_at, deadline_at",
    )
    .bind(c.id)
    .bind(c.network_id)
    .bind(c.requested_by)
    .bind(c.count as i16)
    .bind(c.interval_ms as i32)
    .bind(c.sites)
    .bind(c.report_within.as_secs_f64())
    .fetch_one(db)
    .await?;
    Ok(CheckRow {
        id: c.id,
        network_id: c.network_id,
        requested_by: None,
        requested_at,
        count: c.count,
        interval_ms: c.interval_ms,
        sites: c.sites.to_vec(),
        deadline_at,
        finished_at: None,
    })
}

/// One direction's stored measurement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultRow {
    pub from_site: Uuid,
    pub to_site: Uuid,
    pub sent: u16,
    pub received: u16,
    pub rtt_min_us: Option<u32>,
    pub rtt_avg_us: Option<u32>,
    pub rtt_max_us: Option<u32>,
    pub reported_at: OffsetDateTime,
}

pub async fn results(
    db: impl PgExecutor<'_>,
    check_id: Uuid,
) -> Result<Vec<ResultRow>, sqlx::Error> {
    type Row = (
        Uuid,
        Uuid,
        i16,
        i16,
        Option<i32>,
        Option<i32>,
        Option<i32>,
        OffsetDateTime,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT from_site, to_site, sent, received, rtt_min_us, rtt_avg_us, rtt_max_us,
                reported_at
           FROM connectivity_results WHERE check_id = $1",
    )
    .bind(check_id)
    .fetch_all(db)
    .await?;
    let us = |v: Option<i32>| v.map(|v| v.max(0) as u32);
    Ok(rows
        .into_iter()
        .map(|r| ResultRow {
            from_site: r.0,
            to_site: r.1,
            sent: r.2.max(0) as u16,
            received: r.3.max(0) as u16,
            rtt_min_us: us(r.4),
            rtt_avg_us: us(r.5),
            rtt_max_us: us(r.6),
            reported_at: r.7,
        })
        .collect())
}

/// Stores what `from_site` measured (a repeated report replaces its rows)
/// and finishes the check once every site of it reported.
pub async fn record(
    pool: &PgPool,
    check_id: Uuid,
    from_site: Uuid,
    results: &[ProbeResult],
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    for r in results {
        let us = |v: Option<u32>| v.map(|v| v.min(i32::MAX as u32) as i32);
        sqlx::query(
            "INSERT INTO connectivity_results (check_id, from_site, to_site, sent, received,
                                               rtt_min_us, rtt_avg_us, rtt_max_us)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (check_id, from_site, to_site) DO UPDATE
                SET sent = EXCLUDED.sent, received = EXCLUDED.received,
                    rtt_min_us = EXCLUDED.rtt_min_us, rtt_avg_us = EXCLUDED.rtt_avg_us,
                    rtt_max_us = EXCLUDED.rtt_max_us, reported_at = now()",
        )
        .bind(check_id)
        .bind(from_site)
        .bind(r.peer_site)
        .bind(r.sent.min(i16::MAX as u16) as i16)
        .bind(r.received.min(i16::MAX as u16) as i16)
        .bind(us(r.rtt_min_us))
        .bind(us(r.rtt_avg_us))
        .bind(us(r.rtt_max_us))
        .execute(&mut *tx)
        .await?;
    }
    let finished = sqlx::query(
        "UPDATE connectivity_checks c SET finished_at = now()
          WHERE c.id = $1 AND c.finished_at IS NULL
            AND (SELECT count(DISTINCT r.from_site) FROM connectivity_results r
                  WHERE r.check_id = c.id) >= cardinality(c.sites)",
    )
    .bind(check_id)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        > 0;
    tx.commit().await?;
    Ok(finished)
}

/// The appliance of an edge site that takes part in checks: the one that
/// reported itself active and is live, else member A (the active member
/// until failover says otherwise).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Participant {
    pub site_id: Uuid,
    pub appliance_id: Uuid,
    /// Its inside address: what its peers ping.
    pub private_ip: Ipv4Addr,
    /// Reported within the live window.
    pub live: bool,
}

pub async fn participants(
    db: impl PgExecutor<'_>,
    network_id: Uuid,
    live_within: Duration,
) -> Result<Vec<Participant>, sqlx::Error> {
    let rows: Vec<(Uuid, Uuid, String, bool)> = sqlx::query_as(
        "SELECT DISTINCT ON (a.site_id) a.site_id, a.id, host(a.private_ip),
                coalesce(a.last_seen_at > now() - make_interval(secs => $2), false) AS live
           FROM appliances a JOIN sites s ON s.id = a.site_id
          WHERE s.network_id = $1 AND s.kind = 'edge' AND a.retired_at IS NULL
          ORDER BY a.site_id,
                   coalesce(a.ha_role = 'active'
                            AND a.last_seen_at > now() - make_interval(secs => $2), false) DESC,
                   a.member",
    )
    .bind(network_id)
    .bind(live_within.as_secs_f64())
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(site_id, appliance_id, ip, live)| {
            Some(Participant {
                site_id,
                appliance_id,
                private_ip: ip.parse().ok()?,
                live,
            })
        })
        .collect())
}
