//! Connectivity checks through both APIs: a user asks, each site's active
//! appliance finds a probe in its config naming the other sites' appliances
//! by their inside addresses, the appliances (simulated here, speaking the
//! real appliance API) post what they measured, and the console shows each
//! pair with loss and round-trip times; a site that never reports shows as
//! "no report" once the check's deadline passed.

use crate::appliances::{config, instance, register, registration, status, tokens, Instance};
use crate::networks::{place, World};
use crate::support::{Client, Response, TestApp};
use axum::body::Body;
use axum::http::{header, Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use uuid::Uuid;
use vpcmesh_protocol::{DesiredConfig, ProbeTarget, RegisterResponse};

/// A ready two-site full mesh (us-east-1, eu-west-1, HA) whose checks wait
/// `grace` beyond their echoes for reports.
async fn ready_east_west(name: &str, grace: Duration) -> (World, String) {
    let app = TestApp::on_moto_with(4, |s| s.connectivity_grace = grace).await;
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

/// A registered appliance, as the agent holds it.
struct Sim {
    credential: String,
    site: Uuid,
    instance: Instance,
}

impl Sim {
    async fn join(c: &mut Client, token: &str, instance: Instance) -> Sim {
        let (s, r) = register(c, registration(token, &instance)).await;
        assert_eq!(s, StatusCode::CREATED, "{r}");
        let r: RegisterResponse = serde_json::from_value(r).expect("a registration");
        Sim {
            credential: r.credential,
            site: r.site_id,
            instance,
        }
    }

    /// A status report, which makes it live (reported within 45 s).
    async fn report_status(&self, c: &mut Client, role: &str) {
        let body = json!({"agent_version": "0.1.0", "applied_version": null, "ha_role": role,
                          "epochs": [1], "tunnels": []});
        assert_eq!(
            status(c, &self.credential, &body.to_string()).await,
            StatusCode::NO_CONTENT
        );
    }

    async fn config(&self, c: &mut Client) -> DesiredConfig {
        let (s, cfg) = config(c, &self.credential, "").await;
        assert_eq!(s, StatusCode::OK);
        let cfg = cfg.expect("a config");
        assert_eq!(cfg.validate(), Ok(()), "the agent accepts it");
        cfg
    }

    async fn post_probe(&self, c: &mut Client, body: Value) -> Response {
        let req = c
            .request(Method::POST, "/api/appliance/v1/probe")
            .header(header::AUTHORIZATION, format!("Bearer {}", self.credential))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .expect("request");
        c.send(req).await
    }
}

fn result(peer: Uuid, received: u16) -> Value {
    let rtt = |us: u32| (received > 0).then_some(us);
    json!({"peer_site": peer, "sent": 5, "received": received,
           "rtt_min_us": rtt(900), "rtt_avg_us": rtt(1_250), "rtt_max_us": rtt(2_100)})
}

/// The east and west member-A appliances registered and live, plus west B.
async fn appliances(w: &World) -> (Sim, Sim, Sim) {
    let east = tokens(w, "us-east-1").await;
    let west = tokens(w, "eu-west-1").await;
    let mut c = w.app.client();
    let ea = Sim::join(&mut c, &east[&'a'], instance(w, "us-east-1", 'a').await).await;
    let wa = Sim::join(&mut c, &west[&'a'], instance(w, "eu-west-1", 'a').await).await;
    let wb = Sim::join(&mut c, &west[&'b'], instance(w, "eu-west-1", 'b').await).await;
    ea.report_status(&mut c, "active").await;
    wa.report_status(&mut c, "active").await;
    wb.report_status(&mut c, "passive").await;
    (ea, wa, wb)
}

fn the_pair(check: &Value) -> &Value {
    let pairs = check["pairs"].as_array().expect("pairs");
    assert_eq!(pairs.len(), 1, "two sites make one pair: {check}");
    &pairs[0]
}

/// `pair`'s result measured from `site` (whichever end of the pair it is).
fn from(pair: &Value, site: Uuid) -> &Value {
    if pair["a"]["id"] == site.to_string().as_str() {
        &pair["a_to_b"]
    } else {
        &pair["b_to_a"]
    }
}

#[tokio::test]
async fn a_check_has_each_site_ping_the_others_through_the_tunnels_and_shows_every_pair() {
    let (mut w, id) = ready_east_west("connectivity", Duration::from_secs(20)).await;
    let path = format!("/api/v1/networks/{id}/connectivity");
    let r = w.admin.get(&path).await;
    assert_eq!((r.status, r.json()), (StatusCode::OK, Value::Null));

    // Nothing to ping from before any appliance is live.
    let r = w.admin.json(Method::POST, &path, None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    assert!(
        r.text().contains("No appliance of this network is live"),
        "{}",
        r.text()
    );

    let (ea, wa, wb) = appliances(&w).await;
    let mut c = w.app.client();
    let before = ea.config(&mut c).await;
    assert_eq!(before.probe, None, "no check, no probe");

    // Asking wakes a waiting long-poll with the probe (the insert notifies).
    let mut waiting = w.app.client();
    let credential = ea.credential.clone();
    let version = before.version;
    let poll = tokio::spawn(async move {
        let started = Instant::now();
        let answer = config(
            &mut waiting,
            &credential,
            &format!("?after={version}&wait=30"),
        )
        .await;
        (answer, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = w.admin.json(Method::POST, &path, None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    let check = r.json();
    assert_eq!(check["running"], true);
    assert_eq!(
        (check["count"].as_u64(), check["interval_ms"].as_u64()),
        (Some(5), Some(200))
    );
    assert_eq!(check["requested_by"], "ada@acme.test");
    assert_eq!(the_pair(&check)["state"], "pending");
    let check_id: Uuid = check["id"].as_str().expect("id").parse().expect("a uuid");
    let ((s, woken), waited) = poll.await.expect("the long-poll");
    assert_eq!(s, StatusCode::OK);
    assert!(waited < Duration::from_secs(10), "woken after {waited:?}");
    let probe = woken.expect("a config").probe.expect("a probe");
    assert_eq!(probe.id, check_id);

    // Each site's active appliance pings the other's inside address; the
    // passive member gets no probe.
    let to = |s: &Sim| ProbeTarget {
        peer_site: s.site,
        address: s.instance.private_ip.parse().expect("an address"),
    };
    let east_probe = ea.config(&mut c).await.probe.expect("east probes");
    assert_eq!(
        (east_probe.id, east_probe.count, east_probe.interval_ms),
        (check_id, 5, 200)
    );
    assert_eq!(east_probe.targets, vec![to(&wa)]);
    let west_probe = wa.config(&mut c).await.probe.expect("west probes");
    assert_eq!(west_probe.targets, vec![to(&ea)]);
    assert_eq!(wb.config(&mut c).await.probe, None);

    // One check at a time.
    let r = w.admin.json(Method::POST, &path, None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    assert!(r.text().contains("already running"), "{}", r.text());

    // Reports are checked against the probe they answer.
    let r = ea
        .post_probe(
            &mut c,
            json!({"probe_id": Uuid::new_v4(), "results": [result(wa.site, 5)]}),
        )
        .await;
    assert_eq!(
        (r.status, r.error_code()),
        (StatusCode::NOT_FOUND, "unknown_probe".into())
    );
    for hostile in [
        json!({"probe_id": check_id, "results": [result(Uuid::new_v4(), 5)]}),
        json!({"probe_id": check_id, "results": [result(ea.site, 5)]}),
        json!({"probe_id": check_id, "results": [result(wa.site, 6)]}),
        json!({"probe_id": check_id, "results": [result(wa.site, 5), result(wa.site, 5)]}),
        json!({"probe_id": check_id, "results": [{"peer_site": wa.site, "sent": 4, "received": 0}]}),
    ] {
        let r = ea.post_probe(&mut c, hostile.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{hostile}: {}", r.text());
        assert_eq!(r.json()["error"]["field"], "results", "{}", r.text());
    }
    let r = ea.post_probe(&mut c, json!({"probe_id": check_id})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    let mut stranger = w.app.client();
    let req = stranger
        .request(Method::POST, "/api/appliance/v1/probe")
        .header(header::AUTHORIZATION, "Bearer vma_forged")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"probe_id": check_id, "results": []}).to_string(),
        ))
        .expect("request");
    assert_eq!(stranger.send(req).await.status, StatusCode::UNAUTHORIZED);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM connectivity_results")
        .fetch_one(&w.app.state.pool)
        .await
        .expect("count");
    assert_eq!(stored, 0, "refused reports store nothing");

    // East reports: that direction is in, the pair waits for the west.
    let r = ea
        .post_probe(
            &mut c,
            json!({"probe_id": check_id, "results": [result(wa.site, 5)]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let check = w.admin.get(&path).await.json();
    assert_eq!(check["running"], true);
    let pair = the_pair(&check);
    assert_eq!(pair["state"], "pending");
    assert_eq!(from(pair, ea.site)["received"], 5);
    assert_eq!(from(pair, wa.site), &Value::Null);

    // West reports one echo lost: the check is complete.
    let r = wa
        .post_probe(
            &mut c,
            json!({"probe_id": check_id, "results": [result(ea.site, 4)]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let check = w.admin.get(&path).await.json();
    assert_eq!(check["running"], false, "{check}");
    assert!(check["finished_at"].is_string(), "{check}");
    let pair = the_pair(&check);
    assert_eq!(pair["state"], "loss", "{check}");
    let (east_to_west, west_to_east) = (from(pair, ea.site), from(pair, wa.site));
    assert_eq!(
        (
            &east_to_west["sent"],
            &east_to_west["received"],
            &east_to_west["loss_percent"]
        ),
        (&json!(5), &json!(5), &json!(0))
    );
    assert_eq!(
        (&west_to_east["received"], &west_to_east["loss_percent"]),
        (&json!(4), &json!(20))
    );
    assert_eq!(
        (
            &west_to_east["rtt_min_us"],
            &west_to_east["rtt_avg_us"],
            &west_to_east["rtt_max_us"]
        ),
        (&json!(900), &json!(1250), &json!(2100))
    );
    // A finished check leaves the configs; the network summary carries it.
    assert_eq!(ea.config(&mut c).await.probe, None);
    let net = w.admin.get(&format!("/api/v1/networks/{id}")).await.json();
    assert_eq!(net["connectivity"]["id"], check_id.to_string().as_str());

    // The network page shows the pair, its state and the times.
    let page = w.admin.page(&format!("/networks/{id}")).await.text();
    assert!(page.contains("id=\"connectivity-table\""), "{page}");
    assert!(page.contains("data-state=\"loss\""), "{page}");
    assert!(page.contains("20% loss · 1.25 ms"), "{page}");
    assert!(
        page.contains("min 0.90 ms / avg 1.25 ms / max 2.10 ms"),
        "{page}"
    );

    // Audited, once, with who asked.
    let (actor, target): (Option<String>, Option<String>) = sqlx::query_as(
        "SELECT u.email, a.target FROM audit_events a LEFT JOIN users u ON u.id = a.actor_id
          WHERE a.action = 'network.connectivity_checked'",
    )
    .fetch_one(&w.app.state.pool)
    .await
    .expect("one check audited");
    assert_eq!(
        (actor.as_deref(), target.as_deref()),
        (Some("ada@acme.test"), Some("connectivity"))
    );

    // Any signed-in user of the organization may check; other
    // organizations do not see the network at all.
    let acme: Uuid = sqlx::query_scalar("SELECT id FROM organizations WHERE name = 'Acme'")
        .fetch_one(&w.app.pool)
        .await
        .expect("acme");
    w.app
        .add_user(acme, "max@acme.test", app::api::Role::Member)
        .await;
    w.app.org_with_admin("Globex", "hank@globex.test").await;
    let mut hank = w.app.signed_in("hank@globex.test").await;
    for method in [Method::GET, Method::POST] {
        let r = hank.json(method.clone(), &path, None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{method}: {}", r.text());
    }
    let mut max = w.app.signed_in("max@acme.test").await;
    let r = max.json(Method::POST, &path, None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    assert_eq!(r.json()["requested_by"], "max@acme.test");
    assert_ne!(r.json()["id"], check_id.to_string().as_str(), "a new check");
}

#[tokio::test]
async fn a_site_that_never_reports_shows_no_report_once_the_deadline_passed() {
    // Checks wait 1 s beyond their echoes (1 s) for reports.
    let (mut w, id) = ready_east_west("silent site", Duration::from_secs(1)).await;
    let path = format!("/api/v1/networks/{id}/connectivity");
    let (ea, wa, _wb) = appliances(&w).await;
    let mut c = w.app.client();
    let r = w.admin.json(Method::POST, &path, None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    let check_id = r.json()["id"].as_str().expect("id").to_string();
    let r = ea
        .post_probe(
            &mut c,
            json!({"probe_id": check_id, "results": [result(wa.site, 5)]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());

    // The west never reports: once the deadline passes the pair says so.
    let deadline = Instant::now() + Duration::from_secs(20);
    let check = loop {
        let check = w.admin.get(&path).await.json();
        if check["running"] == false {
            break check;
        }
        assert!(Instant::now() < deadline, "the check never ended: {check}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(check["finished_at"], Value::Null, "not everyone reported");
    let pair = the_pair(&check);
    assert_eq!(pair["state"], "no_report", "{check}");
    assert_eq!(from(pair, ea.site)["received"], 5);
    assert_eq!(from(pair, wa.site), &Value::Null);
    assert_eq!(
        ea.config(&mut c).await.probe,
        None,
        "an ended check leaves the configs"
    );
    let page = w.admin.page(&format!("/networks/{id}")).await.text();
    assert!(page.contains("data-state=\"no report\""), "{page}");

    // A late report still counts: it completes the pair.
    let r = wa
        .post_probe(
            &mut c,
            json!({"probe_id": check_id, "results": [result(ea.site, 0)]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let check = w.admin.get(&path).await.json();
    assert_eq!(the_pair(&check)["state"], "unreachable", "{check}");

    // The ended check no longer blocks a new one, asked here as the
    // console's form does without JavaScript.
    let r = w
        .admin
        .form("/api/check_connectivity", &[("id", id.as_str())])
        .await;
    assert!(r.status.is_redirection(), "{}: {}", r.status, r.text());
    let newer = w.admin.get(&path).await.json();
    assert_ne!(newer["id"], check_id.as_str(), "a new check: {newer}");
    assert_eq!(newer["running"], true, "{newer}");

    // A network that is not provisioned cannot be checked.
    let placed = place(
        &w,
        &[
            ("us-east-1", "10.5.0.0/16", true),
            ("eu-west-1", "10.6.0.0/16", true),
        ],
    )
    .await;
    let (planned, _, _) = w.full_mesh("not yet", &placed, "us-east-1").await;
    let r = w
        .admin
        .json(
            Method::POST,
            &format!("/api/v1/networks/{planned}/connectivity"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    assert!(r.text().contains("not provisioned"), "{}", r.text());
}
