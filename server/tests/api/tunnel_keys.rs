//! Keys per tunnel: an appliance's config carries only the keys of its own
//! site's tunnels and of its own site, each bound by its KMS encryption
//! context to the sites it serves, so root on one appliance (or its role)
//! cannot obtain the keys of a tunnel between two other sites.
//!
//! moto stands in for KMS and enforces encryption contexts (they are the
//! ciphertext's associated data) but not IAM: the instance role's condition
//! on the context is proven on the template (templates.rs, parliament).

use crate::appliances::{config, instance, ready_east_west, register, registration, tokens};
use crate::networks::{place, World};
use crate::support::Client;
use axum::http::{Method, StatusCode};
use base64::Engine;
use std::collections::BTreeMap;
use uuid::Uuid;
use vpcmesh_protocol::{encryption_context, DesiredConfig, KeyScope, RegisterResponse};

async fn join(c: &mut Client, w: &World, region: &str) -> String {
    let token = tokens(w, region).await[&'a'].clone();
    let (s, r) = register(c, registration(&token, &instance(w, region, 'a').await)).await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    let r: RegisterResponse = serde_json::from_value(r).expect("registration");
    r.credential
}

async fn config_of(c: &mut Client, credential: &str) -> DesiredConfig {
    let (s, cfg) = config(c, credential, "").await;
    assert_eq!(s, StatusCode::OK);
    let cfg = cfg.expect("a config");
    assert_eq!(cfg.validate(), Ok(()));
    cfg
}

/// KMS's answer to decrypting `ciphertext` (base64) under `scope`.
async fn decrypts(w: &World, cfg: &DesiredConfig, ciphertext: &str, scope: KeyScope) -> bool {
    let key = &cfg.keys[0];
    let blob = base64::engine::general_purpose::STANDARD
        .decode(ciphertext)
        .expect("base64");
    let mut req = w
        .customer
        .kms(&key.region)
        .decrypt()
        .key_id(&key.kms_key_arn)
        .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(blob));
    for (k, v) in encryption_context(&cfg.network_id, key.epoch, scope) {
        req = req.encryption_context(k, v);
    }
    match req.send().await {
        Ok(out) => out.plaintext().is_some_and(|p| p.as_ref().len() == 32),
        Err(_) => false,
    }
}

#[tokio::test]
async fn each_appliance_gets_only_its_own_tunnels_keys_bound_to_their_sites() {
    let mut w = World::new().await;
    let regions = ["us-east-1", "eu-west-1", "ap-southeast-2"];
    let placed = place(
        &w,
        &[
            (regions[0], "10.1.0.0/16", true),
            (regions[1], "10.2.0.0/16", true),
            (regions[2], "10.3.0.0/16", true),
        ],
    )
    .await;
    let (id, _, _) = w.full_mesh("per-tunnel", &placed, "us-east-1").await;
    w.run(&id, "apply", "ready").await;
    let mut c = w.app.client();
    let mut cfgs: BTreeMap<&str, DesiredConfig> = BTreeMap::new();
    for r in regions {
        let credential = join(&mut c, &w, r).await;
        cfgs.insert(r, config_of(&mut c, &credential).await);
    }
    let site = |r: &str| cfgs[r].site_id;

    // Every config: its site's key and one key per tunnel (two each), all
    // naming its own site; no key of a tunnel between two other sites.
    let mut by_ciphertext: BTreeMap<String, KeyScope> = BTreeMap::new();
    for cfg in cfgs.values() {
        assert!(cfg.keys.iter().all(|k| k.per_tunnel));
        assert_eq!(cfg.tunnels.len(), 2);
        let blobs = cfg.key_blobs();
        assert_eq!(blobs.len(), 3, "{blobs:?}");
        for (_, scope, ciphertext) in blobs {
            match scope {
                KeyScope::Site(s) => assert_eq!(s, cfg.site_id),
                KeyScope::Pair(a, b) => assert!(a == cfg.site_id || b == cfg.site_id),
                KeyScope::Network => panic!("a network key in a new network"),
            }
            // The two ends of a tunnel hold the same key; nothing else does.
            if let Some(before) = by_ciphertext.insert(ciphertext.to_string(), scope) {
                assert_eq!(before, scope, "one ciphertext for two scopes");
            }
        }
    }
    assert_eq!(by_ciphertext.len(), 3 + 3, "three sites, three tunnels");

    // KMS gives a tunnel's key only under its own pair of sites: asking as
    // another pair, as the network, or as one site gets nothing.
    let east = &cfgs["us-east-1"];
    let to_west = east
        .tunnels
        .iter()
        .find(|t| t.peer_site == site("eu-west-1"))
        .expect("the east-west tunnel");
    let ciphertext = &to_west.keys[0].ciphertext;
    let (e, wst, ap) = (site("us-east-1"), site("eu-west-1"), site("ap-southeast-2"));
    assert!(decrypts(&w, east, ciphertext, KeyScope::pair(wst, e)).await);
    for wrong in [
        KeyScope::pair(e, ap),
        KeyScope::pair(wst, ap),
        KeyScope::Network,
        KeyScope::Site(e),
        KeyScope::pair(e, Uuid::new_v4()),
    ] {
        assert!(
            !decrypts(&w, east, ciphertext, wrong).await,
            "decrypted as {wrong:?}"
        );
    }
    // A site's own key likewise.
    let own = &east.keys[0].ciphertext;
    assert!(decrypts(&w, east, own, KeyScope::Site(e)).await);
    assert!(!decrypts(&w, east, own, KeyScope::Site(wst)).await);

    // Postgres holds ciphertexts only: each is KMS's blob, not a 32-byte key.
    let lengths: Vec<i32> =
        sqlx::query_scalar("SELECT length(ciphertext) FROM epoch_keys WHERE network_id = $1::uuid")
            .bind(&id)
            .fetch_all(&w.app.pool)
            .await
            .expect("epoch keys");
    assert_eq!(lengths.len(), 6);
    assert!(lengths.iter().all(|l| *l > 32), "{lengths:?}");
}

#[tokio::test]
async fn a_rotation_makes_new_keys_per_tunnel_unless_an_older_agent_still_runs() {
    let (mut w, id) = ready_east_west("per-tunnel-rotation").await;
    let mut c = w.app.client();
    let east = join(&mut c, &w, "us-east-1").await;
    let west = join(&mut c, &w, "eu-west-1").await;
    let before = config_of(&mut c, &east).await;
    config_of(&mut c, &west).await;
    let rotate = format!("/api/v1/networks/{id}/keys/rotate");
    let r = w.admin.json(Method::POST, &rotate, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let after = config_of(&mut c, &east).await;
    assert_eq!(after.epochs(), vec![2, 1]);
    assert!(after.keys.iter().all(|k| k.per_tunnel));
    // Epoch 2's keys are new ones: no ciphertext repeats epoch 1's.
    let old: Vec<String> = before
        .key_blobs()
        .iter()
        .map(|(_, _, c)| c.to_string())
        .collect();
    let new_keys: Vec<String> = after
        .key_blobs()
        .iter()
        .filter(|(k, _, _)| k.epoch == 2)
        .map(|(_, _, c)| c.to_string())
        .collect();
    assert_eq!(new_keys.len(), 2);
    assert!(new_keys.iter().all(|k| !old.contains(k)));
    let invalidate = format!("/api/v1/networks/{id}/keys/1/invalidate");
    let r = w.admin.json(Method::POST, &invalidate, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // West's agent is of an older protocol: it cannot use keys per tunnel,
    // and says so, clearly.
    let (s, _) = config(&mut c, &west, "?protocol=3").await;
    assert_eq!(s, StatusCode::CONFLICT);
    // While it runs, a rotation makes a network key it understands.
    let r = w.admin.json(Method::POST, &rotate, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let (s, _) = config(&mut c, &west, "?protocol=3").await;
    assert_eq!(s, StatusCode::CONFLICT, "epoch 2 is still in play");
    let per_tunnel: Vec<(i32, bool)> = sqlx::query_as(
        "SELECT epoch, per_tunnel FROM key_epochs WHERE network_id = $1::uuid ORDER BY epoch",
    )
    .bind(&id)
    .fetch_all(&w.app.pool)
    .await
    .expect("epochs");
    assert_eq!(per_tunnel, vec![(1, true), (2, true), (3, false)]);
}
