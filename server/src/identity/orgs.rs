use app::api::OrgSummary;
use rand::{distr::Alphanumeric, Rng};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Organization {
    pub id: Uuid,
    pub name: String,
    pub external_id: String,
}

/// Creates an organization with a fresh external ID for cross-account roles.
pub async fn create(db: impl PgExecutor<'_>, name: &str) -> Result<Organization, sqlx::Error> {
    let external_id: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect();
    sqlx::query_as("INSERT INTO organizations (id, name, external_id) VALUES ($1, $2, $3) RETURNING id, name, external_id")
        .bind(Uuid::new_v4())
        .bind(name)
        .bind(format!("vpcmesh-{external_id}"))
        .fetch_one(db)
        .await
}

pub async fn find_by_name(
    db: impl PgExecutor<'_>,
    name: &str,
) -> Result<Option<Organization>, sqlx::Error> {
    sqlx::query_as("SELECT id, name, external_id FROM organizations WHERE name = $1 ORDER BY created_at LIMIT 1")
        .bind(name)
        .fetch_optional(db)
        .await
}

/// The dashboard's counts for one organization.
pub async fn summary(pool: &PgPool, org_id: Uuid) -> Result<OrgSummary, sqlx::Error> {
    let (org_name, users, admins, networks, accounts): (String, i64, i64, i64, i64) =
        sqlx::query_as(
            "SELECT o.name,
                count(u.id),
                count(u.id) FILTER (WHERE u.role = 'admin'),
                (SELECT count(*) FROM networks n WHERE n.org_id = o.id AND n.status <> 'deleted'),
                (SELECT count(*) FROM aws_accounts a WHERE a.org_id = o.id)
           FROM organizations o LEFT JOIN users u ON u.org_id = o.id
          WHERE o.id = $1
          GROUP BY o.id, o.name",
        )
        .bind(org_id)
        .fetch_one(pool)
        .await?;
    Ok(OrgSummary {
        org_name,
        users,
        admins,
        networks,
        accounts,
    })
}

/// The organization's external ID for cross-account roles.
pub async fn external_id(db: impl PgExecutor<'_>, org_id: Uuid) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SELECT external_id FROM organizations WHERE id = $1")
        .bind(org_id)
        .fetch_one(db)
        .await
}

pub async fn rename(db: impl PgExecutor<'_>, org_id: Uuid, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE organizations SET name = $2 WHERE id = $1")
        .bind(org_id)
        .bind(name)
        .execute(db)
        .await
        .map(|_| ())
}
