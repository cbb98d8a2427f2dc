//! One snapshot per network, shared: the polls of a network's appliances
//! that wake for one change read and compile the network once between
//! them (the first loads, the others wait for it), as Envoy's snapshot
//! cache does for its control planes. A snapshot is dropped by the change
//! notifications of its network (and all of them on a resync) before any
//! waiter wakes for them, and is
//! reloaded after `MAX_AGE` in any case: liveness (who reported lately)
//! moves without a notification.

use super::changes::Change;
use super::config::NetworkSnapshot;
use super::ApplianceError;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;
use uuid::Uuid;

const MAX_AGE: Duration = Duration::from_secs(2);

type Cell = Arc<OnceCell<Arc<NetworkSnapshot>>>;

#[derive(Default)]
pub struct Snapshots {
    cells: Mutex<HashMap<Uuid, (Cell, Instant)>>,
    loads: AtomicU64,
}

impl Snapshots {
    fn cells(&self) -> MutexGuard<'_, HashMap<Uuid, (Cell, Instant)>> {
        self.cells.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The network's current snapshot, loaded by this call or by the one
    /// already loading it.
    pub async fn get(
        &self,
        pool: &PgPool,
        network_id: Uuid,
    ) -> Result<Arc<NetworkSnapshot>, ApplianceError> {
        let cell = {
            let mut cells = self.cells();
            match cells.get(&network_id) {
                Some((cell, at)) if at.elapsed() < MAX_AGE => cell.clone(),
                _ => {
                    let cell = Cell::default();
                    cells.insert(network_id, (cell.clone(), Instant::now()));
                    cell
                }
            }
        };
        cell.get_or_try_init(|| self.load(pool, network_id))
            .await
            .cloned()
    }

    /// The network read now, not shared: for an appliance that has no
    /// config yet, which must see every write committed before it asked
    /// (a cached snapshot trails a write by the notification's delay).
    pub async fn load(
        &self,
        pool: &PgPool,
        network_id: Uuid,
    ) -> Result<Arc<NetworkSnapshot>, ApplianceError> {
        self.loads.fetch_add(1, Ordering::Relaxed);
        crate::metrics::METRICS.config_compiles.inc();
        let started = Instant::now();
        let snapshot = NetworkSnapshot::load(pool, network_id).await;
        crate::metrics::METRICS
            .config_compile_seconds
            .observe(started.elapsed().as_secs_f64());
        snapshot.map(Arc::new)
    }

    /// Snapshots loaded so far by this process.
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    pub fn forget(&self, change: Change) {
        let mut cells = self.cells();
        match change {
            Change::Network(id) => {
                cells.remove(&id);
            }
            Change::Revoked(_) => {}
            Change::Resync => cells.clear(),
        }
    }
}
