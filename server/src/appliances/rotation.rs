//! Make-before-break key rotation, the server's half. A rotation leaves two
//! epochs in play: the new active one and the retiring one it replaces.
//!
//! 1. Every appliance is told to accept both epochs (inbound SAs of each).
//! 2. A tunnel's sender moves to the new epoch once every live appliance of
//!    the receiving site reports that it accepts it, and at least one does.
//! 3. Once every live appliance of the network sends with the new epoch for
//!    a grace period, and every site with appliances has a live one, the
//!    retiring epoch is retired and its SAs removed.
//!
//! An appliance is live when it reported within [`LIVE_WITHIN`]: a dead
//! member of an HA pair cannot hold a rotation up, and when it comes back
//! its config accepts every epoch in play. A site none of whose appliances
//! reports (cut off from the control plane, perhaps still forwarding, or
//! every server replica just restarted) holds it: the old epoch stays until
//! the site is heard again, is replaced, or an admin invalidates the epoch.

use sqlx::{PgExecutor, PgPool};
use std::collections::BTreeMap;
use std::time::Duration;
use uuid::Uuid;
use vpcmesh_protocol::KeyScope;

/// Appliances report every 10 s by default; three missed reports and an
/// appliance no longer counts for rotation decisions.
pub const LIVE_WITHIN: Duration = Duration::from_secs(45);

/// One key epoch with what an appliance needs to decrypt it: the network's
/// one key, or (`per_tunnel`) the keys of every site and tunnel.
#[derive(Clone, Debug)]
pub struct EpochRow {
    pub epoch: i32,
    pub kms_key_arn: String,
    pub ciphertext: Option<Vec<u8>>,
    pub per_tunnel: bool,
    pub scoped: BTreeMap<KeyScope, Vec<u8>>,
}

/// The epochs in play: the active one and, during a rotation, the retiring one.
#[derive(Clone, Debug)]
pub struct InPlay {
    pub active: EpochRow,
    pub retiring: Option<EpochRow>,
}

impl InPlay {
    /// Newest first.
    pub fn all(&self) -> impl Iterator<Item = &EpochRow> {
        std::iter::once(&self.active).chain(self.retiring.as_ref())
    }
}

pub async fn in_play(pool: &PgPool, network_id: Uuid) -> Result<Option<InPlay>, sqlx::Error> {
    // (state, epoch, kms_key_arn, network key ciphertext, per_tunnel)
    type Row = (String, i32, String, Option<Vec<u8>>, bool);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT state, epoch, kms_key_arn, ciphertext, per_tunnel FROM key_epochs
          WHERE network_id = $1 AND state IN ('active', 'retiring')",
    )
    .bind(network_id)
    .fetch_all(pool)
    .await?;
    // Stored with their epoch in one transaction: an epoch seen has its keys.
    let per_tunnel: Vec<i32> = rows.iter().filter(|r| r.4).map(|r| r.1).collect();
    let mut scoped = if per_tunnel.is_empty() {
        BTreeMap::new()
    } else {
        crate::networks::data_keys::load(pool, network_id, &per_tunnel).await?
    };
    let mut active = None;
    let mut retiring = None;
    for (state, epoch, kms_key_arn, ciphertext, per_tunnel) in rows {
        let row = EpochRow {
            epoch,
            kms_key_arn,
            ciphertext,
            per_tunnel,
            scoped: scoped.remove(&epoch).unwrap_or_default(),
        };
        match state.as_str() {
            "active" => active = Some(row),
            _ => retiring = Some(row),
        }
    }
    Ok(active.map(|active| InPlay { active, retiring }))
}

/// Per site of the network with appliances: do all its live appliances
/// accept `epoch`? A site whose appliances all stopped reporting (cut off
/// from the control plane, yet perhaps still forwarding with the keys it
/// has) does not: nobody moves to a key it may not know. Sites without
/// appliances are absent (nobody there to lose packets; an appliance that
/// comes up accepts every epoch in play).
pub async fn sites_accepting(
    db: impl PgExecutor<'_>,
    network_id: Uuid,
    epoch: i32,
) -> Result<BTreeMap<Uuid, bool>, sqlx::Error> {
    let rows: Vec<(Uuid, bool)> = sqlx::query_as(
        "SELECT a.site_id,
                coalesce(bool_and($2 = ANY (a.epochs))
                           FILTER (WHERE a.last_seen_at > now() - make_interval(secs => $3)),
                         false)
           FROM appliances a JOIN sites s ON s.id = a.site_id
          WHERE s.network_id = $1 AND a.retired_at IS NULL
          GROUP BY a.site_id",
    )
    .bind(network_id)
    .bind(epoch)
    .bind(LIVE_WITHIN.as_secs_f64())
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Whether every current appliance of the network runs an agent that takes
/// keys per tunnel (protocol 4; one that never asked for a config yet is
/// taken to run the agent its stack pins, which does).
pub async fn all_agents_take_tunnel_keys(
    db: impl PgExecutor<'_>,
    network_id: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce(bool_and(coalesce(a.protocol, $2) >= $2), true)
           FROM appliances a JOIN sites s ON s.id = a.site_id
          WHERE s.network_id = $1 AND a.retired_at IS NULL",
    )
    .bind(network_id)
    .bind(vpcmesh_protocol::PROTOCOL_VERSION as i16)
    .fetch_one(db)
    .await
}

/// How far a rotation has come, over the network's live appliances.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub live: i64,
    /// Appliances whose kernel accepts the new epoch.
    pub accepting: i64,
    /// Appliances that send with the new epoch on every tunnel.
    pub sending: i64,
    /// Registered appliances, live or not.
    pub current: i64,
    /// Sites with appliances of which none reports: they may still forward
    /// with the old epoch, so it is not retired while there are any.
    pub sites_cut_off: i64,
}

impl Progress {
    pub fn complete(&self) -> bool {
        self.accepting == self.live && self.sending == self.live && self.sites_cut_off == 0
    }
}

pub async fn progress(
    db: impl PgExecutor<'_>,
    network_id: Uuid,
    epoch: i32,
) -> Result<Progress, sqlx::Error> {
    let (live, accepting, sending, current, sites_cut_off): (i64, i64, i64, i64, i64) =
        sqlx::query_as(
            "SELECT count(*) FILTER (WHERE a.live),
                    count(*) FILTER (WHERE a.live AND $2 = ANY (a.epochs)),
                    count(*) FILTER (WHERE a.live AND NOT EXISTS (
                        SELECT 1 FROM jsonb_array_elements(a.tunnels) t
                         WHERE coalesce((t->>'out_epoch')::integer, 0) <> $2)),
                    count(*),
                    count(DISTINCT a.site_id) - count(DISTINCT a.site_id) FILTER (WHERE a.live)
               FROM (SELECT a.site_id, a.epochs, a.tunnels,
                            coalesce(a.last_seen_at > now() - make_interval(secs => $3), false) AS live
                       FROM appliances a JOIN sites s ON s.id = a.site_id
                      WHERE s.network_id = $1 AND a.retired_at IS NULL) a",
        )
        .bind(network_id)
        .bind(epoch)
        .bind(LIVE_WITHIN.as_secs_f64())
        .fetch_one(db)
        .await?;
    Ok(Progress {
        live,
        accepting,
        sending,
        current,
        sites_cut_off,
    })
}

/// The live appliances that do not yet accept or send with `epoch`, with
/// why, for the console (at most 20).
pub async fn laggards(
    db: impl PgExecutor<'_>,
    network_id: Uuid,
    epoch: i32,
) -> Result<Vec<app::api::RotationLaggard>, sqlx::Error> {
    let rows: Vec<(String, String, String, bool, Option<String>)> = sqlx::query_as(
        "SELECT a.instance_id, s.region, upper(a.member), $2 = ANY (a.epochs), a.config_error
           FROM appliances a JOIN sites s ON s.id = a.site_id
          WHERE s.network_id = $1 AND a.retired_at IS NULL
            AND a.last_seen_at > now() - make_interval(secs => $3)
            AND (NOT $2 = ANY (a.epochs) OR EXISTS (
                 SELECT 1 FROM jsonb_array_elements(a.tunnels) t
                  WHERE coalesce((t->>'out_epoch')::integer, 0) <> $2))
          ORDER BY s.region, a.member LIMIT 20",
    )
    .bind(network_id)
    .bind(epoch)
    .bind(LIVE_WITHIN.as_secs_f64())
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(instance_id, region, member, accepts, error)| {
            let mut reason = if accepts {
                format!("still sends with the old epoch on some tunnels (waits for its peers to accept epoch {epoch})")
            } else {
                format!("does not accept epoch {epoch} yet")
            };
            if let Some(e) = error {
                reason.push_str(&format!("; last config error: {e}"));
            }
            app::api::RotationLaggard {
                instance_id,
                region,
                member,
                reason,
            }
        })
        .collect())
}

/// Moves a rotation on after a status report (or a rotation): notes when
/// every live appliance first sent with the new epoch, and retires the old
/// epoch once that has held for `grace`. Returns the epoch it retired.
#[tracing::instrument(skip(pool))]
pub async fn advance(
    pool: &PgPool,
    network_id: Uuid,
    grace: Duration,
) -> Result<Option<i32>, sqlx::Error> {
    // Every status report comes here: without a rotation running, one
    // plain read and no transaction or lock.
    let rotating: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM key_epochs WHERE network_id = $1 AND state = 'retiring')",
    )
    .bind(network_id)
    .fetch_one(pool)
    .await?;
    if !rotating {
        return Ok(None);
    }
    let mut tx = pool.begin().await?;
    // One replica at a time per network: the retiring row is the lock.
    let retiring: Option<(i32, Option<time::OffsetDateTime>)> = sqlx::query_as(
        "SELECT epoch, switched_at FROM key_epochs
          WHERE network_id = $1 AND state = 'retiring' FOR UPDATE",
    )
    .bind(network_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((old, switched_at)) = retiring else {
        return Ok(None);
    };
    let Some(active): Option<i32> = sqlx::query_scalar(
        "SELECT epoch FROM key_epochs WHERE network_id = $1 AND state = 'active'",
    )
    .bind(network_id)
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(None);
    };
    let p = progress(&mut *tx, network_id, active).await?;
    let retired = if !p.complete() {
        if switched_at.is_some() {
            // Someone fell back (a replaced instance): the grace starts over.
            set_switched(&mut *tx, network_id, old, false).await?;
        }
        None
    } else {
        match switched_at {
            None => {
                set_switched(&mut *tx, network_id, old, true).await?;
                tracing::info!(
                    epoch = active,
                    live = p.live,
                    "every live appliance sends with the new epoch; grace period started"
                );
                None
            }
            Some(at) if at + grace <= time::OffsetDateTime::now_utc() => {
                sqlx::query(
                    "UPDATE key_epochs SET state = 'retired', retired_at = now()
                      WHERE network_id = $1 AND epoch = $2",
                )
                .bind(network_id)
                .bind(old)
                .execute(&mut *tx)
                .await?;
                tracing::info!(
                    retired = old,
                    active,
                    "rotation complete; old epoch retired"
                );
                Some(old)
            }
            Some(_) => None,
        }
    };
    tx.commit().await?;
    Ok(retired)
}

async fn set_switched(
    db: impl PgExecutor<'_>,
    network_id: Uuid,
    epoch: i32,
    switched: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE key_epochs SET switched_at = CASE WHEN $3 THEN now() END
          WHERE network_id = $1 AND epoch = $2",
    )
    .bind(network_id)
    .bind(epoch)
    .bind(switched)
    .execute(db)
    .await?;
    Ok(())
}

/// Moves rotations on without waiting for a status report: when a site's
/// appliances all died, when none exist yet, or once the grace has passed.
pub fn spawn_sweeper(pool: PgPool, grace: Duration) {
    let every = (grace / 2).clamp(Duration::from_secs(1), Duration::from_secs(5));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if pool.is_closed() {
                return;
            }
            let networks: Vec<Uuid> = match sqlx::query_scalar(
                "SELECT network_id FROM key_epochs WHERE state = 'retiring'",
            )
            .fetch_all(&pool)
            .await
            {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "listing rotations in progress failed");
                    continue;
                }
            };
            for id in networks {
                if let Err(e) = advance(&pool, id, grace).await {
                    tracing::warn!(network_id = %id, error = %e, "moving a rotation on failed");
                }
            }
        }
    });
}
