//! Which VPC routes are vpcmesh's: one rule for the provisioning engine
//! (which creates the site's routes and removes them on teardown) and the
//! active appliance (which points them at itself). A route to one of the
//! network's CIDRs is
//! - **ours** when it names one of the site's appliances (an instance EC2
//!   lists with the site's `vpcmesh:site` tag, in any state, or one of
//!   their interfaces) or a gateway vpcmesh made for the site (its Transit
//!   Gateway);
//! - **dead** when it is a blackhole naming anything else: its target is
//!   gone and it carries nothing, so pointing it at the site loses nothing;
//! - **foreign** otherwise (a peering connection, a VPN or Internet gateway,
//!   someone else's instance, ...): never replaced and never deleted.

use aws_sdk_ec2::types::{Filter, Instance, RouteState};
use ipnet::Ipv4Net;
use std::collections::BTreeSet;
use std::fmt;

/// The tag every appliance instance carries: its site's id.
pub const SITE_TAG: &str = "vpcmesh:site";

/// The `DescribeInstances` filter for a site's instances, in any state.
pub fn site_filter(site_id: &str) -> Filter {
    Filter::builder()
        .name(format!("tag:{SITE_TAG}"))
        .values(site_id)
        .build()
}

/// What a route points at, as far as the decision cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// An instance or a network interface; AWS names both for an interface
    /// attached to an instance, an emulator may name only one.
    Host {
        instance_id: Option<String>,
        interface_id: Option<String>,
    },
    /// A gateway of some kind (`local`, `igw-`, `tgw-`, `nat-`, `pcx-`,
    /// `vpce-`, ...): not an appliance's to move.
    Gateway(String),
    /// EC2 names no target at all.
    Nothing,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Host {
                instance_id: Some(i),
                interface_id: Some(e),
            } => write!(f, "{i} ({e})"),
            Target::Host {
                instance_id: Some(x),
                interface_id: None,
            }
            | Target::Host {
                instance_id: None,
                interface_id: Some(x),
            }
            | Target::Gateway(x) => f.write_str(x),
            Target::Host {
                instance_id: None,
                interface_id: None,
            }
            | Target::Nothing => f.write_str("nothing"),
        }
    }
}

/// One route of one of the VPC's tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub table_id: String,
    /// None for IPv6 and prefix-list destinations (never a remote CIDR).
    pub destination: Option<Ipv4Net>,
    pub target: Target,
    /// EC2 reports the route's target gone (state `blackhole`).
    pub blackhole: bool,
}

impl Route {
    /// Reads an EC2 route of table `table_id`.
    pub fn from_ec2(table_id: &str, r: &aws_sdk_ec2::types::Route) -> Route {
        let some = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_string);
        let gateway = [
            r.gateway_id(),
            r.transit_gateway_id(),
            r.nat_gateway_id(),
            r.vpc_peering_connection_id(),
            r.egress_only_internet_gateway_id(),
            r.carrier_gateway_id(),
            r.local_gateway_id(),
            r.core_network_arn(),
            r.odb_network_arn(),
        ]
        .into_iter()
        .find_map(some);
        let (instance_id, interface_id) = (some(r.instance_id()), some(r.network_interface_id()));
        let target = match (gateway, &instance_id, &interface_id) {
            (Some(g), _, _) => Target::Gateway(g),
            (None, None, None) => Target::Nothing,
            (None, _, _) => Target::Host {
                instance_id,
                interface_id,
            },
        };
        Route {
            table_id: table_id.to_string(),
            destination: r.destination_cidr_block().and_then(|d| d.parse().ok()),
            target,
            blackhole: r.state() == Some(&RouteState::Blackhole),
        }
    }
}

/// What vpcmesh may do with a route to one of the network's CIDRs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// It names the site's appliance or gateway: vpcmesh made it.
    Ours,
    /// A blackhole naming something that is not the site's.
    Dead,
    /// Someone else's: left alone.
    Foreign,
}

/// What a site's routes may name: its appliances (every instance with its
/// tag that EC2 still lists) with their interfaces, and its gateways.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SiteHosts {
    pub instances: BTreeSet<String>,
    pub interfaces: BTreeSet<String>,
    pub gateways: BTreeSet<String>,
}

impl SiteHosts {
    /// Adds the instances of a `DescribeInstances` answer.
    pub fn add_instances<'a>(&mut self, instances: impl IntoIterator<Item = &'a Instance>) {
        for i in instances {
            if let Some(id) = i.instance_id().filter(|s| !s.is_empty()) {
                self.instances.insert(id.to_string());
            }
            self.interfaces.extend(
                i.network_interfaces()
                    .iter()
                    .filter_map(|n| n.network_interface_id())
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            );
        }
    }

    /// Whether `target` names one of the site's hosts or gateways.
    pub fn names(&self, target: &Target) -> bool {
        match target {
            Target::Host {
                instance_id,
                interface_id,
            } => {
                instance_id
                    .as_ref()
                    .is_some_and(|i| self.instances.contains(i))
                    || interface_id
                        .as_ref()
                        .is_some_and(|e| self.interfaces.contains(e))
            }
            Target::Gateway(g) => self.gateways.contains(g),
            Target::Nothing => false,
        }
    }

    /// The module's rule for one route.
    pub fn claim(&self, route: &Route) -> Claim {
        if self.names(&route.target) {
            Claim::Ours
        } else if route.blackhole {
            Claim::Dead
        } else {
            Claim::Foreign
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(target: Target, blackhole: bool) -> Route {
        Route {
            table_id: "rtb-1".into(),
            destination: Some("10.2.0.0/16".parse().expect("a CIDR")),
            target,
            blackhole,
        }
    }

    fn host(instance: Option<&str>, interface: Option<&str>) -> Target {
        Target::Host {
            instance_id: instance.map(str::to_string),
            interface_id: interface.map(str::to_string),
        }
    }

    fn site() -> SiteHosts {
        SiteHosts {
            instances: ["i-a".to_string(), "i-b".to_string()].into(),
            interfaces: ["eni-a".to_string()].into(),
            gateways: ["tgw-ours".to_string()].into(),
        }
    }

    #[test]
    fn the_sites_instances_interfaces_and_gateway_are_ours_live_or_dead() {
        for blackhole in [false, true] {
            for t in [
                host(Some("i-a"), None),
                host(Some("i-b"), Some("eni-b")),
                host(None, Some("eni-a")),
                Target::Gateway("tgw-ours".into()),
            ] {
                assert_eq!(
                    site().claim(&route(t.clone(), blackhole)),
                    Claim::Ours,
                    "{t}"
                );
            }
        }
    }

    #[test]
    fn a_blackhole_of_anything_else_is_dead_and_a_live_route_is_foreign() {
        for t in [
            host(Some("i-someone"), None),
            host(None, Some("eni-someone")),
            Target::Gateway("pcx-1".into()),
            Target::Gateway("tgw-theirs".into()),
            Target::Nothing,
        ] {
            assert_eq!(site().claim(&route(t.clone(), true)), Claim::Dead, "{t}");
            assert_eq!(
                site().claim(&route(t.clone(), false)),
                Claim::Foreign,
                "{t}"
            );
        }
        assert_eq!(
            site().claim(&route(Target::Gateway("local".into()), false)),
            Claim::Foreign
        );
    }

    #[test]
    fn described_instances_give_their_ids_and_every_interface() {
        use aws_sdk_ec2::types::InstanceNetworkInterface as Eni;
        let i = Instance::builder()
            .instance_id("i-a")
            .network_interfaces(Eni::builder().network_interface_id("eni-a").build())
            .network_interfaces(Eni::builder().network_interface_id("eni-a2").build())
            .build();
        let gone = Instance::builder().instance_id("i-old").build();
        let mut s = SiteHosts::default();
        s.add_instances([&i, &gone]);
        assert_eq!(s.instances, ["i-a".to_string(), "i-old".to_string()].into());
        assert_eq!(
            s.interfaces,
            ["eni-a".to_string(), "eni-a2".to_string()].into()
        );
    }
}
