//! Wake-ups for config long-polls: one Postgres LISTEN per server process,
//! fanned out to the waiting requests of the network that changed. Triggers
//! (migration 0004) notify on every write that can change a config, so every
//! replica hears every change whoever made it.

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use std::time::Duration;
use tokio::sync::broadcast;
use uuid::Uuid;

pub const CHANNEL: &str = "vpcmesh_config";
/// Appliances whose credential stopped working (migration 0012).
pub const REVOKED: &str = "vpcmesh_credentials";

/// What may have changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The configs of this network's appliances.
    Network(Uuid),
    /// This appliance's credential no longer works (never broadcast:
    /// it concerns the credential cache alone).
    Revoked(Uuid),
    /// Anything: the listener was reconnected, and what was notified while
    /// it was away is lost.
    Resync,
}

/// Starts the listener; returns the sender long-polls subscribe to.
/// `forget` drops what the change makes stale, before any waiter wakes.
pub fn listen(pool: PgPool, forget: impl Fn(Change) + Send + 'static) -> broadcast::Sender<Change> {
    let (tx, _) = broadcast::channel(1024);
    let sender = tx.clone();
    tokio::spawn(async move {
        let mut reconnect = false;
        loop {
            match PgListener::connect_with(&pool).await {
                Ok(mut listener) => match listener.listen_all([CHANNEL, REVOKED]).await {
                    Err(e) => tracing::warn!(error = %e, "LISTEN {CHANNEL}, {REVOKED} failed"),
                    Ok(()) => {
                        if reconnect {
                            tracing::info!(
                                "listening for config changes again; every waiter rechecks"
                            );
                            crate::metrics::METRICS
                                .config_notifications
                                .with_label_values(&["resync"])
                                .inc();
                            forget(Change::Resync);
                            let _ = sender.send(Change::Resync);
                        }
                        reconnect = true;
                        // `Ok(None)`: the connection was lost; reconnect here,
                        // so the resync follows the new LISTEN.
                        loop {
                            match listener.try_recv().await {
                                Ok(Some(n)) if n.channel() == REVOKED => {
                                    if let Ok(id) = n.payload().parse::<Uuid>() {
                                        crate::metrics::METRICS
                                            .config_notifications
                                            .with_label_values(&["revoked"])
                                            .inc();
                                        forget(Change::Revoked(id));
                                    }
                                }
                                Ok(Some(n)) => {
                                    if let Ok(id) = n.payload().parse::<Uuid>() {
                                        crate::metrics::METRICS
                                            .config_notifications
                                            .with_label_values(&["network"])
                                            .inc();
                                        forget(Change::Network(id));
                                        let _ = sender.send(Change::Network(id));
                                    }
                                }
                                Ok(None) => {
                                    tracing::warn!(
                                        "the config-change listener lost its connection"
                                    );
                                    break;
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "the config-change listener failed");
                                    break;
                                }
                            }
                        }
                    }
                },
                Err(e) => tracing::warn!(error = %e, "cannot listen for config changes"),
            }
            if pool.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    tx
}
