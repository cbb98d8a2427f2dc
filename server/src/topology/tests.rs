use super::*;
use ipnet::Ipv4Net;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

const REGIONS: [&str; 8] = [
    "us-east-1",
    "us-west-2",
    "eu-west-1",
    "eu-central-1",
    "ap-southeast-1",
    "ap-northeast-1",
    "sa-east-1",
    "ca-central-1",
];

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n + 1)
}

fn site(n: u128, region: &str, kind: SiteKind) -> Site {
    Site {
        id: id(n),
        name: format!("site-{n}"),
        account_id: "111111111111".into(),
        region: region.into(),
        vpc_id: format!("vpc-{n:08x}"),
        cidrs: vec![format!("10.{n}.0.0/16").parse().unwrap()],
        kind,
    }
}

fn net(topology: Topology, sites: Vec<Site>) -> Network {
    Network {
        id: Uuid::from_u128(42),
        topology,
        sites,
    }
}

/// Follows tunnels from `from` towards `to`'s first CIDR; returns the sites
/// visited, or why there is no single path.
fn path(
    plans: &BTreeMap<SiteId, SitePlan>,
    sites: &[Site],
    from: SiteId,
    to: SiteId,
) -> Result<Vec<SiteId>, String> {
    let target = sites.iter().find(|s| s.id == to).unwrap().cidrs[0];
    let edge_of = |s: SiteId| match &sites.iter().find(|x| x.id == s).unwrap().kind {
        SiteKind::Leaf { edge } => *edge,
        SiteKind::Edge => s,
    };
    let mut at = edge_of(from);
    let mut visited = vec![from];
    if at != from {
        visited.push(at);
    }
    for _ in 0..4 {
        if at == edge_of(to) {
            if at != to {
                visited.push(to);
            }
            return Ok(visited);
        }
        let hops: Vec<&TunnelEnd> = plans[&at]
            .tunnels
            .iter()
            .filter(|t| t.remote_cidrs.contains(&target))
            .collect();
        if hops.len() != 1 {
            return Err(format!("{} tunnels at {at} match {target}", hops.len()));
        }
        at = hops[0].peer;
        visited.push(at);
    }
    Err("path longer than 4 hops".into())
}

#[test]
fn three_region_full_mesh_has_three_tunnels() {
    let n = net(
        Topology::FullMesh,
        vec![
            site(0, "us-east-1", SiteKind::Edge),
            site(1, "eu-west-1", SiteKind::Edge),
            site(2, "ap-southeast-1", SiteKind::Edge),
        ],
    );
    let plans = compile(&n).unwrap();
    assert!(plans.values().all(|p| p.tunnels.len() == 2));
    let a = &plans[&id(0)].tunnels[0];
    assert_eq!(a.peer, id(1));
    assert_eq!(
        a.local_cidrs,
        vec!["10.0.0.0/16".parse::<Ipv4Net>().unwrap()]
    );
    assert_eq!(
        a.remote_cidrs,
        vec!["10.1.0.0/16".parse::<Ipv4Net>().unwrap()]
    );
    // The peer's end mirrors it: same reqid, swapped SPIs and selectors.
    let b = plans[&id(1)]
        .tunnels
        .iter()
        .find(|t| t.peer == id(0))
        .unwrap();
    assert_eq!(
        (b.reqid, b.in_spis, b.out_spis),
        (a.reqid, a.out_spis, a.in_spis)
    );
    assert_eq!(plans[&id(0)].vpc_routes.len(), 2);
}

#[test]
fn transit_spokes_tunnel_only_to_the_hub() {
    let sites = vec![
        site(0, "us-east-1", SiteKind::Edge),
        site(1, "eu-west-1", SiteKind::Edge),
        site(2, "ap-southeast-1", SiteKind::Edge),
        site(3, "sa-east-1", SiteKind::Edge),
    ];
    let plans = compile(&net(Topology::Transit { hub: Some(id(0)) }, sites.clone())).unwrap();
    assert_eq!(plans[&id(0)].tunnels.len(), 3);
    for spoke in 1..4 {
        let ends = &plans[&id(spoke)].tunnels;
        assert_eq!(ends.len(), 1);
        assert_eq!(ends[0].peer, id(0));
        assert_eq!(
            ends[0].remote_cidrs.len(),
            3,
            "hub plus the two other spokes"
        );
    }
    assert_eq!(
        path(&plans, &sites, id(1), id(2)).unwrap(),
        vec![id(1), id(0), id(2)]
    );
}

#[test]
fn leaves_are_reached_through_their_edge() {
    let sites = vec![
        site(0, "us-east-1", SiteKind::Edge),
        site(1, "eu-west-1", SiteKind::Edge),
        site(2, "us-east-1", SiteKind::Leaf { edge: id(0) }),
        site(3, "eu-west-1", SiteKind::Leaf { edge: id(1) }),
    ];
    let plans = compile(&net(Topology::MeshWithLeaves, sites.clone())).unwrap();
    let t = &plans[&id(0)].tunnels[0];
    assert_eq!(t.local_cidrs.len(), 2, "edge 0 serves itself and its leaf");
    assert_eq!(t.remote_cidrs.len(), 2);
    assert!(plans[&id(2)].tunnels.is_empty());
    assert!(plans[&id(2)]
        .vpc_routes
        .iter()
        .all(|(_, t)| *t == RouteTarget::TransitGateway));
    let leaf_route = plans[&id(0)]
        .vpc_routes
        .iter()
        .find(|(c, _)| c.to_string() == "10.2.0.0/16")
        .unwrap();
    assert_eq!(leaf_route.1, RouteTarget::TransitGateway);
    assert_eq!(
        path(&plans, &sites, id(2), id(3)).unwrap(),
        vec![id(2), id(0), id(1), id(3)]
    );
}

#[test]
fn bad_networks_are_refused_with_the_reason() {
    let e = |n, r| site(n, r, SiteKind::Edge);
    let mut overlapping = e(1, "eu-west-1");
    overlapping.cidrs = vec!["10.0.128.0/17".parse().unwrap()];
    let cases: Vec<(Network, TopologyError)> = vec![
        (
            net(Topology::FullMesh, vec![e(0, "us-east-1")]),
            TopologyError::TooFewEdges(1),
        ),
        (
            net(Topology::FullMesh, vec![e(0, "us-east-1"), overlapping]),
            TopologyError::Overlap {
                a: "site-0".into(),
                a_cidr: "10.0.0.0/16".into(),
                b: "site-1".into(),
                b_cidr: "10.0.128.0/17".into(),
            },
        ),
        (
            net(
                Topology::FullMesh,
                vec![e(0, "us-east-1"), e(1, "us-east-1")],
            ),
            TopologyError::DuplicateEdge {
                account: "111111111111".into(),
                region: "us-east-1".into(),
                a: "site-0".into(),
                b: "site-1".into(),
            },
        ),
        (
            net(
                Topology::Transit { hub: None },
                vec![e(0, "us-east-1"), e(1, "eu-west-1")],
            ),
            TopologyError::NoHub,
        ),
        (
            net(
                Topology::Transit { hub: Some(id(9)) },
                vec![e(0, "us-east-1"), e(1, "eu-west-1")],
            ),
            TopologyError::HubNotAnEdge,
        ),
        (
            net(
                Topology::FullMesh,
                vec![
                    e(0, "us-east-1"),
                    e(1, "eu-west-1"),
                    site(2, "us-east-1", SiteKind::Leaf { edge: id(0) }),
                ],
            ),
            TopologyError::LeafNotAllowed("site-2".into()),
        ),
        (
            net(
                Topology::MeshWithLeaves,
                vec![
                    e(0, "us-east-1"),
                    e(1, "eu-west-1"),
                    site(2, "eu-west-1", SiteKind::Leaf { edge: id(0) }),
                ],
            ),
            TopologyError::LeafRegion {
                leaf: "site-2".into(),
                leaf_region: "eu-west-1".into(),
                edge: "site-0".into(),
                edge_region: "us-east-1".into(),
            },
        ),
        (
            net(
                Topology::FullMesh,
                vec![e(0, "us-east-1"), e(1, "mars-north-1")],
            ),
            TopologyError::UnknownRegion {
                site: "site-1".into(),
                region: "mars-north-1".into(),
            },
        ),
    ];
    for (n, expected) in cases {
        assert_eq!(compile(&n).unwrap_err(), expected);
    }
}

prop_compose! {
    fn any_network()(edges in 2usize..7, leaves in proptest::collection::vec(0usize..7, 0..4), kind in 0u8..3, hub in 0usize..7, seed in any::<u64>())
        -> Network {
        let mut sites: Vec<Site> = (0..edges).map(|i| site(i as u128, REGIONS[i], SiteKind::Edge)).collect();
        let topology = match kind {
            0 => Topology::FullMesh,
            1 => Topology::Transit { hub: Some(id((hub % edges) as u128)) },
            _ => Topology::MeshWithLeaves,
        };
        if topology == Topology::MeshWithLeaves {
            for (j, e) in leaves.iter().enumerate() {
                let edge = e % edges;
                sites.push(site((10 + j) as u128, REGIONS[edge], SiteKind::Leaf { edge: id(edge as u128) }));
            }
        }
        // Order of sites must not matter.
        let len = sites.len();
        sites.rotate_left((seed as usize) % len);
        Network { id: Uuid::from_u64_pair(seed, 7), topology, sites }
    }
}

proptest! {
    #[test]
    fn every_pair_of_sites_has_exactly_one_path(n in any_network()) {
        let plans = compile(&n).unwrap();
        for a in &n.sites {
            for b in &n.sites {
                if a.id != b.id {
                    let p = path(&plans, &n.sites, a.id, b.id);
                    prop_assert!(p.is_ok(), "{} -> {}: {:?}", a.name, b.name, p);
                }
            }
        }
    }

    #[test]
    fn spis_are_unique_per_site_and_agree_between_ends(n in any_network()) {
        let plans = compile(&n).unwrap();
        for plan in plans.values() {
            let inbound: Vec<u32> = plan.tunnels.iter().flat_map(|t| t.in_spis).collect();
            let unique: BTreeSet<u32> = inbound.iter().copied().collect();
            prop_assert_eq!(unique.len(), inbound.len());
            // Base SPIs leave the bits above 16 to the epoch and generation.
            prop_assert!(inbound.iter().all(|s| (0x100..1 << 16).contains(s)));
            let reqids: BTreeSet<u32> = plan.tunnels.iter().map(|t| t.reqid).collect();
            prop_assert_eq!(reqids.len(), plan.tunnels.len());
            for t in &plan.tunnels {
                let back = plans[&t.peer].tunnels.iter().find(|x| x.peer == plan.site).unwrap();
                prop_assert_eq!(back.in_spis, t.out_spis);
                prop_assert_eq!(&back.remote_cidrs, &t.local_cidrs);
            }
        }
    }

    #[test]
    fn transit_spokes_reach_each_other_only_through_the_hub(n in any_network()) {
        if let Topology::Transit { hub: Some(hub) } = n.topology {
            let plans = compile(&n).unwrap();
            for a in n.sites.iter().filter(|s| s.id != hub) {
                prop_assert_eq!(plans[&a.id].tunnels.len(), 1);
                for b in n.sites.iter().filter(|s| s.id != hub && s.id != a.id) {
                    prop_assert_eq!(path(&plans, &n.sites, a.id, b.id).unwrap(), vec![a.id, hub, b.id]);
                }
            }
        }
    }

    #[test]
    fn compiling_is_deterministic(n in any_network()) {
        let mut reversed = n.clone();
        reversed.sites.reverse();
        prop_assert_eq!(compile(&n).unwrap(), compile(&reversed).unwrap());
    }
}
