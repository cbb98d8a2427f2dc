//! The routes step's decisions, kept pure: which of the site's VPC routes
//! to create, replace or delete, by `appliance::route_owner`'s rule. A
//! route vpcmesh did not make (a peering connection, a VPN, someone
//! else's instance) is never replaced or deleted: applying stops with a
//! conflict that names it, before any change; a teardown leaves it.

use crate::topology::RouteTarget;
use appliance::route_owner::{Claim, Route, SiteHosts, Target};
use ipnet::Ipv4Net;
use std::collections::HashMap;

/// One change to make in one table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Create {
        table_id: String,
        destination: Ipv4Net,
        target: RouteTarget,
    },
    /// Over a blackhole, or a route of ours of the other kind.
    Replace {
        table_id: String,
        destination: Ipv4Net,
        target: RouteTarget,
        was: Target,
    },
}

/// Someone else's route where the site needs one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub table_id: String,
    pub destination: Ipv4Net,
    pub target: Target,
}

impl Conflict {
    /// All of them, in words, for the step's failure.
    pub fn describe(conflicts: &[Conflict]) -> String {
        let each: Vec<String> = conflicts
            .iter()
            .map(|c| {
                format!(
                    "route table {} already sends {} to {}",
                    c.table_id, c.destination, c.target
                )
            })
            .collect();
        format!(
            "{}, which vpcmesh did not create. vpcmesh never replaces a route it does not own: remove {} (or choose a VPC whose route tables do not already route the network's CIDRs elsewhere), then apply again.",
            each.join("; "),
            if conflicts.len() == 1 { "that route" } else { "those routes" }
        )
    }
}

/// What is in a table for (table, destination).
fn index(current: &[Route]) -> HashMap<(&str, Ipv4Net), &Route> {
    current
        .iter()
        .filter_map(|r| Some(((r.table_id.as_str(), r.destination?), r)))
        .collect()
}

/// Whether `target` is of the kind `want` asks for.
fn is_kind(target: &Target, want: RouteTarget) -> bool {
    match want {
        RouteTarget::Appliance => matches!(target, Target::Host { .. }),
        RouteTarget::TransitGateway => matches!(target, Target::Gateway(_)),
    }
}

/// The changes that make every `tables` x `wanted` route lead to the site,
/// given what the tables hold now. A route of ours of the right kind is
/// left as it is: for an appliance route, it names the member that is
/// active now, which the agents keep so. Any foreign route is a conflict,
/// and then nothing is to change.
pub fn install(
    current: &[Route],
    tables: &[String],
    wanted: &[(Ipv4Net, RouteTarget)],
    site: &SiteHosts,
) -> Result<Vec<Change>, Vec<Conflict>> {
    let now = index(current);
    let mut changes = Vec::new();
    let mut conflicts = Vec::new();
    for table in tables {
        for &(destination, target) in wanted {
            match now.get(&(table.as_str(), destination)) {
                None => changes.push(Change::Create {
                    table_id: table.clone(),
                    destination,
                    target,
                }),
                Some(r) => match site.claim(r) {
                    Claim::Ours if is_kind(&r.target, target) && !r.blackhole => {}
                    Claim::Ours | Claim::Dead => changes.push(Change::Replace {
                        table_id: table.clone(),
                        destination,
                        target,
                        was: r.target.clone(),
                    }),
                    Claim::Foreign => conflicts.push(Conflict {
                        table_id: table.clone(),
                        destination,
                        target: r.target.clone(),
                    }),
                },
            }
        }
    }
    if conflicts.is_empty() {
        Ok(changes)
    } else {
        Err(conflicts)
    }
}

/// On teardown: the routes to `ours` to delete (the site's and dead ones),
/// and the foreign ones left in place.
pub fn remove<'a>(
    current: &'a [Route],
    ours: &[Ipv4Net],
    site: &SiteHosts,
) -> (Vec<&'a Route>, Vec<&'a Route>) {
    current
        .iter()
        .filter(|r| r.destination.is_some_and(|d| ours.contains(&d)))
        .partition(|r| site.claim(r) != Claim::Foreign)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().expect("a test CIDR")
    }

    fn route(table: &str, dest: &str, target: Target, blackhole: bool) -> Route {
        Route {
            table_id: table.into(),
            destination: Some(net(dest)),
            target,
            blackhole,
        }
    }

    fn host(i: &str) -> Target {
        Target::Host {
            instance_id: Some(i.into()),
            interface_id: None,
        }
    }

    fn site() -> SiteHosts {
        SiteHosts {
            instances: ["i-a".to_string(), "i-b".to_string()].into(),
            interfaces: ["eni-b".to_string()].into(),
            gateways: ["tgw-ours".to_string()].into(),
        }
    }

    fn tables() -> Vec<String> {
        vec!["rtb-1".into(), "rtb-2".into()]
    }

    #[test]
    fn missing_routes_are_created_and_routes_on_either_member_are_kept() {
        let current = [
            route("rtb-1", "10.2.0.0/16", host("i-b"), false),
            route(
                "rtb-1",
                "10.3.0.0/16",
                Target::Host {
                    instance_id: None,
                    interface_id: Some("eni-b".into()),
                },
                false,
            ),
            route(
                "rtb-2",
                "10.9.0.0/16",
                Target::Gateway("pcx-1".into()),
                false,
            ),
        ];
        let wanted = [
            (net("10.2.0.0/16"), RouteTarget::Appliance),
            (net("10.3.0.0/16"), RouteTarget::Appliance),
        ];
        let changes = install(&current, &tables(), &wanted, &site()).expect("no conflict");
        assert_eq!(
            changes,
            vec![
                Change::Create {
                    table_id: "rtb-2".into(),
                    destination: net("10.2.0.0/16"),
                    target: RouteTarget::Appliance
                },
                Change::Create {
                    table_id: "rtb-2".into(),
                    destination: net("10.3.0.0/16"),
                    target: RouteTarget::Appliance
                },
            ]
        );
    }

    #[test]
    fn blackholes_and_ours_of_the_other_kind_are_replaced() {
        let current = [
            route("rtb-1", "10.2.0.0/16", host("i-gone"), true),
            route("rtb-2", "10.2.0.0/16", host("i-a"), true),
            route("rtb-1", "10.4.0.0/16", host("i-a"), false),
            route(
                "rtb-2",
                "10.4.0.0/16",
                Target::Gateway("tgw-ours".into()),
                false,
            ),
        ];
        let wanted = [
            (net("10.2.0.0/16"), RouteTarget::Appliance),
            (net("10.4.0.0/16"), RouteTarget::TransitGateway),
        ];
        let changes = install(&current, &tables(), &wanted, &site()).expect("no conflict");
        let replaced: Vec<(&str, String)> = changes
            .iter()
            .map(|c| match c {
                Change::Replace {
                    table_id,
                    destination,
                    ..
                } => (table_id.as_str(), destination.to_string()),
                Change::Create { .. } => panic!("nothing to create: {c:?}"),
            })
            .collect();
        assert_eq!(
            replaced,
            [
                ("rtb-1", "10.2.0.0/16".to_string()),
                ("rtb-1", "10.4.0.0/16".to_string()),
                ("rtb-2", "10.2.0.0/16".to_string()),
            ]
        );
    }

    #[test]
    fn a_foreign_route_is_a_conflict_and_nothing_changes() {
        let current = [
            route(
                "rtb-1",
                "10.2.0.0/16",
                Target::Gateway("pcx-1".into()),
                false,
            ),
            route("rtb-2", "10.3.0.0/16", host("i-theirs"), false),
        ];
        let wanted = [
            (net("10.2.0.0/16"), RouteTarget::Appliance),
            (net("10.3.0.0/16"), RouteTarget::Appliance),
        ];
        let conflicts = install(&current, &tables(), &wanted, &site()).expect_err("conflicts");
        assert_eq!(conflicts.len(), 2);
        let text = Conflict::describe(&conflicts);
        assert!(
            text.contains("route table rtb-1 already sends 10.2.0.0/16 to pcx-1"),
            "{text}"
        );
        assert!(
            text.contains("rtb-2 already sends 10.3.0.0/16 to i-theirs"),
            "{text}"
        );
        assert!(text.contains("remove those routes"), "{text}");
    }

    #[test]
    fn teardown_removes_the_sites_and_dead_routes_and_leaves_the_rest() {
        let current = [
            route("rtb-1", "10.2.0.0/16", host("i-a"), false),
            route("rtb-2", "10.2.0.0/16", host("i-gone"), true),
            route(
                "rtb-1",
                "10.3.0.0/16",
                Target::Gateway("pcx-1".into()),
                false,
            ),
            route(
                "rtb-2",
                "10.3.0.0/16",
                Target::Gateway("tgw-ours".into()),
                false,
            ),
            route("rtb-1", "10.9.0.0/16", host("i-a"), false),
        ];
        let ours = [net("10.2.0.0/16"), net("10.3.0.0/16")];
        let (gone, left) = remove(&current, &ours, &site());
        assert_eq!(gone.len(), 3, "{gone:?}");
        assert_eq!(left, vec![&current[2]]);
    }
}
