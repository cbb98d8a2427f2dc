//! The kernel objects one config asks for. Pure: no I/O.

use super::keys::{direction_key, DataKey};
use crate::protocol::{DesiredConfig, KeyScope};
use crate::route::Route;
use crate::xfrm::{Block, Direction, Policy, PolicyId, Sa, SaId};
use ipnet::Ipv4Net;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use uuid::Uuid;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelState {
    pub sas: BTreeMap<SaId, Sa>,
    pub policies: BTreeMap<PolicyId, Policy>,
    /// Below the tunnels' policies: every remote CIDR, both ways.
    pub blocks: BTreeMap<PolicyId, Block>,
    pub routes: BTreeMap<Ipv4Net, Route>,
}

/// The block policies of a remote CIDR: what leaves for it, or comes from
/// it, and no tunnel policy takes is dropped.
fn blocks_of(remote: Ipv4Net) -> [PolicyId; 3] {
    let any = Ipv4Net::default();
    [
        PolicyId {
            dir: Direction::Out,
            src: any,
            dst: remote,
        },
        PolicyId {
            dir: Direction::In,
            src: remote,
            dst: any,
        },
        PolicyId {
            dir: Direction::Fwd,
            src: remote,
            dst: any,
        },
    ]
}

/// Where the appliance's tunnels leave: the interface holding the config's
/// local address, and the address its own traffic into tunnels uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Underlay {
    pub oif: u32,
    pub prefsrc: Option<Ipv4Addr>,
}

/// Plaintext data keys by epoch and what they serve, as the agent
/// decrypted them: per tunnel and per site (protocol 4), or one for the
/// whole network (epochs made before).
#[derive(Clone, Debug, Default)]
pub struct EpochKeys(BTreeMap<(u32, KeyScope), DataKey>);

impl EpochKeys {
    pub fn insert(&mut self, epoch: u32, scope: KeyScope, key: DataKey) {
        self.0.insert((epoch, scope), key);
    }

    /// The key the tunnel between `site` and `peer` derives its SAs from in
    /// `epoch`: the pair's own, or the network's.
    pub fn tunnel(&self, epoch: u32, site: Uuid, peer: Uuid) -> Option<&DataKey> {
        self.0
            .get(&(epoch, KeyScope::pair(site, peer)))
            .or_else(|| self.0.get(&(epoch, KeyScope::Network)))
    }

    /// The key `site`'s two members derive their heartbeat key from in
    /// `epoch`: the site's own, or the network's.
    pub fn site(&self, epoch: u32, site: Uuid) -> Option<&DataKey> {
        self.0
            .get(&(epoch, KeyScope::Site(site)))
            .or_else(|| self.0.get(&(epoch, KeyScope::Network)))
    }
}

/// One network key per epoch (labs, tests, epochs made before protocol 4).
impl FromIterator<(u32, DataKey)> for EpochKeys {
    fn from_iter<I: IntoIterator<Item = (u32, DataKey)>>(iter: I) -> Self {
        EpochKeys(
            iter.into_iter()
                .map(|(epoch, key)| ((epoch, KeyScope::Network), key))
                .collect(),
        )
    }
}

/// A config names an epoch whose key the agent does not hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no data key for epoch {0}")]
pub struct MissingKey(pub u32);

pub fn desired_state(
    config: &DesiredConfig,
    keys: &EpochKeys,
    underlay: Underlay,
) -> Result<KernelState, MissingKey> {
    let mut state = KernelState::default();
    let local = config.local_address;
    let key = |epoch: u32, peer: Uuid| {
        keys.tunnel(epoch, config.site_id, peer)
            .ok_or(MissingKey(epoch))
    };
    for t in &config.tunnels {
        let out = Sa {
            src: local,
            dst: t.peer_address,
            spi: t.out.spi,
            reqid: t.reqid,
            key: direction_key(
                key(t.out.epoch, t.peer_site)?,
                config.network_id,
                t.out.epoch,
                (config.site_id, config.member),
                t.peer_site,
                t.out.spi,
            ),
            nat_traversal: config.nat_traversal,
            esn: !t.legacy_sa,
        };
        state.sas.insert(out.id(), out);
        for i in &t.inbound {
            let inbound = Sa {
                src: t.peer_address,
                dst: local,
                spi: i.spi,
                reqid: t.reqid,
                key: direction_key(
                    key(i.epoch, t.peer_site)?,
                    config.network_id,
                    i.epoch,
                    (t.peer_site, i.member),
                    config.site_id,
                    i.spi,
                ),
                nat_traversal: config.nat_traversal,
                esn: !t.legacy_sa,
            };
            state.sas.insert(inbound.id(), inbound);
        }
        for l in &t.local_cidrs {
            for r in &t.remote_cidrs {
                let out = PolicyId {
                    dir: Direction::Out,
                    src: *l,
                    dst: *r,
                };
                state.policies.insert(
                    out,
                    Policy {
                        id: out,
                        tmpl_src: local,
                        tmpl_dst: t.peer_address,
                        reqid: t.reqid,
                    },
                );
                for dir in [Direction::In, Direction::Fwd] {
                    let id = PolicyId {
                        dir,
                        src: *r,
                        dst: *l,
                    };
                    state.policies.insert(
                        id,
                        Policy {
                            id,
                            tmpl_src: t.peer_address,
                            tmpl_dst: local,
                            reqid: t.reqid,
                        },
                    );
                }
            }
        }
        for r in &t.remote_cidrs {
            for id in blocks_of(*r) {
                state.blocks.insert(id, Block::new(id));
            }
            state.routes.insert(
                *r,
                Route {
                    dst: *r,
                    oif: underlay.oif,
                    prefsrc: underlay.prefsrc,
                },
            );
        }
    }
    Ok(state)
}
