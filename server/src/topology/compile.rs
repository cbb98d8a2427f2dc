use super::{validate, HaMember, Network, Site, SiteId, SiteKind, Topology, TopologyError};
use ipnet::Ipv4Net;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

/// One end of an IPsec tunnel, as the local site's appliances see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelEnd {
    pub peer: SiteId,
    /// Kernel reqid tying this tunnel's SAs and policies together; unique per site.
    pub reqid: u32,
    /// Base SPI each local HA member sends with (the peer accepts both);
    /// below 2^16, as each SPI puts its epoch's parity and its flow's
    /// generation above it.
    pub out_spis: [u32; 2],
    /// SPIs accepted from the peer's members A and B; both local members install
    /// both, so a takeover on either side needs no rekey.
    pub in_spis: [u32; 2],
    /// Traffic selectors: what this end sends into the tunnel...
    pub local_cidrs: Vec<Ipv4Net>,
    /// ...and what it expects out of it.
    pub remote_cidrs: Vec<Ipv4Net>,
}

/// Where a VPC route table sends a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RouteTarget {
    /// The site's active appliance.
    Appliance,
    /// The regional Transit Gateway (leaf attachments).
    TransitGateway,
}

/// What one site needs: tunnels for its appliances (none for a leaf) and
/// routes for its VPC route tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SitePlan {
    pub site: SiteId,
    pub tunnels: Vec<TunnelEnd>,
    pub vpc_routes: Vec<(Ipv4Net, RouteTarget)>,
}

/// Compiles a validated network into one plan per site. Deterministic: the
/// order of `net.sites` does not matter and equal input gives equal output.
pub fn compile(net: &Network) -> Result<BTreeMap<SiteId, SitePlan>, TopologyError> {
    validate(net)?;
    let sites: BTreeMap<SiteId, &Site> = net.sites.iter().map(|s| (s.id, s)).collect();
    let edges: Vec<SiteId> = sites
        .values()
        .filter(|s| s.is_edge())
        .map(|s| s.id)
        .collect();
    let served = |edge: SiteId| -> Vec<Ipv4Net> {
        let mut cidrs: Vec<Ipv4Net> = sites
            .values()
            .filter(|s| s.id == edge || s.kind == SiteKind::Leaf { edge })
            .flat_map(|s| s.cidrs.iter().copied())
            .collect();
        cidrs.sort();
        cidrs
    };
    let all_but = |excluded: &[Ipv4Net]| -> Vec<Ipv4Net> {
        let mut cidrs: Vec<Ipv4Net> = sites
            .values()
            .flat_map(|s| s.cidrs.iter().copied())
            .filter(|c| !excluded.contains(c))
            .collect();
        cidrs.sort();
        cidrs
    };

    // Tunnels as ordered pairs (a < b) with each side's selectors.
    let pairs: Vec<(SiteId, SiteId)> = match &net.topology {
        Topology::FullMesh | Topology::MeshWithLeaves => edges
            .iter()
            .enumerate()
            .flat_map(|(i, a)| edges[i + 1..].iter().map(move |b| (*a, *b)))
            .collect(),
        Topology::Transit { hub } => {
            let hub = hub.ok_or(TopologyError::NoHub)?;
            edges
                .iter()
                .filter(|s| **s != hub)
                .map(|s| if hub < *s { (hub, *s) } else { (*s, hub) })
                .collect()
        }
    };
    let selectors = |local: SiteId, peer: SiteId| -> (Vec<Ipv4Net>, Vec<Ipv4Net>) {
        match &net.topology {
            Topology::Transit { hub: Some(hub) } if local == *hub => {
                let spoke = served(peer);
                (all_but(&spoke), spoke)
            }
            Topology::Transit { .. } => {
                let own = served(local);
                (own.clone(), all_but(&own))
            }
            _ => (served(local), served(peer)),
        }
    };

    let spis = SpiTable::assign(net.id, &pairs);
    let reqids = assign_reqids(net.id, &pairs);
    let mut plans: BTreeMap<SiteId, SitePlan> = sites
        .keys()
        .map(|id| {
            (
                *id,
                SitePlan {
                    site: *id,
                    tunnels: Vec::new(),
                    vpc_routes: Vec::new(),
                },
            )
        })
        .collect();
    for (a, b) in &pairs {
        for (local, peer) in [(*a, *b), (*b, *a)] {
            let (local_cidrs, remote_cidrs) = selectors(local, peer);
            let end = TunnelEnd {
                peer,
                reqid: reqids[&(*a, *b)],
                out_spis: HaMember::BOTH.map(|m| spis.get(local, m, peer)),
                in_spis: HaMember::BOTH.map(|m| spis.get(peer, m, local)),
                local_cidrs,
                remote_cidrs,
            };
            if let Some(plan) = plans.get_mut(&local) {
                plan.tunnels.push(end);
            }
        }
    }
    for plan in plans.values_mut() {
        plan.tunnels.sort_by_key(|t| t.peer);
        let site = sites[&plan.site];
        plan.vpc_routes = match &site.kind {
            SiteKind::Leaf { .. } => all_but(&site.cidrs)
                .into_iter()
                .map(|c| (c, RouteTarget::TransitGateway))
                .collect(),
            SiteKind::Edge => {
                let own_leaves: BTreeSet<Ipv4Net> = served(site.id)
                    .into_iter()
                    .filter(|c| !site.cidrs.contains(c))
                    .collect();
                all_but(&site.cidrs)
                    .into_iter()
                    .map(|c| {
                        (
                            c,
                            if own_leaves.contains(&c) {
                                RouteTarget::TransitGateway
                            } else {
                                RouteTarget::Appliance
                            },
                        )
                    })
                    .collect()
            }
        };
    }
    Ok(plans)
}

/// Inbound SPIs, unique per receiving site (both of its members install all
/// of them): SPI for traffic from (sender site, sender member) to receiver.
struct SpiTable(BTreeMap<(SiteId, HaMember, SiteId), u32>);

impl SpiTable {
    fn assign(network: Uuid, pairs: &[(SiteId, SiteId)]) -> Self {
        let mut flows: Vec<(SiteId, HaMember, SiteId)> = pairs
            .iter()
            .flat_map(|(a, b)| [(*a, *b), (*b, *a)])
            .flat_map(|(from, to)| HaMember::BOTH.map(|m| (from, m, to)))
            .collect();
        flows.sort();
        let mut used: BTreeMap<SiteId, BTreeSet<u32>> = BTreeMap::new();
        let mut table = BTreeMap::new();
        for (from, member, to) in flows {
            let taken = used.entry(to).or_default();
            let spi = (0u32..)
                .map(|attempt| {
                    // Below 2^16: the bits above carry the key epoch's
                    // parity and the flow's generation
                    // (vpcmesh_protocol::spi_for).
                    stable_u32(&[
                        network.as_bytes(),
                        from.as_bytes(),
                        &[member as u8],
                        to.as_bytes(),
                        &attempt.to_be_bytes(),
                    ]) & vpcmesh_protocol::SPI_BASE_MASK
                })
                .find(|spi| *spi >= 0x100 && !taken.contains(spi))
                .expect("an unbounded search over a 32-bit hash finds a free SPI");
            taken.insert(spi);
            table.insert((from, member, to), spi);
        }
        SpiTable(table)
    }

    fn get(&self, from: SiteId, member: HaMember, to: SiteId) -> u32 {
        self.0[&(from, member, to)]
    }
}

/// One reqid per tunnel, unique within each of its two sites.
fn assign_reqids(network: Uuid, pairs: &[(SiteId, SiteId)]) -> BTreeMap<(SiteId, SiteId), u32> {
    let mut sorted = pairs.to_vec();
    sorted.sort();
    let mut used: BTreeMap<SiteId, BTreeSet<u32>> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (a, b) in sorted {
        let reqid = (0u32..)
            .map(|attempt| {
                // Kept in [1, 2^30): the agent owns this reqid range.
                1 + stable_u32(&[
                    network.as_bytes(),
                    a.as_bytes(),
                    b.as_bytes(),
                    &attempt.to_be_bytes(),
                ]) % ((1 << 30) - 1)
            })
            .find(|r| {
                !used.get(&a).is_some_and(|u| u.contains(r))
                    && !used.get(&b).is_some_and(|u| u.contains(r))
            })
            .expect("an unbounded search finds a free reqid");
        used.entry(a).or_default().insert(reqid);
        used.entry(b).or_default().insert(reqid);
        out.insert((a, b), reqid);
    }
    out
}

fn stable_u32(parts: &[&[u8]]) -> u32 {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u32).to_be_bytes());
        h.update(p);
    }
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}
