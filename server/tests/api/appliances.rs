//! The appliance API against a network provisioned in moto: appliances
//! register with the token from their launch template's user data, get
//! configs that match their peers', long-poll for changes and report status.

use crate::networks::{place, World};
use crate::support::Client;
use axum::body::Body;
use axum::http::{header, Method, StatusCode};
use base64::Engine;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use vpcmesh_protocol::{
    DesiredConfig, InboundSa, Member, RegisterResponse, TunnelState, PROTOCOL_VERSION,
};

/// Bootstrap tokens by (region, member), read from the launch templates.
pub(crate) async fn tokens(w: &World, region: &str) -> BTreeMap<char, String> {
    let ec2 = w.customer.ec2(region);
    let lts = ec2
        .describe_launch_templates()
        .send()
        .await
        .expect("launch templates");
    let mut out = BTreeMap::new();
    for lt in lts.launch_templates() {
        let name = lt.launch_template_name().unwrap_or_default();
        let Some(member) = name.chars().last().filter(|_| name.starts_with("vpcmesh-")) else {
            continue;
        };
        let versions = ec2
            .describe_launch_template_versions()
            .launch_template_id(lt.launch_template_id().unwrap_or_default())
            .versions("$Latest")
            .send()
            .await
            .expect("versions");
        let data = versions.launch_template_versions()[0]
            .launch_template_data()
            .and_then(|d| d.user_data())
            .unwrap_or_default();
        let text = String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(data)
                .expect("base64 user data"),
        )
        .expect("utf-8 user data");
        let token = text
            .split("\"bootstrap_token\": \"")
            .nth(1)
            .and_then(|t| t.split('"').next())
            .expect("the user data carries a token");
        assert!(
            text.contains(&format!("\"member\": \"{member}\"")),
            "{text}"
        );
        out.insert(member, token.to_string());
    }
    out
}

/// A World with a ready two-site full mesh (us-east-1 10.1/16, eu-west-1
/// 10.2/16, HA), provisioned in moto; returns it and the network id.
pub(crate) async fn ready_east_west(name: &str) -> (World, String) {
    ready_east_west_in(World::new().await, name).await
}

/// [`ready_east_west`] in a World of the caller's.
pub(crate) async fn ready_east_west_in(mut w: World, name: &str) -> (World, String) {
    let placed = place(
        &w,
        &[
            ("us-east-1", "10.1.0.0/16", true),
            ("eu-west-1", "10.2.0.0/16", true),
        ],
    )
    .await;
    let (id, _, _) = w.full_mesh(name, &placed, "us-east-1").await;
    w.run(&id, "apply", "ready").await;
    (w, id)
}

/// Makes `network`'s key epochs what a network made before keys per tunnel
/// has: one network key per epoch (the server never decrypts keys, so the
/// ciphertext's content does not matter here), which agents of every
/// protocol take.
pub(crate) async fn with_network_keys(w: &World, network: &str) {
    let pool = &w.app.state.pool;
    sqlx::query("DELETE FROM epoch_keys WHERE network_id = $1::uuid")
        .bind(network)
        .execute(pool)
        .await
        .expect("drop the keys per tunnel");
    sqlx::query(
        "UPDATE key_epochs SET per_tunnel = false, ciphertext = '\\x0102030405'::bytea
          WHERE network_id = $1::uuid",
    )
    .bind(network)
    .execute(pool)
    .await
    .expect("one network key per epoch");
}

/// One running instance as EC2 (moto) has it.
#[derive(Clone, Debug)]
pub(crate) struct Instance {
    pub id: String,
    pub az: String,
    pub private_ip: String,
    /// Its primary interface (device 0) and that interface's MAC.
    pub interface_id: String,
    pub mac: String,
    /// Its `vpcmesh:site` and `vpcmesh:member` tags.
    pub site: String,
    pub member: String,
}

/// The running vpcmesh instances in a region, by their tags: of `member`
/// ('a' or 'b') or both.
pub(crate) async fn running_instances(
    customer: &crate::moto::Customer,
    region: &str,
    member: Option<char>,
) -> Vec<Instance> {
    use aws_sdk_ec2::types::Filter;
    let members = member.map_or(vec!["a".to_string(), "b".to_string()], |m| {
        vec![m.to_string()]
    });
    let out = customer
        .ec2(region)
        .describe_instances()
        .filters(
            Filter::builder()
                .name("tag:vpcmesh:member")
                .set_values(Some(members))
                .build(),
        )
        .filters(
            Filter::builder()
                .name("instance-state-name")
                .values("running")
                .build(),
        )
        .send()
        .await
        .expect("DescribeInstances");
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .map(|i| {
            let tag = |k: &str| {
                i.tags()
                    .iter()
                    .find(|t| t.key() == Some(k))
                    .and_then(|t| t.value())
                    .unwrap_or_default()
                    .to_string()
            };
            let eni = i
                .network_interfaces()
                .iter()
                .find(|n| n.attachment().and_then(|a| a.device_index()) == Some(0));
            Instance {
                id: i.instance_id().unwrap_or_default().to_string(),
                az: i
                    .placement()
                    .and_then(|p| p.availability_zone())
                    .unwrap_or_default()
                    .to_string(),
                private_ip: i.private_ip_address().unwrap_or_default().to_string(),
                interface_id: eni
                    .and_then(|n| n.network_interface_id())
                    .unwrap_or_default()
                    .to_string(),
                mac: eni
                    .and_then(|n| n.mac_address())
                    .unwrap_or_default()
                    .to_string(),
                site: tag("vpcmesh:site"),
                member: tag("vpcmesh:member"),
            }
        })
        .collect()
}

/// The one running instance of `member` in a region.
pub(crate) async fn instance(w: &World, region: &str, member: char) -> Instance {
    let mut all = running_instances(&w.customer, region, Some(member)).await;
    assert_eq!(
        all.len(),
        1,
        "one running member-{member} instance in {region}: {all:?}"
    );
    all.remove(0)
}

/// A registration as the agent sends it for `instance`.
pub(crate) fn registration(token: &str, instance: &Instance) -> Value {
    json!({
        "bootstrap_token": token, "instance_id": instance.id, "availability_zone": instance.az,
        "private_ip": instance.private_ip, "agent_version": "0.1.0"
    })
}

pub(crate) async fn register(c: &mut Client, body: Value) -> (StatusCode, Value) {
    let r = c
        .json(Method::POST, "/api/appliance/v1/register", Some(body))
        .await;
    (r.status, r.json())
}

pub(crate) async fn config(
    c: &mut Client,
    credential: &str,
    query: &str,
) -> (StatusCode, Option<DesiredConfig>) {
    // Speaks today's protocol unless the query names one.
    let query = match query {
        "" => format!("?protocol={PROTOCOL_VERSION}"),
        q if q.contains("protocol=") => q.to_string(),
        q => format!("{q}&protocol={PROTOCOL_VERSION}"),
    };
    let req = c
        .request(Method::GET, &format!("/api/appliance/v1/config{query}"))
        .header(header::AUTHORIZATION, format!("Bearer {credential}"))
        .body(Body::empty())
        .expect("request");
    let r = c.send(req).await;
    let config = (r.status == StatusCode::OK)
        .then(|| serde_json::from_slice(&r.body).expect("a DesiredConfig"));
    (r.status, config)
}

pub(crate) async fn status(c: &mut Client, credential: &str, body: &str) -> StatusCode {
    let req = c
        .request(Method::POST, "/api/appliance/v1/status")
        .header(header::AUTHORIZATION, format!("Bearer {credential}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("request");
    c.send(req).await.status
}

#[tokio::test]
async fn appliances_register_once_get_matching_configs_and_report_status() {
    let (mut w, id) = ready_east_west("appliances").await;
    let east = tokens(&w, "us-east-1").await;
    let west = tokens(&w, "eu-west-1").await;
    assert_eq!(
        east.keys().collect::<String>(),
        "ab",
        "one token per member"
    );
    assert_ne!(east[&'a'], east[&'b']);
    let mut c = w.app.client();

    let (ea, wb) = (
        instance(&w, "us-east-1", 'a').await,
        instance(&w, "eu-west-1", 'b').await,
    );

    // Bad input is refused and stores nothing.
    let mut bad = ea.clone();
    bad.id = "not-an-instance".into();
    let (s, e) = register(&mut c, registration(&east[&'a'], &bad)).await;
    assert_eq!(
        (s, e["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("instance_id"))
    );
    let (s, e) = register(&mut c, registration("vmb_forged", &ea)).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unknown_token"))
    );
    let r = c
        .json(
            Method::POST,
            "/api/appliance/v1/register",
            Some(json!({"bootstrap_token": 5})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());

    // Register (the same live instance again is refused while its agent
    // reports, below: a stolen token cannot push the real agent out).
    let (s, a1) = register(&mut c, registration(&east[&'a'], &ea)).await;
    assert_eq!(s, StatusCode::CREATED, "{a1}");
    let a1: RegisterResponse = serde_json::from_value(a1).expect("response");
    assert_eq!(a1.member, Member::A);
    assert_eq!(a1.generation, 1, "the member's first instance");
    let (s, b2) = register(&mut c, registration(&west[&'b'], &wb)).await;
    assert_eq!(s, StatusCode::CREATED, "{b2}");
    let b2: RegisterResponse = serde_json::from_value(b2).expect("response");
    assert_eq!(b2.member, Member::B);
    let live: i64 = sqlx::query_scalar("SELECT count(*) FROM appliances WHERE retired_at IS NULL")
        .fetch_one(&w.app.state.pool)
        .await
        .expect("count");
    assert_eq!(live, 2);
    let hashes: Vec<Vec<u8>> = sqlx::query_scalar("SELECT credential_hash FROM appliances")
        .fetch_all(&w.app.state.pool)
        .await
        .expect("hashes");
    assert!(hashes
        .iter()
        .all(|h| h.len() == 32 && !String::from_utf8_lossy(h).contains("vma_")));

    // An expired token is refused (tokens from before the life cycle had
    // a lifetime; today's live as long as their site).
    sqlx::query("UPDATE site_bootstrap_tokens SET expires_at = now() - interval '1 minute'")
        .execute(&w.app.state.pool)
        .await
        .expect("expire");
    let (s, e) = register(
        &mut c,
        registration(&east[&'b'], &instance(&w, "us-east-1", 'b').await),
    )
    .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("token_expired"))
    );
    sqlx::query("UPDATE site_bootstrap_tokens SET expires_at = NULL")
        .execute(&w.app.state.pool)
        .await
        .expect("unexpire");

    // Configs: valid, and each side's outbound SPI is what the other accepts.
    let (s, east_cfg) = config(&mut c, &a1.credential, "").await;
    assert_eq!(s, StatusCode::OK);
    let east_cfg = east_cfg.expect("config");
    let (_, west_cfg) = config(&mut c, &b2.credential, "").await;
    let west_cfg = west_cfg.expect("config");
    for cfg in [&east_cfg, &west_cfg] {
        assert_eq!(cfg.validate(), Ok(()));
        assert_eq!(cfg.tunnels.len(), 1);
        assert!(cfg.nat_traversal);
        assert_eq!(cfg.epochs(), vec![1]);
    }
    assert_eq!(east_cfg.local_address.to_string(), ea.private_ip);
    let (et, wt) = (&east_cfg.tunnels[0], &west_cfg.tunnels[0]);
    assert_eq!(et.reqid, wt.reqid);
    assert_eq!(et.out.epoch, 1);
    assert_eq!(
        wt.inbound,
        InboundSa::pair(1, [et.out.spi, wt.inbound[1].spi]).to_vec()
    );
    assert!(et.inbound.contains(&InboundSa {
        epoch: 1,
        member: Member::B,
        spi: wt.out.spi,
        carried: false,
    }));
    assert_eq!(et.remote_cidrs, wt.local_cidrs);
    assert_eq!(et.local_cidrs[0].to_string(), "10.1.0.0/16");
    assert_eq!(et.peer_site, west_cfg.site_id);

    // Long-poll: nothing new within a second; a rotated key wakes a waiting
    // poll at once (a Postgres notification, well before the 15 s backstop).
    let (s, _) = config(
        &mut c,
        &a1.credential,
        &format!("?after={}&wait=1", east_cfg.version),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let mut waiting = w.app.client();
    let (credential, version) = (a1.credential.clone(), east_cfg.version);
    let poll = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let answer = config(
            &mut waiting,
            &credential,
            &format!("?after={version}&wait=30"),
        )
        .await;
        (answer, started.elapsed())
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let r = w
        .admin
        .json(
            Method::POST,
            &format!("/api/v1/networks/{id}/keys/rotate"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let ((s, rotated), waited) = poll.await.expect("the long-poll");
    assert_eq!(s, StatusCode::OK);
    assert!(
        waited < std::time::Duration::from_secs(10),
        "woken after {waited:?}"
    );
    let rotated = rotated.expect("config");
    // The appliances registered and took epoch 1 (they may be forwarding
    // with it before their first report): it stays in play, retiring.
    assert_eq!(rotated.epochs(), vec![2, 1]);
    assert_ne!(rotated.version, east_cfg.version);

    // Status is stored for the console; strangers are refused.
    let report = json!({
        "agent_version": "0.1.0", "applied_version": rotated.version, "ha_role": "active",
        "tunnels": [{"peer_site": west_cfg.site_id, "state": "up", "out_bytes": 840, "out_packets": 10,
                     "in_bytes": 840, "in_packets": 10, "in_errors": 0}]
    })
    .to_string();
    assert_eq!(
        status(&mut c, &a1.credential, &report).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        status(&mut c, "vma_forged", &report).await,
        StatusCode::UNAUTHORIZED
    );
    let (s, e) = register(&mut c, registration(&east[&'a'], &ea)).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("already_registered")),
        "{e}"
    );
    assert_eq!(
        status(&mut c, &a1.credential, "{\"tunnels\": 3}").await,
        StatusCode::BAD_REQUEST
    );
    let (applied, tunnels): (Option<i64>, Value) = sqlx::query_as(
        "SELECT applied_version, tunnels FROM appliances WHERE id = $1 AND last_seen_at IS NOT NULL",
    )
    .bind(a1.appliance_id)
    .fetch_one(&w.app.state.pool)
    .await
    .expect("status row");
    assert_eq!(applied, Some(rotated.version as i64));
    let t: Vec<vpcmesh_protocol::TunnelStatus> = serde_json::from_value(tunnels).expect("tunnels");
    assert_eq!((t[0].state, t[0].in_packets), (TunnelState::Up, 10));
    let (s, _) = config(&mut c, "vma_forged", "").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // The console shows both appliances; the graph colours the reported tunnel.
    let net = w.admin.get(&format!("/api/v1/networks/{id}")).await.json();
    let listed = net["appliances"].as_array().cloned().unwrap_or_default();
    assert_eq!(listed.len(), 2, "{net}");
    let east_row = listed
        .iter()
        .find(|a| a["instance_id"] == ea.id.as_str())
        .expect("the east appliance");
    assert_eq!(east_row["role"], "active");
    assert_eq!(east_row["tunnels"][0]["state"], "up");
    assert_eq!(east_row["tunnels"][0]["in_packets"], 10);
    let page = w.admin.page(&format!("/networks/{id}")).await.text();
    assert!(page.contains("id=\"appliances-table\""), "{page}");
    assert!(page.contains(&ea.id) && page.contains(&wb.id));
    assert!(
        page.contains("data-tunnel=\"up\""),
        "the tunnel is drawn as up"
    );
    assert!(
        page.contains("up · 10 / 10"),
        "per-tunnel counters are shown"
    );
}

/// The appliance API as one client address reaches it.
struct Caller<'a> {
    app: &'a crate::support::TestApp,
    addr: &'static str,
}

impl Caller<'_> {
    fn request(
        &self,
        method: Method,
        path: &str,
        credential: Option<&str>,
        body: Option<&Value>,
    ) -> (Client, axum::http::Request<Body>) {
        let c = self.app.client();
        let peer: std::net::SocketAddr = format!("{}:40000", self.addr).parse().expect("address");
        let mut b = c
            .request(method, &format!("/api/appliance/v1{path}"))
            .extension(axum::extract::ConnectInfo(peer));
        if let Some(cred) = credential {
            b = b.header(header::AUTHORIZATION, format!("Bearer {cred}"));
        }
        let req = match body {
            Some(v) => b
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(v.to_string())),
            None => b.body(Body::empty()),
        }
        .expect("request");
        (c, req)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        credential: Option<&str>,
        body: Option<&Value>,
    ) -> crate::support::Response {
        let (mut c, req) = self.request(method, path, credential, body);
        c.send(req).await
    }

    async fn register(&self, token: &str, instance: &Instance) -> crate::support::Response {
        let body = registration(token, instance);
        self.call(Method::POST, "/register", None, Some(&body))
            .await
    }

    async fn poll(&self, credential: &str, query: &str) -> crate::support::Response {
        let path = format!("/config?protocol={PROTOCOL_VERSION}{query}");
        self.call(Method::GET, &path, Some(credential), None).await
    }

    async fn status(&self, credential: Option<&str>, report: &Value) -> crate::support::Response {
        self.call(Method::POST, "/status", credential, Some(report))
            .await
    }
}

/// The answer is the refusal with `code`, and says when to retry.
fn refused(r: &crate::support::Response, status: StatusCode, code: &str) {
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (status, Some(code)),
        "{}",
        r.text()
    );
    if status == StatusCode::TOO_MANY_REQUESTS {
        let wait: u64 = r
            .header("retry-after")
            .expect("Retry-After")
            .parse()
            .expect("seconds");
        assert!((1..=60).contains(&wait), "{wait}");
    }
}

#[tokio::test]
async fn the_appliance_api_limits_registrations_unknown_credentials_requests_and_waiting_polls() {
    use server::appliances::limits::LimitSettings;
    let app = crate::support::TestApp::on_moto_with(4, |s| {
        s.appliance_limits = LimitSettings {
            polls_per_appliance: 2,
            requests_per_appliance: 12,
            registrations_per_address: 4,
            failed_credentials_per_address: 3,
        }
    })
    .await;
    let (w, _) = ready_east_west_in(World::with_app(app).await, "limits").await;
    let east = tokens(&w, "us-east-1").await;
    let (ea, eb) = (
        instance(&w, "us-east-1", 'a').await,
        instance(&w, "us-east-1", 'b').await,
    );
    let from = |addr| Caller { app: &w.app, addr };
    let (first, second, flood, other, b_addr) = (
        from("198.51.100.7"),
        from("198.51.100.8"),
        from("203.0.113.5"),
        from("203.0.113.6"),
        from("203.0.113.9"),
    );

    // Registrations: four attempts a minute from one address, good or bad.
    let r = first.register(&east[&'a'], &ea).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let a: RegisterResponse = serde_json::from_value(r.json()).expect("response");
    for _ in 0..3 {
        let r = first.register("vmb_guessed", &eb).await;
        refused(&r, StatusCode::UNAUTHORIZED, "unknown_token");
    }
    let r = first.register(&east[&'b'], &eb).await;
    refused(&r, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let r = second.register(&east[&'b'], &eb).await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "another address registers: {}",
        r.text()
    );
    let b: RegisterResponse = serde_json::from_value(r.json()).expect("response");

    // Unknown credentials: three a minute from one address (a missing one
    // counts too), then no lookups; other addresses are still answered.
    let r = flood.poll(&a.credential, "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let version = r.json()["version"].as_u64().expect("version");
    for forged in ["vma_1", "vma_2"] {
        refused(
            &flood.poll(forged, "").await,
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        );
    }
    let r = flood.status(None, &json!({})).await;
    refused(&r, StatusCode::UNAUTHORIZED, "unauthenticated");
    refused(
        &flood.poll("vma_4", "").await,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
    );
    refused(
        &other.poll("vma_4", "").await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    );
    // A credential already known keeps working from the limited address.
    let report = json!({"agent_version": "0.1.0", "applied_version": version,
                        "ha_role": "active", "tunnels": []});
    let r = flood.status(Some(&a.credential), &report).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());

    // Waiting long-polls: two per appliance; a third is refused at once.
    let waiting = |n: u64| {
        let limits = w.app.state.appliance_limits.clone();
        crate::support::eventually(
            std::time::Duration::from_secs(20),
            "long-polls waiting",
            move || {
                let now = limits.polls_waiting();
                async move { (now == n).then_some(()) }
            },
        )
    };
    let wait_for_change = format!("&after={version}&wait=3");
    let polls: Vec<_> = (0..2)
        .map(|_| {
            let path = format!("/config?protocol={PROTOCOL_VERSION}{wait_for_change}");
            let (mut c, req) = flood.request(Method::GET, &path, Some(&a.credential), None);
            tokio::spawn(async move { c.send(req).await.status })
        })
        .collect();
    waiting(2).await;
    let r = flood.poll(&a.credential, &wait_for_change).await;
    refused(&r, StatusCode::TOO_MANY_REQUESTS, "too_many_polls");
    assert_eq!(r.header("retry-after"), Some("1"));
    let r = b_addr.poll(&b.credential, "&wait=0").await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "another appliance polls: {}",
        r.text()
    );
    for p in polls {
        assert_eq!(p.await.expect("poll"), StatusCode::NO_CONTENT);
    }
    waiting(0).await;

    // Requests: twelve a minute per appliance; b has used one.
    for n in 2..=12 {
        let r = b_addr.status(Some(&b.credential), &report).await;
        assert_eq!(
            r.status,
            StatusCode::NO_CONTENT,
            "request {n}: {}",
            r.text()
        );
    }
    let r = b_addr.status(Some(&b.credential), &report).await;
    refused(&r, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let r = flood.poll(&a.credential, "&wait=0").await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "a is not held up by b: {}",
        r.text()
    );
}

/// Registers members a and b of the east and the west site; their
/// credentials, in that order.
async fn register_both_members_of_east_and_west(w: &World, c: &mut Client) -> Vec<String> {
    let mut credentials = Vec::new();
    for region in ["us-east-1", "eu-west-1"] {
        let t = tokens(w, region).await;
        for member in ['a', 'b'] {
            let (s, r) = register(
                c,
                registration(&t[&member], &instance(w, region, member).await),
            )
            .await;
            assert_eq!(s, StatusCode::CREATED, "{r}");
            let r: RegisterResponse = serde_json::from_value(r).expect("response");
            credentials.push(r.credential);
        }
    }
    credentials
}

#[tokio::test]
async fn one_change_is_compiled_once_for_all_the_waiting_polls_of_its_network() {
    let (w, id) = ready_east_west("one compile").await;
    let mut c = w.app.client();
    let credentials = register_both_members_of_east_and_west(&w, &mut c).await;
    let mut versions = Vec::new();
    for cred in &credentials {
        let (s, cfg) = config(&mut c, cred, "").await;
        assert_eq!(s, StatusCode::OK);
        versions.push(cfg.expect("config").version);
    }
    // Every notification so far has been heard (they arrive in order): a
    // marker sent now comes back after them.
    let marker = uuid::Uuid::new_v4();
    let mut heard = w.app.state.config_waiters.subscribe(marker);
    sqlx::query("SELECT pg_notify('vpcmesh_config', $1)")
        .bind(marker.to_string())
        .execute(&w.app.pool)
        .await
        .expect("notify");
    tokio::time::timeout(std::time::Duration::from_secs(10), heard.changed())
        .await
        .expect("the marker is heard within 10 s")
        .expect("the marker's counter stays");

    // Two waiting polls per appliance, eight in all.
    let polls: Vec<_> = credentials
        .iter()
        .zip(&versions)
        .flat_map(|(cred, v)| [(cred.clone(), *v), (cred.clone(), *v)])
        .map(|(cred, v)| {
            let mut pc = w.app.client();
            tokio::spawn(
                async move { config(&mut pc, &cred, &format!("?after={v}&wait=30")).await },
            )
        })
        .collect();
    let limits = w.app.state.appliance_limits.clone();
    crate::support::eventually(
        std::time::Duration::from_secs(20),
        "eight polls waiting",
        || {
            let n = limits.polls_waiting();
            async move { (n == 8).then_some(()) }
        },
    )
    .await;
    let before = w.app.state.snapshots.loads();

    // One change of the network, in one statement: NAT-T switched.
    let nat_t: bool = sqlx::query_scalar(
        "UPDATE networks SET options = jsonb_set(options, '{nat_t}',
                to_jsonb(NOT (options->>'nat_t')::boolean))
          WHERE id = $1::uuid RETURNING (options->>'nat_t')::boolean",
    )
    .bind(&id)
    .fetch_one(&w.app.pool)
    .await
    .expect("change");
    for p in polls {
        let (s, cfg) = p.await.expect("poll");
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            cfg.expect("config").nat_traversal,
            nat_t,
            "the change is in every answer"
        );
    }
    assert_eq!(
        w.app.state.snapshots.loads() - before,
        1,
        "eight polls woken by one change share one compile of the network"
    );
}

/// Every agent asks without a version after a server restart: the polls of
/// one network that asked while a fresh load ran share the next one, which
/// began after all of them asked (so each still sees every write made
/// before it asked).
#[tokio::test]
async fn polls_without_a_version_that_ask_together_share_the_fresh_loads() {
    let (w, id) = ready_east_west("fresh burst").await;
    let network: uuid::Uuid = id.parse().expect("network id");
    let mut c = w.app.client();
    let credentials = register_both_members_of_east_and_west(&w, &mut c).await;
    // Each appliance asks once (credential cached, protocol recorded).
    for cred in &credentials {
        assert_eq!(config(&mut c, cred, "").await.0, StatusCode::OK);
    }
    // The first fresh load is held up by a lock on the sites, while the
    // others (two polls per appliance, eight in all) queue behind it.
    let mut lock = w.app.pool.begin().await.expect("transaction");
    sqlx::query("LOCK TABLE sites IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock");
    let before = w.app.state.snapshots.loads();
    let polls: Vec<_> = credentials
        .iter()
        .flat_map(|cred| [cred.clone(), cred.clone()])
        .map(|cred| {
            let mut pc = w.app.client();
            tokio::spawn(async move { config(&mut pc, &cred, "").await })
        })
        .collect();
    let snapshots = w.app.state.clone();
    crate::support::eventually(
        std::time::Duration::from_secs(20),
        "eight polls at the network's fresh-load turn",
        || {
            let n = snapshots.snapshots.fresh_waiting(network);
            async move { (n == 8).then_some(()) }
        },
    )
    .await;
    lock.rollback().await.expect("unlock");
    for p in polls {
        let (s, cfg) = p.await.expect("poll");
        assert_eq!(s, StatusCode::OK);
        assert_eq!(cfg.expect("config").tunnels.len(), 1);
    }
    assert_eq!(
        w.app.state.snapshots.loads() - before,
        2,
        "the held load, and one for the seven that asked meanwhile"
    );
}
