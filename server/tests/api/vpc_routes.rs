//! The active appliance owns its VPC's routes to the remote CIDRs, through
//! `appliance::ha::RouteOwner` against moto: when Auto Scaling replaces
//! member A, the routes provisioning pointed at the old instance move to
//! the replacement (once; a recheck changes nothing), drift is repaired,
//! a change of the config's remote CIDRs is acted on at once, and routes
//! to gateways, to other destinations or in other VPCs are never touched.
//! Every outcome is read back with the customer's own EC2 calls; the
//! agent's calls are counted on the wire by proxies in front of moto.

use crate::appliances::{
    config, ready_east_west, register, registration, running_instances, tokens, Instance,
};
use crate::moto::{moto, Customer, ThrottlingProxy};
use crate::support::eventually;
use appliance::address::SiteAddress;
use appliance::ha::routes::forwarding_on;
use appliance::ha::RouteOwner;
use appliance::sync::Identity;
use appliance::vpc_routes::{remote_cidrs, RemoteCidrs, VpcRoutes};
use aws_credential_types::Credentials;
use aws_sdk_ec2::types::Filter;
use axum::http::StatusCode;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const REGION: &str = "us-east-1";

/// (route table, destination) -> what the route names, for every table of a VPC.
type Routes = BTreeMap<(String, String), String>;

/// Every IPv4 route of every route table of `vpc_id`, as the customer sees it.
async fn routes_of(c: &Customer, vpc_id: &str) -> Routes {
    let out = c
        .ec2(REGION)
        .describe_route_tables()
        .filters(Filter::builder().name("vpc-id").values(vpc_id).build())
        .send()
        .await
        .expect("DescribeRouteTables");
    let mut routes = Routes::new();
    for t in out.route_tables() {
        let table = t.route_table_id().expect("a table id").to_string();
        for r in t.routes() {
            let Some(dest) = r.destination_cidr_block() else {
                continue;
            };
            let target = [
                r.instance_id(),
                r.network_interface_id(),
                r.transit_gateway_id(),
                r.gateway_id(),
                r.vpc_peering_connection_id(),
                r.nat_gateway_id(),
            ]
            .into_iter()
            .flatten()
            .find(|s| !s.is_empty())
            .unwrap_or("nothing");
            routes.insert((table.clone(), dest.to_string()), target.to_string());
        }
    }
    routes
}

/// The one running instance of the east site's `member`, other than `not`.
async fn east_member(c: &Customer, site_id: &str, member: char, not: &str) -> Option<Instance> {
    let mut found: Vec<Instance> = running_instances(c, REGION, Some(member))
        .await
        .into_iter()
        .filter(|i| i.site == site_id && i.id != not)
        .collect();
    (found.len() == 1).then(|| found.remove(0))
}

/// The agent's EC2 calls go through counting proxies to moto: of
/// `ReplaceRoute`, `DescribeRouteTables` and `DescribeAddresses`.
struct Wire {
    url: String,
    counters: [Arc<AtomicUsize>; 3],
    _proxies: Vec<ThrottlingProxy>,
}

/// Calls counted on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Calls {
    replace_route: usize,
    describe_route_tables: usize,
    describe_addresses: usize,
}

impl Wire {
    async fn start() -> Wire {
        let mut url = moto().await.url.clone();
        let mut proxies = Vec::new();
        // `&`: not ReplaceRouteTableAssociation.
        for action in [
            "Action=DescribeAddresses&",
            "Action=DescribeRouteTables&",
            "Action=ReplaceRoute&",
        ] {
            let p = ThrottlingProxy::start(&url, action, 0).await;
            url = p.url.clone();
            proxies.push(p);
        }
        Wire {
            url,
            counters: [
                proxies[2].forwarded_matching.clone(),
                proxies[1].forwarded_matching.clone(),
                proxies[0].forwarded_matching.clone(),
            ],
            _proxies: proxies,
        }
    }

    fn calls(&self) -> Calls {
        let n = |i: usize| self.counters[i].load(Ordering::SeqCst);
        Calls {
            replace_route: n(0),
            describe_route_tables: n(1),
            describe_addresses: n(2),
        }
    }
}

/// EC2 as the appliance's instance role reaches it (here the customer's
/// credentials), through `endpoint`.
async fn ec2_as_appliance(c: &Customer, endpoint: &str) -> SiteAddress {
    let (key, secret, token) = c.credentials();
    SiteAddress::with_credentials(
        REGION,
        Some(endpoint),
        Credentials::new(key, secret, token, None, "test-appliance-role"),
    )
    .await
}

/// What the agent's HA task does for an active member: forwarding on, the
/// site's address here, then the routes owned for as long as it holds it.
fn own_as_active(
    ec2: SiteAddress,
    identity: Identity,
    allocation_id: &str,
    recheck: Duration,
    cidrs: watch::Receiver<RemoteCidrs>,
) -> tokio::task::JoinHandle<()> {
    let allocation_id = allocation_id.to_string();
    tokio::spawn(async move {
        forwarding_on(&ec2, &identity).await;
        ec2.take_over(
            &allocation_id,
            &identity.instance_id,
            identity.interface_id.as_deref(),
        )
        .await
        .expect("the address moves here");
        let (_active, active_rx) = watch::channel(true);
        RouteOwner {
            ec2,
            identity,
            allocation_id: Some(allocation_id),
            recheck,
        }
        .run(active_rx, cidrs)
        .await
    })
}

fn identity(i: &Instance) -> Identity {
    Identity {
        instance_id: i.id.clone(),
        availability_zone: i.az.clone(),
        region: REGION.into(),
        private_ip: i.private_ip.parse().expect("a private IPv4 address"),
        public_ip: None,
        mac: Some(i.mac.clone()),
        interface_id: Some(i.interface_id.clone()),
    }
}

async fn create_route(c: &Customer, table: &str, dest: &str, target: (&str, &str)) {
    let req = c
        .ec2(REGION)
        .create_route()
        .route_table_id(table)
        .destination_cidr_block(dest);
    let req = match target {
        ("instance", id) => req.instance_id(id),
        ("tgw", id) => req.transit_gateway_id(id),
        (_, id) => req.gateway_id(id),
    };
    req.send().await.expect("CreateRoute");
}

async fn new_table(c: &Customer, vpc_id: &str) -> String {
    c.ec2(REGION)
        .create_route_table()
        .vpc_id(vpc_id)
        .send()
        .await
        .expect("CreateRouteTable")
        .route_table()
        .and_then(|t| t.route_table_id())
        .expect("a table id")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replacement_of_member_a_takes_the_vpc_routes_once_and_keeps_them() {
    let (w, network) = ready_east_west("vpc-routes").await;
    let net = w.admin_get(&format!("/api/v1/networks/{network}")).await;
    let east = net["sites"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["region"] == REGION))
        .unwrap_or_else(|| panic!("a {REGION} site: {net}"));
    let field = |k: &str| {
        east[k]
            .as_str()
            .or_else(|| east["outputs"][k].as_str())
            .unwrap_or_else(|| panic!("{k}: {east}"))
            .to_string()
    };
    let (site_id, vpc_id, allocation_id) = (field("id"), field("vpc_id"), field("AllocationId"));
    let c = &w.customer;
    let old = east_member(c, &site_id, 'a', "").await.expect("member A");
    let b = east_member(c, &site_id, 'b', "").await.expect("member B");

    // Provisioning pointed the remote CIDR at A in every table of the VPC.
    let provisioned = routes_of(c, &vpc_id).await;
    let remote_tables: Vec<String> = provisioned
        .iter()
        .filter(|((_, d), _)| d == "10.2.0.0/16")
        .map(|((t, _), target)| {
            assert_eq!(target, &old.id, "{provisioned:?}");
            t.clone()
        })
        .collect();
    assert!(
        remote_tables.len() >= 2,
        "main and subnet tables: {provisioned:?}"
    );

    // Routes the appliance must leave alone: gateways to the remote CIDR,
    // another destination via the old instance, the remote CIDR via the
    // old instance in another VPC.
    let igw = provisioned
        .iter()
        .find(|((_, d), t)| d == "0.0.0.0/0" && t.starts_with("igw-"))
        .map(|(_, t)| t.clone())
        .expect("the VPC's Internet gateway route");
    let tgw = c
        .ec2(REGION)
        .create_transit_gateway()
        .send()
        .await
        .expect("CreateTransitGateway")
        .transit_gateway()
        .and_then(|t| t.transit_gateway_id())
        .expect("a gateway id")
        .to_string();
    let via_tgw = new_table(c, &vpc_id).await;
    create_route(c, &via_tgw, "10.2.0.0/16", ("tgw", &tgw)).await;
    create_route(c, &via_tgw, "10.99.0.0/16", ("instance", &old.id)).await;
    let via_igw = new_table(c, &vpc_id).await;
    create_route(c, &via_igw, "10.2.0.0/16", ("gateway", &igw)).await;
    let other_vpc = c.vpc(REGION, "10.50.0.0/16").await;
    create_route(
        c,
        &other_vpc.route_tables[0],
        "10.2.0.0/16",
        ("instance", &old.id),
    )
    .await;
    let other_before = routes_of(c, &other_vpc.id).await;
    let before = routes_of(c, &vpc_id).await;

    // Auto Scaling replaces A (as after a failed health check).
    c.query(
        REGION,
        "autoscaling",
        &[
            ("Action", "TerminateInstanceInAutoScalingGroup"),
            ("Version", "2011-01-01"),
            ("InstanceId", &old.id),
            ("ShouldDecrementDesiredCapacity", "false"),
        ],
    )
    .await;
    let new = eventually(Duration::from_secs(60), "A's replacement", || {
        east_member(c, &site_id, 'a', &old.id)
    })
    .await;
    assert!(
        !running_instances(c, REGION, Some('a'))
            .await
            .iter()
            .any(|i| i.id == old.id),
        "the old instance is gone"
    );
    assert_eq!(
        routes_of(c, &vpc_id).await,
        before,
        "nothing moves the routes by itself: they still name the dead instance"
    );

    // The replacement registers and gets its config, as its agent does.
    let mut client = w.app.client();
    let token = tokens(&w, REGION).await[&'a'].clone();
    let (s, r) = register(&mut client, registration(&token, &new)).await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    let credential = r["credential"].as_str().expect("a credential");
    let (s, cfg) = config(&mut client, credential, "").await;
    assert_eq!(s, StatusCode::OK);
    let cfg = cfg.expect("a config");
    let remote = remote_cidrs(&cfg);
    assert_eq!(
        remote,
        RemoteCidrs::from(["10.2.0.0/16".parse().expect("cidr")])
    );

    // Its ownership, as `vpcmesh-agent run` starts it (rechecking often).
    let wire = Wire::start().await;
    let (cidrs, cidrs_rx) = watch::channel(remote.clone());
    let owning = own_as_active(
        ec2_as_appliance(c, &wire.url).await,
        identity(&new),
        &allocation_id,
        Duration::from_millis(200),
        cidrs_rx,
    );
    let expected: Routes = before
        .iter()
        .map(|(k, t)| {
            let moved = remote_tables.contains(&k.0) && k.1 == "10.2.0.0/16";
            (
                k.clone(),
                if moved {
                    new.interface_id.clone()
                } else {
                    t.clone()
                },
            )
        })
        .collect();
    eventually(
        Duration::from_secs(30),
        "the remote-CIDR routes naming the replacement",
        || async { (routes_of(c, &vpc_id).await == expected).then_some(()) },
    )
    .await;
    // The address came first, and the routes name the interface it is on.
    let address = c
        .ec2(REGION)
        .describe_addresses()
        .allocation_ids(&allocation_id)
        .send()
        .await
        .expect("DescribeAddresses");
    assert_eq!(
        address.addresses()[0].network_interface_id(),
        Some(new.interface_id.as_str())
    );

    // Rechecks read and change nothing: one ReplaceRoute per moved route, ever.
    let took = wire.calls();
    assert_eq!(
        took.replace_route,
        remote_tables.len(),
        "one call per moved route"
    );
    eventually(Duration::from_secs(10), "three more rechecks", || async {
        (wire.calls().describe_route_tables >= took.describe_route_tables + 3).then_some(())
    })
    .await;
    assert_eq!(
        wire.calls().replace_route,
        took.replace_route,
        "rechecks replaced nothing"
    );
    assert_eq!(routes_of(c, &vpc_id).await, expected);
    assert_eq!(
        routes_of(c, &other_vpc.id).await,
        other_before,
        "another VPC's routes are not this appliance's"
    );

    // Drift: someone points a remote route at member B; the next recheck
    // puts it back.
    c.ec2(REGION)
        .replace_route()
        .route_table_id(&remote_tables[0])
        .destination_cidr_block("10.2.0.0/16")
        .instance_id(&b.id)
        .send()
        .await
        .expect("ReplaceRoute");
    eventually(Duration::from_secs(10), "the drift repaired", || async {
        (routes_of(c, &vpc_id).await == expected).then_some(())
    })
    .await;
    assert_eq!(
        wire.calls().replace_route,
        took.replace_route + 1,
        "exactly the drifted route"
    );

    // EC2 is the arbiter: once the site's address is on B (a failover, or
    // an old instance still running beside its replacement), this one
    // leaves the routes to B, and reads no routes at all.
    c.ec2(REGION)
        .associate_address()
        .allocation_id(&allocation_id)
        .network_interface_id(&b.interface_id)
        .allow_reassociation(true)
        .send()
        .await
        .expect("AssociateAddress");
    // Passes run one after the other: by the second start after the move,
    // the one under way at the move is over.
    let moved = wire.calls();
    eventually(Duration::from_secs(10), "two rechecks", || async {
        (wire.calls().describe_addresses >= moved.describe_addresses + 2).then_some(())
    })
    .await;
    c.ec2(REGION)
        .replace_route()
        .route_table_id(&remote_tables[0])
        .destination_cidr_block("10.2.0.0/16")
        .instance_id(&b.id)
        .send()
        .await
        .expect("ReplaceRoute");
    let mut with_b = expected.clone();
    with_b.insert(
        (remote_tables[0].clone(), "10.2.0.0/16".into()),
        b.id.clone(),
    );
    let yielded = wire.calls();
    eventually(Duration::from_secs(10), "three rechecks", || async {
        (wire.calls().describe_addresses >= yielded.describe_addresses + 3).then_some(())
    })
    .await;
    let now = wire.calls();
    assert_eq!(
        (now.replace_route, now.describe_route_tables),
        (yielded.replace_route, yielded.describe_route_tables),
        "no route read, none replaced"
    );
    assert_eq!(routes_of(c, &vpc_id).await, with_b);
    owning.abort();
    drop(cidrs);

    // A restarted agent takes the address back, then the route B had.
    // A change of remote CIDRs is acted on at once, not at the next
    // recheck (an hour away here): 10.99.0.0/16 becomes remote, so its
    // route via the dead instance moves too.
    let wire = Wire::start().await;
    let (cidrs, cidrs_rx) = watch::channel(remote.clone());
    let owning = own_as_active(
        ec2_as_appliance(c, &wire.url).await,
        identity(&new),
        &allocation_id,
        Duration::from_secs(3600),
        cidrs_rx,
    );
    eventually(Duration::from_secs(10), "the first pass", || async {
        (routes_of(c, &vpc_id).await == expected).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let first = wire.calls();
    assert_eq!(
        (first.replace_route, first.describe_route_tables),
        (1, 1),
        "the first pass took back B's route, and nothing else"
    );
    let mut wider = remote.clone();
    wider.insert("10.99.0.0/16".parse().expect("cidr"));
    cidrs.send_replace(wider.clone());
    let mut expected = expected;
    expected.insert(
        (via_tgw.clone(), "10.99.0.0/16".into()),
        new.interface_id.clone(),
    );
    eventually(
        Duration::from_secs(10),
        "the new remote CIDR routed here",
        || async { (routes_of(c, &vpc_id).await == expected).then_some(()) },
    )
    .await;
    let after = wire.calls();
    assert_eq!(
        (after.replace_route, after.describe_route_tables),
        (2, 2),
        "one more pass, one more route"
    );
    assert_eq!(
        expected[&(via_tgw.clone(), "10.2.0.0/16".into())],
        tgw,
        "the Transit Gateway route stays"
    );
    assert_eq!(expected[&(via_igw.clone(), "10.2.0.0/16".into())], igw);
    owning.abort();

    // The agent's own pass, called directly: nothing left to do.
    let routes = VpcRoutes::new(ec2_as_appliance(c, &moto().await.url).await);
    let owner = routes
        .owner(&new.id, Some(&new.interface_id))
        .await
        .expect("the replacement's VPC and interface");
    assert_eq!(
        (owner.vpc_id.as_str(), owner.interface_id.as_str()),
        (vpc_id.as_str(), new.interface_id.as_str())
    );
    let mut owner = owner;
    let report = routes.take_over(&mut owner, &wider).await.expect("a pass");
    // The provisioned ones, and in via_tgw both, in via_igw one.
    assert_eq!(report.remote_routes, remote_tables.len() + 3);
    assert!(report.replaced.is_empty(), "{:?}", report.replaced);
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert!(report.foreign.is_empty(), "{:?}", report.foreign);

    // The customer sends a remote CIDR to an instance of their own (not
    // tagged with the site): that route is someone else's, reported and
    // left alone, however often the appliance looks.
    let (theirs, _) = c.untagged_instance(REGION, &vpc_id).await;
    c.ec2(REGION)
        .replace_route()
        .route_table_id(&remote_tables[0])
        .destination_cidr_block("10.2.0.0/16")
        .instance_id(&theirs)
        .send()
        .await
        .expect("ReplaceRoute");
    for _ in 0..2 {
        let report = routes.take_over(&mut owner, &wider).await.expect("a pass");
        assert!(report.replaced.is_empty(), "{:?}", report.replaced);
        let foreign: Vec<String> = report
            .foreign
            .iter()
            .map(|r| r.target.to_string())
            .collect();
        assert_eq!(foreign.len(), 1, "{foreign:?}");
        assert!(foreign[0].starts_with(&theirs), "{foreign:?}");
    }
    assert_eq!(
        routes_of(c, &vpc_id).await[&(remote_tables[0].clone(), "10.2.0.0/16".into())],
        theirs
    );
}
