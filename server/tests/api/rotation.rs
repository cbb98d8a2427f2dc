//! Make-before-break key rotation through the appliance API: senders move to
//! the new epoch only after every live appliance of the receiving site
//! accepts it, the old epoch is retired after everyone sends with the new
//! one, a dead appliance does not hold a rotation up, and invalidation ends
//! one at once.

use crate::appliances::{
    config, instance, ready_east_west, register, registration, status, tokens, Instance,
};
use crate::support::Client;
use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use vpcmesh_protocol::{DesiredConfig, RegisterResponse};

/// What an agent reports after applying `cfg`: the epochs it accepts, and
/// per tunnel the state and the epoch it sends with.
fn report(cfg: &DesiredConfig, state: &str) -> String {
    let tunnels: Vec<Value> = cfg
        .tunnels
        .iter()
        .map(|t| {
            json!({"peer_site": t.peer_site, "state": state, "out_epoch": t.out.epoch,
                   "out_bytes": 840, "out_packets": 10, "in_bytes": 840, "in_packets": 10, "in_errors": 0})
        })
        .collect();
    json!({"agent_version": "0.1.0", "applied_version": cfg.version, "ha_role": "active",
           "epochs": cfg.epochs(), "tunnels": tunnels})
    .to_string()
}

struct Appliance {
    credential: String,
}

impl Appliance {
    async fn config(&self, c: &mut Client) -> DesiredConfig {
        let (s, cfg) = config(c, &self.credential, "").await;
        assert_eq!(s, StatusCode::OK);
        let cfg = cfg.expect("a config");
        assert_eq!(cfg.validate(), Ok(()));
        cfg
    }

    /// Fetches its config, "applies" it and reports, as the agent does.
    async fn apply_and_report(&self, c: &mut Client, state: &str) -> DesiredConfig {
        let cfg = self.config(c).await;
        assert_eq!(
            status(c, &self.credential, &report(&cfg, state)).await,
            StatusCode::NO_CONTENT
        );
        cfg
    }
}

async fn join(c: &mut Client, token: &str, instance: &Instance) -> Appliance {
    let (s, r) = register(c, registration(token, instance)).await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    let r: RegisterResponse = serde_json::from_value(r).expect("response");
    Appliance {
        credential: r.credential,
    }
}

fn epoch_states(net: &Value) -> Vec<(i64, String)> {
    net["key_epochs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|k| {
            (
                k["epoch"].as_i64().unwrap_or_default(),
                k["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_rotation_moves_senders_only_after_their_peers_accept_and_then_retires_the_old_key() {
    let (mut w, id) = ready_east_west("rotation").await;
    let east = tokens(&w, "us-east-1").await;
    let west = tokens(&w, "eu-west-1").await;
    let mut c = w.app.client();
    let west_b = instance(&w, "eu-west-1", 'b').await;
    let ea = join(&mut c, &east[&'a'], &instance(&w, "us-east-1", 'a').await).await;
    let wa = join(&mut c, &west[&'a'], &instance(&w, "eu-west-1", 'a').await).await;
    let wb = join(&mut c, &west[&'b'], &west_b).await;
    let before = ea.apply_and_report(&mut c, "up").await;
    wa.apply_and_report(&mut c, "up").await;
    wb.apply_and_report(&mut c, "up").await;
    let net_path = format!("/api/v1/networks/{id}");
    let rotate_path = format!("/api/v1/networks/{id}/keys/rotate");

    // Rotate: epoch 1 keeps being accepted while epoch 2 comes in.
    let r = w.admin.json(Method::POST, &rotate_path, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let net = r.json();
    assert_eq!(
        epoch_states(&net),
        vec![(1, "retiring".into()), (2, "active".into())]
    );
    let progress = &net["key_epochs"][1]["rotation"];
    assert_eq!(
        (
            &progress["live"],
            &progress["accepting"],
            &progress["sending"]
        ),
        (&json!(3), &json!(0), &json!(0))
    );
    // The console names whom the rotation waits for, and why.
    let waiting = progress["waiting"].as_array().cloned().unwrap_or_default();
    assert_eq!(waiting.len(), 3, "{progress}");
    assert!(waiting
        .iter()
        .any(|l| l["instance_id"] == west_b.id.as_str()
            && l["region"] == "eu-west-1"
            && l["member"] == "B"
            && l["reason"] == "does not accept epoch 2 yet"));
    let page = w.admin.page(&format!("/networks/{id}")).await.text();
    assert!(
        page.contains("id=\"rotation-waiting\"") && page.contains(&west_b.id),
        "{page}"
    );
    // One rotation at a time.
    let r = w.admin.json(Method::POST, &rotate_path, None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    assert!(
        r.text().contains("rotation is still in progress"),
        "{}",
        r.text()
    );

    // Every appliance now accepts both epochs, on SPIs that differ in the
    // top bit; the east sender stays on epoch 1: the west accepts only 1.
    let e1 = ea.config(&mut c).await;
    assert_eq!(e1.epochs(), vec![2, 1]);
    let t = &e1.tunnels[0];
    assert_eq!(t.inbound.len(), 4);
    assert_eq!((t.out.epoch, t.out.spi), (1, before.tunnels[0].out.spi));
    for i in t.inbound.iter().filter(|i| i.epoch == 2) {
        let old = t
            .inbound
            .iter()
            .find(|o| o.epoch == 1 && o.member == i.member)
            .expect("the same member in epoch 1");
        assert_eq!(i.spi, old.spi ^ (1 << 31));
        assert_ne!(i.spi, old.spi);
    }
    ea.apply_and_report(&mut c, "rekeying").await;

    // West A accepts epoch 2; west B does not yet: east still sends with 1.
    wa.apply_and_report(&mut c, "rekeying").await;
    assert_eq!(ea.config(&mut c).await.tunnels[0].out.epoch, 1);

    // West B's report wakes east's waiting long-poll with the switch.
    let version = ea.config(&mut c).await.version;
    let mut waiting = w.app.client();
    let credential = ea.credential.clone();
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
    tokio::time::sleep(Duration::from_millis(500)).await;
    let w_cfg = wb.apply_and_report(&mut c, "rekeying").await;
    let ((s, switched), waited) = poll.await.expect("the long-poll");
    assert_eq!(s, StatusCode::OK);
    assert!(waited < Duration::from_secs(10), "woken after {waited:?}");
    let switched = switched.expect("a config");
    let out = switched.tunnels[0].out;
    assert_eq!(out.epoch, 2);
    // What east now sends with is what the west accepts from east A in epoch 2.
    assert!(w_cfg.tunnels[0]
        .inbound
        .iter()
        .any(|i| i.epoch == 2 && i.spi == out.spi));
    // East reported accepting 2 before: the west sends with 2 as well.
    assert_eq!(wa.config(&mut c).await.tunnels[0].out.epoch, 2);

    // The graph shows the tunnel rekeying while both epochs are in play.
    ea.apply_and_report(&mut c, "rekeying").await;
    let page = w.admin.page(&format!("/networks/{id}")).await.text();
    assert!(page.contains("data-tunnel=\"rekeying\""), "{page}");
    assert!(page.contains("id=\"rotation-progress\""), "{page}");
    // Every live appliance now accepts and sends epoch 2: nobody is waited
    // for, only the grace period runs.
    let net = w.admin.get(&net_path).await.json();
    assert_eq!(
        net["key_epochs"][1]["rotation"]["waiting"],
        json!([]),
        "{net}"
    );

    // Everyone sends with 2: after the grace (2 s in tests) epoch 1 retires
    // and leaves every config.
    wa.apply_and_report(&mut c, "rekeying").await;
    wb.apply_and_report(&mut c, "rekeying").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let net = w.admin.get(&net_path).await.json();
        if epoch_states(&net) == vec![(1, "retired".into()), (2, "active".into())] {
            assert_eq!(net["key_epochs"][1]["rotation"], Value::Null);
            break;
        }
        assert!(Instant::now() < deadline, "epoch 1 never retired: {net}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for a in [&ea, &wa, &wb] {
        let cfg = a.apply_and_report(&mut c, "up").await;
        assert_eq!(cfg.epochs(), vec![2]);
        assert!(cfg.tunnels.iter().all(|t| t.out.epoch == 2
            && t.inbound.len() == 2
            && t.inbound.iter().all(|i| i.epoch == 2)));
    }
    let page = w.admin.page(&format!("/networks/{id}")).await.text();
    assert!(page.contains("data-tunnel=\"up\""), "{page}");

    // A dead appliance does not hold a rotation up: west B stops reporting;
    // once west A accepts epoch 3, east sends with it.
    sqlx::query(
        "UPDATE appliances SET last_seen_at = now() - interval '10 minutes'
          WHERE instance_id = $1",
    )
    .bind(&west_b.id)
    .execute(&w.app.state.pool)
    .await
    .expect("age west B");
    let r = w.admin.json(Method::POST, &rotate_path, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let progress = &r.json()["key_epochs"][2]["rotation"];
    assert_eq!(
        (
            &progress["live"],
            &progress["accepting"],
            &progress["sending"]
        ),
        (&json!(2), &json!(0), &json!(0))
    );
    assert_eq!(ea.config(&mut c).await.tunnels[0].out.epoch, 2);
    wa.apply_and_report(&mut c, "rekeying").await;
    assert_eq!(ea.config(&mut c).await.tunnels[0].out.epoch, 3);

    // Invalidating the retiring epoch ends the rotation at once.
    let r = w
        .admin
        .json(
            Method::POST,
            &format!("/api/v1/networks/{id}/keys/2/invalidate"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        epoch_states(&r.json()),
        vec![
            (1, "retired".into()),
            (2, "invalidated".into()),
            (3, "active".into())
        ]
    );
    for a in [&ea, &wa] {
        let cfg = a.config(&mut c).await;
        assert_eq!(cfg.epochs(), vec![3]);
        assert!(cfg.tunnels.iter().all(|t| t.out.epoch == 3));
    }

    // Reports naming impossible epochs are refused.
    let bad =
        json!({"agent_version": "0.1.0", "ha_role": "active", "epochs": [1, 2, 3], "tunnels": []});
    assert_eq!(
        status(&mut c, &ea.credential, &bad.to_string()).await,
        StatusCode::BAD_REQUEST
    );
    let bad = json!({"agent_version": "0.1.0", "ha_role": "active", "epochs": [0], "tunnels": []});
    assert_eq!(
        status(&mut c, &ea.credential, &bad.to_string()).await,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn keys_rotate_on_their_schedule_and_bad_schedules_are_refused() {
    let (mut w, id) = ready_east_west("scheduled").await;
    let path = format!("/api/v1/networks/{id}/keys/schedule");
    let net_path = format!("/api/v1/networks/{id}");

    // Bad values are refused with the field, and change nothing.
    for body in [
        json!({"every_days": 0}),
        json!({"every_days": 366}),
        json!({"every_days": "monthly"}),
    ] {
        let r = w.admin.json(Method::PUT, &path, Some(body.clone())).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text());
        assert!(r.text().contains("every_days"), "{body}: {}", r.text());
    }
    assert_eq!(
        w.admin.get(&net_path).await.json()["rotate_every_days"],
        Value::Null
    );
    // Members cannot set it; other organizations do not see the network.
    let acme: uuid::Uuid = sqlx::query_scalar("SELECT id FROM organizations WHERE name = 'Acme'")
        .fetch_one(&w.app.pool)
        .await
        .expect("acme");
    w.app
        .add_user(acme, "max@acme.test", app::api::Role::Member)
        .await;
    let mut max = w.app.signed_in("max@acme.test").await;
    let r = max
        .json(Method::PUT, &path, Some(json!({"every_days": 30})))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    w.app.org_with_admin("Globex", "hank@globex.test").await;
    let mut hank = w.app.signed_in("hank@globex.test").await;
    let r = hank
        .json(Method::PUT, &path, Some(json!({"every_days": 30})))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());

    // Every 30 days: the next rotation is 30 days after the active epoch.
    let r = w
        .admin
        .json(Method::PUT, &path, Some(json!({"every_days": 30})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let net = r.json();
    assert_eq!(net["rotate_every_days"], 30);
    let created = net["key_epochs"][0]["created_at"]
        .as_str()
        .expect("created")
        .to_string();
    let next = net["next_rotation_at"].as_str().expect("next rotation");
    let parse = |t: &str| {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .expect("an RFC 3339 time")
    };
    assert_eq!(parse(next) - parse(&created), time::Duration::days(30));
    let page = w.admin.page(&format!("/networks/{id}")).await.text();
    assert!(
        page.contains("Rotates automatically every 30 days"),
        "{page}"
    );

    // Not due yet: nothing happens. Once the epoch is 31 days old the
    // sweeper rotates it, audited as scheduled (no user), exactly once.
    assert!(server::networks::schedule::rotate_due(&w.app.state)
        .await
        .is_empty());
    sqlx::query(
        "UPDATE key_epochs SET created_at = now() - interval '31 days' WHERE network_id = $1::uuid",
    )
    .bind(&id)
    .execute(&w.app.state.pool)
    .await
    .expect("age the key");
    // Two replicas' sweepers find it due at the same moment: it rotates once.
    let (one, other) = tokio::join!(
        server::networks::schedule::rotate_due(&w.app.state),
        server::networks::schedule::rotate_due(&w.app.state),
    );
    let done: Vec<_> = one.iter().chain(other.iter()).collect();
    let rotated: Vec<i32> = done
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok().copied())
        .collect();
    assert_eq!(rotated, vec![2], "{done:?}");
    for (_, r) in &done {
        if let Err(e) = r {
            assert!(
                matches!(e, app::api::ConsoleError::Conflict { .. }),
                "{e:?}"
            );
        }
    }
    assert!(server::networks::schedule::rotate_due(&w.app.state)
        .await
        .is_empty());
    let (actor, target): (Option<uuid::Uuid>, String) = sqlx::query_as(
        "SELECT actor_id, target FROM audit_events WHERE action = 'network.key.rotated'",
    )
    .fetch_one(&w.app.state.pool)
    .await
    .expect("one rotation audited");
    assert_eq!(actor, None);
    assert!(target.ends_with("epoch 2 (scheduled)"), "{target}");
    let net = w.admin.get(&net_path).await.json();
    // No appliance was live, so epoch 1 retired at once.
    assert_eq!(
        epoch_states(&net),
        vec![(1, "retired".into()), (2, "active".into())]
    );

    // Off again.
    let r = w
        .admin
        .json(Method::PUT, &path, Some(json!({"every_days": null})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["rotate_every_days"], Value::Null);
    let page = w.admin.page(&format!("/networks/{id}")).await.text();
    assert!(page.contains("Automatic rotation is off."), "{page}");
}

/// Ages every appliance of the network past the live window, as if none had
/// reported for ten minutes (cut off, or every server replica restarted).
async fn silence(w: &crate::networks::World, id: &str) {
    sqlx::query(
        "UPDATE appliances a SET last_seen_at = now() - interval '10 minutes'
           FROM sites s
          WHERE s.id = a.site_id AND s.network_id = $1::uuid",
    )
    .bind(id)
    .execute(&w.app.state.pool)
    .await
    .expect("age appliances");
}

#[tokio::test]
async fn a_site_that_stops_reporting_holds_the_old_key_until_it_is_heard_again() {
    let (mut w, id) = ready_east_west("cut-off").await;
    let east = tokens(&w, "us-east-1").await;
    let west = tokens(&w, "eu-west-1").await;
    let mut c = w.app.client();
    let ea = join(&mut c, &east[&'a'], &instance(&w, "us-east-1", 'a').await).await;
    let wa = join(&mut c, &west[&'a'], &instance(&w, "eu-west-1", 'a').await).await;
    ea.apply_and_report(&mut c, "up").await;
    wa.apply_and_report(&mut c, "up").await;
    let net_path = format!("/api/v1/networks/{id}");
    let network: uuid::Uuid = id.parse().expect("network id");
    let pool = w.app.state.pool.clone();
    let advance = || server::appliances::rotation::advance(&pool, network, Duration::ZERO);

    // Nobody reported for ten minutes: the rotation does not retire epoch 1
    // at once (the appliances may well be forwarding with it).
    silence(&w, &id).await;
    let r = w
        .admin
        .json(Method::POST, &format!("{net_path}/keys/rotate"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let net = r.json();
    assert_eq!(
        epoch_states(&net),
        vec![(1, "retiring".into()), (2, "active".into())]
    );
    assert_eq!(
        net["key_epochs"][1]["rotation"]["sites_cut_off"], 2,
        "{net}"
    );

    // East is heard again and accepts 2; west stays silent: east keeps
    // sending 1 to it, and however long the grace, 1 is not retired.
    ea.apply_and_report(&mut c, "rekeying").await;
    let east_cfg = ea.apply_and_report(&mut c, "rekeying").await;
    assert_eq!(east_cfg.epochs(), vec![2, 1]);
    assert_eq!(
        east_cfg.tunnels[0].out.epoch, 1,
        "nobody sends 2 to a silent site"
    );
    for _ in 0..3 {
        assert_eq!(advance().await.expect("advance"), None);
    }
    let net = w.admin.get(&net_path).await.json();
    assert_eq!(
        epoch_states(&net),
        vec![(1, "retiring".into()), (2, "active".into())]
    );
    assert_eq!(
        net["key_epochs"][1]["rotation"]["sites_cut_off"], 1,
        "{net}"
    );
    let page = w.admin.page(&net_path.replace("/api/v1", "")).await.text();
    assert!(page.contains("are not reporting"), "{page}");

    // West is heard again: it accepts 2, east moves to it, both send 2, and
    // only then (after the grace) epoch 1 retires.
    let west_cfg = wa.apply_and_report(&mut c, "rekeying").await;
    assert_eq!(west_cfg.tunnels[0].out.epoch, 2, "east accepts 2 already");
    assert_eq!(
        ea.apply_and_report(&mut c, "rekeying").await.tunnels[0]
            .out
            .epoch,
        2
    );
    wa.apply_and_report(&mut c, "rekeying").await;
    // Status reports advance rotations too: the grace may already run.
    let mut retired = None;
    for _ in 0..2 {
        retired = retired.or(advance().await.expect("advance"));
    }
    if retired.is_none() {
        // The server's own sweeper may have retired it in between.
        let net = w.admin.get(&net_path).await.json();
        if epoch_states(&net) == vec![(1, "retired".into()), (2, "active".into())] {
            retired = Some(1);
        }
    }
    assert_eq!(retired, Some(1));
}
