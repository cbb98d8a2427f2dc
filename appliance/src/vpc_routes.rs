//! The site's VPC routes to remote CIDRs, as the active appliance owns them.
//! Provisioning points them at member A's instance of that moment; when
//! Auto Scaling replaces it they keep naming the dead instance (AWS shows
//! them as blackholes), so the appliance that owns the site points them at
//! itself, and keeps them there.
//!
//! Which routes move is a pure decision (`routes_to_take`): a route whose
//! destination is one of the config's remote CIDRs and whose target is
//! another of the site's instances or interfaces (`crate::route_owner`'s
//! rule: tagged with the site), or a blackhole. Routes to gateways (local,
//! Internet, Transit, NAT, peering, ...), to instances that are not the
//! site's, and to other destinations are never touched; a remote-CIDR
//! route to someone else's instance is reported as foreign.
//!
//! The new target is this instance's interface, not its id: EC2 refuses
//! `ReplaceRoute` with an instance id when the instance has more than one
//! interface, and the interface is the one the site's Elastic IP is
//! associated with, so address and routes name the same thing.

use crate::address::{from_sdk, AddressError, SiteAddress};
use crate::protocol::DesiredConfig;
use crate::route_owner::{site_filter, Claim, SiteHosts, SITE_TAG};
pub use crate::route_owner::{Route, Target};
use aws_sdk_ec2::types::Filter;
use ipnet::Ipv4Net;
use std::collections::BTreeSet;

/// The destinations the appliance owns: every tunnel's remote CIDRs.
pub type RemoteCidrs = BTreeSet<Ipv4Net>;

/// The remote CIDRs of a config (the union over its tunnels).
pub fn remote_cidrs(config: &DesiredConfig) -> RemoteCidrs {
    config
        .tunnels
        .iter()
        .flat_map(|t| t.remote_cidrs.iter().copied())
        .collect()
}

/// This appliance as routes may name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub instance_id: String,
    pub vpc_id: String,
    /// What its routes point at: its primary interface (see the module doc).
    pub interface_id: String,
    /// Every interface attached to it: a route to any of them reaches it.
    pub interfaces: BTreeSet<String>,
    /// Its site (its `vpcmesh:site` tag).
    pub site_id: String,
    /// The site's instances and interfaces as last read: only routes that
    /// name them (or blackholes) are taken.
    pub site: SiteHosts,
}

impl Owner {
    fn is_named_by(&self, target: &Target) -> bool {
        match target {
            Target::Host {
                instance_id,
                interface_id,
            } => {
                instance_id.as_deref() == Some(self.instance_id.as_str())
                    || interface_id
                        .as_ref()
                        .is_some_and(|e| self.interfaces.contains(e))
            }
            Target::Gateway(_) | Target::Nothing => false,
        }
    }
}

/// A route to point at this appliance, and what it pointed at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Take {
    pub table_id: String,
    pub destination: Ipv4Net,
    pub from: Target,
    pub blackhole: bool,
}

/// The routes to replace so that every remote CIDR of the VPC's tables
/// leads to `owner`: those naming another of the site's instances or
/// interfaces, and blackholes of hosts or of nothing. Gateways, routes
/// already naming `owner`, live routes to hosts that are not the site's
/// ([`foreign_routes`]) and destinations other than `remote` are left alone.
pub fn routes_to_take(routes: &[Route], remote: &RemoteCidrs, owner: &Owner) -> Vec<Take> {
    routes
        .iter()
        .filter_map(|r| {
            let destination = r.destination.filter(|d| remote.contains(d))?;
            let take = match &r.target {
                Target::Gateway(_) => false,
                // Already here: replacing it with itself changes nothing.
                t @ Target::Host { .. } => {
                    !owner.is_named_by(t) && owner.site.claim(r) != Claim::Foreign
                }
                Target::Nothing => r.blackhole,
            };
            take.then(|| Take {
                table_id: r.table_id.clone(),
                destination,
                from: r.target.clone(),
                blackhole: r.blackhole,
            })
        })
        .collect()
}

/// Live remote-CIDR routes to hosts that are not the site's: someone
/// else's, never taken.
pub fn foreign_routes<'a>(
    routes: &'a [Route],
    remote: &'a RemoteCidrs,
    owner: &'a Owner,
) -> impl Iterator<Item = &'a Route> + 'a {
    routes.iter().filter(|r| {
        r.destination.is_some_and(|d| remote.contains(&d))
            && matches!(r.target, Target::Host { .. })
            && !owner.is_named_by(&r.target)
            && owner.site.claim(r) == Claim::Foreign
    })
}

/// Whether a route to a host the last read of the site does not know is
/// among `routes` (a new replacement, or someone else's).
fn names_unknown_hosts(routes: &[Route], remote: &RemoteCidrs, owner: &Owner) -> bool {
    foreign_routes(routes, remote, owner).next().is_some()
}

/// What one pass over the VPC's routes did.
#[derive(Debug, Default)]
pub struct RoutesReport {
    /// Remote-CIDR routes found in the VPC's tables.
    pub remote_routes: usize,
    /// Routes now pointing here that did not before.
    pub replaced: Vec<Take>,
    /// Routes EC2 would not replace, with why.
    pub failed: Vec<(Take, AddressError)>,
    /// Remote-CIDR routes to hosts that are not the site's: left alone.
    pub foreign: Vec<Route>,
}

const DESCRIBE_INSTANCES: &str = "ec2:DescribeInstances";
const DESCRIBE_ROUTE_TABLES: &str = "ec2:DescribeRouteTables";
const REPLACE_ROUTE: &str = "ec2:ReplaceRoute";

/// The VPC's route tables through EC2, with the instance role.
#[derive(Clone, Debug)]
pub struct VpcRoutes {
    ec2: SiteAddress,
}

impl VpcRoutes {
    /// Shares the address's EC2 client and retry policy.
    pub fn new(ec2: SiteAddress) -> Self {
        VpcRoutes { ec2 }
    }

    /// Finds this instance's VPC and interfaces (fixed for its life, so
    /// asked once). `interface_id` (from IMDS) is the routes' target when
    /// it is attached here; else the primary interface (device 0) is.
    pub async fn owner(
        &self,
        instance_id: &str,
        interface_id: Option<&str>,
    ) -> Result<Owner, AddressError> {
        let ec2 = self.ec2.client();
        let out = self
            .ec2
            .with_retries(DESCRIBE_INSTANCES, || async move {
                ec2.describe_instances()
                    .instance_ids(instance_id)
                    .send()
                    .await
                    .map_err(|e| from_sdk(DESCRIBE_INSTANCES, instance_id, e))
            })
            .await?;
        let instance = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find(|i| i.instance_id() == Some(instance_id))
            .ok_or_else(|| AddressError::NotFound {
                action: DESCRIBE_INSTANCES,
                resource: instance_id.to_string(),
                message: "no such instance".into(),
            })?;
        let vpc_id = instance
            .vpc_id()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| AddressError::NotFound {
                action: DESCRIBE_INSTANCES,
                resource: instance_id.to_string(),
                message: "the instance is in no VPC".into(),
            })?
            .to_string();
        let attached: Vec<_> = instance.network_interfaces().iter().collect();
        let interfaces: BTreeSet<String> = attached
            .iter()
            .filter_map(|n| n.network_interface_id())
            .map(str::to_string)
            .collect();
        let primary = attached
            .iter()
            .find(|n| n.attachment().and_then(|a| a.device_index()) == Some(0))
            .or_else(|| attached.first())
            .and_then(|n| n.network_interface_id())
            .map(str::to_string);
        let interface_id = match interface_id {
            Some(e) if interfaces.contains(e) => e.to_string(),
            named => {
                if let Some(e) = named {
                    tracing::warn!(
                        instance_id,
                        interface_id = e,
                        "the interface from instance metadata is not attached here; routing to the primary one"
                    );
                }
                primary.ok_or_else(|| AddressError::NoInterface(instance_id.to_string()))?
            }
        };
        let site_id = instance
            .tags()
            .iter()
            .find(|t| t.key() == Some(SITE_TAG))
            .and_then(|t| t.value())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| AddressError::NotFound {
                action: DESCRIBE_INSTANCES,
                resource: instance_id.to_string(),
                message: format!(
                    "the instance has no {SITE_TAG} tag, so its site's routes cannot be told from others"
                ),
            })?
            .to_string();
        let site = self.site_hosts(&site_id).await?;
        Ok(Owner {
            instance_id: instance_id.to_string(),
            vpc_id,
            interface_id,
            interfaces,
            site_id,
            site,
        })
    }

    /// The site's instances (any state EC2 still lists) and interfaces.
    pub async fn site_hosts(&self, site_id: &str) -> Result<SiteHosts, AddressError> {
        let ec2 = self.ec2.client();
        let mut site = SiteHosts::default();
        let mut next: Option<String> = None;
        loop {
            let token = next.as_deref();
            let out = self
                .ec2
                .with_retries(DESCRIBE_INSTANCES, || async move {
                    ec2.describe_instances()
                        .filters(site_filter(site_id))
                        .set_next_token(token.map(str::to_string))
                        .send()
                        .await
                        .map_err(|e| from_sdk(DESCRIBE_INSTANCES, site_id, e))
                })
                .await?;
            site.add_instances(out.reservations().iter().flat_map(|r| r.instances()));
            next = out
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if next.is_none() {
                return Ok(site);
            }
        }
    }

    /// Every route of every route table of `vpc_id`.
    pub async fn routes(&self, vpc_id: &str) -> Result<Vec<Route>, AddressError> {
        let ec2 = self.ec2.client();
        let mut routes = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let token = next.as_deref();
            let out = self
                .ec2
                .with_retries(DESCRIBE_ROUTE_TABLES, || async move {
                    ec2.describe_route_tables()
                        .filters(Filter::builder().name("vpc-id").values(vpc_id).build())
                        .set_next_token(token.map(str::to_string))
                        .send()
                        .await
                        .map_err(|e| from_sdk(DESCRIBE_ROUTE_TABLES, vpc_id, e))
                })
                .await?;
            for table in out.route_tables() {
                let Some(id) = table.route_table_id() else {
                    continue;
                };
                routes.extend(table.routes().iter().map(|r| Route::from_ec2(id, r)));
            }
            next = out
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if next.is_none() {
                return Ok(routes);
            }
        }
    }

    /// Points every remote-CIDR route of the owner's VPC that leads
    /// elsewhere at the owner. Reads first, so a pass with nothing to do
    /// is one `DescribeRouteTables`. A route EC2 refuses does not stop the
    /// others; it is in the report's `failed`.
    pub async fn take_over(
        &self,
        owner: &mut Owner,
        remote: &RemoteCidrs,
    ) -> Result<RoutesReport, AddressError> {
        let routes = self.routes(&owner.vpc_id).await?;
        // A host the site's last read does not know: a replacement since,
        // or someone else's. Read the site again before deciding.
        if names_unknown_hosts(&routes, remote, owner) {
            owner.site = self.site_hosts(&owner.site_id).await?;
        }
        let owner = &*owner;
        let mut report = RoutesReport {
            remote_routes: routes
                .iter()
                .filter(|r| r.destination.is_some_and(|d| remote.contains(&d)))
                .count(),
            foreign: foreign_routes(&routes, remote, owner).cloned().collect(),
            ..RoutesReport::default()
        };
        for take in routes_to_take(&routes, remote, owner) {
            match self.replace(&take, &owner.interface_id).await {
                Ok(()) => {
                    tracing::info!(
                        route_table = %take.table_id,
                        destination = %take.destination,
                        from = %take.from,
                        blackhole = take.blackhole,
                        to = %owner.interface_id,
                        instance_id = %owner.instance_id,
                        "VPC route now points at this appliance"
                    );
                    report.replaced.push(take);
                }
                Err(e) => report.failed.push((take, e)),
            }
        }
        Ok(report)
    }

    async fn replace(&self, take: &Take, interface_id: &str) -> Result<(), AddressError> {
        let ec2 = self.ec2.client();
        let table = take.table_id.as_str();
        let destination = take.destination.to_string();
        let destination = destination.as_str();
        self.ec2
            .with_retries(REPLACE_ROUTE, || async move {
                ec2.replace_route()
                    .route_table_id(table)
                    .destination_cidr_block(destination)
                    .network_interface_id(interface_id)
                    .send()
                    .await
                    .map_err(|e| {
                        from_sdk(
                            REPLACE_ROUTE,
                            &format!("{table} {destination} -> {interface_id}"),
                            e,
                        )
                    })
            })
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::types::RouteState;

    fn owner() -> Owner {
        Owner {
            instance_id: "i-new".into(),
            vpc_id: "vpc-1".into(),
            interface_id: "eni-new".into(),
            interfaces: ["eni-new".to_string(), "eni-new-2".to_string()].into(),
            site_id: "site-1".into(),
            site: SiteHosts {
                instances: ["i-new", "i-old", "i-b"].map(str::to_string).into(),
                interfaces: ["eni-new", "eni-new-2", "eni-old", "eni-b"]
                    .map(str::to_string)
                    .into(),
                gateways: BTreeSet::new(),
            },
        }
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().expect("a test CIDR")
    }

    fn remote() -> RemoteCidrs {
        [net("10.2.0.0/16"), net("10.3.0.0/16"), net("10.4.0.0/16")].into()
    }

    fn host(instance: Option<&str>, interface: Option<&str>) -> Target {
        Target::Host {
            instance_id: instance.map(str::to_string),
            interface_id: interface.map(str::to_string),
        }
    }

    fn route(table: &str, dest: &str, target: Target, blackhole: bool) -> Route {
        Route {
            table_id: table.into(),
            destination: Some(net(dest)),
            target,
            blackhole,
        }
    }

    fn taken(routes: &[Route]) -> Vec<(String, String)> {
        routes_to_take(routes, &remote(), &owner())
            .into_iter()
            .map(|t| (t.table_id, t.destination.to_string()))
            .collect()
    }

    #[test]
    fn a_route_to_the_replaced_instance_is_taken_even_while_ec2_calls_it_active() {
        let r = route("rtb-1", "10.2.0.0/16", host(Some("i-old"), None), false);
        let t = routes_to_take(std::slice::from_ref(&r), &remote(), &owner());
        assert_eq!(
            t,
            vec![Take {
                table_id: "rtb-1".into(),
                destination: net("10.2.0.0/16"),
                from: host(Some("i-old"), None),
                blackhole: false,
            }]
        );
    }

    #[test]
    fn a_blackhole_is_taken_whether_it_names_the_dead_instance_its_interface_or_nothing() {
        let routes = [
            route(
                "rtb-1",
                "10.2.0.0/16",
                host(Some("i-old"), Some("eni-old")),
                true,
            ),
            route("rtb-1", "10.3.0.0/16", host(None, Some("eni-old")), true),
            route("rtb-1", "10.4.0.0/16", Target::Nothing, true),
        ];
        assert_eq!(
            taken(&routes),
            vec![
                ("rtb-1".into(), "10.2.0.0/16".into()),
                ("rtb-1".into(), "10.3.0.0/16".into()),
                ("rtb-1".into(), "10.4.0.0/16".into()),
            ]
        );
    }

    #[test]
    fn another_instance_or_interface_is_taken_in_every_table() {
        let routes = [
            route(
                "rtb-1",
                "10.2.0.0/16",
                host(Some("i-b"), Some("eni-b")),
                false,
            ),
            route("rtb-2", "10.2.0.0/16", host(None, Some("eni-b")), false),
        ];
        assert_eq!(
            taken(&routes),
            vec![
                ("rtb-1".into(), "10.2.0.0/16".into()),
                ("rtb-2".into(), "10.2.0.0/16".into()),
            ]
        );
    }

    #[test]
    fn a_live_route_to_a_host_that_is_not_the_sites_is_foreign_and_left_alone() {
        let routes = [
            route("rtb-1", "10.2.0.0/16", host(Some("i-theirs"), None), false),
            route(
                "rtb-2",
                "10.2.0.0/16",
                host(None, Some("eni-theirs")),
                false,
            ),
            // Dead, whoever it was: taken.
            route("rtb-3", "10.2.0.0/16", host(Some("i-theirs"), None), true),
        ];
        assert_eq!(taken(&routes), vec![("rtb-3".into(), "10.2.0.0/16".into())]);
        let (remote, owner) = (remote(), owner());
        let foreign: Vec<&str> = foreign_routes(&routes, &remote, &owner)
            .map(|r| r.table_id.as_str())
            .collect();
        assert_eq!(foreign, ["rtb-1", "rtb-2"]);
        assert!(names_unknown_hosts(&routes, &remote, &owner));
        assert!(!names_unknown_hosts(&routes[2..], &remote, &owner));
    }

    #[test]
    fn routes_that_already_name_this_instance_or_its_interfaces_are_untouched() {
        let routes = [
            route("rtb-1", "10.2.0.0/16", host(Some("i-new"), None), false),
            route("rtb-2", "10.2.0.0/16", host(None, Some("eni-new")), false),
            route("rtb-3", "10.2.0.0/16", host(None, Some("eni-new-2")), false),
            // As AWS reports a route to an attached interface.
            route(
                "rtb-4",
                "10.2.0.0/16",
                host(Some("i-new"), Some("eni-new")),
                false,
            ),
        ];
        assert_eq!(taken(&routes), vec![]);
    }

    #[test]
    fn gateways_are_never_touched_not_even_as_blackholes() {
        let routes = [
            route(
                "rtb-1",
                "10.2.0.0/16",
                Target::Gateway("tgw-1".into()),
                false,
            ),
            route(
                "rtb-2",
                "10.2.0.0/16",
                Target::Gateway("tgw-1".into()),
                true,
            ),
            route(
                "rtb-3",
                "10.3.0.0/16",
                Target::Gateway("local".into()),
                false,
            ),
            route(
                "rtb-4",
                "10.3.0.0/16",
                Target::Gateway("igw-1".into()),
                false,
            ),
            route(
                "rtb-5",
                "10.4.0.0/16",
                Target::Gateway("pcx-1".into()),
                true,
            ),
            route(
                "rtb-6",
                "10.4.0.0/16",
                Target::Gateway("nat-1".into()),
                false,
            ),
        ];
        assert_eq!(taken(&routes), vec![]);
    }

    #[test]
    fn destinations_that_are_not_remote_cidrs_are_untouched_even_near_misses() {
        let routes = [
            route("rtb-1", "10.1.0.0/16", host(Some("i-old"), None), false),
            route("rtb-1", "0.0.0.0/0", host(Some("i-old"), None), true),
            // Inside and around a remote CIDR, but not it.
            route("rtb-1", "10.2.0.0/24", host(Some("i-old"), None), false),
            route("rtb-1", "10.2.0.0/15", host(Some("i-old"), None), false),
            Route {
                table_id: "rtb-1".into(),
                destination: None,
                target: host(Some("i-old"), None),
                blackhole: true,
            },
        ];
        assert_eq!(taken(&routes), vec![]);
    }

    #[test]
    fn an_active_route_naming_nothing_is_left_alone() {
        let routes = [route("rtb-1", "10.2.0.0/16", Target::Nothing, false)];
        assert_eq!(taken(&routes), vec![]);
        assert_eq!(foreign_routes(&routes, &remote(), &owner()).count(), 0);
    }

    #[test]
    fn no_remote_cidrs_take_nothing() {
        let routes = [route(
            "rtb-1",
            "10.2.0.0/16",
            host(Some("i-old"), None),
            true,
        )];
        assert_eq!(
            routes_to_take(&routes, &RemoteCidrs::new(), &owner()),
            vec![]
        );
    }

    #[test]
    fn ec2_routes_are_read_by_their_target_kind() {
        use aws_sdk_ec2::types::Route as Ec2;
        let tgw = Ec2::builder()
            .destination_cidr_block("10.2.0.0/16")
            .transit_gateway_id("tgw-1")
            .state(RouteState::Blackhole)
            .build();
        let local = Ec2::builder()
            .destination_cidr_block("10.1.0.0/16")
            .gateway_id("local")
            .build();
        let dead = Ec2::builder()
            .destination_cidr_block("10.3.0.0/16")
            .instance_id("i-old")
            .network_interface_id("eni-old")
            .state(RouteState::Blackhole)
            .build();
        let eni = Ec2::builder()
            .destination_cidr_block("10.4.0.0/16")
            .network_interface_id("eni-new")
            .instance_id("")
            .build();
        let v6 = Ec2::builder()
            .destination_ipv6_cidr_block("::/0")
            .gateway_id("igw-1")
            .build();
        let read: Vec<Route> = [tgw, local, dead, eni, v6]
            .iter()
            .map(|r| Route::from_ec2("rtb-1", r))
            .collect();
        assert_eq!(read[0].target, Target::Gateway("tgw-1".into()));
        assert!(read[0].blackhole);
        assert_eq!(read[1].target, Target::Gateway("local".into()));
        assert_eq!(read[2].target, host(Some("i-old"), Some("eni-old")));
        assert!(read[2].blackhole);
        assert_eq!(
            read[3].target,
            host(None, Some("eni-new")),
            "empty ids are none"
        );
        assert!(!read[3].blackhole);
        assert_eq!(read[4].destination, None);
        assert_eq!(
            taken(&read),
            vec![("rtb-1".into(), "10.3.0.0/16".into())],
            "only the dead instance's route moves"
        );
    }

    fn any_target() -> impl proptest::strategy::Strategy<Value = Target> {
        use proptest::prelude::*;
        let id = |pool: &'static [&'static str]| {
            proptest::option::of(proptest::sample::select(pool).prop_map(str::to_string))
        };
        prop_oneof![
            (
                id(&["i-new", "i-old", "i-b", "i-theirs"]),
                id(&["eni-new", "eni-new-2", "eni-old", "eni-b", "eni-theirs"])
            )
                .prop_map(|(instance_id, interface_id)| Target::Host {
                    instance_id,
                    interface_id
                }),
            proptest::sample::select(&["local", "igw-1", "tgw-1", "pcx-1", "nat-1", "vpce-1"][..])
                .prop_map(|g| Target::Gateway(g.to_string())),
            Just(Target::Nothing),
        ]
    }

    fn any_routes() -> impl proptest::strategy::Strategy<Value = Vec<Route>> {
        use proptest::prelude::*;
        const DESTS: [&str; 6] = [
            "10.1.0.0/16",
            "10.2.0.0/16",
            "10.3.0.0/16",
            "10.4.0.0/16",
            "10.2.0.0/24",
            "0.0.0.0/0",
        ];
        // One route per (table, destination), as in EC2.
        proptest::collection::btree_map(
            (0u8..4, proptest::sample::select(&DESTS[..])),
            (any_target(), any::<bool>()),
            0..24,
        )
        .prop_map(|m| {
            m.into_iter()
                .map(|((t, d), (target, blackhole))| {
                    route(&format!("rtb-{t}"), d, target, blackhole)
                })
                .collect()
        })
    }

    proptest::proptest! {
        /// After the taken routes point here, a second decision takes
        /// nothing, and nothing but remote-CIDR host or blackhole routes
        /// was ever taken.
        #[test]
        fn taking_over_is_idempotent_and_touches_only_what_it_may(routes in any_routes()) {
            let owner = owner();
            let takes = routes_to_take(&routes, &remote(), &owner);
            for t in &takes {
                proptest::prop_assert!(remote().contains(&t.destination));
                proptest::prop_assert!(!matches!(t.from, Target::Gateway(_)), "{t:?}");
                proptest::prop_assert!(!owner.is_named_by(&t.from), "{t:?}");
                proptest::prop_assert!(
                    t.blackhole || owner.site.names(&t.from),
                    "a live route is taken only from the site's own hosts: {t:?}"
                );
            }
            let after: Vec<Route> = routes
                .iter()
                .map(|r| {
                    let taken = takes
                        .iter()
                        .any(|t| t.table_id == r.table_id && Some(t.destination) == r.destination);
                    if taken {
                        Route {
                            target: host(None, Some(&owner.interface_id)),
                            blackhole: false,
                            ..r.clone()
                        }
                    } else {
                        r.clone()
                    }
                })
                .collect();
            proptest::prop_assert_eq!(routes_to_take(&after, &remote(), &owner), vec![]);
        }
    }

    #[test]
    fn targets_read_well_in_the_log() {
        assert_eq!(
            host(Some("i-old"), Some("eni-old")).to_string(),
            "i-old (eni-old)"
        );
        assert_eq!(host(None, Some("eni-old")).to_string(), "eni-old");
        assert_eq!(Target::Nothing.to_string(), "nothing");
    }
}
