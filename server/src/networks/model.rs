//! A stored network as the topology compiler's input.

use super::store::{NetworkRow, SiteRow};
use crate::topology::{self, SiteKind, SitePlan, Topology, TopologyError};
use app::api::TopologyKind;
use std::collections::BTreeMap;
use uuid::Uuid;

pub fn network_of(row: &NetworkRow, sites: &[SiteRow]) -> topology::Network {
    let hub = sites.iter().find(|s| s.is_hub).map(|s| s.id);
    topology::Network {
        id: row.id,
        topology: match row.topology {
            TopologyKind::FullMesh => Topology::FullMesh,
            TopologyKind::Transit => Topology::Transit { hub },
            TopologyKind::MeshWithLeaves => Topology::MeshWithLeaves,
        },
        sites: sites
            .iter()
            .map(|s| topology::Site {
                id: s.id,
                name: s.name.clone(),
                account_id: s.account_id.clone().unwrap_or_default(),
                region: s.region.clone(),
                vpc_id: s.vpc_id.clone(),
                cidrs: s.cidrs.iter().filter_map(|c| c.parse().ok()).collect(),
                kind: match (s.is_edge(), s.edge_site_id) {
                    (false, Some(edge)) => SiteKind::Leaf { edge },
                    _ => SiteKind::Edge,
                },
            })
            .collect(),
    }
}

pub fn compile(
    row: &NetworkRow,
    sites: &[SiteRow],
) -> Result<BTreeMap<Uuid, SitePlan>, TopologyError> {
    topology::compile(&network_of(row, sites))
}
