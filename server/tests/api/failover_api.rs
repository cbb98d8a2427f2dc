//! Failover, the server's side, against a network provisioned in moto with
//! its appliances simulated over the real appliance API: each member's
//! config names its partner and the heartbeat timing, status reports say
//! why each member has its role, failovers are recorded once, admins ask
//! for a takeover with "Fail over now", and the health monitor asks for one
//! when an active stops reporting while its partner still does.

use crate::appliances::{
    config, instance, register, registration, running_instances, status, tokens, Instance,
};
use crate::moto::moto;
use crate::networks::{place, World};
use crate::support::eventually;
use crate::support::{Client, TestApp};
use app::api::Role;
use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use server::Settings;
use std::time::{Duration, Instant};
use uuid::Uuid;
use vpcmesh_protocol::{DesiredConfig, Member, RegisterResponse};

/// A ready two-site full mesh (us-east-1, eu-west-1, HA pairs) on a server
/// whose settings `change` adjusts.
async fn ready_pair_network(
    name: &str,
    change: impl FnOnce(&mut Settings) + Send + 'static,
) -> (World, String) {
    let app = TestApp::on_moto_with(4, change).await;
    let mut w = World::with_app(app).await;
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

/// An appliance as the agent holds it after registering.
#[derive(Clone)]
struct Agent {
    credential: String,
    id: Uuid,
    site: Uuid,
    instance: Instance,
}

impl Agent {
    async fn join(c: &mut Client, token: &str, instance: Instance) -> Agent {
        let (s, r) = register(c, registration(token, &instance)).await;
        assert_eq!(s, StatusCode::CREATED, "{r}");
        let r: RegisterResponse = serde_json::from_value(r).expect("a registration");
        Agent {
            credential: r.credential,
            id: r.appliance_id,
            site: r.site_id,
            instance,
        }
    }

    /// Today's protocol, checked as the agent checks it.
    async fn config(&self, c: &mut Client) -> DesiredConfig {
        let (s, cfg) = config(c, &self.credential, "").await;
        assert_eq!(s, StatusCode::OK);
        let cfg = cfg.expect("a config");
        assert_eq!(cfg.validate(), Ok(()), "the agent accepts it");
        cfg
    }

    /// A long-poll for a config other than `after`, waiting in the
    /// background: (the new config, how long it waited).
    fn wait_for_change(
        &self,
        app: &TestApp,
        after: u64,
    ) -> tokio::task::JoinHandle<(Option<DesiredConfig>, Duration)> {
        let mut c = app.client();
        let credential = self.credential.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let (_, cfg) = config(&mut c, &credential, &format!("?after={after}&wait=30")).await;
            (cfg, started.elapsed())
        })
    }

    /// A status report with the HA part the agent sends.
    async fn report(
        &self,
        c: &mut Client,
        role: &str,
        reason: &str,
        role_for_ms: u64,
        take_over_done: Option<u64>,
    ) -> StatusCode {
        let body = json!({"agent_version": "0.1.0", "applied_version": null, "ha_role": role,
            "epochs": [1], "tunnels": [],
            "ha": {"reason": reason, "role_for_ms": role_for_ms, "take_over_done": take_over_done,
                   "partner_heard_ms_ago": 40}});
        status(c, &self.credential, &body.to_string()).await
    }

    async fn reports(&self, c: &mut Client, role: &str, reason: &str, take_over_done: Option<u64>) {
        assert_eq!(
            self.report(c, role, reason, 2_000, take_over_done).await,
            StatusCode::NO_CONTENT
        );
    }
}

/// East's pair, registered, A reporting active and B passive.
async fn east_pair(w: &World) -> (Agent, Agent) {
    let east = tokens(w, "us-east-1").await;
    let mut c = w.app.client();
    let a = Agent::join(&mut c, &east[&'a'], instance(w, "us-east-1", 'a').await).await;
    let b = Agent::join(&mut c, &east[&'b'], instance(w, "us-east-1", 'b').await).await;
    a.reports(&mut c, "active", "holds_address", None).await;
    b.reports(&mut c, "passive", "partner_active", None).await;
    (a, b)
}

async fn failover_rows(app: &TestApp) -> i64 {
    app.count("SELECT count(*) FROM failovers").await
}

fn appliance_row<'a>(net: &'a Value, instance_id: &str) -> &'a Value {
    net["appliances"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["instance_id"] == instance_id))
        .unwrap_or_else(|| panic!("appliance {instance_id} in {net}"))
}

#[tokio::test]
async fn a_members_config_names_its_partner_once_it_registers_and_follows_its_replacement() {
    let (w, id) = ready_pair_network("ha-config", |s| {
        s.ha_heartbeat_ms = 50;
        s.ha_dead_after = 4;
    })
    .await;
    // A network from before keys per tunnel: agents of protocol 2 take it.
    crate::appliances::with_network_keys(&w, &id).await;
    let east = tokens(&w, "us-east-1").await;
    let mut c = w.app.client();
    let a = Agent::join(&mut c, &east[&'a'], instance(&w, "us-east-1", 'a').await).await;

    // Alone: timing from the server's flags, no partner yet.
    let alone = a.config(&mut c).await;
    let ha = alone.ha.clone().expect("protocol 3 configs carry the pair");
    assert_eq!(
        (ha.heartbeat_ms, ha.dead_after, ha.partner, ha.take_over),
        (50, 4, None, None)
    );
    // An agent of protocol 2 knows nothing of it and gets no `ha` at all.
    let (s, v2) = config(&mut c, &a.credential, "?protocol=2").await;
    assert_eq!(s, StatusCode::OK);
    let raw = serde_json::to_value(v2.expect("a protocol-2 config")).expect("json");
    assert!(raw.get("ha").is_none(), "{raw}");

    // B registers: A's waiting long-poll wakes with B as its partner.
    let poll = a.wait_for_change(&w.app, alone.version);
    let b = Agent::join(&mut c, &east[&'b'], instance(&w, "us-east-1", 'b').await).await;
    let (woken, waited) = poll.await.expect("the long-poll");
    assert!(waited < Duration::from_secs(10), "woken after {waited:?}");
    let partner = woken
        .expect("a new config")
        .ha
        .and_then(|h| h.partner)
        .expect("B is A's partner");
    assert_eq!(partner.member, Member::B);
    assert_eq!(partner.instance_id, b.instance.id);
    assert_eq!(partner.private_ip.to_string(), b.instance.private_ip);
    let b_partner = b
        .config(&mut c)
        .await
        .ha
        .and_then(|h| h.partner)
        .expect("A is B's partner");
    assert_eq!(
        (b_partner.member, b_partner.instance_id.as_str()),
        (Member::A, a.instance.id.as_str())
    );
    // The other site has no second member yet: nobody there is anyone's partner.
    let west = tokens(&w, "eu-west-1").await;
    let wa = Agent::join(&mut c, &west[&'a'], instance(&w, "eu-west-1", 'a').await).await;
    assert_eq!(wa.config(&mut c).await.ha.and_then(|h| h.partner), None);

    // B's instance is replaced (the group launches a new one): once the
    // replacement registers, A's config names it, and A's poll wakes for it.
    let before = a.config(&mut c).await;
    let poll = a.wait_for_change(&w.app, before.version);
    w.customer
        .query(
            "us-east-1",
            "autoscaling",
            &[
                ("Action", "TerminateInstanceInAutoScalingGroup"),
                ("Version", "2011-01-01"),
                ("InstanceId", &b.instance.id),
                ("ShouldDecrementDesiredCapacity", "false"),
            ],
        )
        .await;
    let replacement = eventually(
        Duration::from_secs(60),
        "B's replacement launching",
        || async {
            running_instances(&w.customer, "us-east-1", Some('b'))
                .await
                .into_iter()
                .find(|i| i.id != b.instance.id)
        },
    )
    .await;
    let b2 = Agent::join(&mut c, &east[&'b'], replacement.clone()).await;
    let (woken, _) = poll.await.expect("the long-poll");
    let partner = woken
        .and_then(|c| c.ha)
        .and_then(|h| h.partner)
        .expect("a partner");
    assert_eq!(
        partner.instance_id, replacement.id,
        "the replacement, not the old B"
    );
    assert_eq!(partner.private_ip.to_string(), replacement.private_ip);
    assert_ne!(b2.id, b.id);
}

#[tokio::test]
async fn ha_status_is_recorded_and_shown_and_a_failover_is_recorded_once() {
    let (mut w, id) = ready_pair_network("ha-status", |_| {}).await;
    let (a, b) = east_pair(&w).await;
    let mut c = w.app.client();

    // Why each member has its role, and since when (now - role_for_ms).
    assert_eq!(
        a.report(&mut c, "active", "holds_address", 3_600_000, None)
            .await,
        StatusCode::NO_CONTENT
    );
    let net = w.admin.get(&format!("/api/v1/networks/{id}")).await.json();
    let row = appliance_row(&net, &a.instance.id);
    assert_eq!(
        (row["role"].as_str(), row["ha_reason"].as_str()),
        (Some("active"), Some("holds_address"))
    );
    let since = time::OffsetDateTime::parse(
        row["role_since"].as_str().expect("role_since"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("an RFC 3339 time");
    let age = time::OffsetDateTime::now_utc() - since;
    assert!(
        (age - time::Duration::hours(1)).abs() < time::Duration::seconds(30),
        "active for about an hour: {age}"
    );
    // A reason that belongs to the other role is refused, naming the field.
    let r = a
        .report(&mut c, "passive", "partner_silent", 10, None)
        .await;
    assert_eq!(r, StatusCode::BAD_REQUEST);
    assert_eq!(failover_rows(&w.app).await, 0, "nothing has failed over");

    // B takes over (A fell silent): recorded once, however often B repeats it.
    for _ in 0..3 {
        b.reports(&mut c, "active", "partner_silent", None).await;
    }
    // A's late report (it still thinks it holds the address) and then the
    // truth (the address was taken) add nothing; nor does B restarting.
    a.reports(&mut c, "active", "holds_address", None).await;
    a.reports(&mut c, "passive", "address_taken", None).await;
    b.reports(&mut c, "active", "holds_address", None).await;
    assert_eq!(failover_rows(&w.app).await, 1);
    let net = w.admin.get(&format!("/api/v1/networks/{id}")).await.json();
    let history = net["failovers"].as_array().expect("failovers");
    assert_eq!(history.len(), 1, "{net}");
    let f = &history[0];
    assert_eq!(f["from_instance_id"], a.instance.id.as_str());
    assert_eq!(f["to_instance_id"], b.instance.id.as_str());
    assert_eq!(
        (f["from_member"].as_str(), f["to_member"].as_str()),
        (Some("a"), Some("b"))
    );
    assert_eq!(f["reason"], "partner_silent");
    assert_eq!(f["requested_by"], Value::Null);
    assert_eq!(f["site_id"], b.site.to_string().as_str());

    // A later failover back is a second one.
    a.reports(&mut c, "active", "partner_silent", None).await;
    a.reports(&mut c, "active", "partner_silent", None).await;
    b.reports(&mut c, "passive", "address_taken", None).await;
    assert_eq!(failover_rows(&w.app).await, 2);

    // The network page renders roles with their reasons and the history,
    // without JavaScript.
    let page = w.admin.page(&format!("/networks/{id}")).await.text();
    assert!(page.contains("id=\"failovers-table\""), "{page}");
    assert!(page.contains("took over: partner stopped answering"));
    assert!(page.contains(&format!("B ({}) → A ({})", b.instance.id, a.instance.id)));
    assert!(page.contains(&format!("A ({}) → B ({})", a.instance.id, b.instance.id)));
    assert!(
        page.contains("class=\"small muted role-since\""),
        "role-since in the appliances table"
    );
    assert!(page.contains(" · took over: partner"), "since … · reason");
    assert!(
        page.contains("standby: partner took the Elastic IP"),
        "B's reason in words"
    );
}

/// The part of a page from the failover history on.
fn history_part(page: &str) -> &str {
    page.split("id=\"failovers-table\"")
        .nth(1)
        .unwrap_or_else(|| panic!("no failover history in {page}"))
}

#[tokio::test]
async fn fail_over_now_asks_the_passive_partner_and_wakes_its_long_poll() {
    let (mut w, id) = ready_pair_network("fail-over-now", |_| {}).await;
    let (a, b) = east_pair(&w).await;
    let mut c = w.app.client();
    let before = b.config(&mut c).await;
    assert_eq!(before.ha.as_ref().and_then(|h| h.take_over), None);
    let poll = b.wait_for_change(&w.app, before.version);

    let path = format!("/api/v1/networks/{id}/sites/{}/failover", b.site);
    let r = w.admin.json(Method::POST, &path, None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    let asked = r.json();
    assert_eq!(asked["number"], 1);
    assert_eq!(asked["member"], "b");
    assert_eq!(asked["instance_id"], b.instance.id.as_str());
    assert_eq!(
        asked["requested_by"],
        json!({"kind": "user", "email": "ada@acme.test"})
    );

    // The passive's waiting long-poll wakes with the request; the active's
    // config asks nothing of it.
    let (woken, waited) = poll.await.expect("the long-poll");
    assert!(waited < Duration::from_secs(10), "woken after {waited:?}");
    let woken = woken.expect("a new config");
    assert_eq!(woken.validate(), Ok(()));
    assert_eq!(woken.ha.and_then(|h| h.take_over), Some(1));
    assert_eq!(a.config(&mut c).await.ha.and_then(|h| h.take_over), None);
    let audited: Vec<String> = sqlx::query_scalar(
        "SELECT target FROM audit_events WHERE action = 'network.site.failover'",
    )
    .fetch_all(&w.app.pool)
    .await
    .expect("audit");
    assert_eq!(audited.len(), 1);
    assert!(
        audited[0].contains(&b.instance.id) && audited[0].contains("request 1"),
        "{audited:?}"
    );

    // While it is in progress a second one is refused, saying why.
    let r = w.admin.json(Method::POST, &path, None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    assert!(r.text().contains("is not done yet"), "{}", r.text());
    let page = w.admin.page(&format!("/networks/{id}")).await.text();
    assert!(
        page.contains("Request 1 by ada@acme.test at"),
        "the pending request is shown"
    );
    assert!(page.contains("is taking over…"));

    // B carries it out: done, the failover is recorded with who asked, and
    // B's config stops asking.
    b.reports(&mut c, "active", "requested", Some(1)).await;
    a.reports(&mut c, "passive", "address_taken", None).await;
    assert_eq!(b.config(&mut c).await.ha.and_then(|h| h.take_over), None);
    let net = w.admin.get(&format!("/api/v1/networks/{id}")).await.json();
    let f = &net["failovers"][0];
    assert_eq!(
        (f["reason"].as_str(), f["to_member"].as_str()),
        (Some("requested"), Some("b"))
    );
    assert_eq!(
        f["requested_by"],
        json!({"kind": "user", "email": "ada@acme.test"})
    );
    let t = &net["takeovers"][0];
    assert!(t["done_at"].is_string(), "{t}");
    let page = w.admin.page(&format!("/networks/{id}")).await.text();
    assert!(page.contains("took over on request"), "{page}");
    assert!(history_part(&page).contains("ada@acme.test"), "{page}");

    // And back again: now A is the passive one, and request 2 is for it.
    let r = w.admin.json(Method::POST, &path, None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    assert_eq!(
        (r.json()["number"].as_u64(), r.json()["member"].as_str()),
        (Some(2), Some("a"))
    );
    assert_eq!(a.config(&mut c).await.ha.and_then(|h| h.take_over), Some(2));
}

#[tokio::test]
async fn fail_over_now_is_refused_to_members_without_a_partner_and_across_organizations() {
    let (mut w, id) = ready_pair_network("fail-over-refused", |_| {}).await;
    let (_, b) = east_pair(&w).await;
    let org: Uuid = sqlx::query_scalar("SELECT id FROM organizations WHERE name = 'Acme'")
        .fetch_one(&w.app.pool)
        .await
        .expect("org");
    w.app.add_user(org, "mia@acme.test", Role::Member).await;
    w.app.org_with_admin("Globex", "gil@globex.test").await;
    let east = format!("/api/v1/networks/{id}/sites/{}/failover", b.site);

    // Members see the pair but may not move it.
    let mut mia = w.app.signed_in("mia@acme.test").await;
    let r = mia.json(Method::POST, &east, None).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let page = mia.page(&format!("/networks/{id}")).await.text();
    assert!(page.contains("id=\"ha-sites-table\""), "{page}");
    assert!(
        !page.contains("Fail over now</button>"),
        "no button for members"
    );
    let page = w.admin.page(&format!("/networks/{id}")).await.text();
    assert!(
        page.contains("Fail over now</button>"),
        "admins get the button"
    );
    assert!(
        page.contains("type=\"checkbox\" required class=\"confirm-fail-over\""),
        "behind a confirmation"
    );

    // Another organization's admin: the network does not exist for them.
    let mut gil = w.app.signed_in("gil@globex.test").await;
    let r = gil.json(Method::POST, &east, None).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    // Unknown site of a known network; malformed ids.
    let r = w
        .admin
        .json(
            Method::POST,
            &format!("/api/v1/networks/{id}/sites/{}/failover", Uuid::new_v4()),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    let r = w
        .admin
        .json(
            Method::POST,
            &format!("/api/v1/networks/{id}/sites/nope/failover"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());

    // West has only member A registered: no passive partner to take over.
    let west = tokens(&w, "eu-west-1").await;
    let mut c = w.app.client();
    let wa = Agent::join(&mut c, &west[&'a'], instance(&w, "eu-west-1", 'a').await).await;
    wa.reports(&mut c, "active", "claimed", None).await;
    let r = w
        .admin
        .json(
            Method::POST,
            &format!("/api/v1/networks/{id}/sites/{}/failover", wa.site),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    assert!(
        r.text().contains("no registered passive partner"),
        "{}",
        r.text()
    );
    assert_eq!(
        w.app.count("SELECT count(*) FROM takeover_requests").await,
        0,
        "nothing asked"
    );
}

/// Reports for `agent` every 300 ms as `role` / `reason` until the handle
/// is aborted: a member that stays alive.
fn keep_reporting(
    app: &TestApp,
    agent: &Agent,
    role: &'static str,
    reason: &'static str,
) -> tokio::task::JoinHandle<()> {
    let mut c = app.client();
    let agent = agent.clone();
    tokio::spawn(async move {
        loop {
            agent.reports(&mut c, role, reason, None).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
}

#[tokio::test]
async fn the_health_monitor_asks_the_partner_of_a_silent_active_to_take_over_once() {
    let (mut w, id) = ready_pair_network("backstop", |s| {
        s.failover_after = Duration::from_secs(2);
        s.failover_retry = Duration::from_secs(3);
    })
    .await;
    let (a, b) = east_pair(&w).await;
    let mut c = w.app.client();
    let before = b.config(&mut c).await;
    server::failover::monitor::spawn(w.app.state.clone());

    // Both report: there is nothing to ask.
    let (retry, after) = (Duration::from_secs(3), Duration::from_secs(2));
    let a_alive = keep_reporting(&w.app, &a, "active", "holds_address");
    let b_alive = keep_reporting(&w.app, &b, "passive", "partner_active");
    for _ in 0..5 {
        let issued = server::failover::monitor::sweep(&w.app.pool, after, retry).await;
        assert_eq!(issued, vec![], "a healthy pair is left alone");
    }

    // A's control channel freezes (its heartbeats would still reach B, so B
    // stays passive): the monitor asks B, through B's config.
    a_alive.abort();
    let silent_from = Instant::now();
    let poll = b.wait_for_change(&w.app, before.version);
    let (woken, _) = poll.await.expect("the long-poll");
    let asked_after = silent_from.elapsed();
    assert_eq!(woken.and_then(|c| c.ha).and_then(|h| h.take_over), Some(1));
    // A's last report was at most 300 ms before it froze.
    assert!(
        asked_after >= Duration::from_millis(1_500),
        "not before the backstop's time: {asked_after:?}"
    );
    let (source, attempt): (String, i16) =
        sqlx::query_as("SELECT source, attempt FROM takeover_requests WHERE number = 1")
            .fetch_one(&w.app.pool)
            .await
            .expect("the request");
    assert_eq!((source.as_str(), attempt), ("health_monitor", 1));

    // B does not carry it out (it is stuck): asked once more after the
    // retry bound, then never again while that silence lasts, whoever looks.
    let second = eventually(Duration::from_secs(15), "the one retry", || async {
        let n = w.app.count("SELECT count(*) FROM takeover_requests").await;
        (n >= 2).then_some(n)
    })
    .await;
    assert_eq!(second, 2);
    // Once the retry is itself past the bound, a third ask would be due if
    // the monitor looped; two replicas looking at once ask nothing.
    eventually(Duration::from_secs(15), "the retry ageing past the bound", || async {
        let stale: bool = sqlx::query_scalar(
            "SELECT requested_at < now() - interval '3.5 seconds' FROM takeover_requests WHERE number = 2",
        )
        .fetch_one(&w.app.pool)
        .await
        .expect("the retry");
        stale.then_some(())
    })
    .await;
    let other = server::db::connect(&w.app.db_url, 16)
        .await
        .expect("a second pool");
    for _ in 0..10 {
        let (x, y) = tokio::join!(
            server::failover::monitor::sweep(&w.app.pool, after, retry),
            server::failover::monitor::sweep(&other, after, retry)
        );
        assert_eq!((x, y), (vec![], vec![]), "no request loop");
    }
    assert_eq!(
        w.app.count("SELECT count(*) FROM takeover_requests").await,
        2
    );

    // B takes over when asked: the history shows it, by the health monitor.
    b_alive.abort();
    b.reports(&mut c, "active", "requested", Some(2)).await;
    let net = w.admin.get(&format!("/api/v1/networks/{id}")).await.json();
    let f = &net["failovers"][0];
    assert_eq!(f["reason"], "requested");
    assert_eq!(f["requested_by"], json!({"kind": "health_monitor"}));
    assert_eq!(f["from_instance_id"], a.instance.id.as_str());
    let page = w.admin.page(&format!("/networks/{id}")).await.text();
    assert!(history_part(&page).contains("health monitor"), "{page}");
    let audited = w
        .app
        .count("SELECT count(*) FROM audit_events WHERE action = 'network.site.failover' AND actor_id IS NULL")
        .await;
    assert_eq!(audited, 2, "both asks are in the audit log");
}

/// A `vpcmesh-server` process on the test's database with a fast backstop
/// and the monitor's decisions in its log; returns it and its log path.
async fn monitor_process(app: &TestApp, tag: &str) -> (tokio::process::Child, std::path::PathBuf) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let path = std::env::temp_dir().join(format!("vpcmesh-server-{tag}-{port}.log"));
    let log = std::fs::File::create(&path).expect("server log");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_vpcmesh-server"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--database-url", &app.db_url])
        .args(["--aws-endpoint-url", &moto().await.url])
        .args(["--engine-workers", "1"])
        .args(["--failover-after-secs", "1", "--failover-retry-secs", "2"])
        .env("RUST_LOG", "warn,server::failover=debug,server::run=info")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("start vpcmesh-server");
    (child, path)
}

fn waits_logged(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .matches("health monitor waits")
        .count()
}

#[tokio::test]
async fn two_servers_on_one_database_ask_for_one_takeover_per_silence() {
    let (w, _) = ready_pair_network("backstop-replicas", |_| {}).await;
    // A reports once (in east_pair) and never again: both servers see it
    // silent after 1 s.
    let (_a, b) = east_pair(&w).await;
    let (_one, one_log) = monitor_process(&w.app, "monitor-a").await;
    let (_two, two_log) = monitor_process(&w.app, "monitor-b").await;
    // Started (a busy machine takes its time loading the agent binary).
    for log in [&one_log, &two_log] {
        eventually(
            Duration::from_secs(120),
            "a server's health monitor starting",
            || async {
                std::fs::read_to_string(log)
                    .unwrap_or_default()
                    .contains("health monitor started")
                    .then_some(())
            },
        )
        .await;
    }
    let b_alive = keep_reporting(&w.app, &b, "passive", "partner_active");
    let asked = eventually(
        Duration::from_secs(60),
        "a request and its one retry",
        || async {
            let rows: Vec<(i64, i16)> =
                sqlx::query_as("SELECT number, attempt FROM takeover_requests ORDER BY number")
                    .fetch_all(&w.app.pool)
                    .await
                    .expect("requests");
            (rows.len() >= 2).then_some(rows)
        },
    )
    .await;
    // Both servers then look at the site several times more and wait.
    let (one, two) = (waits_logged(&one_log), waits_logged(&two_log));
    eventually(
        Duration::from_secs(60),
        "both servers deciding to wait again",
        || async {
            (waits_logged(&one_log) >= one + 3 && waits_logged(&two_log) >= two + 3).then_some(())
        },
    )
    .await;
    let rows: Vec<(i64, i16, String)> =
        sqlx::query_as("SELECT number, attempt, source FROM takeover_requests ORDER BY number")
            .fetch_all(&w.app.pool)
            .await
            .expect("requests");
    b_alive.abort();
    assert_eq!(asked, vec![(1, 1), (2, 2)]);
    assert_eq!(
        rows,
        vec![
            (1, 1, "health_monitor".to_string()),
            (2, 2, "health_monitor".to_string())
        ],
        "one request and one retry, from two servers"
    );
}
