use ipnet::Ipv4Net;
use uuid::Uuid;

pub type SiteId = Uuid;

/// How a network's edge sites connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Topology {
    /// Every edge site tunnels to every other edge site.
    FullMesh,
    /// Every spoke tunnels only to the hub, which forwards between spokes.
    Transit { hub: Option<SiteId> },
    /// Edge sites form a full mesh; leaf VPCs attach to an edge in their region.
    MeshWithLeaves,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SiteKind {
    /// A VPC with its own pair of appliances.
    Edge,
    /// A VPC without appliances, reached through `edge` (same region).
    Leaf { edge: SiteId },
}

/// One VPC of a network, with the CIDRs discovered for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    pub id: SiteId,
    pub name: String,
    pub account_id: String,
    pub region: String,
    pub vpc_id: String,
    pub cidrs: Vec<Ipv4Net>,
    pub kind: SiteKind,
}

impl Site {
    pub fn is_edge(&self) -> bool {
        self.kind == SiteKind::Edge
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    pub id: Uuid,
    pub topology: Topology,
    pub sites: Vec<Site>,
}

/// The two appliances of an edge site's HA pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HaMember {
    A,
    B,
}

impl HaMember {
    pub const BOTH: [HaMember; 2] = [HaMember::A, HaMember::B];
}
