//! Appliance credentials already looked up, so a poll or a status report
//! costs no query for them. An entry is dropped when its network changes
//! (the same notifications that wake long-polls: a retirement is one), on
//! any gap in those notifications, and after a minute in any case.

use super::changes::Change;
use super::store::ApplianceRow;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

const TTL: Duration = Duration::from_secs(60);
/// Past this many entries the cache starts over (a bound, not an LRU).
const MAX_ENTRIES: usize = 100_000;

#[derive(Default)]
struct Entries {
    rows: HashMap<Vec<u8>, (ApplianceRow, Instant)>,
    /// Bumped by every invalidation: a lookup that began before one does
    /// not store what it read.
    epoch: u64,
}

#[derive(Default)]
pub struct CredentialCache(Mutex<Entries>);

/// Where a lookup started, for [`CredentialCache::store`].
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

impl CredentialCache {
    fn entries(&self) -> MutexGuard<'_, Entries> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, hash: &[u8]) -> Result<ApplianceRow, Ticket> {
        let e = self.entries();
        match e.rows.get(hash) {
            Some((row, at)) if at.elapsed() < TTL => Ok(row.clone()),
            _ => Err(Ticket(e.epoch)),
        }
    }

    pub fn store(&self, hash: Vec<u8>, row: ApplianceRow, ticket: Ticket) {
        let mut e = self.entries();
        if e.epoch != ticket.0 {
            return;
        }
        if e.rows.len() >= MAX_ENTRIES {
            e.rows.clear();
        }
        e.rows.insert(hash, (row, Instant::now()));
    }

    pub fn forget(&self, change: Change) {
        let mut e = self.entries();
        e.epoch += 1;
        match change {
            Change::Network(id) => e.rows.retain(|_, (row, _)| row.network_id != id),
            Change::Resync => e.rows.clear(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use appliance::protocol::Member;
    use uuid::Uuid;

    fn row(network_id: Uuid) -> ApplianceRow {
        ApplianceRow {
            id: Uuid::new_v4(),
            site_id: Uuid::new_v4(),
            network_id,
            member: Member::A,
            private_ip: "10.0.0.10".parse().expect("address"),
        }
    }

    #[test]
    fn a_change_of_its_network_drops_an_entry_and_others_stay() {
        let cache = CredentialCache::default();
        let (ours, theirs) = (Uuid::new_v4(), Uuid::new_v4());
        for (hash, net) in [(b"a", ours), (b"b", theirs)] {
            let ticket = cache.get(hash).expect_err("not cached yet");
            cache.store(hash.to_vec(), row(net), ticket);
        }
        assert!(cache.get(b"a").is_ok());
        cache.forget(Change::Network(ours));
        assert!(cache.get(b"a").is_err());
        assert!(cache.get(b"b").is_ok());
        cache.forget(Change::Resync);
        assert!(cache.get(b"b").is_err());
    }

    #[test]
    fn a_lookup_overtaken_by_a_change_is_not_stored() {
        let cache = CredentialCache::default();
        let ticket = cache.get(b"a").expect_err("not cached yet");
        // The appliance is retired while its row is being read.
        cache.forget(Change::Network(Uuid::new_v4()));
        cache.store(b"a".to_vec(), row(Uuid::new_v4()), ticket);
        assert!(cache.get(b"a").is_err());
    }
}
