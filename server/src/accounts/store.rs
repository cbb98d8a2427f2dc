//! The `aws_accounts` table.

use app::api::{AccountStatus, AccountSummary};
use sqlx::{PgExecutor, PgPool};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AccountRecord {
    pub id: Uuid,
    pub org_id: Uuid,
    pub account_id: String,
    pub role_arn: String,
    pub label: String,
    pub verified_at: Option<OffsetDateTime>,
    pub last_checked: OffsetDateTime,
    pub last_error: Option<String>,
    pub networks: i64,
}

impl AccountRecord {
    pub fn summary(&self) -> AccountSummary {
        let rfc = |t: OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
        AccountSummary {
            id: self.id.to_string(),
            account_id: self.account_id.clone(),
            role_arn: self.role_arn.clone(),
            label: self.label.clone(),
            status: if self.last_error.is_none() {
                AccountStatus::Verified
            } else {
                AccountStatus::Failed
            },
            verified_at: self.verified_at.map(rfc),
            last_checked: rfc(self.last_checked),
            last_error: self.last_error.clone(),
            networks: self.networks,
        }
    }
}

const SELECT: &str = "SELECT a.id, a.org_id, a.account_id, a.role_arn, a.label, a.verified_at,
        a.last_checked, a.last_error,
        (SELECT count(DISTINCT s.network_id) FROM sites s JOIN networks n ON n.id = s.network_id
          WHERE s.account_ref = a.id AND n.status <> 'deleted') AS networks
   FROM aws_accounts a";

pub async fn list(pool: &PgPool, org_id: Uuid) -> Result<Vec<AccountRecord>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{SELECT} WHERE a.org_id = $1 ORDER BY a.label, a.account_id"
    ))
    .bind(org_id)
    .fetch_all(pool)
    .await
}

pub async fn find(
    db: impl PgExecutor<'_>,
    org_id: Uuid,
    id: Uuid,
) -> Result<Option<AccountRecord>, sqlx::Error> {
    sqlx::query_as(&format!("{SELECT} WHERE a.org_id = $1 AND a.id = $2"))
        .bind(org_id)
        .bind(id)
        .fetch_optional(db)
        .await
}

pub async fn find_by_account_id(
    db: impl PgExecutor<'_>,
    org_id: Uuid,
    account_id: &str,
) -> Result<Option<AccountRecord>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{SELECT} WHERE a.org_id = $1 AND a.account_id = $2"
    ))
    .bind(org_id)
    .bind(account_id)
    .fetch_optional(db)
    .await
}

/// Inserts a verified account; `None` when the organization already has it.
pub async fn insert_verified(
    db: impl PgExecutor<'_>,
    org_id: Uuid,
    account_id: &str,
    role_arn: &str,
    label: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO aws_accounts (id, org_id, account_id, role_arn, label, verified_at)
         VALUES ($1, $2, $3, $4, $5, now())
         ON CONFLICT (org_id, account_id) DO NOTHING RETURNING id",
    )
    .bind(Uuid::new_v4())
    .bind(org_id)
    .bind(account_id)
    .bind(role_arn)
    .bind(label)
    .fetch_optional(db)
    .await
}

/// Records a Verify: success clears the error, failure keeps the last success time.
pub async fn record_check(
    db: impl PgExecutor<'_>,
    id: Uuid,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE aws_accounts SET last_checked = now(), last_error = $2,
                verified_at = CASE WHEN $2::text IS NULL THEN now() ELSE verified_at END
          WHERE id = $1",
    )
    .bind(id)
    .bind(error)
    .execute(db)
    .await
    .map(|_| ())
}

/// Deletes an account no live network uses; false when one does.
pub async fn delete_unused(
    db: impl PgExecutor<'_>,
    org_id: Uuid,
    id: Uuid,
) -> Result<bool, sqlx::Error> {
    let deleted = sqlx::query(
        "DELETE FROM aws_accounts a WHERE a.org_id = $1 AND a.id = $2
            AND NOT EXISTS (SELECT 1 FROM sites s JOIN networks n ON n.id = s.network_id
                             WHERE s.account_ref = a.id AND n.status <> 'deleted')",
    )
    .bind(org_id)
    .bind(id)
    .execute(db)
    .await?;
    Ok(deleted.rows_affected() == 1)
}
