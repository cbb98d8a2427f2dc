//! Appliance credentials already looked up, so a poll or a status report
//! costs no query for them. An entry is dropped when its appliance is
//! retired or removed (a notification from migration 0012's triggers, heard
//! by every replica), on any gap in the notifications, and after a minute in
//! any case.

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

    /// The appliance's agent now speaks `protocol` (recorded in Postgres):
    /// its cached rows say so, so the next poll writes nothing.
    pub fn note_protocol(&self, id: uuid::Uuid, protocol: u16) {
        for (row, _) in self.entries().rows.values_mut() {
            if row.id == id {
                row.protocol = Some(protocol);
            }
        }
    }

    pub fn forget(&self, change: Change) {
        if matches!(change, Change::Network(_)) {
            return;
        }
        let mut e = self.entries();
        e.epoch += 1;
        match change {
            Change::Revoked(id) => e.rows.retain(|_, (row, _)| row.id != id),
            Change::Network(_) => {}
            Change::Resync => e.rows.clear(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;
    use vpcmesh_protocol::Member;

    fn row(network_id: Uuid) -> ApplianceRow {
        ApplianceRow {
            id: Uuid::new_v4(),
            site_id: Uuid::new_v4(),
            network_id,
            member: Member::A,
            private_ip: "10.0.0.10".parse().expect("address"),
            protocol: None,
        }
    }

    #[test]
    fn a_recorded_protocol_is_what_the_cached_row_says_next() {
        let cache = CredentialCache::default();
        let (a, b) = (row(Uuid::new_v4()), row(Uuid::new_v4()));
        for (hash, r) in [(b"a", &a), (b"b", &b)] {
            let ticket = cache.get(hash).expect_err("not cached yet");
            cache.store(hash.to_vec(), r.clone(), ticket);
        }
        cache.note_protocol(a.id, 4);
        assert_eq!(cache.get(b"a").expect("cached").protocol, Some(4));
        assert_eq!(cache.get(b"b").expect("cached").protocol, None);
    }

    #[test]
    fn a_revoked_credential_is_dropped_and_others_stay() {
        let cache = CredentialCache::default();
        let net = Uuid::new_v4();
        let (a, b) = (row(net), row(net));
        for (hash, r) in [(b"a", &a), (b"b", &b)] {
            let ticket = cache.get(hash).expect_err("not cached yet");
            cache.store(hash.to_vec(), r.clone(), ticket);
        }
        cache.forget(Change::Network(net));
        assert!(cache.get(b"a").is_ok(), "a config change revokes nothing");
        cache.forget(Change::Revoked(a.id));
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
        cache.forget(Change::Revoked(Uuid::new_v4()));
        cache.store(b"a".to_vec(), row(Uuid::new_v4()), ticket);
        assert!(cache.get(b"a").is_err());
    }
}
