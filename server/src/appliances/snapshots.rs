//! One snapshot per network, shared: the polls of a network's appliances
//! that wake for one change read and compile the network once between
//! them (the first loads, the others wait for it), as Envoy's snapshot
//! cache does for its control planes. A snapshot is dropped by the change
//! notifications of its network (and all of them on a resync) before any
//! waiter wakes for them, and is
//! reloaded after `MAX_AGE` in any case: liveness (who reported lately)
//! moves without a notification.
//!
//! A poll without a config (an agent that just started or registered) must
//! see every write committed before it asked, which a cached snapshot may
//! trail: it takes a snapshot whose load began after it asked (`fresh`).
//! Such loads take turns per network, and a load serves every poll that
//! asked before it began: a burst of them (every agent after a server
//! restart) costs two loads per network, not one per agent.

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

/// A network's turn for fresh loads, with the last one and when it began.
type Turn = Arc<tokio::sync::Mutex<Option<(Instant, Arc<NetworkSnapshot>)>>>;

#[derive(Default)]
pub struct Snapshots {
    cells: Mutex<HashMap<Uuid, (Cell, Instant)>>,
    turns: Mutex<HashMap<Uuid, Turn>>,
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

    /// A snapshot of the network whose load began after this call: for an
    /// appliance that has no config yet, which must see every write
    /// committed before it asked (a cached snapshot trails a write by the
    /// notification's delay). Fresh loads of a network take turns (the
    /// lock is fair, first come first served), and one that began after
    /// this call was made serves it too.
    pub async fn fresh(
        &self,
        pool: &PgPool,
        network_id: Uuid,
    ) -> Result<Arc<NetworkSnapshot>, ApplianceError> {
        let asked = Instant::now();
        let turn = self
            .turns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(network_id)
            .or_default()
            .clone();
        let mut last = turn.lock().await;
        if let Some((began, snapshot)) = last.as_ref() {
            if *began >= asked {
                return Ok(snapshot.clone());
            }
        }
        let began = Instant::now();
        let snapshot = self.load(pool, network_id).await?;
        *last = Some((began, snapshot.clone()));
        Ok(snapshot)
    }

    /// The network read now, not shared.
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

    /// Polls of the network taking or waiting for its fresh-load turn.
    pub fn fresh_waiting(&self, network_id: Uuid) -> usize {
        self.turns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&network_id)
            .map_or(0, |t| Arc::strong_count(t) - 1)
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
        drop(cells);
        // A fresh load is judged by when it began, not by notifications;
        // a network's turn goes once no poll holds or waits for it.
        if let Change::Network(id) = change {
            let mut turns = self.turns.lock().unwrap_or_else(|p| p.into_inner());
            if turns.get(&id).is_some_and(|t| Arc::strong_count(t) == 1) {
                turns.remove(&id);
            }
        }
    }
}
