//! SQL for appliances and their bootstrap tokens.

use sqlx::{PgExecutor, PgPool};
use std::net::Ipv4Addr;
use time::OffsetDateTime;
use uuid::Uuid;
use vpcmesh_protocol::{HaRole, Member, StatusReport};

pub struct TokenRow {
    pub site_id: Uuid,
    pub member: Member,
    /// `None`: valid while the site lives.
    pub expires_at: Option<OffsetDateTime>,
}

fn member_of(text: &str) -> Option<Member> {
    match text {
        "a" => Some(Member::A),
        "b" => Some(Member::B),
        _ => None,
    }
}

/// A member's bootstrap token (tokens without a member, from before HA
/// members had their own, register nothing).
pub async fn token(db: impl PgExecutor<'_>, hash: &[u8]) -> Result<Option<TokenRow>, sqlx::Error> {
    let row: Option<(Uuid, Option<String>, Option<OffsetDateTime>)> = sqlx::query_as(
        "SELECT site_id, member, expires_at FROM site_bootstrap_tokens WHERE token_hash = $1",
    )
    .bind(hash)
    .fetch_optional(db)
    .await?;
    Ok(row.and_then(|(site_id, member, expires_at)| {
        Some(TokenRow {
            site_id,
            member: member_of(member.as_deref()?)?,
            expires_at,
        })
    }))
}

/// Locks the token row: registrations of one member run one at a time.
pub async fn lock_token(db: impl PgExecutor<'_>, hash: &[u8]) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1 FROM site_bootstrap_tokens WHERE token_hash = $1 FOR UPDATE")
        .bind(hash)
        .execute(db)
        .await
        .map(|_| ())
}

/// Records the token's first use (it keeps working for replacements).
pub async fn use_token(db: impl PgExecutor<'_>, hash: &[u8]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE site_bootstrap_tokens SET used_at = coalesce(used_at, now()) WHERE token_hash = $1",
    )
    .bind(hash)
    .execute(db)
    .await?;
    Ok(())
}

/// What registration needs of a site: its network, organization, account
/// role, region and stack outputs (the members' Auto Scaling groups).
#[derive(Debug)]
pub struct RegistrationSite {
    pub network_id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    pub region: String,
    pub role_arn: Option<String>,
    pub outputs: sqlx::types::Json<serde_json::Map<String, serde_json::Value>>,
}

/// The site, if its network is live.
pub async fn registration_site(
    db: impl PgExecutor<'_>,
    site_id: Uuid,
) -> Result<Option<RegistrationSite>, sqlx::Error> {
    type Row = (
        Uuid,
        Uuid,
        String,
        String,
        Option<String>,
        sqlx::types::Json<serde_json::Map<String, serde_json::Value>>,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT n.id, n.org_id, s.name, s.region, a.role_arn, s.outputs
           FROM sites s JOIN networks n ON n.id = s.network_id
           LEFT JOIN aws_accounts a ON a.id = s.account_ref
          WHERE s.id = $1 AND n.status NOT IN ('deleting', 'deleted')",
    )
    .bind(site_id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(
        |(network_id, org_id, name, region, role_arn, outputs)| RegistrationSite {
            network_id,
            org_id,
            name,
            region,
            role_arn,
            outputs,
        },
    ))
}

/// The live appliance of a site's member.
pub struct LiveMember {
    pub instance_id: String,
    pub last_seen_at: Option<OffsetDateTime>,
}

pub async fn live_member(
    db: impl PgExecutor<'_>,
    site_id: Uuid,
    member: Member,
) -> Result<Option<LiveMember>, sqlx::Error> {
    let row: Option<(String, Option<OffsetDateTime>)> = sqlx::query_as(
        "SELECT instance_id, last_seen_at FROM appliances
          WHERE site_id = $1 AND member = $2 AND retired_at IS NULL",
    )
    .bind(site_id)
    .bind(member.as_str())
    .fetch_optional(db)
    .await?;
    Ok(row.map(|(instance_id, last_seen_at)| LiveMember {
        instance_id,
        last_seen_at,
    }))
}

/// The highest SA generation any instance of the member ever had (0: none).
pub async fn last_generation(
    db: impl PgExecutor<'_>,
    site_id: Uuid,
    member: Member,
) -> Result<u32, sqlx::Error> {
    let g: Option<i32> = sqlx::query_scalar(
        "SELECT max(generation) FROM appliances WHERE site_id = $1 AND member = $2",
    )
    .bind(site_id)
    .bind(member.as_str())
    .fetch_one(db)
    .await?;
    Ok(g.unwrap_or(0).max(0) as u32)
}

/// Moves a live appliance to a generation above `above` and above its own;
/// `None` when that would pass `max`.
pub async fn next_generation(
    db: impl PgExecutor<'_>,
    id: Uuid,
    above: u32,
    max: u32,
) -> Result<Option<u32>, sqlx::Error> {
    let g: Option<i32> = sqlx::query_scalar(
        "UPDATE appliances SET generation = greatest(generation, $2) + 1
          WHERE id = $1 AND retired_at IS NULL AND greatest(generation, $2) + 1 <= $3
          RETURNING generation",
    )
    .bind(id)
    .bind(above.min(i32::MAX as u32 - 1) as i32)
    .bind(max as i32)
    .fetch_optional(db)
    .await?;
    Ok(g.map(|g| g as u32))
}

pub struct NewAppliance<'a> {
    pub id: Uuid,
    pub site_id: Uuid,
    pub member: Member,
    pub instance_id: &'a str,
    pub availability_zone: &'a str,
    pub private_ip: Ipv4Addr,
    pub public_ip: Option<Ipv4Addr>,
    pub credential_hash: &'a [u8],
    pub agent_version: &'a str,
    pub generation: u32,
}

/// Retires the member's previous instance (it was replaced) and stores the new one.
pub async fn replace_member(
    tx: &mut sqlx::PgConnection,
    a: NewAppliance<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE appliances SET retired_at = now()
          WHERE site_id = $1 AND member = $2 AND retired_at IS NULL",
    )
    .bind(a.site_id)
    .bind(a.member.as_str())
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO appliances (id, site_id, member, instance_id, availability_zone,
                                 private_ip, public_ip, credential_hash, agent_version,
                                 generation)
         VALUES ($1, $2, $3, $4, $5, $6::inet, $7::inet, $8, $9, $10)",
    )
    .bind(a.id)
    .bind(a.site_id)
    .bind(a.member.as_str())
    .bind(a.instance_id)
    .bind(a.availability_zone)
    .bind(a.private_ip.to_string())
    .bind(a.public_ip.map(|ip| ip.to_string()))
    .bind(a.credential_hash)
    .bind(a.agent_version)
    .bind(a.generation as i32)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A live appliance, found by its credential.
#[derive(Clone, Debug)]
pub struct ApplianceRow {
    pub id: Uuid,
    pub site_id: Uuid,
    pub network_id: Uuid,
    pub member: Member,
    pub private_ip: Ipv4Addr,
    /// The protocol its agent last asked in (None: not yet recorded).
    pub protocol: Option<u16>,
}

pub async fn by_credential(
    pool: &PgPool,
    hash: &[u8],
) -> Result<Option<ApplianceRow>, sqlx::Error> {
    type Row = (Uuid, Uuid, Uuid, String, String, Option<i16>);
    let row: Option<Row> = sqlx::query_as(
        "SELECT a.id, a.site_id, s.network_id, a.member, host(a.private_ip), a.protocol
           FROM appliances a JOIN sites s ON s.id = a.site_id
          WHERE a.credential_hash = $1 AND a.retired_at IS NULL",
    )
    .bind(hash)
    .fetch_optional(pool)
    .await?;
    Ok(
        row.and_then(|(id, site_id, network_id, member, ip, protocol)| {
            Some(ApplianceRow {
                id,
                site_id,
                network_id,
                member: member_of(&member)?,
                private_ip: ip.parse().ok()?,
                protocol: protocol.and_then(|p| u16::try_from(p).ok()),
            })
        }),
    )
}

/// Stores a status report; returns the role the appliance had reported
/// before (the row stays locked until `tx` ends, so reports of one
/// appliance are recorded one at a time).
pub async fn record_status(
    tx: &mut sqlx::PgConnection,
    id: Uuid,
    report: &StatusReport,
) -> Result<Option<HaRole>, sqlx::Error> {
    let previous: Option<Option<String>> =
        sqlx::query_scalar("SELECT ha_role FROM appliances WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let previous = previous.flatten().and_then(|r| role_of(&r));
    // The SPIs each tunnel's kernel holds (protocol 3), kept apart from the
    // counters: a change here moves peers, a counter does not.
    let sa_state: serde_json::Map<String, serde_json::Value> = report
        .tunnels
        .iter()
        .filter(|t| t.out_spi.is_some() || t.inbound_spis.is_some())
        .map(|t| {
            (
                t.peer_site.to_string(),
                serde_json::json!({"out": t.out_spi, "in": t.inbound_spis.clone().unwrap_or_default()}),
            )
        })
        .collect();
    // Role-since is now - role_for_ms by this server's clock. Each report
    // moves it by the report's own delay, so it is only taken anew when the
    // role or reason changed or it moved by more than 2 s (a restart).
    sqlx::query(
        "UPDATE appliances SET last_seen_at = now(), agent_version = $2, applied_version = $3,
                config_error = $4, ha_role = $5, tunnels = $6, epochs = $7, sa_state = $8,
                ha_reason = $9,
                ha_role_since = CASE
                    WHEN $9::text IS NULL THEN NULL
                    WHEN ha_role IS DISTINCT FROM $5 OR ha_reason IS DISTINCT FROM $9
                         OR ha_role_since IS NULL
                         OR abs(extract(epoch FROM ha_role_since
                                - (now() - make_interval(secs => $10)))) > 2
                    THEN now() - make_interval(secs => $10)
                    ELSE ha_role_since END,
                -- A repair keeps its time unless the report moves it by more
                -- than 2 s (each report shifts it by its own delay).
                last_repair_at = CASE
                    WHEN $11::bigint IS NULL THEN last_repair_at
                    WHEN last_repair_at IS NULL
                         OR abs(extract(epoch FROM last_repair_at
                                - (now() - make_interval(secs => $13)))) > 2
                    THEN now() - make_interval(secs => $13)
                    ELSE last_repair_at END,
                last_repair_changes = COALESCE($12, last_repair_changes),
                repairs = COALESCE($11, repairs)
          WHERE id = $1",
    )
    .bind(id)
    .bind(&report.agent_version)
    .bind(report.applied_version.map(|v| v as i64))
    .bind(&report.config_error)
    .bind(role_str(report.ha_role))
    .bind(sqlx::types::Json(&report.tunnels))
    .bind(
        report
            .epochs
            .iter()
            .map(|e| *e as i32)
            .collect::<Vec<i32>>(),
    )
    .bind(sqlx::types::Json(sa_state))
    .bind(report.ha.as_ref().map(|h| h.reason.as_str()))
    .bind(
        report
            .ha
            .as_ref()
            .map_or(0.0, |h| h.role_for_ms as f64 / 1000.0),
    )
    .bind(report.repairs.map(|r| r.count as i64))
    .bind(report.repairs.map(|r| r.last_changes as i32))
    .bind(
        report
            .repairs
            .map_or(0.0, |r| r.last_ago_ms as f64 / 1000.0),
    )
    .execute(&mut *tx)
    .await?;
    Ok(previous)
}

fn role_str(role: HaRole) -> &'static str {
    match role {
        HaRole::Active => "active",
        HaRole::Passive => "passive",
    }
}

fn role_of(text: &str) -> Option<HaRole> {
    match text {
        "active" => Some(HaRole::Active),
        "passive" => Some(HaRole::Passive),
        _ => None,
    }
}

/// Remembers which protocol the appliance's agent speaks.
pub async fn record_protocol(pool: &PgPool, id: Uuid, protocol: u16) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE appliances SET protocol = $2 WHERE id = $1 AND protocol IS DISTINCT FROM $2",
    )
    .bind(id)
    .bind(protocol as i16)
    .execute(pool)
    .await
    .map(|_| ())
}

/// What the config compiler needs of one appliance of the network, live or
/// retired: its generation, and for live ones what its kernel holds.
#[derive(Clone, Debug)]
pub struct MemberSas {
    pub site_id: Uuid,
    pub member: Member,
    /// The highest generation of the member (over all its instances).
    pub generation: u32,
    /// The live instance reported within the live window.
    pub reporting: bool,
    /// The live instance's agent speaks protocol 3 or later.
    pub reports_spis: bool,
    /// The live instance's agent speaks protocol 2 (it asked for configs
    /// without naming a protocol).
    pub speaks_previous: bool,
    /// By peer site: (outbound SPI, inbound SPIs) its kernel holds.
    pub held: std::collections::BTreeMap<Uuid, (Option<u32>, Vec<u32>)>,
}

pub async fn member_sas(
    db: impl PgExecutor<'_>,
    network_id: Uuid,
    live_within: std::time::Duration,
) -> Result<Vec<MemberSas>, sqlx::Error> {
    type Row = (
        Uuid,
        String,
        i32,
        Option<bool>,
        Option<i16>,
        Option<sqlx::types::Json<serde_json::Map<String, serde_json::Value>>>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT a.site_id, a.member, max(a.generation),
                bool_or(a.retired_at IS NULL AND a.last_seen_at > now() - make_interval(secs => $2)),
                max(a.protocol) FILTER (WHERE a.retired_at IS NULL),
                (array_agg(a.sa_state) FILTER (WHERE a.retired_at IS NULL))[1]
           FROM appliances a JOIN sites s ON s.id = a.site_id
          WHERE s.network_id = $1
          GROUP BY a.site_id, a.member",
    )
    .bind(network_id)
    .bind(live_within.as_secs_f64())
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(site_id, member, generation, reporting, protocol, held)| {
            let held = held
                .map(|h| h.0)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(peer, v)| {
                    let spi =
                        |v: &serde_json::Value| v.as_u64().and_then(|s| u32::try_from(s).ok());
                    Some((
                        peer.parse().ok()?,
                        (
                            spi(&v["out"]),
                            v["in"]
                                .as_array()
                                .map(|a| a.iter().filter_map(spi).collect())
                                .unwrap_or_default(),
                        ),
                    ))
                })
                .collect();
            Some(MemberSas {
                site_id,
                member: member_of(&member)?,
                generation: generation.max(0) as u32,
                reporting: reporting.unwrap_or(false),
                reports_spis: protocol.is_some_and(|p| p >= 3),
                speaks_previous: protocol.is_some_and(|p| p < 3),
                held,
            })
        })
        .collect())
}

/// One appliance as the console lists it.
#[derive(sqlx::FromRow)]
struct SummaryRow {
    id: Uuid,
    site_id: Uuid,
    member: String,
    ha_role: Option<String>,
    instance_id: String,
    availability_zone: String,
    private_ip: String,
    public_ip: Option<String>,
    last_seen_at: Option<OffsetDateTime>,
    applied_version: Option<i64>,
    config_error: Option<String>,
    tunnels: sqlx::types::Json<Vec<app::api::TunnelLive>>,
    ha_reason: Option<String>,
    ha_role_since: Option<OffsetDateTime>,
    last_repair_at: Option<OffsetDateTime>,
    last_repair_changes: Option<i32>,
    repairs: Option<i64>,
}

/// The live appliances of a network for the console, by site and member.
pub async fn summaries(
    pool: &PgPool,
    network_id: Uuid,
) -> Result<Vec<app::api::ApplianceSummary>, sqlx::Error> {
    let rows: Vec<SummaryRow> = sqlx::query_as(
        "SELECT a.id, a.site_id, a.member, a.ha_role, a.instance_id, a.availability_zone,
                host(a.private_ip) AS private_ip, host(a.public_ip) AS public_ip,
                a.last_seen_at, a.applied_version, a.config_error, a.tunnels, a.ha_reason,
                a.ha_role_since, a.last_repair_at, a.last_repair_changes, a.repairs
           FROM appliances a JOIN sites s ON s.id = a.site_id
          WHERE s.network_id = $1 AND a.retired_at IS NULL
          ORDER BY s.region, s.name, a.member",
    )
    .bind(network_id)
    .fetch_all(pool)
    .await?;
    let rfc3339 = crate::networks::store::rfc3339;
    Ok(rows
        .into_iter()
        .map(|r| app::api::ApplianceSummary {
            id: r.id.to_string(),
            site_id: r.site_id.to_string(),
            member: r.member,
            role: r.ha_role,
            ha_reason: r.ha_reason,
            role_since: r.ha_role_since.map(rfc3339),
            instance_id: r.instance_id,
            availability_zone: r.availability_zone,
            private_ip: r.private_ip,
            public_ip: r.public_ip,
            last_seen_at: r.last_seen_at.map(rfc3339),
            applied_version: r.applied_version,
            config_error: r.config_error,
            tunnels: r.tunnels.0,
            // Stored as the report's checks left them (positive counts).
            repaired: match (r.last_repair_at, r.last_repair_changes, r.repairs) {
                (Some(at), Some(changes), Some(count)) => Some(app::api::Repaired {
                    at: rfc3339(at),
                    changes: changes.unsigned_abs(),
                    count: count.unsigned_abs(),
                }),
                _ => None,
            },
        })
        .collect())
}
