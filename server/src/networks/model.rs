//! A stored network as the topology compiler's input.

use super::store::{NetworkRow, SiteRow, StoredSiteKind};
use crate::topology::{self, SiteKind, SitePlan, Topology, TopologyError};
use app::api::TopologyKind;
use std::collections::BTreeMap;
use uuid::Uuid;

/// The compiler's view of a stored network. Stored values the compiler
/// cannot take (a CIDR that is no IPv4 block, a leaf without its edge) are
/// errors, never dropped or read as something else.
pub fn network_of(row: &NetworkRow, sites: &[SiteRow]) -> Result<topology::Network, TopologyError> {
    let hub = sites.iter().find(|s| s.is_hub).map(|s| s.id);
    Ok(topology::Network {
        id: row.id,
        topology: match row.topology {
            TopologyKind::FullMesh => Topology::FullMesh,
            TopologyKind::Transit => Topology::Transit { hub },
            TopologyKind::MeshWithLeaves => Topology::MeshWithLeaves,
        },
        sites: sites.iter().map(site_of).collect::<Result<_, _>>()?,
    })
}

fn site_of(s: &SiteRow) -> Result<topology::Site, TopologyError> {
    let cidrs = s
        .cidrs
        .iter()
        .map(|c| {
            c.parse().map_err(|_| TopologyError::StoredCidr {
                site: s.name.clone(),
                cidr: c.clone(),
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(topology::Site {
        id: s.id,
        name: s.name.clone(),
        account_id: s.account_id.clone().unwrap_or_default(),
        region: s.region.clone(),
        vpc_id: s.vpc_id.clone(),
        cidrs,
        kind: match (s.kind, s.edge_site_id) {
            (StoredSiteKind::Edge, _) => SiteKind::Edge,
            (StoredSiteKind::Leaf, Some(edge)) => SiteKind::Leaf { edge },
            (StoredSiteKind::Leaf, None) => {
                return Err(TopologyError::LeafWithoutEdge(s.name.clone()))
            }
        },
    })
}

pub fn compile(
    row: &NetworkRow,
    sites: &[SiteRow],
) -> Result<BTreeMap<Uuid, SitePlan>, TopologyError> {
    topology::compile(&network_of(row, sites)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::discovery::VpcFacts;

    fn row(kind: StoredSiteKind, edge: Option<Uuid>, cidrs: &[&str]) -> SiteRow {
        SiteRow {
            id: Uuid::from_u128(1),
            network_id: Uuid::from_u128(2),
            account_ref: None,
            account_id: Some("111122223333".into()),
            role_arn: None,
            region: "us-east-1".into(),
            vpc_id: "vpc-1".into(),
            name: "east".into(),
            kind,
            edge_site_id: edge,
            is_hub: false,
            cidrs: cidrs.iter().map(|c| c.to_string()).collect(),
            discovered: sqlx::types::Json(VpcFacts {
                cidrs: Vec::new(),
                subnets: Vec::new(),
                route_tables: Vec::new(),
            }),
            outputs: sqlx::types::Json(Default::default()),
        }
    }

    #[test]
    fn stored_sites_read_as_they_are_or_not_at_all() {
        let edge = site_of(&row(StoredSiteKind::Edge, None, &["10.1.0.0/16"])).expect("an edge");
        assert_eq!(edge.kind, SiteKind::Edge);
        assert_eq!(edge.cidrs, vec!["10.1.0.0/16".parse().expect("a CIDR")]);
        let e = Uuid::from_u128(9);
        let leaf = site_of(&row(StoredSiteKind::Leaf, Some(e), &["10.2.0.0/16"])).expect("a leaf");
        assert_eq!(leaf.kind, SiteKind::Leaf { edge: e });
        assert_eq!(
            site_of(&row(StoredSiteKind::Leaf, None, &["10.2.0.0/16"])).err(),
            Some(TopologyError::LeafWithoutEdge("east".into())),
            "a leaf without its edge is not read as an edge"
        );
        assert_eq!(
            site_of(&row(
                StoredSiteKind::Edge,
                None,
                &["10.1.0.0/16", "2001:db8::/32"]
            ))
            .err(),
            Some(TopologyError::StoredCidr {
                site: "east".into(),
                cidr: "2001:db8::/32".into()
            }),
            "a CIDR the compiler cannot take is not dropped"
        );
    }
}
