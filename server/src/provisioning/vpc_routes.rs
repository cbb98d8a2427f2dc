//! The routes step's decisions, kept pure: which of the site's VPC routes
//! to create, replace or delete, by `vpcmesh_protocol::route_owner`'s rule. A
//! route vpcmesh did not make (a peering connection, a VPN, someone
//! else's instance) is never replaced or deleted: applying stops with a
//! conflict that names it, before any change; a teardown leaves it.

use crate::{
    accounts,
    aws::AwsError,
    identity::orgs,
    networks::{model, store},
    state::AppState,
    topology::RouteTarget,
};
use ipnet::Ipv4Net;
use std::collections::HashMap;
use vpcmesh_protocol::route_owner::{self, Claim, Route, SiteHosts, Target};

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

/// The routes of `tables`, as `vpcmesh_protocol::route_owner` reads them.
pub async fn table_routes(
    ec2: &aws_sdk_ec2::Client,
    tables: &[String],
) -> Result<Vec<Route>, AwsError> {
    let out = ec2
        .describe_route_tables()
        .set_route_table_ids(Some(tables.to_vec()))
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("ec2:DescribeRouteTables", e))?;
    Ok(out
        .route_tables()
        .iter()
        .flat_map(|t| {
            let id = t.route_table_id().unwrap_or_default();
            t.routes().iter().map(move |r| Route::from_ec2(id, r))
        })
        .collect())
}

/// What the site's routes may name: the instances tagged with `site_ids`
/// (any state EC2 still lists), their interfaces, and `gateway`.
pub async fn site_hosts(
    ec2: &aws_sdk_ec2::Client,
    site_ids: &[String],
    gateway: Option<&str>,
) -> Result<SiteHosts, AwsError> {
    let mut site = SiteHosts::default();
    site.gateways.extend(gateway.map(str::to_string));
    for id in site_ids {
        let mut pages = ec2
            .describe_instances()
            .filters(route_owner::site_filter(id))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("ec2:DescribeInstances", e))?;
            site.add_instances(page.reservations().iter().flat_map(|r| r.instances()));
        }
    }
    Ok(site)
}

/// The site whose appliances a site's routes name (a leaf's are its
/// edge's), and the ids whose tagged instances are the site's hosts.
pub fn owners<'a>(
    sites: &'a [store::SiteRow],
    site: &'a store::SiteRow,
) -> (&'a store::SiteRow, Vec<String>) {
    let edge_id = site
        .edge_site_id
        .filter(|_| !site.is_edge())
        .unwrap_or(site.id);
    let edge = sites.iter().find(|s| s.id == edge_id).unwrap_or(site);
    let mut ids = vec![site.id.to_string()];
    if edge_id != site.id {
        ids.push(edge_id.to_string());
    }
    (edge, ids)
}

/// For a plan: the routes an apply would find in the way, read live
/// through each site's role, in words. Sites whose tables could not be
/// read are named in the second list with why.
pub async fn preview_conflicts(
    state: &AppState,
    net: &store::NetworkRow,
    sites: &[store::SiteRow],
) -> (Vec<String>, Vec<String>) {
    let plans = match model::compile(net, sites) {
        Ok(p) => p,
        Err(e) => return (Vec::new(), vec![e.to_string()]),
    };
    let external_id = match orgs::external_id(&state.pool, net.org_id).await {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "read the external ID for a plan");
            return (
                Vec::new(),
                vec!["the organization's external ID could not be read".into()],
            );
        }
    };
    let checks = sites.iter().filter_map(|site| {
        let mine = plans.get(&site.id)?;
        (!mine.vpc_routes.is_empty()).then_some((site, mine))
    });
    let results = futures::future::join_all(checks.map(|(site, mine)| {
        let external_id = &external_id;
        async move {
            let conflicts = async {
                let role_arn = site
                    .role_arn
                    .as_deref()
                    .ok_or_else(|| "its AWS account was removed".to_string())?;
                let access = accounts::access(role_arn, external_id).map_err(|e| e.to_string())?;
                let aws = |e: AwsError| e.to_string();
                let ec2 = state.aws.ec2(&access, &site.region).await.map_err(aws)?;
                let tables = &site.discovered.0.route_tables;
                let current = table_routes(&ec2, tables).await.map_err(aws)?;
                let (edge, ids) = owners(sites, site);
                let hosts = site_hosts(&ec2, &ids, edge.output("TransitGatewayId"))
                    .await
                    .map_err(aws)?;
                Ok::<_, String>(match install(&current, tables, &mine.vpc_routes, &hosts) {
                    Ok(_) => Vec::new(),
                    Err(c) => c,
                })
            }
            .await;
            (site, conflicts)
        }
    }))
    .await;
    let (mut found, mut unread) = (Vec::new(), Vec::new());
    for (site, r) in results {
        match r {
            Ok(c) if c.is_empty() => {}
            Ok(c) => found.push(format!("{}: {}", site.name, Conflict::describe(&c))),
            Err(e) => unread.push(format!("{}: {e}", site.name)),
        }
    }
    (found, unread)
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
