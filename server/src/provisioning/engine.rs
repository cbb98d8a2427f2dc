//! Workers that lease steps and run them. Any number of server replicas may
//! run workers against one Postgres: the lease decides who runs a step.

use super::{
    jobs::{self, Outcome},
    steps,
};
use crate::{networks::store, state::AppState};
use app::api::NetworkStatus;
use std::time::Duration;

const IDLE_POLL: Duration = Duration::from_millis(500);

/// Starts `workers` workers named after this process.
pub fn spawn(state: AppState, workers: usize) -> String {
    let owner = format!(
        "{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    for n in 0..workers {
        let state = state.clone();
        let owner = format!("{owner}/{n}");
        tokio::spawn(async move { work(state, owner).await });
    }
    owner
}

async fn work(state: AppState, owner: String) {
    let lease = state.settings.step_lease;
    loop {
        let claimed = match jobs::claim(&state.pool, &owner, lease).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim a step; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let Some(step) = claimed else {
            tokio::select! {
                _ = state.engine_wake.notified() => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
            }
            continue;
        };
        run_one(&state, &owner, &step).await;
    }
}

async fn run_one(state: &AppState, owner: &str, step: &jobs::ClaimedStep) {
    let action = step.action.words();
    if step.attempts == 1 && step.state == jobs::StepState::Pending {
        let started = format!("{action} started");
        let _ = jobs::step_event(&state.pool, step, &started, None).await;
    }
    let outcome = steps::run(&steps::Ctx { state, step, owner }).await;
    let turn = match &outcome {
        Outcome::Failed(_) => "failed",
        Outcome::Retry { .. } => "retry",
        Outcome::Succeeded(_) => "succeeded",
        Outcome::Waiting(_) => "waiting",
    };
    crate::metrics::METRICS
        .job_steps
        .with_label_values(&[step.action.as_str(), turn])
        .inc();
    match &outcome {
        Outcome::Failed(e) => {
            tracing::warn!(step = %step.id, stack = %step.stack_name, error = %e, "step failed")
        }
        Outcome::Retry { error, .. } => {
            tracing::info!(step = %step.id, failures = step.failures + 1, error = %error, "step will retry")
        }
        Outcome::Succeeded(_) => {
            tracing::info!(step = %step.id, stack = %step.stack_name, action = %step.action, "step succeeded")
        }
        Outcome::Waiting(_) => {}
    }
    match jobs::finish(&state.pool, step, owner, &outcome).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(step = %step.id, "lease lost before the outcome was recorded");
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot record a step outcome; the lease will expire and it reruns");
            return;
        }
    }
    if matches!(outcome, Outcome::Succeeded(_) | Outcome::Failed(_)) {
        let status = match &outcome {
            Outcome::Failed(e) => format!("{action} failed: {e}"),
            _ => format!("{action} done"),
        };
        let _ = jobs::step_event(&state.pool, step, &status, None).await;
        settle(state, step).await;
        state.engine_wake.notify_waiters();
    }
}

/// Finishes the job and the network's status once the last step settled.
async fn settle(state: &AppState, step: &jobs::ClaimedStep) {
    let settled = match jobs::settle(&state.pool, step.job_id).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot settle a job");
            return;
        }
    };
    let Some((ok, error)) = settled else { return };
    let apply = step.kind == jobs::JobKind::Apply;
    let status = match (apply, ok) {
        (true, true) => NetworkStatus::Ready,
        (false, true) => NetworkStatus::Deleted,
        (_, false) => NetworkStatus::Failed,
    };
    let note = error.map(|e| {
        format!(
            "{} failed: {e}",
            if apply { "Provisioning" } else { "Teardown" }
        )
    });
    if let Err(e) = store::set_status(&state.pool, step.network_id, status, note.as_deref()).await {
        tracing::error!(error = %e, "cannot update a network's status");
    }
    tracing::info!(network_id = %step.network_id, job_id = %step.job_id, ok, "job finished");
}
