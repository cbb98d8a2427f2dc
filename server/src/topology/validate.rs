use super::{is_known_region, Network, Site, SiteKind, Topology};
use std::collections::HashMap;

/// Why a network cannot be built, in words that say what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    #[error("a network needs at least two edge sites (VPCs with appliances); it has {0}")]
    TooFewEdges(usize),
    #[error("site '{0}' appears twice; each VPC can be in a network once")]
    DuplicateSite(String),
    #[error("site '{site}': '{region}' is not an AWS region vpcmesh knows")]
    UnknownRegion { site: String, region: String },
    #[error("site '{0}' has no CIDR block")]
    NoCidr(String),
    #[error("site '{site}': its stored CIDR '{cidr}' is not an IPv4 block")]
    StoredCidr { site: String, cidr: String },
    #[error("sites '{a}' ({a_cidr}) and '{b}' ({b_cidr}) overlap; VPCs in one network need distinct addresses")]
    Overlap {
        a: String,
        a_cidr: String,
        b: String,
        b_cidr: String,
    },
    #[error("account {account} has two edge sites in {region} ('{a}' and '{b}'); use one edge per account and region and attach the other VPC as a leaf")]
    DuplicateEdge {
        account: String,
        region: String,
        a: String,
        b: String,
    },
    #[error("a transit network needs a hub: choose one of its edge sites")]
    NoHub,
    #[error("the hub must be an edge site of this network")]
    HubNotAnEdge,
    #[error("leaf '{0}': leaf VPCs belong to mesh-with-leaves networks only")]
    LeafNotAllowed(String),
    #[error("leaf '{0}' attaches to a site that is not an edge of this network")]
    LeafWithoutEdge(String),
    #[error("leaf '{leaf}' is in {leaf_region} but its edge '{edge}' is in {edge_region}; a leaf attaches to an edge in its own region")]
    LeafRegion {
        leaf: String,
        leaf_region: String,
        edge: String,
        edge_region: String,
    },
}

pub fn validate(net: &Network) -> Result<(), TopologyError> {
    let by_id: HashMap<_, &Site> = net.sites.iter().map(|s| (s.id, s)).collect();
    let mut vpcs = HashMap::new();
    for s in &net.sites {
        if vpcs
            .insert((&s.account_id, &s.region, &s.vpc_id), ())
            .is_some()
            || by_id.get(&s.id) != Some(&s)
        {
            return Err(TopologyError::DuplicateSite(s.name.clone()));
        }
        if !is_known_region(&s.region) {
            return Err(TopologyError::UnknownRegion {
                site: s.name.clone(),
                region: s.region.clone(),
            });
        }
        if s.cidrs.is_empty() {
            return Err(TopologyError::NoCidr(s.name.clone()));
        }
    }
    let edges: Vec<&Site> = net.sites.iter().filter(|s| s.is_edge()).collect();
    if edges.len() < 2 {
        return Err(TopologyError::TooFewEdges(edges.len()));
    }
    for (i, a) in edges.iter().enumerate() {
        for b in &edges[i + 1..] {
            if a.account_id == b.account_id && a.region == b.region {
                return Err(TopologyError::DuplicateEdge {
                    account: a.account_id.clone(),
                    region: a.region.clone(),
                    a: a.name.clone(),
                    b: b.name.clone(),
                });
            }
        }
    }
    check_overlaps(&net.sites)?;
    if let Topology::Transit { hub } = &net.topology {
        let hub = hub.ok_or(TopologyError::NoHub)?;
        if !by_id.get(&hub).is_some_and(|s| s.is_edge()) {
            return Err(TopologyError::HubNotAnEdge);
        }
    }
    for leaf in &net.sites {
        let SiteKind::Leaf { edge } = &leaf.kind else {
            continue;
        };
        if net.topology != Topology::MeshWithLeaves {
            return Err(TopologyError::LeafNotAllowed(leaf.name.clone()));
        }
        let edge = by_id
            .get(edge)
            .filter(|e| e.is_edge())
            .ok_or_else(|| TopologyError::LeafWithoutEdge(leaf.name.clone()))?;
        if edge.region != leaf.region {
            return Err(TopologyError::LeafRegion {
                leaf: leaf.name.clone(),
                leaf_region: leaf.region.clone(),
                edge: edge.name.clone(),
                edge_region: edge.region.clone(),
            });
        }
    }
    Ok(())
}

fn check_overlaps(sites: &[Site]) -> Result<(), TopologyError> {
    for (i, a) in sites.iter().enumerate() {
        for b in &sites[i + 1..] {
            for ca in &a.cidrs {
                for cb in &b.cidrs {
                    if app::api::cidr::overlap(ca, cb) {
                        return Err(TopologyError::Overlap {
                            a: a.name.clone(),
                            a_cidr: ca.to_string(),
                            b: b.name.clone(),
                            b_cidr: cb.to_string(),
                        });
                    }
                }
            }
        }
    }
    Ok(())
}
