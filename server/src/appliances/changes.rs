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

/// Starts the listener; returns the sender long-polls subscribe to.
pub fn listen(pool: PgPool) -> broadcast::Sender<Uuid> {
    let (tx, _) = broadcast::channel(1024);
    let sender = tx.clone();
    tokio::spawn(async move {
        loop {
            match PgListener::connect_with(&pool).await {
                Ok(mut listener) => {
                    if let Err(e) = listener.listen(CHANNEL).await {
                        tracing::warn!(error = %e, "LISTEN {CHANNEL} failed");
                    } else {
                        // `recv` reconnects by itself after a dropped connection.
                        while let Ok(n) = listener.recv().await {
                            if let Ok(id) = n.payload().parse::<Uuid>() {
                                let _ = sender.send(id);
                            }
                        }
                    }
                }
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
