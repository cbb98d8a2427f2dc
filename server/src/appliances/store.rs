//! SQL for appliances and their bootstrap tokens.

use appliance::protocol::{Member, StatusReport};
use sqlx::{PgExecutor, PgPool};
use std::net::Ipv4Addr;
use time::OffsetDateTime;
use uuid::Uuid;

pub struct TokenRow {
    pub site_id: Uuid,
    pub member: Option<String>,
    pub expires_at: OffsetDateTime,
    pub used_at: Option<OffsetDateTime>,
}

/// Locks the token row for the registration transaction.
pub async fn lock_token(
    db: impl PgExecutor<'_>,
    hash: &[u8],
) -> Result<Option<TokenRow>, sqlx::Error> {
    let row: Option<(Uuid, Option<String>, OffsetDateTime, Option<OffsetDateTime>)> =
        sqlx::query_as(
            "SELECT site_id, member, expires_at, used_at FROM site_bootstrap_tokens
              WHERE token_hash = $1 FOR UPDATE",
        )
        .bind(hash)
        .fetch_optional(db)
        .await?;
    Ok(row.map(|(site_id, member, expires_at, used_at)| TokenRow {
        site_id,
        member,
        expires_at,
        used_at,
    }))
}

pub async fn use_token(db: impl PgExecutor<'_>, hash: &[u8]) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE site_bootstrap_tokens SET used_at = now() WHERE token_hash = $1")
        .bind(hash)
        .execute(db)
        .await?;
    Ok(())
}

/// The network and organization of a site, if the network is live.
pub async fn live_site(
    db: impl PgExecutor<'_>,
    site_id: Uuid,
) -> Result<Option<(Uuid, Uuid)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT n.id, n.org_id FROM sites s JOIN networks n ON n.id = s.network_id
          WHERE s.id = $1 AND n.status NOT IN ('deleting', 'deleted')",
    )
    .bind(site_id)
    .fetch_optional(db)
    .await
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
                                 private_ip, public_ip, credential_hash, agent_version)
         VALUES ($1, $2, $3, $4, $5, $6::inet, $7::inet, $8, $9)",
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
}

pub async fn by_credential(
    pool: &PgPool,
    hash: &[u8],
) -> Result<Option<ApplianceRow>, sqlx::Error> {
    let row: Option<(Uuid, Uuid, Uuid, String, String)> = sqlx::query_as(
        "SELECT a.id, a.site_id, s.network_id, a.member, host(a.private_ip)
           FROM appliances a JOIN sites s ON s.id = a.site_id
          WHERE a.credential_hash = $1 AND a.retired_at IS NULL",
    )
    .bind(hash)
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|(id, site_id, network_id, member, ip)| {
        Some(ApplianceRow {
            id,
            site_id,
            network_id,
            member: if member == "b" { Member::B } else { Member::A },
            private_ip: ip.parse().ok()?,
        })
    }))
}

pub async fn record_status(
    pool: &PgPool,
    id: Uuid,
    report: &StatusReport,
) -> Result<(), sqlx::Error> {
    let role = match report.ha_role {
        appliance::protocol::HaRole::Active => "active",
        appliance::protocol::HaRole::Passive => "passive",
    };
    sqlx::query(
        "UPDATE appliances SET last_seen_at = now(), agent_version = $2, applied_version = $3,
                config_error = $4, ha_role = $5, tunnels = $6, epochs = $7
          WHERE id = $1",
    )
    .bind(id)
    .bind(&report.agent_version)
    .bind(report.applied_version.map(|v| v as i64))
    .bind(&report.config_error)
    .bind(role)
    .bind(sqlx::types::Json(&report.tunnels))
    .bind(
        report
            .epochs
            .iter()
            .map(|e| *e as i32)
            .collect::<Vec<i32>>(),
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// The live appliances of a network for the console, by site and member.
pub async fn summaries(
    pool: &PgPool,
    network_id: Uuid,
) -> Result<Vec<app::api::ApplianceSummary>, sqlx::Error> {
    type Row = (
        Uuid,
        Uuid,
        String,
        Option<String>,
        String,
        String,
        String,
        Option<String>,
        Option<OffsetDateTime>,
        Option<i64>,
        Option<String>,
        sqlx::types::Json<Vec<app::api::TunnelLive>>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT a.id, a.site_id, a.member, a.ha_role, a.instance_id, a.availability_zone,
                host(a.private_ip), host(a.public_ip), a.last_seen_at, a.applied_version,
                a.config_error, a.tunnels
           FROM appliances a JOIN sites s ON s.id = a.site_id
          WHERE s.network_id = $1 AND a.retired_at IS NULL
          ORDER BY s.region, s.name, a.member",
    )
    .bind(network_id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| app::api::ApplianceSummary {
            id: r.0.to_string(),
            site_id: r.1.to_string(),
            member: r.2,
            role: r.3,
            instance_id: r.4,
            availability_zone: r.5,
            private_ip: r.6,
            public_ip: r.7,
            last_seen_at: r.8.map(crate::networks::store::rfc3339),
            applied_version: r.9,
            config_error: r.10,
            tunnels: r.11 .0,
        })
        .collect())
}
