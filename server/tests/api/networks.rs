//! Networks from request to running stacks in moto and back to nothing:
//! discovery, validation, key epoch 1, plan, apply, routes, teardown.

use crate::{
    moto::{moto, Customer, TestVpc, ThrottlingProxy},
    support::*,
};
use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// An Acme admin with one verified customer account.
pub struct World {
    pub app: TestApp,
    pub admin: Client,
    pub customer: Customer,
}

impl World {
    pub async fn new() -> World {
        Self::with_workers(4).await
    }

    /// `workers` 0: jobs run only in server processes the test starts.
    pub async fn with_workers(workers: usize) -> World {
        Self::with_app(TestApp::on_moto(workers).await).await
    }

    pub async fn with_app(app: TestApp) -> World {
        app.org_with_admin("Acme", "ada@acme.test").await;
        let customer = moto().await.customer().await;
        let mut admin = app.signed_in("ada@acme.test").await;
        let r = admin
            .json(
                Method::POST,
                "/api/v1/accounts",
                Some(json!({"account_id": customer.account, "role_arn": customer.role_arn})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        World {
            app,
            admin,
            customer,
        }
    }

    pub fn site(&self, region: &str, vpc: &TestVpc, role: &str) -> Value {
        json!({"account_id": self.customer.account, "region": region, "vpc_id": vpc.id, "role": role})
    }

    pub async fn create(&mut self, body: Value) -> Value {
        let r = self
            .admin
            .json(Method::POST, "/api/v1/networks", Some(body))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        r.json()
    }

    /// Shows the plan, confirms it, and waits for the network to reach `want`.
    pub async fn run(&mut self, id: &str, kind: &str, want: &str) -> Duration {
        let started = Instant::now();
        self.start(id, kind).await;
        self.wait_for(id, want).await;
        started.elapsed()
    }

    /// Shows the plan and confirms it; the job starts.
    pub async fn start(&mut self, id: &str, kind: &str) {
        let plan = self
            .admin
            .get(&format!("/api/v1/networks/{id}/plan?kind={kind}"))
            .await;
        assert_eq!(plan.status, StatusCode::OK, "{}", plan.text());
        let fingerprint = plan.json()["fingerprint"]
            .as_str()
            .expect("fingerprint")
            .to_string();
        let r = self
            .admin
            .json(
                Method::POST,
                &format!("/api/v1/networks/{id}/{kind}"),
                Some(json!({"fingerprint": fingerprint})),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    }

    pub async fn admin_get(&self, path: &str) -> Value {
        let mut c = self.admin_clone();
        c.get(path).await.json()
    }

    fn admin_clone(&self) -> Client {
        let mut c = self.app.client();
        c.cookie = self.admin.cookie.clone();
        c
    }

    /// A full mesh over `placed` (all edges) with a new KMS key in
    /// `key_region`; returns its id, its summary and the key's ARN.
    pub async fn full_mesh(
        &mut self,
        name: &str,
        placed: &[Placed],
        key_region: &str,
    ) -> (String, Value, String) {
        let key = self.customer.kms_key(key_region).await;
        let sites: Vec<Value> = placed
            .iter()
            .map(|p| self.site(p.region, &p.vpc, "edge"))
            .collect();
        let net = self
            .create(json!({"name": name, "topology": "full_mesh", "sites": sites, "options": {"kms_key_arn": key}}))
            .await;
        let id = net["id"].as_str().expect("id").to_string();
        (id, net, key)
    }

    pub async fn wait_for(&mut self, id: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let n = self
                .admin
                .get(&format!("/api/v1/networks/{id}"))
                .await
                .json();
            let status = n["status"].as_str().unwrap_or_default().to_string();
            if status == want {
                return;
            }
            if status == "failed" || Instant::now() > deadline {
                let job = self
                    .admin
                    .get(&format!("/api/v1/networks/{id}/job"))
                    .await
                    .text();
                panic!(
                    "network {id} is {status}, wanted {want}: {}\njob: {job}",
                    n["status_note"]
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Live stacks of the network in a region (anything not DELETE_COMPLETE).
pub async fn live_stacks(customer: &Customer, region: &str) -> Vec<(String, String)> {
    let out = customer
        .cloudformation(region)
        .describe_stacks()
        .send()
        .await
        .expect("DescribeStacks");
    out.stacks()
        .iter()
        .filter(|s| s.stack_name().unwrap_or_default().starts_with("vpcmesh-"))
        .map(|s| {
            (
                s.stack_name().unwrap_or_default().to_string(),
                s.stack_status()
                    .map(|x| x.as_str().to_string())
                    .unwrap_or_default(),
            )
        })
        .filter(|(_, st)| st != "DELETE_COMPLETE")
        .collect()
}

/// Running appliance instances of a site: (instance id, AZ).
pub async fn appliances(customer: &Customer, region: &str, site_id: &str) -> Vec<(String, String)> {
    use aws_sdk_ec2::types::Filter;
    let out = customer
        .ec2(region)
        .describe_instances()
        .filters(
            Filter::builder()
                .name("tag:vpcmesh:site")
                .values(site_id)
                .build(),
        )
        .filters(
            Filter::builder()
                .name("instance-state-name")
                .values("running")
                .values("pending")
                .build(),
        )
        .send()
        .await
        .expect("DescribeInstances");
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .map(|i| {
            (
                i.instance_id().unwrap_or_default().to_string(),
                i.placement()
                    .and_then(|p| p.availability_zone())
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

/// Destination CIDR -> target of a route table's routes.
pub async fn routes(customer: &Customer, region: &str, table: &str) -> Vec<(String, String)> {
    let out = customer
        .ec2(region)
        .describe_route_tables()
        .route_table_ids(table)
        .send()
        .await
        .expect("DescribeRouteTables");
    out.route_tables()
        .iter()
        .flat_map(|t| t.routes())
        .filter_map(|r| {
            let target = r
                .instance_id()
                .or(r.transit_gateway_id())
                .or(r.gateway_id())
                .or(r.vpc_peering_connection_id())
                .unwrap_or_default();
            Some((r.destination_cidr_block()?.to_string(), target.to_string()))
        })
        .collect()
}

#[tokio::test]
async fn a_three_region_full_mesh_goes_from_plan_to_running_stacks_and_back() {
    let mut w = World::new().await;
    let placed = place(
        &w,
        &[
            ("us-east-1", "10.1.0.0/16", true),
            ("eu-west-1", "10.2.0.0/16", true),
            ("ap-southeast-2", "10.3.0.0/16", true),
        ],
    )
    .await;
    let (id, net, _) = w.full_mesh("global", &placed, "us-east-1").await;
    assert_eq!(net["status"], "planned");
    assert_eq!(net["sites"].as_array().map(Vec::len), Some(3));
    for p in &placed {
        let site = site_of(&net, &p.vpc);
        assert_eq!(
            site["cidrs"],
            json!([p.vpc.cidr]),
            "CIDRs are discovered: {site}"
        );
        assert_eq!(
            site["availability_zones"].as_array().map(Vec::len),
            Some(2),
            "{site}"
        );
    }
    assert_eq!(net["key_epochs"][0]["epoch"], 1);
    assert_eq!(w.admin_get("/api/v1/overview").await["networks"], 1);

    // The plan names every stack per account and region.
    let plan = w.admin_get(&format!("/api/v1/networks/{id}/plan")).await;
    let changes = plan["changes"].as_array().expect("changes");
    assert_eq!(changes.len(), 9, "{plan}");
    for p in &placed {
        let here: Vec<&Value> = changes.iter().filter(|c| c["region"] == p.region).collect();
        assert_eq!(
            here.len(),
            3,
            "address stack, appliance stack, routes in {}",
            p.region
        );
        assert!(here
            .iter()
            .all(|c| c["action"] == "create" && c["account_id"] == w.customer.account.as_str()));
    }
    // A stale fingerprint is refused and starts nothing.
    let r = w
        .admin
        .json(
            Method::POST,
            &format!("/api/v1/networks/{id}/apply"),
            Some(json!({"fingerprint": "stale"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    assert_eq!(w.app.count("SELECT count(*) FROM jobs").await, 0);

    let took = w.run(&id, "apply", "ready").await;
    eprintln!("full mesh of 3 regions provisioned in {took:?}");
    assert_running(&w, &id, &placed).await;
    let events = w
        .admin_get(&format!("/api/v1/networks/{id}/events?after=0"))
        .await;
    assert!(
        events
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["source"] == "stack")),
        "stack events are recorded for the live view: {events}"
    );
    assert_eq!(
        w.app
            .count("SELECT count(*) FROM job_steps WHERE executions <> 1")
            .await,
        0,
        "every step made its change exactly once"
    );
    // Provisioned again? It is ready: a second apply is refused.
    let r = w
        .admin
        .get(&format!("/api/v1/networks/{id}/plan?kind=apply"))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());

    let took = w.run(&id, "teardown", "deleted").await;
    eprintln!("full mesh of 3 regions torn down in {took:?}");
    assert_gone(&w, &id, &placed, &net).await;
    assert_eq!(w.admin_get("/api/v1/networks").await, json!([]));
}

#[test]
fn every_rendered_stack_variant_passes_cfn_lint() {
    use server::provisioning::templates::{
        address_stack, appliance_stack, ApplianceSpec, LeafAttachment,
    };
    crate::accounts::cfn_lint(&address_stack().expect("address stack"), "address-stack");
    let base = ApplianceSpec {
        peer_addresses: vec!["198.51.100.7".into(), "203.0.113.9".into()],
        vpc_cidrs: vec!["10.1.0.0/16".into(), "100.64.0.0/20".into()],
        ha: true,
        nat_t: true,
        spot_types: None,
        leaves: vec![],
        remote_cidrs: vec![],
    };
    let mut variants = vec![("ha", base.clone())];
    let mut single = base.clone();
    single.ha = false;
    single.nat_t = false;
    variants.push(("single-no-nat-t", single));
    let mut spot = base.clone();
    spot.spot_types = Some(vec![
        "c6in.large".into(),
        "c5n.large".into(),
        "m6i.large".into(),
    ]);
    variants.push(("spot", spot));
    let mut leaves = base.clone();
    leaves.leaves = vec![
        LeafAttachment {
            vpc_id: "vpc-0123456789abcdef0".into(),
            subnet_ids: vec![
                "subnet-0123456789abcdef0".into(),
                "subnet-0123456789abcdef1".into(),
            ],
            cidrs: vec!["10.9.0.0/16".into()],
        },
        LeafAttachment {
            vpc_id: "vpc-0123456789abcdef1".into(),
            subnet_ids: vec!["subnet-0123456789abcdef2".into()],
            cidrs: vec!["10.8.0.0/16".into()],
        },
    ];
    leaves.remote_cidrs = vec!["10.1.0.0/16".into(), "10.2.0.0/16".into()];
    variants.push(("mesh-with-leaves", leaves));
    for (name, spec) in variants {
        crate::accounts::cfn_lint(
            &appliance_stack(&spec).expect("renders"),
            &format!("appliance-{name}"),
        );
    }
}

#[tokio::test]
async fn bad_network_input_gets_a_precise_error_and_creates_nothing() {
    let mut w = World::new().await;
    let a = w.customer.vpc("us-east-1", "10.1.0.0/16").await;
    let b = w.customer.vpc("eu-west-1", "10.1.128.0/17").await; // overlaps a
    let c = w.customer.vpc("eu-west-1", "10.2.0.0/16").await;
    let d = w.customer.vpc("eu-west-1", "10.3.0.0/16").await;
    let far_leaf = w.customer.vpc("ap-south-1", "10.4.0.0/16").await;
    let key = w.customer.kms_key("us-east-1").await;
    let base = |sites: Vec<Value>| json!({"name": "n1", "topology": "full_mesh", "sites": sites, "options": {"kms_key_arn": key}});
    let (sa, sb, sc) = (
        w.site("us-east-1", &a, "edge"),
        w.site("eu-west-1", &b, "edge"),
        w.site("eu-west-1", &c, "edge"),
    );
    let mut unknown_region = sc.clone();
    unknown_region["region"] = json!("mars-north-1");
    let mut missing_vpc = sc.clone();
    missing_vpc["vpc_id"] = json!("vpc-0000000000000000f");
    let mut bad_vpc = sc.clone();
    bad_vpc["vpc_id"] = json!("vpc-xyz");
    let mut foreign = sc.clone();
    foreign["account_id"] = json!("999999999999");
    let mut bad_key = base(vec![sa.clone(), sc.clone()]);
    bad_key["options"]["kms_key_arn"] = json!("arn:aws:kms:us-east-1:123:alias/x");
    let mut missing_key = base(vec![sa.clone(), sc.clone()]);
    missing_key["options"]["kms_key_arn"] = json!(format!(
        "arn:aws:kms:us-east-1:{}:key/00000000-0000-4000-8000-000000000000",
        w.customer.account
    ));
    let mut transit_no_hub = base(vec![sa.clone(), sc.clone()]);
    transit_no_hub["topology"] = json!("transit");
    let mut mesh_leaf_far = base(vec![
        sa.clone(),
        sc.clone(),
        w.site("ap-south-1", &far_leaf, "leaf"),
    ]);
    mesh_leaf_far["topology"] = json!("mesh_with_leaves");
    let mut spot_types = base(vec![sa.clone(), sc.clone()]);
    spot_types["options"]["instance_types"] = json!(["c6in.large", "c5n.large"]);
    let cases: Vec<(Value, &str, &str)> = vec![
        (base(vec![sa.clone(), sb.clone()]), "sites", "overlap"),
        (
            base(vec![sa.clone(), unknown_region]),
            "sites[1].region",
            "mars-north-1",
        ),
        (
            base(vec![sa.clone(), missing_vpc]),
            "sites[1].vpc_id",
            "not found",
        ),
        (base(vec![sa.clone(), bad_vpc]), "sites[1].vpc_id", "vpc-"),
        (
            base(vec![sa.clone(), foreign]),
            "sites[1].account_id",
            "not registered",
        ),
        (
            base(vec![sa.clone(), sa.clone()]),
            "sites[1].vpc_id",
            "once",
        ),
        (base(vec![sa.clone()]), "sites", "two"),
        (bad_key, "options.kms_key_arn", "key"),
        (missing_key, "options.kms_key_arn", "not found"),
        (transit_no_hub, "sites", "hub"),
        (spot_types, "options.instance_types", "spot"),
        (
            base(vec![
                sa.clone(),
                json!({"account_id": w.customer.account, "region": "eu-west-1", "vpc_id": c.id, "role": "leaf"}),
            ]),
            "sites[1].role",
            "leaf",
        ),
        (
            base(vec![
                sa.clone(),
                sc.clone(),
                w.site("eu-west-1", &d, "edge"),
            ]),
            "sites",
            "two edge sites",
        ),
        (mesh_leaf_far, "sites[2].role", "same account and region"),
        (
            json!({"name": "", "topology": "full_mesh", "sites": [sa, sc], "options": {"kms_key_arn": key}}),
            "name",
            "",
        ),
    ];
    for (body, field, words) in cases {
        let r = w
            .admin
            .json(Method::POST, "/api/v1/networks", Some(body.clone()))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text());
        let e = r.json();
        assert_eq!(e["error"]["field"], field, "{body}: {e}");
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains(words),
            "{e}"
        );
    }
    let r = w
        .admin
        .json(
            Method::POST,
            "/api/v1/networks",
            Some(json!({"name": "x", "topology": "ring"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(w.app.count("SELECT count(*) FROM networks").await, 0);
    assert_eq!(w.app.count("SELECT count(*) FROM key_epochs").await, 0);
}

/// A VPC of a test network: its region, and whether it has appliances.
pub struct Placed {
    pub region: &'static str,
    pub vpc: TestVpc,
    pub edge: bool,
}

fn site_of<'a>(net: &'a Value, vpc: &TestVpc) -> &'a Value {
    net["sites"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["vpc_id"] == vpc.id.as_str()))
        .expect("site of the VPC")
}

/// What "provisioned" means for every site: the edges' stacks complete, two
/// appliances in two AZs, every other site's CIDR routed (to the appliance
/// from an edge, to the Transit Gateway from a leaf), key epoch 1 stored.
pub async fn assert_running(w: &World, id: &str, placed: &[Placed]) {
    let net = w.admin_get(&format!("/api/v1/networks/{id}")).await;
    assert_eq!(net["status"], "ready", "{net}");
    for p in placed {
        let edges_here = placed
            .iter()
            .filter(|q| q.edge && q.region == p.region)
            .count();
        let stacks = live_stacks(&w.customer, p.region).await;
        assert_eq!(stacks.len(), 2 * edges_here, "{}: {stacks:?}", p.region);
        assert!(
            stacks.iter().all(|(_, s)| s == "CREATE_COMPLETE"),
            "{stacks:?}"
        );
        let site = site_of(&net, &p.vpc);
        let table = routes(&w.customer, p.region, &p.vpc.route_tables[0]).await;
        if p.edge {
            let instances = appliances(
                &w.customer,
                p.region,
                site["id"].as_str().unwrap_or_default(),
            )
            .await;
            assert_eq!(instances.len(), 2, "{}: {instances:?}", p.region);
            assert_ne!(
                instances[0].1, instances[1].1,
                "HA pair in two AZs: {instances:?}"
            );
            assert!(site["outputs"]["PublicIp"].is_string(), "{site}");
        }
        for other in placed.iter().filter(|o| o.vpc.id != p.vpc.id) {
            let to = table.iter().find(|(d, _)| d == &other.vpc.cidr);
            // An edge reaches its own leaves through the Transit Gateway and
            // the rest through its appliance; a leaf reaches all via the gateway.
            let own_leaf = p.edge && !other.edge && other.region == p.region;
            let want = if p.edge && !own_leaf { "i-" } else { "tgw-" };
            assert!(
                to.is_some_and(|(_, t)| t.starts_with(want)),
                "{} {}: route to {} via {want}: {table:?}",
                p.region,
                p.vpc.id,
                other.vpc.cidr
            );
        }
    }
    // Epoch 1 is kept per tunnel: a key per site with tunnels and per
    // tunnel, each only a KMS ciphertext blob.
    let blobs: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT ciphertext FROM epoch_keys WHERE network_id = $1::uuid AND epoch = 1",
    )
    .bind(id)
    .fetch_all(&w.app.pool)
    .await
    .expect("epoch 1 stored");
    assert!(!blobs.is_empty());
    assert!(
        blobs.iter().all(|b| b.len() > 32),
        "only KMS ciphertext blobs are stored"
    );
}

/// After teardown: no stack, no appliance, no route to another site.
pub async fn assert_gone(w: &World, id: &str, placed: &[Placed], net_before: &Value) {
    let net = w.admin_get(&format!("/api/v1/networks/{id}")).await;
    assert_eq!(net["status"], "deleted", "{net}");
    for p in placed {
        assert_eq!(
            live_stacks(&w.customer, p.region).await,
            vec![],
            "{}",
            p.region
        );
        let site = site_of(net_before, &p.vpc);
        assert_eq!(
            appliances(
                &w.customer,
                p.region,
                site["id"].as_str().unwrap_or_default()
            )
            .await,
            vec![]
        );
        let table = routes(&w.customer, p.region, &p.vpc.route_tables[0]).await;
        for other in placed.iter().filter(|o| o.vpc.id != p.vpc.id) {
            assert!(
                !table.iter().any(|(d, _)| d == &other.vpc.cidr),
                "{}: left {table:?}",
                p.region
            );
        }
    }
}

pub async fn place(w: &World, layout: &[(&'static str, &str, bool)]) -> Vec<Placed> {
    let mut placed = Vec::new();
    for (region, cidr, edge) in layout {
        placed.push(Placed {
            region,
            vpc: w.customer.vpc(region, cidr).await,
            edge: *edge,
        });
    }
    placed
}

#[tokio::test]
async fn a_transit_network_with_three_spokes_routes_everything_via_the_hub() {
    let mut w = World::new().await;
    let placed = place(
        &w,
        &[
            ("us-east-1", "10.10.0.0/16", true),
            ("us-west-2", "10.11.0.0/16", true),
            ("eu-central-1", "10.12.0.0/16", true),
            ("ap-northeast-1", "10.13.0.0/16", true),
        ],
    )
    .await;
    let key = w.customer.kms_key("us-east-1").await;
    let sites: Vec<Value> = placed
        .iter()
        .enumerate()
        .map(|(i, p)| w.site(p.region, &p.vpc, if i == 0 { "hub" } else { "edge" }))
        .collect();
    let net = w
        .create(json!({"name": "hub and spokes", "topology": "transit", "sites": sites,
                       "options": {"kms_key_arn": key, "spot": true, "instance_types": ["c6in.large", "c5n.large"]}}))
        .await;
    let id = net["id"].as_str().expect("id").to_string();
    let took = w.run(&id, "apply", "ready").await;
    eprintln!("transit with 3 spokes provisioned in {took:?}");
    assert_running(&w, &id, &placed).await;
    let took = w.run(&id, "teardown", "deleted").await;
    eprintln!("transit with 3 spokes torn down in {took:?}");
    assert_gone(&w, &id, &placed, &net).await;
}

#[tokio::test]
async fn a_mesh_with_leaves_routes_leaves_through_their_edge() {
    let mut w = World::new().await;
    let placed = place(
        &w,
        &[
            ("us-east-1", "10.20.0.0/16", true),
            ("us-east-1", "10.21.0.0/16", false),
            ("eu-west-1", "10.30.0.0/16", true),
            ("eu-west-1", "10.31.0.0/16", false),
        ],
    )
    .await;
    let key = w.customer.kms_key("eu-west-1").await;
    let sites: Vec<Value> = placed
        .iter()
        .map(|p| w.site(p.region, &p.vpc, if p.edge { "edge" } else { "leaf" }))
        .collect();
    let net = w
        .create(json!({"name": "core and leaves", "topology": "mesh_with_leaves", "sites": sites, "options": {"kms_key_arn": key}}))
        .await;
    let id = net["id"].as_str().expect("id").to_string();
    let took = w.run(&id, "apply", "ready").await;
    eprintln!("mesh with 2 edges and 2 leaves provisioned in {took:?}");
    assert_running(&w, &id, &placed).await;
    let took = w.run(&id, "teardown", "deleted").await;
    eprintln!("mesh with 2 edges and 2 leaves torn down in {took:?}");
    assert_gone(&w, &id, &placed, &net).await;
}

#[tokio::test]
async fn throttled_stack_calls_are_retried_with_backoff_until_they_succeed() {
    // Every CreateStack is throttled until 8 have been: more than the SDK's
    // own 3 attempts per call, so the engine's backoff has to take over.
    let proxy = ThrottlingProxy::start(&moto().await.url, "Action=CreateStack", 8).await;
    let mut w = World::with_app(TestApp::with_aws(server::aws::Aws::local(&proxy.url)).await).await;
    let placed = place(
        &w,
        &[
            ("us-east-1", "10.60.0.0/16", true),
            ("us-west-2", "10.61.0.0/16", true),
        ],
    )
    .await;
    let (id, _, _) = w.full_mesh("throttled", &placed, "us-east-1").await;
    let took = w.run(&id, "apply", "ready").await;
    eprintln!("provisioned through 8 throttled CreateStack calls in {took:?}");
    assert_running(&w, &id, &placed).await;
    use std::sync::atomic::Ordering;
    assert!(proxy.throttled.load(Ordering::SeqCst) >= 8);
    assert_eq!(
        proxy.forwarded_matching.load(Ordering::SeqCst),
        4,
        "each of the 4 stacks was created once"
    );
    let retried = w
        .app
        .count("SELECT count(*) FROM job_steps WHERE action = 'address_stack' AND failures >= 1")
        .await;
    assert!(retried >= 1, "the engine retried a throttled step");
}

#[tokio::test]
async fn another_organization_cannot_see_or_touch_a_network_or_its_account() {
    let mut w = World::new().await;
    let placed = place(
        &w,
        &[
            ("us-east-1", "10.70.0.0/16", true),
            ("us-west-2", "10.71.0.0/16", true),
        ],
    )
    .await;
    let (id, _, key) = w.full_mesh("private", &placed, "us-east-1").await;
    let account = w.admin.get("/api/v1/accounts").await.json()[0]["id"]
        .as_str()
        .expect("account id")
        .to_string();

    w.app.org_with_admin("Globex", "hank@globex.test").await;
    let mut hank = w.app.signed_in("hank@globex.test").await;
    assert_eq!(hank.get("/api/v1/networks").await.json(), json!([]));
    assert_eq!(hank.get("/api/v1/accounts").await.json(), json!([]));
    for path in [
        format!("/api/v1/networks/{id}"),
        format!("/api/v1/networks/{id}/plan"),
        format!("/api/v1/networks/{id}/job"),
        format!("/api/v1/networks/{id}/events"),
        format!("/api/v1/accounts/{account}/vpcs?region=us-east-1"),
    ] {
        let r = hank.get(&path).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {}", r.text());
    }
    let r = hank
        .json(
            Method::POST,
            &format!("/api/v1/networks/{id}/apply"),
            Some(json!({"fingerprint": "x"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    let r = hank
        .json(
            Method::POST,
            &format!("/api/v1/accounts/{account}/verify"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    // Globex cannot build a network on Acme's account either.
    let r = hank
        .json(Method::POST, "/api/v1/networks", Some(json!({"name": "steal", "topology": "full_mesh",
            "sites": [w.site("us-east-1", &placed[0].vpc, "edge"), w.site("us-west-2", &placed[1].vpc, "edge")],
            "options": {"kms_key_arn": key}})))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert!(r.text().contains("not registered"), "{}", r.text());
    assert_eq!(w.app.count("SELECT count(*) FROM jobs").await, 0);

    // Acme's members read the network (and find VPCs) but do not manage accounts.
    let acme: uuid::Uuid = sqlx::query_scalar("SELECT id FROM organizations WHERE name = 'Acme'")
        .fetch_one(&w.app.pool)
        .await
        .expect("acme");
    w.app
        .add_user(acme, "max@acme.test", app::api::Role::Member)
        .await;
    let mut max = w.app.signed_in("max@acme.test").await;
    assert_eq!(
        max.get(&format!("/api/v1/networks/{id}")).await.status,
        StatusCode::OK
    );
    let vpcs = max
        .get(&format!("/api/v1/accounts/{account}/vpcs?region=us-east-1"))
        .await;
    assert_eq!(vpcs.status, StatusCode::OK, "{}", vpcs.text());
    assert!(vpcs
        .json()
        .as_array()
        .is_some_and(|v| v.iter().any(|v| v["vpc_id"] == placed[0].vpc.id.as_str())));
    let r = max
        .json(
            Method::POST,
            &format!("/api/v1/accounts/{account}/verify"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn keys_rotate_to_a_new_kms_epoch_and_retired_epochs_can_be_invalidated() {
    let mut w = World::new().await;
    let placed = place(
        &w,
        &[
            ("us-east-1", "10.80.0.0/16", true),
            ("eu-west-1", "10.81.0.0/16", true),
        ],
    )
    .await;
    let (id, _, _) = w.full_mesh("keyed", &placed, "eu-west-1").await;

    let r = w
        .admin
        .json(
            Method::POST,
            &format!("/api/v1/networks/{id}/keys/rotate"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let epochs = r.json()["key_epochs"].clone();
    assert_eq!(epochs[0]["epoch"], 1);
    assert_eq!(epochs[0]["state"], "retired");
    assert_eq!(epochs[1]["epoch"], 2);
    assert_eq!(epochs[1]["state"], "active");
    // Each epoch its own KMS data keys: a site key each and one tunnel key.
    let distinct: i64 = w
        .app
        .count("SELECT count(DISTINCT ciphertext) FROM epoch_keys")
        .await;
    assert_eq!(distinct, 2 * 3, "each epoch has its own KMS data keys");

    // The active epoch cannot be revoked; a retired one can, once.
    let r = w
        .admin
        .json(
            Method::POST,
            &format!("/api/v1/networks/{id}/keys/2/invalidate"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    assert!(r.text().contains("rotate first"), "{}", r.text());
    let r = w
        .admin
        .json(
            Method::POST,
            &format!("/api/v1/networks/{id}/keys/1/invalidate"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["key_epochs"][0]["state"], "invalidated");
    let r = w
        .admin
        .json(
            Method::POST,
            &format!("/api/v1/networks/{id}/keys/1/invalidate"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    for (path, status) in [
        ("keys/9/invalidate", StatusCode::NOT_FOUND),
        ("keys/x/invalidate", StatusCode::BAD_REQUEST),
    ] {
        let r = w
            .admin
            .json(Method::POST, &format!("/api/v1/networks/{id}/{path}"), None)
            .await;
        assert_eq!(r.status, status, "{path}: {}", r.text());
    }
    assert_eq!(
        w.app
            .count("SELECT count(*) FROM audit_events WHERE action IN ('network.key.rotated', 'network.key.invalidated')")
            .await,
        2
    );

    // Members may look but not change keys.
    let acme: uuid::Uuid = sqlx::query_scalar("SELECT id FROM organizations WHERE name = 'Acme'")
        .fetch_one(&w.app.pool)
        .await
        .expect("acme");
    w.app
        .add_user(acme, "max@acme.test", app::api::Role::Member)
        .await;
    let mut max = w.app.signed_in("max@acme.test").await;
    let r = max
        .json(
            Method::POST,
            &format!("/api/v1/networks/{id}/keys/rotate"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(w.app.count("SELECT count(*) FROM key_epochs").await, 2);
}

#[tokio::test]
async fn another_organizations_network_page_is_not_found_and_shows_nothing() {
    let mut w = World::new().await;
    let placed = place(
        &w,
        &[
            ("us-east-1", "10.90.0.0/16", true),
            ("us-west-2", "10.91.0.0/16", true),
        ],
    )
    .await;
    let (id, _, _) = w.full_mesh("secret-mesh", &placed, "us-east-1").await;

    // The owner's page renders complete without JavaScript: plan and sites.
    let mine = w.admin.page(&format!("/networks/{id}")).await;
    assert_eq!(mine.status, StatusCode::OK);
    let html = mine.text();
    assert!(
        html.contains("secret-mesh")
            && html.contains("plan-table")
            && html.contains(&placed[0].vpc.id)
    );

    w.app.org_with_admin("Globex", "hank@globex.test").await;
    let mut hank = w.app.signed_in("hank@globex.test").await;
    let theirs = hank.page(&format!("/networks/{id}")).await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND, "{}", theirs.text());
    let html = theirs.text();
    assert!(html.contains("Network was not found."));
    assert!(
        !html.contains("secret-mesh") && !html.contains(&placed[0].vpc.id),
        "nothing leaks"
    );
    let list = hank.page("/networks").await.text();
    assert!(list.contains("No networks yet") && !list.contains("secret-mesh"));
}

#[tokio::test]
async fn a_vpc_is_in_one_live_network_at_a_time_across_organizations_and_races() {
    let mut w = World::new().await;
    let placed = place(
        &w,
        &[
            ("us-east-1", "10.80.0.0/16", true),
            ("us-west-2", "10.81.0.0/16", true),
            ("eu-west-1", "10.82.0.0/16", true),
            ("ap-south-1", "10.83.0.0/16", true),
        ],
    )
    .await;
    let key = w.customer.kms_key("us-east-1").await;
    let account = w.customer.account.clone();
    let body = |name: &str, sites: &[&Placed]| {
        let sites: Vec<Value> = sites
            .iter()
            .map(|p| json!({"account_id": account, "region": p.region, "vpc_id": p.vpc.id, "role": "edge"}))
            .collect();
        json!({"name": name, "topology": "full_mesh", "options": {"kms_key_arn": key}, "sites": sites})
    };
    let first = w.create(body("first", &[&placed[0], &placed[1]])).await;
    let first_id = first["id"].as_str().expect("id").to_string();

    // The same VPC in a second network of the organization: refused, named.
    let second = body("second", &[&placed[2], &placed[0]]);
    let r = w
        .admin
        .json(Method::POST, "/api/v1/networks", Some(second.clone()))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    let text = r.text();
    assert!(text.contains(&placed[0].vpc.id), "{text}");
    assert!(text.contains("already in network 'first'"), "{text}");
    assert_eq!(
        w.app
            .count("SELECT count(*) FROM networks WHERE name = 'second'")
            .await,
        0
    );

    // Another organization that registered the same AWS account is
    // refused too, and is not told the network's name.
    w.app.org_with_admin("Globex", "hank@globex.test").await;
    let mut hank = w.app.signed_in("hank@globex.test").await;
    let r = hank
        .json(
            Method::POST,
            "/api/v1/accounts",
            Some(json!({"account_id": w.customer.account, "role_arn": w.customer.role_arn})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let r = hank
        .json(
            Method::POST,
            "/api/v1/networks",
            Some(body("theirs", &[&placed[1], &placed[3]])),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    assert!(r.text().contains("another organization"), "{}", r.text());
    assert!(!r.text().contains("first"), "{}", r.text());

    // Two creations racing for one VPC: exactly one wins, the other is a
    // conflict and leaves nothing behind.
    let mut a = w.app.client();
    a.cookie = w.admin.cookie.clone();
    let mut b = w.app.client();
    b.cookie = w.admin.cookie.clone();
    let (ra, rb) = tokio::join!(
        a.json(
            Method::POST,
            "/api/v1/networks",
            Some(body("race-a", &[&placed[2], &placed[3]]))
        ),
        b.json(
            Method::POST,
            "/api/v1/networks",
            Some(body("race-b", &[&placed[3], &placed[2]]))
        ),
    );
    let mut statuses = [ra.status, rb.status];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::CREATED, StatusCode::CONFLICT],
        "{} / {}",
        ra.text(),
        rb.text()
    );
    assert_eq!(
        w.app
            .count("SELECT count(*) FROM networks WHERE name LIKE 'race-%'")
            .await,
        1
    );
    assert_eq!(
        w.app
            .count("SELECT count(*) FROM vpc_claims c JOIN networks n ON n.id = c.network_id WHERE n.name LIKE 'race-%'")
            .await,
        2
    );

    // Once the first network is deleted its VPCs are free again.
    w.run(&first_id, "teardown", "deleted").await;
    let r = w
        .admin
        .json(
            Method::POST,
            "/api/v1/networks",
            Some(body("again", &[&placed[0], &placed[1]])),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
}

/// Waits until the network is `failed`; returns its status note.
async fn until_failed(w: &mut World, id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let n = w.admin.get(&format!("/api/v1/networks/{id}")).await.json();
        match n["status"].as_str() {
            Some("failed") => return n["status_note"].as_str().unwrap_or_default().to_string(),
            Some("ready") => panic!("network {id} is ready, wanted failed"),
            _ if Instant::now() > deadline => panic!("network {id} never failed: {n}"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[tokio::test]
async fn a_route_vpcmesh_did_not_create_is_never_replaced_or_deleted() {
    let mut w = World::new().await;
    let placed = place(
        &w,
        &[
            ("us-east-1", "10.84.0.0/16", true),
            ("us-west-2", "10.85.0.0/16", true),
        ],
    )
    .await;
    let (east, west) = (&placed[0], &placed[1]);
    // The customer already reaches the west's CIDR from the east through a
    // peering connection of their own.
    let ec2 = w.customer.ec2("us-east-1");
    let other = w.customer.vpc("us-east-1", "10.86.0.0/16").await;
    let pcx = ec2
        .create_vpc_peering_connection()
        .vpc_id(&east.vpc.id)
        .peer_vpc_id(&other.id)
        .send()
        .await
        .expect("CreateVpcPeeringConnection")
        .vpc_peering_connection()
        .and_then(|p| p.vpc_peering_connection_id())
        .expect("a peering id")
        .to_string();
    let table = east.vpc.route_tables[0].clone();
    let peer_route = |ec2: aws_sdk_ec2::Client, table: String, pcx: String| async move {
        ec2.create_route()
            .route_table_id(&table)
            .destination_cidr_block("10.85.0.0/16")
            .vpc_peering_connection_id(&pcx)
            .send()
            .await
            .expect("CreateRoute via the peering connection");
    };
    peer_route(ec2.clone(), table.clone(), pcx.clone()).await;
    let pcx_of =
        |routes: &[(String, String)]| routes.iter().any(|(d, t)| d == "10.85.0.0/16" && *t == pcx);

    let (id, _, _) = w.full_mesh("peered", &placed, "us-east-1").await;
    // The plan already shows the route in the way, read live.
    let plan = w
        .admin_get(&format!("/api/v1/networks/{id}/plan?kind=apply"))
        .await;
    let conflicts = plan["route_conflicts"].as_array().expect("route_conflicts");
    assert_eq!(conflicts.len(), 1, "{plan}");
    assert!(
        conflicts[0].as_str().is_some_and(|c| c.contains(&format!(
            "route table {table} already sends 10.85.0.0/16 to {pcx}"
        ))),
        "{plan}"
    );
    assert_eq!(plan["routes_unchecked"], json!([]), "{plan}");
    w.start(&id, "apply").await;
    let note = until_failed(&mut w, &id).await;
    let job = w
        .admin_get(&format!("/api/v1/networks/{id}/job"))
        .await
        .to_string();
    let why = format!("{note} {job}");
    assert!(
        why.contains(&format!(
            "route table {table} already sends 10.85.0.0/16 to {pcx}"
        )),
        "{why}"
    );
    assert!(
        why.contains("never replaces a route it does not own"),
        "{why}"
    );
    let east_routes = routes(&w.customer, "us-east-1", &table).await;
    assert!(
        pcx_of(&east_routes),
        "the peering route stays: {east_routes:?}"
    );

    // The customer removes their route; applying again routes via vpcmesh.
    ec2.delete_route()
        .route_table_id(&table)
        .destination_cidr_block("10.85.0.0/16")
        .send()
        .await
        .expect("DeleteRoute");
    let plan = w
        .admin_get(&format!("/api/v1/networks/{id}/plan?kind=apply"))
        .await;
    assert_eq!(plan["route_conflicts"], json!([]), "{plan}");
    w.run(&id, "apply", "ready").await;
    let east_routes = routes(&w.customer, "us-east-1", &table).await;
    let appliance = east_routes
        .iter()
        .find(|(d, _)| d == "10.85.0.0/16")
        .map(|(_, t)| t.clone())
        .expect("the route to the west");
    assert!(appliance.starts_with("i-"), "{east_routes:?}");
    assert!(
        routes(&w.customer, "us-west-2", &west.vpc.route_tables[0])
            .await
            .iter()
            .any(|(d, t)| d == "10.84.0.0/16" && t.starts_with("i-")),
        "the west routes to its appliance"
    );

    // They point it back at their peering connection; the teardown
    // removes every route of vpcmesh's and leaves theirs.
    ec2.replace_route()
        .route_table_id(&table)
        .destination_cidr_block("10.85.0.0/16")
        .vpc_peering_connection_id(&pcx)
        .send()
        .await
        .expect("ReplaceRoute");
    w.run(&id, "teardown", "deleted").await;
    let east_routes = routes(&w.customer, "us-east-1", &table).await;
    assert!(
        pcx_of(&east_routes),
        "the peering route stays: {east_routes:?}"
    );
    let west_routes = routes(&w.customer, "us-west-2", &west.vpc.route_tables[0]).await;
    assert!(
        !west_routes.iter().any(|(d, _)| d == "10.84.0.0/16"),
        "vpcmesh's route is gone: {west_routes:?}"
    );
    let events = w
        .admin_get(&format!("/api/v1/networks/{id}/events?after=0"))
        .await
        .to_string();
    assert!(
        events.contains(&format!(
            "left in place, not created by vpcmesh: {table} 10.85.0.0/16 -> {pcx}"
        )),
        "{events}"
    );
}

#[tokio::test]
async fn ec2_listings_are_read_to_their_last_page() {
    let proxy = crate::moto::PagingProxy::start(&moto().await.url).await;
    let url: url::Url = proxy.url.parse().expect("the proxy's URL");
    let mut w =
        World::with_app(TestApp::on_moto_with(4, move |s| s.aws_endpoint_url = Some(url)).await)
            .await;
    let placed = place(
        &w,
        &[
            ("us-east-1", "10.87.0.0/16", true),
            ("us-west-2", "10.88.0.0/16", true),
        ],
    )
    .await;
    // The VPC picker: every VPC of the region, one per page, each with
    // both its subnets (two more pages).
    let account = w.admin.get("/api/v1/accounts").await.json()[0]["id"]
        .as_str()
        .expect("account id")
        .to_string();
    let vpcs = w
        .admin
        .get(&format!("/api/v1/accounts/{account}/vpcs?region=us-east-1"))
        .await
        .json();
    let listed = vpcs
        .as_array()
        .and_then(|v| v.iter().find(|v| v["vpc_id"] == placed[0].vpc.id.as_str()))
        .unwrap_or_else(|| panic!("{} not listed: {vpcs}", placed[0].vpc.id));
    assert_eq!(listed["subnets"], 2, "{listed}");
    assert_eq!(
        listed["availability_zones"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
    // An HA network needs subnets in two AZs: the second is on page two.
    let (_, net, _) = w.full_mesh("paged", &placed, "us-east-1").await;
    for site in net["sites"].as_array().expect("sites") {
        assert_eq!(
            site["availability_zones"].as_array().map(Vec::len),
            Some(2),
            "{site}"
        );
    }
    // Both route tables (the main one and the test's), from two pages.
    for p in &placed {
        let tables: i32 = sqlx::query_scalar(
            "SELECT jsonb_array_length(discovered->'route_tables') FROM sites WHERE vpc_id = $1",
        )
        .bind(&p.vpc.id)
        .fetch_one(&w.app.pool)
        .await
        .expect("the site");
        assert_eq!(tables, 2, "{}", p.vpc.id);
    }
    assert!(
        proxy.paged.load(std::sync::atomic::Ordering::SeqCst) >= 4,
        "the listings were paged"
    );
}
