//! Sign-in throttling shared by all server replicas: failures are rows in
//! Postgres, counted per email and per client address over a window. An
//! attempt is checked and recorded (as a failure, until it succeeds) in one
//! locked step before its password is verified.

use sqlx::PgPool;
use std::net::IpAddr;
use time::OffsetDateTime;

/// Failures allowed per email inside the window before sign-in is refused.
pub const MAX_FAILURES_PER_EMAIL: i64 = 5;
/// Failures allowed per client address inside the window.
pub const MAX_FAILURES_PER_IP: i64 = 20;
pub const WINDOW_SECS: i64 = 15 * 60;

/// A sign-in attempt that got past the limits: counted as a failure until
/// [`succeeded`] says otherwise, so a burst of parallel attempts cannot
/// all pass the check before any of them is recorded.
#[derive(Debug, Clone, Copy)]
pub struct Attempt(i64);

/// Either the attempt, reserved, or how many seconds to wait.
pub async fn reserve(
    pool: &PgPool,
    email: &str,
    ip: IpAddr,
) -> Result<Result<Attempt, u64>, sqlx::Error> {
    let ip = sqlx::types::ipnetwork::IpNetwork::from(ip);
    let mut tx = pool.begin().await?;
    // One check-and-record at a time per email and per address, on every
    // replica: the email's lock first, then the address's, always.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('sign-in email ' || $1, 0))")
        .bind(email)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended('sign-in address ' || host($1), 0))",
    )
    .bind(ip)
    .execute(&mut *tx)
    .await?;
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
    .bind(ip)
    .bind(WINDOW_SECS as f64)
    .fetch_one(&mut *tx)
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
    if by_email >= MAX_FAILURES_PER_EMAIL {
        return Ok(Err(wait(oldest_email)));
    }
    if by_ip >= MAX_FAILURES_PER_IP {
        return Ok(Err(wait(oldest_ip)));
    }
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO sign_in_attempts (email, client_ip, succeeded) VALUES ($1, $2, false) RETURNING id",
    )
    .bind(email)
    .bind(ip)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Ok(Attempt(id)))
}

/// The reserved attempt had the right password: it is no failure, and the
/// email's failure streak is cleared.
pub async fn succeeded(pool: &PgPool, email: &str, attempt: Attempt) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("UPDATE sign_in_attempts SET succeeded = true WHERE id = $1")
        .bind(attempt.0)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM sign_in_attempts WHERE email = $1 AND NOT succeeded")
        .bind(email)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// Drops attempts older than the window; run periodically.
pub async fn prune(pool: &PgPool) -> Result<u64, sqlx::Error> {
    sqlx::query("DELETE FROM sign_in_attempts WHERE at < now() - make_interval(secs => $1)")
        .bind(WINDOW_SECS as f64)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
}
