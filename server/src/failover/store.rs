//! The `takeover_requests` and `failovers` tables, and the pair of a site
//! as failover sees it.

use sqlx::{PgConnection, PgExecutor};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;
use time::OffsetDateTime;
use uuid::Uuid;
use vpcmesh_protocol::Member;

fn member_of(text: &str) -> Option<Member> {
    match text {
        "a" => Some(Member::A),
        "b" => Some(Member::B),
        _ => None,
    }
}

/// Who asked for a takeover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    User,
    HealthMonitor,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::User => "user",
            Source::HealthMonitor => "health_monitor",
        }
    }

    fn parse(s: &str) -> Option<Source> {
        match s {
            "user" => Some(Source::User),
            "health_monitor" => Some(Source::HealthMonitor),
            _ => None,
        }
    }
}

/// A registered (not retired) appliance of a site, with its HA state.
#[derive(Clone, Debug)]
pub struct PairMember {
    pub id: Uuid,
    pub member: Member,
    pub instance_id: String,
    pub private_ip: Ipv4Addr,
    /// "active" or "passive", as it last reported.
    pub ha_role: Option<String>,
    /// None: its agent never reported an HA reason (it predates failover).
    pub ha_reason: Option<String>,
    pub last_seen_at: Option<OffsetDateTime>,
    pub protocol: Option<i16>,
}

type MemberRow = (
    Uuid,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<OffsetDateTime>,
    Option<i16>,
);

/// A [`MemberRow`] after its site's id (sqlx decodes flat tuples only).
type SiteMemberRow = (
    Uuid,
    Uuid,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<OffsetDateTime>,
    Option<i16>,
);

fn pair_member(r: MemberRow) -> Option<PairMember> {
    Some(PairMember {
        id: r.0,
        member: member_of(&r.1)?,
        instance_id: r.2,
        private_ip: r.3.parse().ok()?,
        ha_role: r.4,
        ha_reason: r.5,
        last_seen_at: r.6,
        protocol: r.7,
    })
}

/// Registered appliances matching `filter` (on `a`, the appliance, or `s`,
/// its site; `$1` is `id`), with their sites, by site and member.
async fn members_where(
    db: impl PgExecutor<'_>,
    filter: &str,
    id: Uuid,
) -> Result<Vec<(Uuid, PairMember)>, sqlx::Error> {
    let rows: Vec<SiteMemberRow> = sqlx::query_as(&format!(
        "SELECT a.site_id, a.id, a.member, a.instance_id, host(a.private_ip), a.ha_role,
                a.ha_reason, a.last_seen_at, a.protocol
           FROM appliances a JOIN sites s ON s.id = a.site_id
          WHERE a.retired_at IS NULL AND {filter} ORDER BY a.site_id, a.member"
    ))
    .bind(id)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(
            |(site, id, member, instance, ip, role, reason, seen, protocol)| {
                let m = pair_member((id, member, instance, ip, role, reason, seen, protocol))?;
                Some((site, m))
            },
        )
        .collect())
}

/// The site's registered appliances, member A first.
pub async fn live_members(
    db: impl PgExecutor<'_>,
    site_id: Uuid,
) -> Result<Vec<PairMember>, sqlx::Error> {
    let rows = members_where(db, "a.site_id = $1", site_id).await?;
    Ok(rows.into_iter().map(|(_, m)| m).collect())
}

/// The registered appliances of every site of the network, by site (member
/// A first): what a network's snapshot gives each site's pair.
pub async fn live_members_by_site(
    db: impl PgExecutor<'_>,
    network_id: Uuid,
) -> Result<BTreeMap<Uuid, Vec<PairMember>>, sqlx::Error> {
    let mut by_site: BTreeMap<Uuid, Vec<PairMember>> = BTreeMap::new();
    for (site, m) in members_where(db, "s.network_id = $1", network_id).await? {
        by_site.entry(site).or_default().push(m);
    }
    Ok(by_site)
}

/// Every site's open takeover request in the network, as (number, the
/// appliance it asks): a site's latest request, while it is not done. The
/// appliance it names is asked to take over (in its config).
pub async fn open_takeovers(
    db: impl PgExecutor<'_>,
    network_id: Uuid,
) -> Result<BTreeMap<Uuid, (u64, Uuid)>, sqlx::Error> {
    let rows: Vec<(Uuid, i64, Uuid)> = sqlx::query_as(
        "SELECT site_id, number, appliance_id FROM (
           SELECT DISTINCT ON (t.site_id) t.site_id, t.number, t.appliance_id, t.done_at
             FROM takeover_requests t JOIN sites s ON s.id = t.site_id
            WHERE s.network_id = $1
            ORDER BY t.site_id, t.number DESC) latest
          WHERE done_at IS NULL",
    )
    .bind(network_id)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(site, n, appliance)| Some((site, (u64::try_from(n).ok()?, appliance))))
        .collect())
}

/// A site's takeover request.
#[derive(Clone, Debug)]
pub struct TakeoverRow {
    pub site_id: Uuid,
    pub number: u64,
    pub member: Member,
    pub appliance_id: Uuid,
    pub instance_id: String,
    /// The addressed appliance is still registered (not replaced).
    pub appliance_live: bool,
    pub requested_at: OffsetDateTime,
    pub source: Source,
    pub requested_by: Option<Uuid>,
    pub requested_by_email: Option<String>,
    pub silent_appliance_id: Option<Uuid>,
    pub silent_seen_at: Option<OffsetDateTime>,
    pub attempt: u16,
    pub done_at: Option<OffsetDateTime>,
}

impl TakeoverRow {
    /// Not carried out yet by an appliance that can still carry it out.
    pub fn pending(&self) -> bool {
        self.done_at.is_none() && self.appliance_live
    }
}

type TakeoverDbRow = (
    Uuid,
    i64,
    String,
    Uuid,
    String,
    bool,
    OffsetDateTime,
    String,
    Option<Uuid>,
    Option<String>,
    Option<Uuid>,
    Option<OffsetDateTime>,
    i16,
    Option<OffsetDateTime>,
);

const TAKEOVER_COLUMNS: &str = "t.site_id, t.number, t.member, t.appliance_id, a.instance_id,
        a.retired_at IS NULL, t.requested_at, t.source, t.requested_by, u.email,
        t.silent_appliance_id, t.silent_seen_at, t.attempt, t.done_at
   FROM takeover_requests t
   JOIN appliances a ON a.id = t.appliance_id
   LEFT JOIN users u ON u.id = t.requested_by";

fn takeover_of(r: TakeoverDbRow) -> Option<TakeoverRow> {
    Some(TakeoverRow {
        site_id: r.0,
        number: u64::try_from(r.1).ok()?,
        member: member_of(&r.2)?,
        appliance_id: r.3,
        instance_id: r.4,
        appliance_live: r.5,
        requested_at: r.6,
        source: Source::parse(&r.7)?,
        requested_by: r.8,
        requested_by_email: r.9,
        silent_appliance_id: r.10,
        silent_seen_at: r.11,
        attempt: u16::try_from(r.12).ok()?,
        done_at: r.13,
    })
}

/// The site's latest request (only it can be pending).
pub async fn latest_request(
    db: impl PgExecutor<'_>,
    site_id: Uuid,
) -> Result<Option<TakeoverRow>, sqlx::Error> {
    let row: Option<TakeoverDbRow> = sqlx::query_as(&format!(
        "SELECT {TAKEOVER_COLUMNS} WHERE t.site_id = $1 ORDER BY t.number DESC LIMIT 1"
    ))
    .bind(site_id)
    .fetch_optional(db)
    .await?;
    Ok(row.and_then(takeover_of))
}

/// Per site of the network, its latest request.
pub async fn latest_requests(
    db: impl PgExecutor<'_>,
    network_id: Uuid,
) -> Result<Vec<TakeoverRow>, sqlx::Error> {
    let rows: Vec<TakeoverDbRow> = sqlx::query_as(&format!(
        "SELECT DISTINCT ON (t.site_id) {TAKEOVER_COLUMNS}
           JOIN sites s ON s.id = t.site_id
          WHERE s.network_id = $1
          ORDER BY t.site_id, t.number DESC"
    ))
    .bind(network_id)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().filter_map(takeover_of).collect())
}

pub struct NewRequest {
    pub site_id: Uuid,
    pub number: u64,
    pub member: Member,
    pub appliance_id: Uuid,
    pub source: Source,
    pub requested_by: Option<Uuid>,
    pub silent: Option<(Uuid, OffsetDateTime)>,
    pub attempt: u16,
}

/// Stores a request (its insert wakes the network's long-polls). Callers
/// hold the site row's lock; the primary key still refuses a number twice
/// (None then).
pub async fn insert_request(
    db: impl PgExecutor<'_>,
    r: &NewRequest,
) -> Result<Option<OffsetDateTime>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO takeover_requests (site_id, number, member, appliance_id, source,
                                        requested_by, silent_appliance_id, silent_seen_at,
                                        attempt)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (site_id, number) DO NOTHING
         RETURNING requested_at",
    )
    .bind(r.site_id)
    .bind(i64::try_from(r.number).unwrap_or(i64::MAX))
    .bind(r.member.as_str())
    .bind(r.appliance_id)
    .bind(r.source.as_str())
    .bind(r.requested_by)
    .bind(r.silent.map(|(id, _)| id))
    .bind(r.silent.map(|(_, at)| at))
    .bind(r.attempt as i16)
    .fetch_optional(db)
    .await
}

/// Marks the requests addressed to `appliance_id` up to `done` as carried out.
pub async fn mark_done(
    db: impl PgExecutor<'_>,
    site_id: Uuid,
    appliance_id: Uuid,
    done: u64,
) -> Result<u64, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE takeover_requests SET done_at = now()
          WHERE site_id = $1 AND appliance_id = $2 AND number <= $3 AND done_at IS NULL",
    )
    .bind(site_id)
    .bind(appliance_id)
    .bind(i64::try_from(done).unwrap_or(i64::MAX))
    .execute(db)
    .await?;
    Ok(r.rows_affected())
}

/// The latest request addressed to `appliance_id` (numbered at most
/// `up_to`, when given): what a "requested" takeover carried out.
pub async fn request_carried_out(
    db: impl PgExecutor<'_>,
    appliance_id: Uuid,
    up_to: Option<u64>,
) -> Result<Option<TakeoverRow>, sqlx::Error> {
    let row: Option<TakeoverDbRow> = sqlx::query_as(&format!(
        "SELECT {TAKEOVER_COLUMNS}
          WHERE t.appliance_id = $1 AND ($2::bigint IS NULL OR t.number <= $2)
          ORDER BY t.number DESC LIMIT 1"
    ))
    .bind(appliance_id)
    .bind(up_to.map(|n| i64::try_from(n).unwrap_or(i64::MAX)))
    .fetch_optional(db)
    .await?;
    Ok(row.and_then(takeover_of))
}

/// The appliance a site's active role moved away from when `to` took it:
/// the other member's appliance that last reported active (it may have
/// been replaced since), else the other member's newest.
pub async fn previous_active(
    db: impl PgExecutor<'_>,
    site_id: Uuid,
    to: Member,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM appliances WHERE site_id = $1 AND member <> $2
          ORDER BY coalesce(ha_role = 'active', false) DESC, registered_at DESC LIMIT 1",
    )
    .bind(site_id)
    .bind(to.as_str())
    .fetch_optional(db)
    .await
}

pub struct NewFailover<'a> {
    pub site_id: Uuid,
    pub from: Option<Uuid>,
    pub to: Uuid,
    pub reason: &'a str,
    pub request: Option<&'a TakeoverRow>,
}

/// Records a failover; the new active's role-since (just stored) is when it
/// took the role. Returns that time.
pub async fn insert_failover(
    tx: &mut PgConnection,
    f: NewFailover<'_>,
) -> Result<OffsetDateTime, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO failovers (network_id, site_id, from_appliance_id, to_appliance_id, reason,
                                request_number, request_source, requested_by, took_role_at)
         SELECT s.network_id, s.id, $2, a.id, $4, $5, $6, $7, coalesce(a.ha_role_since, now())
           FROM sites s JOIN appliances a ON a.id = $3 AND a.site_id = s.id
          WHERE s.id = $1
         RETURNING took_role_at",
    )
    .bind(f.site_id)
    .bind(f.from)
    .bind(f.to)
    .bind(f.reason)
    .bind(
        f.request
            .map(|r| i64::try_from(r.number).unwrap_or(i64::MAX)),
    )
    .bind(f.request.map(|r| r.source.as_str()))
    .bind(f.request.and_then(|r| r.requested_by))
    .fetch_one(&mut *tx)
    .await
}

/// One recorded failover with the names the console shows.
pub struct FailoverRow {
    pub site_id: Uuid,
    pub site_name: String,
    pub region: String,
    pub from_instance_id: Option<String>,
    pub from_member: Option<String>,
    pub to_instance_id: String,
    pub to_member: String,
    pub reason: String,
    pub request_source: Option<String>,
    pub requested_by_email: Option<String>,
    pub took_role_at: OffsetDateTime,
    pub recorded_at: OffsetDateTime,
}

pub async fn history(
    db: impl PgExecutor<'_>,
    network_id: Uuid,
    limit: i64,
) -> Result<Vec<FailoverRow>, sqlx::Error> {
    type Row = (
        Uuid,
        String,
        String,
        Option<String>,
        Option<String>,
        String,
        String,
        String,
        Option<String>,
        Option<String>,
        OffsetDateTime,
        OffsetDateTime,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT f.site_id, s.name, s.region, fa.instance_id, fa.member, ta.instance_id,
                ta.member, f.reason, f.request_source, u.email, f.took_role_at, f.recorded_at
           FROM failovers f
           JOIN sites s ON s.id = f.site_id
           JOIN appliances ta ON ta.id = f.to_appliance_id
           LEFT JOIN appliances fa ON fa.id = f.from_appliance_id
           LEFT JOIN users u ON u.id = f.requested_by
          WHERE f.network_id = $1
          ORDER BY f.took_role_at DESC, f.id DESC LIMIT $2",
    )
    .bind(network_id)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| FailoverRow {
            site_id: r.0,
            site_name: r.1,
            region: r.2,
            from_instance_id: r.3,
            from_member: r.4,
            to_instance_id: r.5,
            to_member: r.6,
            reason: r.7,
            request_source: r.8,
            requested_by_email: r.9,
            took_role_at: r.10,
            recorded_at: r.11,
        })
        .collect())
}

/// A site where the health monitor should step in: its reported active has
/// been silent for the backstop's time while its partner, passive and
/// HA-aware, keeps reporting.
#[derive(Clone, Debug)]
pub struct SilentActive {
    pub site_id: Uuid,
    pub org_id: Uuid,
    pub network_name: String,
    pub site_name: String,
    pub silent: PairMember,
    pub partner: PairMember,
}

/// The sites to step in for (all of them, or only `site`).
pub async fn silent_actives(
    db: impl PgExecutor<'_>,
    after: Duration,
    site: Option<Uuid>,
) -> Result<Vec<SilentActive>, sqlx::Error> {
    let rows: Vec<SilentRow> = sqlx::query_as(
        "SELECT s.id AS site_id, n.org_id, n.name AS network_name, s.name AS site_name,
                act.id AS a_id, act.member AS a_member, act.instance_id AS a_instance,
                host(act.private_ip) AS a_ip, act.ha_role AS a_role, act.ha_reason AS a_reason,
                act.last_seen_at AS a_seen, act.protocol AS a_protocol,
                pas.id AS p_id, pas.member AS p_member, pas.instance_id AS p_instance,
                host(pas.private_ip) AS p_ip, pas.ha_role AS p_role, pas.ha_reason AS p_reason,
                pas.last_seen_at AS p_seen, pas.protocol AS p_protocol
           FROM appliances act
           JOIN appliances pas ON pas.site_id = act.site_id AND pas.member <> act.member
                              AND pas.retired_at IS NULL
           JOIN sites s ON s.id = act.site_id
           JOIN networks n ON n.id = s.network_id
          WHERE act.retired_at IS NULL AND act.ha_role = 'active'
            AND pas.ha_role = 'passive' AND pas.ha_reason IS NOT NULL
            AND coalesce(pas.protocol, 3) >= 3
            AND n.status NOT IN ('deleting', 'deleted')
            AND act.last_seen_at <= now() - make_interval(secs => $1)
            AND pas.last_seen_at > now() - make_interval(secs => $1)
            AND ($2::uuid IS NULL OR s.id = $2)
          ORDER BY s.id",
    )
    .bind(after.as_secs_f64())
    .bind(site)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            Some(SilentActive {
                site_id: r.site_id,
                org_id: r.org_id,
                network_name: r.network_name,
                site_name: r.site_name,
                silent: pair_member((
                    r.a_id,
                    r.a_member,
                    r.a_instance,
                    r.a_ip,
                    r.a_role,
                    r.a_reason,
                    r.a_seen,
                    r.a_protocol,
                ))?,
                partner: pair_member((
                    r.p_id,
                    r.p_member,
                    r.p_instance,
                    r.p_ip,
                    r.p_role,
                    r.p_reason,
                    r.p_seen,
                    r.p_protocol,
                ))?,
            })
        })
        .collect())
}

#[derive(sqlx::FromRow)]
struct SilentRow {
    site_id: Uuid,
    org_id: Uuid,
    network_name: String,
    site_name: String,
    a_id: Uuid,
    a_member: String,
    a_instance: String,
    a_ip: String,
    a_role: Option<String>,
    a_reason: Option<String>,
    a_seen: Option<OffsetDateTime>,
    a_protocol: Option<i16>,
    p_id: Uuid,
    p_member: String,
    p_instance: String,
    p_ip: String,
    p_role: Option<String>,
    p_reason: Option<String>,
    p_seen: Option<OffsetDateTime>,
    p_protocol: Option<i16>,
}

/// Locks a site's row: takeover requests of one site are decided one at a
/// time, whichever replica decides. (NO KEY: rows that reference the site,
/// appliances registering or failovers recorded, need not wait.)
pub async fn lock_site(db: impl PgExecutor<'_>, site_id: Uuid) -> Result<bool, sqlx::Error> {
    let found: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM sites WHERE id = $1 FOR NO KEY UPDATE")
            .bind(site_id)
            .fetch_optional(db)
            .await?;
    Ok(found.is_some())
}
