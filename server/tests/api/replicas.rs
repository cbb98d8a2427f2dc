//! The provisioning engine across real server processes sharing one Postgres:
//! a server killed with SIGKILL mid-job and restarted finishes the job without
//! duplicating anything, and two servers running side by side run every step
//! exactly once.

use crate::{
    moto::moto,
    networks::{appliances, live_stacks, World},
    support::*,
};
use serde_json::{json, Value};
use std::{
    net::TcpListener,
    process::Stdio,
    time::{Duration, Instant},
};
use tokio::process::{Child, Command};

/// A `vpcmesh-server` process on the test's database and moto.
async fn server_process(app: &TestApp, lease_secs: u64, tag: &str) -> Child {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let log = std::fs::File::create(
        std::env::temp_dir().join(format!("vpcmesh-server-{tag}-{port}.log")),
    )
    .expect("server log");
    Command::new(env!("CARGO_BIN_EXE_vpcmesh-server"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--database-url", &app.db_url])
        .args(["--aws-endpoint-url", &moto().await.url])
        .args(["--step-lease-secs", &lease_secs.to_string()])
        .args(["--engine-workers", "4"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("start vpcmesh-server")
}

/// Three regions, one network created and its apply confirmed; no worker in
/// the test process, so nothing runs until a server process starts.
async fn confirmed_full_mesh(w: &mut World) -> (String, Vec<&'static str>) {
    let regions = vec!["us-east-1", "eu-west-1", "ap-southeast-2"];
    let mut sites: Vec<Value> = Vec::new();
    for (i, region) in regions.iter().enumerate() {
        let vpc = w
            .customer
            .vpc(region, &format!("10.{}.0.0/16", 40 + i))
            .await;
        sites.push(w.site(region, &vpc, "edge"));
    }
    let key = w.customer.kms_key("us-east-1").await;
    let net = w
        .create(json!({"name": "replicated", "topology": "full_mesh", "sites": sites, "options": {"kms_key_arn": key}}))
        .await;
    let id = net["id"].as_str().expect("id").to_string();
    w.start(&id, "apply").await;
    (id, regions)
}

async fn step_counts(app: &TestApp) -> (i64, i64) {
    let done = app
        .count("SELECT count(*) FROM job_steps WHERE state = 'succeeded'")
        .await;
    let all = app.count("SELECT count(*) FROM job_steps").await;
    (done, all)
}

/// Every region has exactly the network's two stacks per site, complete, and
/// every site exactly its two appliances.
async fn nothing_twice(w: &World, id: &str, regions: &[&str]) {
    let net = w.admin_get(&format!("/api/v1/networks/{id}")).await;
    for region in regions {
        let stacks = live_stacks(&w.customer, region).await;
        assert_eq!(stacks.len(), 2, "{region}: {stacks:?}");
        assert!(
            stacks.iter().all(|(_, s)| s == "CREATE_COMPLETE"),
            "{stacks:?}"
        );
        let site = net["sites"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["region"] == *region))
            .expect("site");
        let instances = appliances(&w.customer, region, site["id"].as_str().expect("id")).await;
        assert_eq!(instances.len(), 2, "{region}: {instances:?}");
    }
}

#[tokio::test]
async fn a_server_killed_mid_provisioning_resumes_after_restart_and_duplicates_nothing() {
    let mut w = World::with_workers(0).await;
    let (id, regions) = confirmed_full_mesh(&mut w).await;
    assert_eq!(
        step_counts(&w.app).await.0,
        0,
        "nothing runs without a server"
    );

    let mut first = server_process(&w.app, 3, "killed").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (done, all) = step_counts(&w.app).await;
        if done >= 1 {
            assert!(
                done < all,
                "the job finished before the kill; nothing was interrupted"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first server made no progress"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.start_kill().expect("SIGKILL the server");
    first.wait().await.expect("reap the server");
    let (done, all) = step_counts(&w.app).await;
    let leased = w
        .app
        .count("SELECT count(*) FROM job_steps WHERE lease_owner IS NOT NULL")
        .await;
    eprintln!("killed with {done}/{all} steps done, {leased} leased");

    let _second = server_process(&w.app, 3, "restarted").await;
    w.wait_for(&id, "ready").await;
    nothing_twice(&w, &id, &regions).await;
    assert_eq!(step_counts(&w.app).await, (all, all));
    // A step killed after its call and before recording it ran at most once
    // more, and found what the first call created.
    assert_eq!(
        w.app
            .count("SELECT count(*) FROM job_steps WHERE executions > 2")
            .await,
        0
    );
}

#[tokio::test]
async fn two_servers_on_one_database_run_each_step_exactly_once() {
    let mut w = World::with_workers(0).await;
    let _a = server_process(&w.app, 10, "replica-a").await;
    let _b = server_process(&w.app, 10, "replica-b").await;
    let (id, regions) = confirmed_full_mesh(&mut w).await;
    w.wait_for(&id, "ready").await;
    nothing_twice(&w, &id, &regions).await;
    assert_eq!(
        w.app
            .count("SELECT count(*) FROM job_steps WHERE executions <> 1")
            .await,
        0,
        "every step made its change exactly once"
    );
    let owners: i64 = w
        .app
        .count("SELECT count(DISTINCT split_part(lease_owner, '/', 1)) FROM job_steps")
        .await;
    assert_eq!(owners, 0, "no lease is left behind");
}
