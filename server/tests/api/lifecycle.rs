//! The life of an appliance against moto: who may register (EC2 decides,
//! through the customer's role), SA generations that are never reused, and
//! agents of the previous protocol that keep working.

use crate::appliances::{
    config, instance, ready_east_west, register, registration, status, tokens, Instance,
};
use crate::mirror::Mirror;
use crate::networks::World;
use crate::support::eventually;
use crate::support::Client;
use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use vpcmesh_protocol::{spi_generation, DesiredConfig, Member, RegisterResponse};

/// Protocol 2 as its agents shipped it, kept verbatim: what such an agent
/// parses and accepts.
#[allow(dead_code)]
#[path = "fixtures/protocol_v2.rs"]
mod protocol_v2;

async fn table_counts(w: &World) -> (i64, i64) {
    let appliances: i64 = sqlx::query_scalar("SELECT count(*) FROM appliances")
        .fetch_one(&w.app.state.pool)
        .await
        .expect("count");
    let registered: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE action = 'appliance.registered'",
    )
    .fetch_one(&w.app.state.pool)
    .await
    .expect("count");
    (appliances, registered)
}

#[tokio::test]
async fn a_stolen_token_with_an_instance_ec2_does_not_vouch_for_registers_nothing() {
    let (w, _) = ready_east_west("stolen-token").await;
    let east = tokens(&w, "us-east-1").await;
    let (ea, eb, wa) = (
        instance(&w, "us-east-1", 'a').await,
        instance(&w, "us-east-1", 'b').await,
        instance(&w, "eu-west-1", 'a').await,
    );
    let mut c = w.app.client();
    let before = table_counts(&w).await;
    let mut wrong_ip = ea.clone();
    wrong_ip.private_ip = "10.1.255.254".into();
    let mut wrong_az = ea.clone();
    wrong_az.az = if ea.az.ends_with('a') {
        "us-east-1b".into()
    } else {
        "us-east-1a".into()
    };
    let unknown = Instance {
        id: "i-0123456789abcdef0".into(),
        ..ea.clone()
    };
    for (claim, reason) in [
        (&eb, "not to this member's group"),
        (&wrong_ip, "does not have the private address 10.1.255.254"),
        (&wrong_az, "not in us-east-1"),
        (&unknown, "EC2 does not know instance i-0123456789abcdef0"),
        // Member A of another site (and region), with east A's token.
        (&wa, "EC2 does not know"),
    ] {
        let (s, e) = register(&mut c, registration(&east[&'a'], claim)).await;
        assert_eq!(
            (s, e["error"]["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("instance_not_verified")),
            "{claim:?}: {e}"
        );
        let message = e["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(reason), "{claim:?}: {message}");
    }
    assert_eq!(table_counts(&w).await, before, "nothing registered");
    let refused: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE action = 'appliance.registration_refused'",
    )
    .fetch_one(&w.app.state.pool)
    .await
    .expect("count");
    assert_eq!(refused, 5, "every refusal is audited");

    // The same token with the instance it belongs to works.
    let (s, r) = register(&mut c, registration(&east[&'a'], &ea)).await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
}

/// An appliance as the agent speaks today's protocol: it reports what its kernel
/// holds (the SAs of its applied config, less carried ones it lacks).
struct Agent {
    credential: String,
    /// What the kernel holds, by peer site: (outbound SPI, inbound SPIs).
    held: Vec<(String, Option<u32>, Vec<u32>)>,
}

impl Agent {
    async fn join(c: &mut Client, token: &str, at: &Instance) -> (Agent, u32) {
        let (s, r) = register(c, registration(token, at)).await;
        assert_eq!(s, StatusCode::CREATED, "{r}");
        let r: RegisterResponse = serde_json::from_value(r).expect("response");
        (
            Agent {
                credential: r.credential,
                held: Vec::new(),
            },
            r.generation,
        )
    }

    async fn config(&self, c: &mut Client) -> DesiredConfig {
        let (s, cfg) = config(c, &self.credential, "").await;
        assert_eq!(s, StatusCode::OK);
        let cfg = cfg.expect("a config");
        assert_eq!(cfg.validate(), Ok(()));
        cfg
    }

    /// Applies the config to a kernel that had `self.held` (a rebooted one
    /// holds nothing) and reports.
    async fn apply_and_report(&mut self, c: &mut Client) -> DesiredConfig {
        let cfg = self.config(c).await;
        let had = |peer: &str, spi: u32, out: bool| {
            self.held.iter().any(|(p, o, ins)| {
                p == peer
                    && if out {
                        *o == Some(spi)
                    } else {
                        ins.contains(&spi)
                    }
            })
        };
        let held: Vec<(String, Option<u32>, Vec<u32>)> = cfg
            .tunnels
            .iter()
            .map(|t| {
                let peer = t.peer_site.to_string();
                let out = (!t.out.carried || had(&peer, t.out.spi, true)).then_some(t.out.spi);
                let ins = t
                    .inbound
                    .iter()
                    .filter(|i| !i.carried || had(&peer, i.spi, false))
                    .map(|i| i.spi)
                    .collect();
                (peer, out, ins)
            })
            .collect();
        self.held = held;
        let tunnels: Vec<Value> = self
            .held
            .iter()
            .map(|(peer, out, ins)| {
                json!({"peer_site": peer, "state": "up", "out_epoch": 1, "out_bytes": 84,
                       "out_packets": 1, "in_bytes": 84, "in_packets": 1, "in_errors": 0,
                       "out_spi": out, "inbound_spis": ins})
            })
            .collect();
        let report = json!({"agent_version": "0.1.0", "applied_version": cfg.version,
                            "ha_role": "active", "epochs": [1], "tunnels": tunnels});
        assert_eq!(
            status(c, &self.credential, &report.to_string()).await,
            StatusCode::NO_CONTENT
        );
        cfg
    }

    async fn new_generation(&self, c: &mut Client, above: u32) -> (StatusCode, Value) {
        let req = c
            .request(Method::POST, "/api/appliance/v1/generation")
            .header("authorization", format!("Bearer {}", self.credential))
            .header("content-type", "application/json")
            .body(axum::body::Body::from(
                json!({ "above": above }).to_string(),
            ))
            .expect("request");
        let r = c.send(req).await;
        (r.status, r.json())
    }
}

#[tokio::test]
async fn a_rebooted_appliance_sends_on_fresh_spis_only_once_its_peers_hold_them() {
    let (w, _) = ready_east_west("generations").await;
    let east = tokens(&w, "us-east-1").await;
    let west = tokens(&w, "eu-west-1").await;
    let mut c = w.app.client();
    let (mut ea, g) = Agent::join(&mut c, &east[&'a'], &instance(&w, "us-east-1", 'a').await).await;
    assert_eq!(g, 1);
    let (mut wa, _) = Agent::join(&mut c, &west[&'a'], &instance(&w, "eu-west-1", 'a').await).await;
    let e1 = ea.apply_and_report(&mut c).await;
    let w1 = wa.apply_and_report(&mut c).await;
    assert_eq!(e1.generation, 1);
    let old_out = e1.tunnels[0].out.spi;
    assert!(w1.tunnels[0].inbound.iter().any(|i| i.spi == old_out));

    // East A reboots: its kernel holds nothing, and it asks for a fresh
    // generation instead of putting its old SAs back.
    ea.held.clear();
    let (s, g) = ea.new_generation(&mut c, 1).await;
    assert_eq!(
        (s, g["generation"].as_u64()),
        (StatusCode::OK, Some(2)),
        "{g}"
    );
    let e2 = ea.apply_and_report(&mut c).await;
    assert_eq!(e2.generation, 2);
    // Its last report still says it sends on the old SA: the server offers
    // that one as carried, which the rebooted kernel cannot have and so never
    // installs; its report (holding no outbound SA) moves it on.
    assert_eq!(
        (e2.tunnels[0].out.carried, e2.tunnels[0].out.spi),
        (true, old_out)
    );
    let e2 = ea.apply_and_report(&mut c).await;
    let t = &e2.tunnels[0];
    // It holds nothing to keep sending with, so it uses the new SA at once.
    assert!(!t.out.carried);
    assert_ne!(t.out.spi, old_out, "fresh outbound SPI");
    assert!(spi_generation(t.out.spi) > spi_generation(old_out));
    // Its inbound SAs are new too: every flow into east includes east A's
    // generation. None of them is one its kernel held before (west's old SA
    // is offered as carried, which a rebooted kernel never installs).
    for i in t.inbound.iter().filter(|i| !i.carried) {
        assert!(
            !e1.tunnels[0].inbound.iter().any(|o| o.spi == i.spi),
            "inbound {:#x} reused",
            i.spi
        );
    }

    // West A accepts east A's new SA and keeps the old one while east says
    // it still has it (it does not: it rebooted, so nothing is carried).
    let w2 = wa.apply_and_report(&mut c).await;
    let from_east_a: Vec<_> = w2.tunnels[0]
        .inbound
        .iter()
        .filter(|i| i.member == Member::A)
        .collect();
    assert_eq!(from_east_a.len(), 1, "{from_east_a:?}");
    assert_eq!(from_east_a[0].spi, t.out.spi);
    // West A sends to east on a new generation only once east holds it:
    // east's kernel reported the new inbound SA above, so it switches.
    let to_east = w2.tunnels[0].out;
    assert!(!to_east.carried);
    assert_ne!(to_east.spi, w1.tunnels[0].out.spi);
    assert!(e2.tunnels[0]
        .inbound
        .iter()
        .any(|i| i.spi == to_east.spi && !i.carried));

    // Now west A's kernel loses a SA behind its agent's back: a live sender
    // (it still has its outbound SA) keeps sending on the old one until
    // east holds the new one: make before break.
    let (s, g) = wa.new_generation(&mut c, 1).await;
    assert_eq!(s, StatusCode::OK, "{g}");
    assert_eq!(g["generation"], 2);
    let w3 = wa.config(&mut c).await;
    let out = w3.tunnels[0].out;
    assert!(
        out.carried,
        "keeps the old SA until the peer holds the new one"
    );
    assert_eq!(out.spi, to_east.spi);
    // East is offered the new SA and keeps the one west still sends with.
    let e3 = ea.apply_and_report(&mut c).await;
    let from_west_a: Vec<_> = e3.tunnels[0]
        .inbound
        .iter()
        .filter(|i| i.member == Member::A)
        .collect();
    assert_eq!(from_west_a.len(), 2, "{from_west_a:?}");
    assert!(from_west_a
        .iter()
        .any(|i| i.carried && i.spi == to_east.spi));
    let new_spi = from_west_a
        .iter()
        .find(|i| !i.carried)
        .map(|i| i.spi)
        .expect("the new SA");
    // East now holds it: west moves.
    let w4 = wa.apply_and_report(&mut c).await;
    assert_eq!(
        (w4.tunnels[0].out.spi, w4.tunnels[0].out.carried),
        (new_spi, false)
    );
    // Once west reports sending on it, east drops the carried one.
    let e4 = ea.apply_and_report(&mut c).await;
    assert!(!e4.tunnels[0].inbound.iter().any(|i| i.carried));

    // Generations only grow; one above the member's limit is refused.
    let (s, _) = ea.new_generation(&mut c, 0).await;
    assert_eq!(s, StatusCode::OK);
    let (s, e) = ea.new_generation(&mut c, 1_000_000).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("generations_exhausted"))
    );
}

#[tokio::test]
async fn an_agent_of_the_previous_protocol_gets_configs_it_accepts() {
    let (w, id) = ready_east_west("protocol-2").await;
    // A network from before keys per tunnel: agents of protocol 2 take it.
    crate::appliances::with_network_keys(&w, &id).await;
    let east = tokens(&w, "us-east-1").await;
    let west = tokens(&w, "eu-west-1").await;
    let mut c = w.app.client();
    let (old, _) = Agent::join(&mut c, &east[&'a'], &instance(&w, "us-east-1", 'a').await).await;
    let (mut new, _) =
        Agent::join(&mut c, &west[&'a'], &instance(&w, "eu-west-1", 'a').await).await;
    new.apply_and_report(&mut c).await;

    // No protocol named: the previous one, parsed and validated by that
    // protocol's own code.
    let req = c
        .request(Method::GET, "/api/appliance/v1/config")
        .header("authorization", format!("Bearer {}", old.credential))
        .body(axum::body::Body::empty())
        .expect("request");
    let r = c.send(req).await;
    assert_eq!(r.status, StatusCode::OK);
    let v2: protocol_v2::DesiredConfig =
        serde_json::from_slice(&r.body).expect("a protocol-2 config");
    assert_eq!(v2.protocol, 2);
    assert_eq!(v2.validate(), Ok(()));
    // Its SAs are the ones its protocol-3 peer installs for it, in the shape
    // it programs (no ESN: both ends of an SA must agree).
    let v3 = new.config(&mut c).await;
    assert!(v3.tunnels[0].legacy_sa, "{:?}", v3.tunnels[0]);
    assert!(v3.tunnels[0]
        .inbound
        .iter()
        .any(|i| i.spi == v2.tunnels[0].out.spi));
    assert!(v2.tunnels[0]
        .inbound
        .iter()
        .any(|i| i.spi == v3.tunnels[0].out.spi));
    // A protocol-2 status report (no SPIs) is taken.
    let report = json!({"agent_version": "0.0.9", "applied_version": v2.version, "ha_role": "active",
        "epochs": [1], "tunnels": [{"peer_site": v3.site_id, "state": "up", "out_epoch": 1,
        "out_bytes": 1, "out_packets": 1, "in_bytes": 1, "in_packets": 1, "in_errors": 0}]});
    assert_eq!(
        status(&mut c, &old.credential, &report.to_string()).await,
        StatusCode::NO_CONTENT
    );

    // A protocol this server does not serve is refused with the field.
    let (s, _) = config(&mut c, &old.credential, "?protocol=9").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

/// (instance id, last seen) of the live appliance of a region's member.
async fn live_member(w: &World, region: &str, member: &str) -> Option<(String, bool)> {
    sqlx::query_as(
        "SELECT a.instance_id, a.last_seen_at IS NOT NULL FROM appliances a JOIN sites s ON s.id = a.site_id
          WHERE s.region = $1 AND a.member = $2 AND a.retired_at IS NULL",
    )
    .bind(region)
    .bind(member)
    .fetch_optional(&w.app.state.pool)
    .await
    .expect("appliances")
}

/// Who holds the Elastic IP of the site in `region` (by its allocation id,
/// from the site's stack outputs), and the source/destination check of every
/// instance's interface there.
async fn address_facts(w: &World, region: &str) -> (Option<String>, BTreeMap<String, bool>) {
    let allocation: String =
        sqlx::query_scalar("SELECT outputs->>'AllocationId' FROM sites WHERE region = $1")
            .bind(region)
            .fetch_one(&w.app.state.pool)
            .await
            .expect("the site's allocation id");
    let ec2 = w.customer.ec2(region);
    let addresses = ec2
        .describe_addresses()
        .allocation_ids(&allocation)
        .send()
        .await
        .expect("DescribeAddresses");
    let enis = ec2
        .describe_network_interfaces()
        .send()
        .await
        .expect("DescribeNetworkInterfaces");
    let attached = |eni: &str| {
        enis.network_interfaces()
            .iter()
            .find(|n| n.network_interface_id() == Some(eni))?
            .attachment()?
            .instance_id()
            .map(str::to_string)
    };
    let holder = addresses.addresses().first().and_then(|a| {
        a.instance_id()
            .filter(|i| !i.is_empty())
            .map(str::to_string)
            .or_else(|| attached(a.network_interface_id()?))
    });
    let checks = enis
        .network_interfaces()
        .iter()
        .filter_map(|n| {
            Some((
                n.attachment()?.instance_id()?.to_string(),
                n.source_dest_check().unwrap_or(true),
            ))
        })
        .collect();
    (holder, checks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replaced_instance_registers_by_itself_owns_the_address_and_retires_the_old_one() {
    let (w, _) = ready_east_west("replacement").await;
    let mirror = Mirror::start(&w, &["us-east-1", "eu-west-1"]);
    let started = Instant::now();

    // Every instance's agent registers on its own: its user data, its IMDS.
    for (region, member) in [
        ("us-east-1", "a"),
        ("us-east-1", "b"),
        ("eu-west-1", "a"),
        ("eu-west-1", "b"),
    ] {
        eventually(
            Duration::from_secs(60),
            &format!("{region} {member} registering"),
            || async {
                live_member(&w, region, member)
                    .await
                    .filter(|(_, seen)| *seen)
            },
        )
        .await;
    }
    let registered_all = started.elapsed();
    let old = instance(&w, "us-east-1", 'a').await;
    let old_b = instance(&w, "us-east-1", 'b').await;
    // The active member holds the site's Elastic IP; forwarding is on for both.
    eventually(
        Duration::from_secs(30),
        "east A taking the address",
        || async {
            let (holder, checks) = address_facts(&w, "us-east-1").await;
            (holder.as_deref() == Some(old.id.as_str())
                && checks.get(&old.id) == Some(&false)
                && checks.get(&old_b.id) == Some(&false))
            .then_some(())
        },
    )
    .await;
    let old_credential = mirror
        .credential(&old.id)
        .expect("east A's stored credential");

    // The group replaces member A (as it would after a failed health check).
    let replaced_at = Instant::now();
    w.customer
        .query(
            "us-east-1",
            "autoscaling",
            &[
                ("Action", "TerminateInstanceInAutoScalingGroup"),
                ("Version", "2011-01-01"),
                ("InstanceId", &old.id),
                ("ShouldDecrementDesiredCapacity", "false"),
            ],
        )
        .await;
    let new_id = eventually(
        Duration::from_secs(60),
        "the replacement registering",
        || async {
            live_member(&w, "us-east-1", "a")
                .await
                .filter(|(id, seen)| *seen && id != &old.id)
                .map(|(id, _)| id)
        },
    )
    .await;
    let replacement_took = replaced_at.elapsed();
    let launched = mirror
        .started(&new_id)
        .expect("the mirror runs the replacement");
    let launch_to_registered = launched.elapsed();
    assert!(
        !mirror.mirrored().contains(&old.id),
        "the terminated instance left the mirror"
    );
    eventually(
        Duration::from_secs(30),
        "the replacement taking the address",
        || async {
            let (holder, checks) = address_facts(&w, "us-east-1").await;
            (holder.as_deref() == Some(new_id.as_str()) && checks.get(&new_id) == Some(&false))
                .then_some(())
        },
    )
    .await;

    // The old instance's row is retired and its credential stops working.
    let retired: Option<bool> =
        sqlx::query_scalar("SELECT retired_at IS NOT NULL FROM appliances WHERE instance_id = $1")
            .bind(&old.id)
            .fetch_optional(&w.app.state.pool)
            .await
            .expect("old row");
    assert_eq!(retired, Some(true));
    let mut c = w.app.client();
    let (s, _) = config(&mut c, &old_credential, "").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // The replacement has a generation above the old one's.
    let generations: Vec<i32> = sqlx::query_scalar(
        "SELECT generation FROM appliances WHERE instance_id = ANY($1) ORDER BY registered_at",
    )
    .bind(vec![old.id.clone(), new_id.clone()])
    .fetch_all(&w.app.state.pool)
    .await
    .expect("generations");
    assert_eq!(generations, vec![1, 2]);
    // The audit log tells both.
    let audit: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT action, target FROM audit_events ORDER BY id")
            .fetch_all(&w.app.state.pool)
            .await
            .expect("audit");
    assert!(audit.iter().any(|(a, t)| a == "appliance.retired"
        && t.as_deref()
            .is_some_and(|t| t.contains(&old.id) && t.contains(&new_id))));
    assert!(audit
        .iter()
        .any(|(a, t)| a == "appliance.registered"
            && t.as_deref().is_some_and(|t| t.contains(&new_id))));
    let log = mirror.agent_log(&new_id);
    assert!(
        !log.contains("vmb_") && !log.contains("vma_"),
        "secrets in the log:\n{log}"
    );
    eprintln!(
        "lifecycle in moto: 4 appliances registered {registered_all:?} after the mirror started; \
         replacement: terminate to registered {replacement_took:?}, agent start to registered {launch_to_registered:?}"
    );
}
