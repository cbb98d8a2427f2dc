//! Key epochs: rotation creates the next epoch with the customer's KMS key
//! (ciphertext only) and makes the previous one `retiring`, which appliances
//! keep accepting until every sender moved on (`appliances::rotation`);
//! invalidation revokes an epoch at once.

use super::{data_keys, model, store, view};
use crate::appliances::rotation;
use crate::{
    accounts, audit, aws::KmsKeyArn, identity::users::UserRecord, internal::OrInternal,
    state::AppState,
};
use app::api::{ConsoleError, NetworkStatus, NetworkSummary};

#[tracing::instrument(skip_all, fields(org_id = %user.org_id))]
pub async fn rotate(
    state: &AppState,
    user: &UserRecord,
    id: &str,
) -> Result<NetworkSummary, ConsoleError> {
    let id = view::parse_id(id)?;
    let net = store::find(&state.pool, user.org_id, id)
        .await
        .or_internal("load a network")?
        .ok_or_else(|| ConsoleError::not_found("Network"))?;
    rotate_network(state, &net, Some(user.id), None).await?;
    view::summary(&state.pool, user.org_id, id).await
}

/// Rotates `net`'s key: a new epoch from the customer's KMS key, the active
/// one made `retiring`. `actor` is who asked (None: the schedule);
/// `expected_active`, the active epoch the caller saw due: if another
/// rotation (another replica's sweeper) moved on since, nothing happens, so
/// a due rotation happens exactly once. Returns the new epoch.
pub async fn rotate_network(
    state: &AppState,
    net: &store::NetworkRow,
    actor: Option<uuid::Uuid>,
    expected_active: Option<i32>,
) -> Result<i32, ConsoleError> {
    let (pool, id) = (&state.pool, net.id);
    if matches!(net.status, NetworkStatus::Deleting | NetworkStatus::Deleted) {
        return Err(ConsoleError::Conflict {
            message: "The network is being deleted; its keys can no longer change.".into(),
        });
    }
    let key: KmsKeyArn = net
        .kms_key_arn
        .parse()
        .map_err(|e: String| ConsoleError::invalid("kms_key_arn", e))?;
    let record = accounts::store::find_by_account_id(pool, net.org_id, &key.account.to_string())
        .await
        .or_internal("look up the key's account")?
        .ok_or_else(|| ConsoleError::Conflict {
            message: format!("The key's account {} is no longer registered.", key.account),
        })?;
    if let Some(old) = rotation::in_play(pool, id)
        .await
        .or_internal("load the key epochs")?
        .and_then(|e| e.retiring)
    {
        return Err(rotation_in_progress(old.epoch));
    }
    let access = accounts::org_access(pool, net.org_id, &record.role_arn).await?;
    let next: i32 = sqlx::query_scalar(
        "SELECT coalesce(max(epoch), 0) + 1 FROM key_epochs WHERE network_id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .or_internal("number the next epoch")?;
    if expected_active.is_some_and(|e| e != next - 1) {
        return Err(already_rotated());
    }
    let client = state
        .aws
        .kms(&access, &key.region)
        .await
        .map_err(|e| accounts::aws_error_for_user(e, &access, None))?;
    // Keys per tunnel, unless an agent of an older protocol still runs here
    // (it knows only network keys; the next rotation after it is replaced
    // goes per tunnel).
    let per_tunnel = rotation::all_agents_take_tunnel_keys(pool, id)
        .await
        .or_internal("check the appliances' protocols")?;
    let sites = store::sites(pool, id).await.or_internal("load the sites")?;
    let plans = model::compile(net, &sites).map_err(|e| {
        tracing::error!(network_id = %id, error = %e, "a stored network no longer compiles");
        ConsoleError::Internal
    })?;
    let material = data_keys::generate(&client, &net.kms_key_arn, id, next, per_tunnel, &plans)
        .await
        .map_err(|e| accounts::aws_error_for_user(e, &access, None))?;
    let mut tx = pool.begin().await.or_internal("begin a transaction")?;
    // With no appliance at all nobody sends with the old key: retire it
    // now. Otherwise (even if none reported lately: a cut-off site may still
    // forward with it) it is accepted next to the new one until all moved on.
    let progress = rotation::progress(&mut *tx, id, next)
        .await
        .or_internal("count appliances")?;
    let live = progress.live;
    // Only the epoch this rotation numbered from: if a concurrent rotation
    // replaced it meanwhile, nothing matches and this one stops.
    let replaced = sqlx::query(
        "UPDATE key_epochs
            SET state = CASE WHEN $2 THEN 'retiring' ELSE 'retired' END,
                retired_at = CASE WHEN $2 THEN NULL ELSE now() END
          WHERE network_id = $1 AND state = 'active' AND epoch = $3",
    )
    .bind(id)
    .bind(progress.current > 0)
    .bind(next - 1)
    .execute(&mut *tx)
    .await
    .map_err(|e| match e {
        // A concurrent rotation made its own retiring epoch first.
        sqlx::Error::Database(d) if d.is_unique_violation() => rotation_in_progress(next - 1),
        e => {
            tracing::error!(error = %e, "retire the active epoch");
            ConsoleError::Internal
        }
    })?;
    if replaced.rows_affected() != 1 {
        return Err(already_rotated());
    }
    // A concurrent rotation took this number: the primary key refuses it.
    data_keys::insert_epoch(&mut tx, id, next, &net.kms_key_arn, &material)
        .await
        .map_err(|e| match e {
            sqlx::Error::Database(d) if d.is_unique_violation() => already_rotated(),
            e => {
                tracing::error!(error = %e, "insert a key epoch");
                ConsoleError::Internal
            }
        })?;
    let how = if actor.is_some() { "" } else { " (scheduled)" };
    audit::record(
        &mut *tx,
        net.org_id,
        actor,
        "network.key.rotated",
        Some(&format!("{} epoch {next}{how}", net.name)),
    )
    .await
    .or_internal("audit a rotation")?;
    tx.commit().await.or_internal("commit a rotation")?;
    tracing::info!(network_id = %id, epoch = next, per_tunnel, live_appliances = live, scheduled = actor.is_none(), "key rotated");
    Ok(next)
}

fn already_rotated() -> ConsoleError {
    ConsoleError::Conflict {
        message: "Another rotation just happened; reload to see it.".into(),
    }
}

fn rotation_in_progress(retiring: i32) -> ConsoleError {
    ConsoleError::Conflict {
        message: format!(
            "A rotation is still in progress: appliances are moving off epoch {retiring}. \
             Wait until it is retired, or invalidate it to end the rotation at once."
        ),
    }
}

#[tracing::instrument(skip_all, fields(org_id = %user.org_id))]
pub async fn invalidate(
    state: &AppState,
    user: &UserRecord,
    id: &str,
    epoch: i32,
) -> Result<NetworkSummary, ConsoleError> {
    let id = view::parse_id(id)?;
    let pool = &state.pool;
    let net = store::find(pool, user.org_id, id)
        .await
        .or_internal("load a network")?
        .ok_or_else(|| ConsoleError::not_found("Network"))?;
    let current: Option<String> =
        sqlx::query_scalar("SELECT state FROM key_epochs WHERE network_id = $1 AND epoch = $2")
            .bind(id)
            .bind(epoch)
            .fetch_optional(pool)
            .await
            .or_internal("load a key epoch")?;
    match current.as_deref() {
        None => return Err(ConsoleError::not_found(&format!("Key epoch {epoch}"))),
        Some("invalidated") => {
            return Err(ConsoleError::Conflict {
                message: format!("Epoch {epoch} is already invalidated."),
            })
        }
        Some("active") => {
            return Err(ConsoleError::Conflict {
                message: format!(
                    "Epoch {epoch} is the network's active key: rotate first, then invalidate it."
                ),
            })
        }
        Some(_) => {}
    }
    sqlx::query("UPDATE key_epochs SET state = 'invalidated' WHERE network_id = $1 AND epoch = $2")
        .bind(id)
        .bind(epoch)
        .execute(pool)
        .await
        .or_internal("invalidate a key epoch")?;
    audit::record(
        pool,
        user.org_id,
        Some(user.id),
        "network.key.invalidated",
        Some(&format!("{} epoch {epoch}", net.name)),
    )
    .await
    .or_internal("audit an invalidation")?;
    tracing::info!(network_id = %id, epoch, "key epoch invalidated");
    view::summary(pool, user.org_id, id).await
}
