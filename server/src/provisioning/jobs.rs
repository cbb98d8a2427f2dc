//! Jobs and steps in Postgres: creation from a plan, leasing with
//! `FOR UPDATE SKIP LOCKED`, outcomes fenced by the lease, progress events.

use crate::networks::store::rfc3339;
use app::api::{JobView, ProgressEvent, StepView};
use sqlx::{PgExecutor, PgPool};
use std::time::Duration;
use time::OffsetDateTime;
use uuid::Uuid;

crate::db::text_enum! {
    /// What a job does to its network (`jobs.kind`).
    pub enum JobKind {
        Apply = "apply",
        Teardown = "teardown",
    }
}

crate::db::text_enum! {
    /// What a step does in AWS (`job_steps.action`).
    pub enum StepAction {
        /// The site's address stack (its Elastic IP).
        AddressStack = "address_stack",
        /// The site's appliance stack (launch template, Auto Scaling groups).
        ApplianceStack = "appliance_stack",
        /// The VPC's routes to the remote CIDRs, pointed at the appliance.
        Routes = "routes",
        DeleteStack = "delete_stack",
        RemoveRoutes = "remove_routes",
    }
}

impl StepAction {
    /// As a person reads it ("address stack").
    pub fn words(self) -> String {
        self.as_str().replace('_', " ")
    }
}

crate::db::text_enum! {
    /// Where a step stands (`job_steps.state`).
    pub enum StepState {
        /// Not begun, or retried before it ever waited on AWS.
        Pending = "pending",
        /// Waiting on AWS (a stack being created or deleted).
        Waiting = "waiting",
        Succeeded = "succeeded",
        Failed = "failed",
    }
}

/// Inserts a running job; `None` when the network already has one.
pub async fn insert_job(
    db: impl PgExecutor<'_>,
    network_id: Uuid,
    kind: JobKind,
    plan: &serde_json::Value,
) -> Result<Option<Uuid>, sqlx::Error> {
    let id = Uuid::new_v4();
    let res = sqlx::query(
        "INSERT INTO jobs (id, network_id, kind, plan, state) VALUES ($1, $2, $3, $4, 'running')",
    )
    .bind(id)
    .bind(network_id)
    .bind(kind)
    .bind(plan)
    .execute(db)
    .await;
    match res {
        Ok(_) => Ok(Some(id)),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(None),
        Err(e) => Err(e),
    }
}

pub struct NewStep<'a> {
    pub job_id: Uuid,
    pub site_id: Uuid,
    pub phase: i32,
    pub action: StepAction,
    pub stack_name: &'a str,
}

pub async fn insert_step(db: impl PgExecutor<'_>, s: NewStep<'_>) -> Result<(), sqlx::Error> {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO job_steps (id, job_id, site_id, phase, action, state, stack_name, client_token)
         VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7)",
    )
    .bind(id)
    .bind(s.job_id)
    .bind(s.site_id)
    .bind(s.phase)
    .bind(s.action)
    .bind(s.stack_name)
    // CloudFormation tokens: letters, digits and '-', at most 128.
    .bind(format!("vpcmesh-{}", id.simple()))
    .execute(db)
    .await
    .map(|_| ())
}

/// A step leased to one worker until `lease_until`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedStep {
    pub id: Uuid,
    pub job_id: Uuid,
    pub network_id: Uuid,
    pub kind: JobKind,
    pub site_id: Uuid,
    pub phase: i32,
    pub action: StepAction,
    pub state: StepState,
    pub stack_name: String,
    pub client_token: String,
    /// Turns so far, this one included: failed attempts, polls and the rest.
    pub attempts: i32,
    /// Failed attempts before this turn: what the retry budget counts.
    pub failures: i32,
    /// Seconds since the step first waited on AWS (0 before it ever did).
    pub waited_secs: f64,
}

impl ClaimedStep {
    /// How long the step has been waiting on AWS, measured by Postgres so
    /// that every replica agrees.
    pub fn waited(&self) -> Duration {
        Duration::try_from_secs_f64(self.waited_secs).unwrap_or_default()
    }
}

/// Leases the next runnable step: its job runs, every earlier phase of the
/// job succeeded, it is due, and nobody holds a live lease on it.
pub async fn claim(
    pool: &PgPool,
    owner: &str,
    lease: Duration,
) -> Result<Option<ClaimedStep>, sqlx::Error> {
    sqlx::query_as(
        "WITH next AS (
            SELECT s.id FROM job_steps s JOIN jobs j ON j.id = s.job_id
             WHERE j.state = 'running'
               AND s.state IN ('pending', 'waiting')
               AND s.next_attempt_at <= now()
               AND (s.lease_until IS NULL OR s.lease_until < now())
               AND NOT EXISTS (SELECT 1 FROM job_steps p
                                WHERE p.job_id = s.job_id AND p.phase < s.phase AND p.state <> 'succeeded')
             ORDER BY s.next_attempt_at
             LIMIT 1
             FOR UPDATE OF s SKIP LOCKED)
         UPDATE job_steps s
            SET lease_owner = $1, lease_until = now() + make_interval(secs => $2),
                attempts = s.attempts + 1, started_at = coalesce(s.started_at, now())
           FROM next, jobs j
          WHERE s.id = next.id AND j.id = s.job_id
         RETURNING s.id, s.job_id, j.network_id, j.kind, s.site_id, s.phase, s.action, s.state,
                   s.stack_name, s.client_token, s.attempts, s.failures,
                   coalesce(extract(epoch FROM now() - s.waiting_since), 0)::float8 AS waited_secs",
    )
    .bind(owner)
    .bind(lease.as_secs_f64())
    .fetch_optional(pool)
    .await
}

/// Notes a side-effecting call (CreateStack, DeleteStack, routes) under the lease.
pub async fn record_execution(
    pool: &PgPool,
    step: &ClaimedStep,
    owner: &str,
) -> Result<bool, sqlx::Error> {
    let res = sqlx::query(
        "UPDATE job_steps SET executions = executions + 1, state = 'waiting'
          WHERE id = $1 AND lease_owner = $2",
    )
    .bind(step.id)
    .bind(owner)
    .execute(pool)
    .await?;
    Ok(res.rows_affected() == 1)
}

/// How a step's turn ended.
#[derive(Debug)]
pub enum Outcome {
    Succeeded(serde_json::Value),
    /// Not done yet (a stack in progress): look again after the delay.
    Waiting(Duration),
    /// A transient failure: try again after the delay.
    Retry {
        delay: Duration,
        error: String,
    },
    Failed(String),
}

/// What a turn adds to its step's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// A failed attempt: shown as a try and counted against the retry budget.
    pub failure: bool,
    /// A poll: the step is healthy and AWS is still working.
    pub poll: bool,
}

impl Outcome {
    pub fn tally(&self) -> Tally {
        Tally {
            failure: matches!(self, Outcome::Retry { .. } | Outcome::Failed(_)),
            poll: matches!(self, Outcome::Waiting(_)),
        }
    }
}

/// Records an outcome if the lease is still ours; returns whether it was.
pub async fn finish(
    pool: &PgPool,
    step: &ClaimedStep,
    owner: &str,
    outcome: &Outcome,
) -> Result<bool, sqlx::Error> {
    let (state, delay, error, outputs): (StepState, f64, Option<&str>, Option<&serde_json::Value>) =
        match outcome {
            Outcome::Succeeded(out) => (StepState::Succeeded, 0.0, None, Some(out)),
            Outcome::Waiting(d) => (StepState::Waiting, d.as_secs_f64(), None, None),
            Outcome::Retry { delay, error } => (
                match step.state {
                    StepState::Pending => StepState::Pending,
                    _ => StepState::Waiting,
                },
                delay.as_secs_f64(),
                Some(error),
                None,
            ),
            Outcome::Failed(e) => (StepState::Failed, 0.0, Some(e), None),
        };
    let tally = outcome.tally();
    // `error` is the step's current trouble (cleared once a turn goes well);
    // `last_error` keeps the latest failure for the tries shown afterwards.
    let res = sqlx::query(
        "UPDATE job_steps SET state = CASE WHEN state = 'waiting' AND $2 = 'pending' THEN 'waiting' ELSE $2 END,
                next_attempt_at = now() + make_interval(secs => $3),
                error = $4, last_error = coalesce($4, last_error), outputs = coalesce($5, outputs),
                failures = failures + CASE WHEN $7 THEN 1 ELSE 0 END,
                polls = polls + CASE WHEN $8 THEN 1 ELSE 0 END,
                waiting_since = CASE WHEN $8 THEN coalesce(waiting_since, now()) ELSE waiting_since END,
                lease_owner = NULL, lease_until = NULL,
                finished_at = CASE WHEN $2 IN ('succeeded', 'failed') THEN now() END
          WHERE id = $1 AND lease_owner = $6",
    )
    .bind(step.id)
    .bind(state)
    .bind(delay)
    .bind(error)
    .bind(outputs)
    .bind(owner)
    .bind(tally.failure)
    .bind(tally.poll)
    .execute(pool)
    .await?;
    Ok(res.rows_affected() == 1)
}

/// The job's state after a step finished: `Some(true)` when every step
/// succeeded, `Some(false)` when one failed, `None` while work remains.
/// Marks the job finished exactly once.
pub async fn settle(
    pool: &PgPool,
    job_id: Uuid,
) -> Result<Option<(bool, Option<String>)>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let state: String = sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1 FOR UPDATE")
        .bind(job_id)
        .fetch_one(&mut *tx)
        .await?;
    if state != "running" {
        return Ok(None);
    }
    let (open, failed, first_error): (i64, i64, Option<String>) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE state IN ('pending', 'waiting')),
                count(*) FILTER (WHERE state = 'failed'),
                (array_agg(error ORDER BY finished_at) FILTER (WHERE state = 'failed'))[1]
           FROM job_steps WHERE job_id = $1",
    )
    .bind(job_id)
    .fetch_one(&mut *tx)
    .await?;
    let outcome = if failed > 0 {
        (false, first_error)
    } else if open == 0 {
        (true, None)
    } else {
        return Ok(None);
    };
    sqlx::query("UPDATE jobs SET state = $2, error = $3, finished_at = now() WHERE id = $1")
        .bind(job_id)
        .bind(if outcome.0 { "succeeded" } else { "failed" })
        .bind(&outcome.1)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Some(outcome))
}

pub struct Event<'a> {
    pub network_id: Uuid,
    pub job_id: Option<Uuid>,
    pub site_id: Option<Uuid>,
    pub source: &'a str,
    pub source_id: Option<&'a str>,
    pub resource: Option<&'a str>,
    pub status: &'a str,
    pub message: Option<&'a str>,
    pub at: Option<OffsetDateTime>,
}

/// Stores a progress event; a stack event already stored is skipped.
pub async fn event(db: impl PgExecutor<'_>, e: Event<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO progress_events (network_id, job_id, site_id, source, source_id, resource, status, message, at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, coalesce($9, now()))
         ON CONFLICT (network_id, source_id) DO NOTHING",
    )
    .bind(e.network_id)
    .bind(e.job_id)
    .bind(e.site_id)
    .bind(e.source)
    .bind(e.source_id)
    .bind(e.resource)
    .bind(e.status)
    .bind(e.message)
    .bind(e.at)
    .execute(db)
    .await
    .map(|_| ())
}

/// A progress event about `step` itself (started, done, failed, what it did).
pub async fn step_event(
    pool: &PgPool,
    step: &ClaimedStep,
    status: &str,
    message: Option<&str>,
) -> Result<(), sqlx::Error> {
    event(
        pool,
        Event {
            network_id: step.network_id,
            job_id: Some(step.job_id),
            site_id: Some(step.site_id),
            source: "step",
            source_id: None,
            resource: Some(&step.stack_name),
            status,
            message,
            at: None,
        },
    )
    .await
}

#[derive(sqlx::FromRow)]
struct EventRow {
    id: i64,
    at: OffsetDateTime,
    site_id: Option<Uuid>,
    source: String,
    resource: Option<String>,
    status: String,
    message: Option<String>,
}

pub async fn events_after(
    pool: &PgPool,
    network_id: Uuid,
    after: i64,
) -> Result<Vec<ProgressEvent>, sqlx::Error> {
    let rows: Vec<EventRow> = sqlx::query_as(
        "SELECT id, at, site_id, source, resource, status, message FROM progress_events
          WHERE network_id = $1 AND id > $2 ORDER BY id LIMIT 500",
    )
    .bind(network_id)
    .bind(after)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| ProgressEvent {
            id: r.id,
            at: rfc3339(r.at),
            site_id: r.site_id.map(|s| s.to_string()),
            source: r.source,
            resource: r.resource,
            status: r.status,
            message: r.message,
        })
        .collect())
}

#[derive(sqlx::FromRow)]
struct JobRow {
    id: Uuid,
    kind: JobKind,
    state: String,
    error: Option<String>,
    created_at: OffsetDateTime,
    finished_at: Option<OffsetDateTime>,
}

#[derive(sqlx::FromRow)]
struct StepRow {
    id: Uuid,
    site_id: Uuid,
    phase: i32,
    action: StepAction,
    state: StepState,
    stack_name: String,
    failures: i32,
    polls: i32,
    error: Option<String>,
    last_error: Option<String>,
}

/// The network's latest job with its steps.
pub async fn latest(pool: &PgPool, network_id: Uuid) -> Result<Option<JobView>, sqlx::Error> {
    let job: Option<JobRow> = sqlx::query_as(
        "SELECT id, kind, state, error, created_at, finished_at FROM jobs
          WHERE network_id = $1 ORDER BY created_at DESC LIMIT 1",
    )
    .bind(network_id)
    .fetch_optional(pool)
    .await?;
    let Some(job) = job else {
        return Ok(None);
    };
    let steps: Vec<StepRow> = sqlx::query_as(
        "SELECT id, site_id, phase, action, state, stack_name, failures, polls, error, last_error FROM job_steps
          WHERE job_id = $1 ORDER BY phase, stack_name, action",
    )
    .bind(job.id)
    .fetch_all(pool)
    .await?;
    Ok(Some(JobView {
        id: job.id.to_string(),
        network_id: network_id.to_string(),
        kind: job.kind.to_string(),
        state: job.state,
        error: job.error,
        steps: steps
            .into_iter()
            .map(|s| StepView {
                id: s.id.to_string(),
                site_id: s.site_id.to_string(),
                phase: s.phase,
                action: s.action.to_string(),
                state: s.state.to_string(),
                stack_name: s.stack_name,
                failures: s.failures,
                polls: s.polls,
                error: s.error,
                last_error: s.last_error,
            })
            .collect(),
        created_at: rfc3339(job.created_at),
        finished_at: job.finished_at.map(rfc3339),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_errors_are_failed_attempts_and_only_waits_are_polls() {
        let d = Duration::from_secs(2);
        let cases = [
            (Outcome::Waiting(d), false, true),
            (Outcome::Succeeded(serde_json::json!({})), false, false),
            (
                Outcome::Retry {
                    delay: d,
                    error: "throttled".into(),
                },
                true,
                false,
            ),
            (
                Outcome::Failed("stack is ROLLBACK_COMPLETE".into()),
                true,
                false,
            ),
        ];
        for (outcome, failure, poll) in cases {
            assert_eq!(outcome.tally(), Tally { failure, poll }, "{outcome:?}");
        }
    }
}
