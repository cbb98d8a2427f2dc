//! Automatic key rotation: a network whose active key epoch is older than
//! its `rotate_every_days` is rotated the same make-before-break way as
//! "Rotate now", by a sweeper in every server replica. Each rotation
//! replaces exactly the active epoch it saw due, so when two replicas find
//! the same network due, one rotates it and the other changes nothing.

use super::{keys, store, view};
use crate::{audit, identity::users::UserRecord, internal::OrInternal, state::AppState};
use app::api::{ConsoleError, NetworkSummary};
use std::time::Duration;
use uuid::Uuid;

pub const MAX_DAYS: u32 = 365;
const CHECK_EVERY: Duration = Duration::from_secs(60);

/// Turns automatic rotation on (every `every_days` days) or off (None).
#[tracing::instrument(skip_all, fields(org_id = %user.org_id))]
pub async fn set(
    state: &AppState,
    user: &UserRecord,
    id: &str,
    every_days: Option<u32>,
) -> Result<NetworkSummary, ConsoleError> {
    let id = view::parse_id(id)?;
    if every_days.is_some_and(|d| d == 0 || d > MAX_DAYS) {
        return Err(ConsoleError::invalid(
            "every_days",
            format!(
                "must be between 1 and {MAX_DAYS} days, or empty to turn automatic rotation off"
            ),
        ));
    }
    let mut tx = state
        .pool
        .begin()
        .await
        .or_internal("begin a transaction")?;
    let name: Option<String> = sqlx::query_scalar(
        "UPDATE networks SET rotate_every_days = $3
          WHERE org_id = $1 AND id = $2 AND status NOT IN ('deleting', 'deleted')
          RETURNING name",
    )
    .bind(user.org_id)
    .bind(id)
    .bind(every_days.map(|d| d as i32))
    .fetch_optional(&mut *tx)
    .await
    .or_internal("set a rotation schedule")?;
    let name = name.ok_or_else(|| ConsoleError::not_found("Network"))?;
    let what = match every_days {
        Some(d) => format!("{name} every {d} days"),
        None => format!("{name} off"),
    };
    audit::record(
        &mut *tx,
        user.org_id,
        Some(user.id),
        "network.key.schedule",
        Some(&what),
    )
    .await
    .or_internal("audit a rotation schedule")?;
    tx.commit()
        .await
        .or_internal("commit a rotation schedule")?;
    tracing::info!(network_id = %id, every_days, "rotation schedule set");
    view::summary(&state.pool, user.org_id, id).await
}

/// Rotates every ready network whose schedule is due and that is not
/// rotating already. Returns (network, outcome) per attempt.
pub async fn rotate_due(state: &AppState) -> Vec<(Uuid, Result<i32, ConsoleError>)> {
    let due: Vec<(Uuid, i32)> = match sqlx::query_as(
        "SELECT n.id, e.epoch FROM networks n
           JOIN key_epochs e ON e.network_id = n.id AND e.state = 'active'
          WHERE n.status = 'ready' AND n.rotate_every_days IS NOT NULL
            AND e.created_at + make_interval(days => n.rotate_every_days) <= now()
            AND NOT EXISTS (SELECT 1 FROM key_epochs r
                             WHERE r.network_id = n.id AND r.state = 'retiring')",
    )
    .fetch_all(&state.pool)
    .await
    {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!(error = %e, "listing networks due for rotation failed");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (id, active) in due {
        let outcome = match store::find_any(&state.pool, id).await {
            Ok(Some(net)) => keys::rotate_network(state, &net, None, Some(active)).await,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(network_id = %id, error = %e, "loading a network due for rotation failed");
                continue;
            }
        };
        if let Err(e) = &outcome {
            // Retried at the next check; the console shows the epoch's age.
            tracing::warn!(network_id = %id, error = %e, "scheduled rotation failed");
        }
        out.push((id, outcome));
    }
    out
}

/// Checks for due rotations every minute.
pub fn spawn(state: AppState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if state.pool.is_closed() {
                return;
            }
            rotate_due(&state).await;
        }
    });
}
