//! Wake-ups for config long-polls: one Postgres LISTEN per server process;
//! a change wakes only the waiting requests of the network that changed.
//! Triggers (migrations 0004, 0012) notify on every write that can change a
//! config or revoke a credential, so every replica hears every change
//! whoever made it.

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;
use uuid::Uuid;

pub const CHANNEL: &str = "vpcmesh_config";
/// Appliances whose credential stopped working (migration 0012).
pub const REVOKED: &str = "vpcmesh_credentials";

/// What may have changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The configs of this network's appliances.
    Network(Uuid),
    /// This appliance's credential no longer works.
    Revoked(Uuid),
    /// Anything: the listener was reconnected, and what was notified while
    /// it was away is lost.
    Resync,
}

/// The long-polls waiting in this process, by network: each network has a
/// counter its waiters watch, moved by that network's changes alone.
#[derive(Default)]
pub struct Waiters {
    networks: Mutex<HashMap<Uuid, watch::Sender<u64>>>,
    /// Networks nobody waits for are swept once the map is this large.
    sweep_at: Mutex<usize>,
}

/// Networks kept at least, before a sweep.
const SWEEP_FROM: usize = 1024;

impl Waiters {
    fn networks(&self) -> MutexGuard<'_, HashMap<Uuid, watch::Sender<u64>>> {
        self.networks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Subscribe before reading the config: a change after this call is
    /// seen by `changed()` even if it comes before the wait.
    pub fn subscribe(&self, network_id: Uuid) -> watch::Receiver<u64> {
        let mut networks = self.networks();
        let mut sweep_at = self.sweep_at.lock().unwrap_or_else(|p| p.into_inner());
        if networks.len() >= (*sweep_at).max(SWEEP_FROM) {
            networks.retain(|_, tx| tx.receiver_count() > 0);
            *sweep_at = 2 * networks.len();
        }
        networks
            .entry(network_id)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Wakes the waiters `change` concerns.
    pub fn wake(&self, change: Change) {
        let networks = self.networks();
        match change {
            Change::Network(id) => {
                if let Some(tx) = networks.get(&id) {
                    tx.send_modify(|n| *n += 1);
                }
            }
            Change::Resync => {
                for tx in networks.values() {
                    tx.send_modify(|n| *n += 1);
                }
            }
            Change::Revoked(_) => {}
        }
    }

    /// Networks with a counter (waited for now, or not yet swept).
    pub fn networks_watched(&self) -> usize {
        self.networks().len()
    }
}

/// Starts the listener: every change goes to `on_change`, in the order
/// Postgres sent them.
pub fn listen(pool: PgPool, on_change: impl Fn(Change) + Send + 'static) {
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
                            heard("resync");
                            on_change(Change::Resync);
                        }
                        reconnect = true;
                        // `Ok(None)`: the connection was lost; reconnect here,
                        // so the resync follows the new LISTEN.
                        loop {
                            match listener.try_recv().await {
                                Ok(Some(n)) => {
                                    let Ok(id) = n.payload().parse::<Uuid>() else {
                                        continue;
                                    };
                                    if n.channel() == REVOKED {
                                        heard("revoked");
                                        on_change(Change::Revoked(id));
                                    } else {
                                        heard("network");
                                        on_change(Change::Network(id));
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
}

fn heard(kind: &str) {
    crate::metrics::METRICS
        .config_notifications
        .with_label_values(&[kind])
        .inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_wakes_the_waiters_of_its_network_only() {
        let waiters = Waiters::default();
        let (ours, theirs) = (Uuid::new_v4(), Uuid::new_v4());
        let mut mine = waiters.subscribe(ours);
        let other = waiters.subscribe(theirs);
        waiters.wake(Change::Network(ours));
        waiters.wake(Change::Revoked(theirs));
        assert!(mine.has_changed().expect("open"));
        assert!(!other.has_changed().expect("open"));
        mine.mark_unchanged();
        waiters.wake(Change::Resync);
        assert!(mine.has_changed().expect("open") && other.has_changed().expect("open"));
    }

    #[test]
    fn networks_nobody_waits_for_are_swept() {
        let waiters = Waiters::default();
        let kept = waiters.subscribe(Uuid::new_v4());
        for _ in 1..SWEEP_FROM {
            drop(waiters.subscribe(Uuid::new_v4()));
        }
        let _new = waiters.subscribe(Uuid::new_v4());
        assert_eq!(
            waiters.networks_watched(),
            2,
            "the one still waited for and the new one"
        );
        drop(kept);
    }
}
