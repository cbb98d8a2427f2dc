//! The `networks`, `sites` and `key_epochs` tables.

use crate::aws::discovery::VpcFacts;
use app::api::{
    KeyEpochState, KeyEpochSummary, NetworkOptions, NetworkStatus, SiteRole, TopologyKind,
};
use sqlx::{PgExecutor, PgPool};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use uuid::Uuid;

pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

pub fn topology_str(t: TopologyKind) -> &'static str {
    match t {
        TopologyKind::FullMesh => "full_mesh",
        TopologyKind::Transit => "transit",
        TopologyKind::MeshWithLeaves => "mesh_with_leaves",
    }
}

/// A value the `networks` table cannot hold (its CHECK constraints say
/// so): an error, never read as some default.
fn unknown(column: &str, value: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("networks.{column} holds the unknown value '{value}'").into())
}

fn topology_from(s: &str) -> Result<TopologyKind, sqlx::Error> {
    match s {
        "full_mesh" => Ok(TopologyKind::FullMesh),
        "transit" => Ok(TopologyKind::Transit),
        "mesh_with_leaves" => Ok(TopologyKind::MeshWithLeaves),
        other => Err(unknown("topology", other)),
    }
}

pub fn status_str(s: NetworkStatus) -> &'static str {
    match s {
        NetworkStatus::Planned => "planned",
        NetworkStatus::Provisioning => "provisioning",
        NetworkStatus::Ready => "ready",
        NetworkStatus::Failed => "failed",
        NetworkStatus::Deleting => "deleting",
        NetworkStatus::Deleted => "deleted",
    }
}

fn status_from(s: &str) -> Result<NetworkStatus, sqlx::Error> {
    match s {
        "planned" => Ok(NetworkStatus::Planned),
        "provisioning" => Ok(NetworkStatus::Provisioning),
        "ready" => Ok(NetworkStatus::Ready),
        "failed" => Ok(NetworkStatus::Failed),
        "deleting" => Ok(NetworkStatus::Deleting),
        "deleted" => Ok(NetworkStatus::Deleted),
        other => Err(unknown("status", other)),
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct NetworkDbRow {
    id: Uuid,
    org_id: Uuid,
    name: String,
    topology: String,
    options: sqlx::types::Json<NetworkOptions>,
    kms_key_arn: String,
    status: String,
    status_note: Option<String>,
    created_at: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub struct NetworkRow {
    pub id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    pub topology: TopologyKind,
    pub options: NetworkOptions,
    pub kms_key_arn: String,
    pub status: NetworkStatus,
    pub status_note: Option<String>,
    pub created_at: OffsetDateTime,
}

impl TryFrom<NetworkDbRow> for NetworkRow {
    type Error = sqlx::Error;
    fn try_from(r: NetworkDbRow) -> Result<Self, sqlx::Error> {
        Ok(NetworkRow {
            id: r.id,
            org_id: r.org_id,
            name: r.name,
            topology: topology_from(&r.topology)?,
            options: r.options.0,
            kms_key_arn: r.kms_key_arn,
            status: status_from(&r.status)?,
            status_note: r.status_note,
            created_at: r.created_at,
        })
    }
}

const NETWORK_COLUMNS: &str =
    "id, org_id, name, topology, options, kms_key_arn, status, status_note, created_at";

pub async fn list(pool: &PgPool, org_id: Uuid) -> Result<Vec<NetworkRow>, sqlx::Error> {
    let rows: Vec<NetworkDbRow> = sqlx::query_as(&format!(
        "SELECT {NETWORK_COLUMNS} FROM networks WHERE org_id = $1 AND status <> 'deleted' ORDER BY created_at"
    ))
    .bind(org_id)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(TryInto::try_into).collect()
}

pub async fn find(
    db: impl PgExecutor<'_>,
    org_id: Uuid,
    id: Uuid,
) -> Result<Option<NetworkRow>, sqlx::Error> {
    let row: Option<NetworkDbRow> = sqlx::query_as(&format!(
        "SELECT {NETWORK_COLUMNS} FROM networks WHERE org_id = $1 AND id = $2"
    ))
    .bind(org_id)
    .bind(id)
    .fetch_optional(db)
    .await?;
    row.map(TryInto::try_into).transpose()
}

/// The network by id alone (the engine works across organizations).
pub async fn find_any(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<NetworkRow>, sqlx::Error> {
    let row: Option<NetworkDbRow> = sqlx::query_as(&format!(
        "SELECT {NETWORK_COLUMNS} FROM networks WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await?;
    row.map(TryInto::try_into).transpose()
}

pub struct NewNetwork<'a> {
    pub id: Uuid,
    pub org_id: Uuid,
    pub name: &'a str,
    pub topology: TopologyKind,
    pub options: &'a NetworkOptions,
    pub created_by: Uuid,
}

/// Inserts a planned network; `false` when the name is taken.
pub async fn insert(db: impl PgExecutor<'_>, n: NewNetwork<'_>) -> Result<bool, sqlx::Error> {
    let res = sqlx::query(
        "INSERT INTO networks (id, org_id, name, topology, options, kms_key_arn, status, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, 'planned', $7)",
    )
    .bind(n.id)
    .bind(n.org_id)
    .bind(n.name)
    .bind(topology_str(n.topology))
    .bind(sqlx::types::Json(n.options))
    .bind(&n.options.kms_key_arn)
    .bind(n.created_by)
    .execute(db)
    .await;
    match res {
        Ok(_) => Ok(true),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
        Err(e) => Err(e),
    }
}

pub async fn set_status(
    db: impl PgExecutor<'_>,
    id: Uuid,
    status: NetworkStatus,
    note: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE networks SET status = $2, status_note = $3,
                deleted_at = CASE WHEN $2 = 'deleted' THEN now() ELSE deleted_at END
          WHERE id = $1",
    )
    .bind(id)
    .bind(status_str(status))
    .bind(note)
    .execute(db)
    .await
    .map(|_| ())
}

crate::db::text_enum! {
    /// What `sites.kind` stores: an edge runs its own appliances; a leaf
    /// reaches the network through its edge's Transit Gateway.
    pub enum StoredSiteKind {
        Edge = "edge",
        Leaf = "leaf",
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SiteRow {
    pub id: Uuid,
    pub network_id: Uuid,
    pub account_ref: Option<Uuid>,
    pub account_id: Option<String>,
    pub role_arn: Option<String>,
    pub region: String,
    pub vpc_id: String,
    pub name: String,
    pub kind: StoredSiteKind,
    pub edge_site_id: Option<Uuid>,
    pub is_hub: bool,
    pub cidrs: Vec<String>,
    pub discovered: sqlx::types::Json<VpcFacts>,
    pub outputs: sqlx::types::Json<serde_json::Map<String, serde_json::Value>>,
}

impl SiteRow {
    pub fn is_edge(&self) -> bool {
        self.kind == StoredSiteKind::Edge
    }

    pub fn role(&self) -> SiteRole {
        match (self.kind, self.is_hub) {
            (StoredSiteKind::Leaf, _) => SiteRole::Leaf,
            (StoredSiteKind::Edge, true) => SiteRole::Hub,
            (StoredSiteKind::Edge, false) => SiteRole::Edge,
        }
    }

    pub fn output(&self, key: &str) -> Option<&str> {
        self.outputs.0.get(key).and_then(|v| v.as_str())
    }
}

pub async fn sites(db: impl PgExecutor<'_>, network_id: Uuid) -> Result<Vec<SiteRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT s.id, s.network_id, s.account_ref, a.account_id, a.role_arn, s.region, s.vpc_id,
                s.name, s.kind, s.edge_site_id, s.is_hub, s.cidrs::text[] AS cidrs, s.discovered,
                s.outputs
           FROM sites s LEFT JOIN aws_accounts a ON a.id = s.account_ref
          WHERE s.network_id = $1 ORDER BY s.region, s.name, s.id",
    )
    .bind(network_id)
    .fetch_all(db)
    .await
}

pub struct NewSite<'a> {
    pub id: Uuid,
    pub network_id: Uuid,
    pub account_ref: Uuid,
    pub region: &'a str,
    pub vpc_id: &'a str,
    pub name: &'a str,
    pub leaf_of: Option<Uuid>,
    pub is_hub: bool,
    pub facts: &'a VpcFacts,
}

pub async fn insert_site(db: impl PgExecutor<'_>, s: NewSite<'_>) -> Result<(), sqlx::Error> {
    let cidrs: Vec<String> = s.facts.cidrs.iter().map(ToString::to_string).collect();
    sqlx::query(
        "INSERT INTO sites (id, network_id, account_ref, region, vpc_id, name, kind, edge_site_id, is_hub, cidrs, discovered)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::cidr[], $11)",
    )
    .bind(s.id)
    .bind(s.network_id)
    .bind(s.account_ref)
    .bind(s.region)
    .bind(s.vpc_id)
    .bind(s.name)
    .bind(if s.leaf_of.is_some() {
        StoredSiteKind::Leaf
    } else {
        StoredSiteKind::Edge
    })
    .bind(s.leaf_of)
    .bind(s.is_hub)
    .bind(cidrs)
    .bind(sqlx::types::Json(s.facts))
    .execute(db)
    .await
    .map(|_| ())
}

/// Merges stack outputs into a site's record.
pub async fn merge_outputs(
    db: impl PgExecutor<'_>,
    site_id: Uuid,
    outputs: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sites SET outputs = outputs || $2 WHERE id = $1")
        .bind(site_id)
        .bind(sqlx::types::Json(outputs))
        .execute(db)
        .await
        .map(|_| ())
}

crate::db::text_enum! {
    /// What `key_epochs.state` stores.
    pub enum StoredKeyEpochState {
        Active = "active",
        Retiring = "retiring",
        Retired = "retired",
        Invalidated = "invalidated",
    }
}

impl From<StoredKeyEpochState> for KeyEpochState {
    fn from(s: StoredKeyEpochState) -> Self {
        match s {
            StoredKeyEpochState::Active => KeyEpochState::Active,
            StoredKeyEpochState::Retiring => KeyEpochState::Retiring,
            StoredKeyEpochState::Retired => KeyEpochState::Retired,
            StoredKeyEpochState::Invalidated => KeyEpochState::Invalidated,
        }
    }
}

pub async fn key_epochs(
    db: impl PgExecutor<'_>,
    network_id: Uuid,
) -> Result<Vec<KeyEpochSummary>, sqlx::Error> {
    let rows: Vec<(i32, String, StoredKeyEpochState, OffsetDateTime)> = sqlx::query_as(
        "SELECT epoch, kms_key_arn, state, created_at FROM key_epochs WHERE network_id = $1 ORDER BY epoch",
    )
    .bind(network_id)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(epoch, kms_key_arn, state, at)| KeyEpochSummary {
            epoch,
            kms_key_arn,
            state: state.into(),
            created_at: rfc3339(at),
            rotation: None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_read_back_and_unknown_ones_are_errors_not_defaults() {
        for t in [
            TopologyKind::FullMesh,
            TopologyKind::Transit,
            TopologyKind::MeshWithLeaves,
        ] {
            assert_eq!(topology_from(topology_str(t)).ok(), Some(t));
        }
        for s in [
            NetworkStatus::Planned,
            NetworkStatus::Provisioning,
            NetworkStatus::Ready,
            NetworkStatus::Failed,
            NetworkStatus::Deleting,
            NetworkStatus::Deleted,
        ] {
            assert_eq!(status_from(status_str(s)).ok(), Some(s));
        }
        let e = topology_from("star").expect_err("unknown");
        assert!(
            e.to_string()
                .contains("networks.topology holds the unknown value 'star'"),
            "{e}"
        );
        assert!(status_from("").is_err());
    }
}
