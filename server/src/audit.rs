//! The organization's audit log: who did what, when. The actor's email is
//! kept with each entry, so it still reads after that user is removed.

use app::api::AuditEntry;
use sqlx::{PgExecutor, Row};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use uuid::Uuid;

pub async fn record(
    db: impl PgExecutor<'_>,
    org_id: Uuid,
    actor_id: Option<Uuid>,
    action: &str,
    target: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_events (org_id, actor_id, actor_email, action, target)
         VALUES ($1, $2, (SELECT email FROM users WHERE id = $2), $3, $4)",
    )
    .bind(org_id)
    .bind(actor_id)
    .bind(action)
    .bind(target)
    .execute(db)
    .await
    .map(|_| ())
}

pub async fn recent(
    db: impl PgExecutor<'_>,
    org_id: Uuid,
    limit: i64,
) -> Result<Vec<AuditEntry>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT a.at, coalesce(a.actor_email, u.email) AS actor, a.action, a.target
           FROM audit_events a LEFT JOIN users u ON u.id = a.actor_id
          WHERE a.org_id = $1
          ORDER BY a.at DESC, a.id DESC
          LIMIT $2",
    )
    .bind(org_id)
    .bind(limit.clamp(1, 1000))
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|r| {
            let at: OffsetDateTime = r.try_get("at")?;
            Ok(AuditEntry {
                at: at.format(&Rfc3339).unwrap_or_default(),
                actor: r.try_get("actor")?,
                action: r.try_get("action")?,
                target: r.try_get("target")?,
            })
        })
        .collect()
}
