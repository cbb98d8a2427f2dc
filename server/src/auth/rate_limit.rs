//! Sign-in throttling shared by all server replicas: failures are rows in
//! Postgres, counted per email and per client address over a window.

use sqlx::PgPool;
use std::net::IpAddr;
use time::OffsetDateTime;

/// Failures allowed per email inside the window before sign-in is refused.
pub const MAX_FAILURES_PER_EMAIL: i64 = 5;
/// Failures allowed per client address inside the window.
pub const MAX_FAILURES_PER_IP: i64 = 20;
pub const WINDOW_SECS: i64 = 15 * 60;

/// `Some(seconds)` to wait when this email or address is over its limit.
pub async fn retry_after(
    pool: &PgPool,
    email: &str,
    ip: IpAddr,
) -> Result<Option<u64>, sqlx::Error> {
    let (by_email, oldest_email, by_ip, oldest_ip): (
        i64,
        Option<OffsetDateTime>,
        i64,
        Option<OffsetDateTime>,
    ) = sqlx::query_as(
        "WITH recent AS (
                 SELECT email, client_ip, at FROM sign_in_attempts
                  WHERE NOT succeeded AND at > now() - make_interval(secs => $3)
                    AND (email = $1 OR client_ip = $2))
             SELECT count(*) FILTER (WHERE email = $1),
                    min(at) FILTER (WHERE email = $1),
                    count(*) FILTER (WHERE client_ip = $2),
                    min(at) FILTER (WHERE client_ip = $2)
               FROM recent",
    )
    .bind(email)
    .bind(sqlx::types::ipnetwork::IpNetwork::from(ip))
    .bind(WINDOW_SECS as f64)
    .fetch_one(pool)
    .await?;
    let now = OffsetDateTime::now_utc();
    let wait = |oldest: Option<OffsetDateTime>| {
        oldest
            .map(|o| {
                (o + time::Duration::seconds(WINDOW_SECS) - now)
                    .whole_seconds()
                    .max(1) as u64
            })
            .unwrap_or(1)
    };
    Ok(if by_email >= MAX_FAILURES_PER_EMAIL {
        Some(wait(oldest_email))
    } else if by_ip >= MAX_FAILURES_PER_IP {
        Some(wait(oldest_ip))
    } else {
        None
    })
}

pub async fn record(
    pool: &PgPool,
    email: &str,
    ip: IpAddr,
    succeeded: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO sign_in_attempts (email, client_ip, succeeded) VALUES ($1, $2, $3)")
        .bind(email)
        .bind(sqlx::types::ipnetwork::IpNetwork::from(ip))
        .bind(succeeded)
        .execute(pool)
        .await?;
    if succeeded {
        // A successful sign-in clears that email's failure streak.
        sqlx::query("DELETE FROM sign_in_attempts WHERE email = $1 AND NOT succeeded")
            .bind(email)
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// Drops attempts older than the window; run periodically.
pub async fn prune(pool: &PgPool) -> Result<u64, sqlx::Error> {
    sqlx::query("DELETE FROM sign_in_attempts WHERE at < now() - make_interval(secs => $1)")
        .bind(WINDOW_SECS as f64)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
}
