//! The demo network `./run.sh` seeds in the local emulator: registered,
//! provisioned to ready, and retired cleanly when the emulator restarts.

use crate::support::*;
use server::demo;
use std::time::{Duration, Instant};

async fn demo_status(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar("SELECT status FROM networks WHERE name = $1 ORDER BY created_at")
        .bind(demo::DEMO_NETWORK)
        .fetch_all(&app.pool)
        .await
        .expect("statuses")
}

async fn wait_ready(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let statuses = demo_status(app).await;
        if statuses.last().map(String::as_str) == Some("ready") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "demo network never got ready: {statuses:?}"
        );
        assert!(!statuses.iter().any(|s| s == "failed"), "{statuses:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_demo_seed_provisions_a_network_and_retires_the_previous_one() {
    let app = TestApp::with_moto().await;
    let email = "admin@demo.vpcmesh.test";
    demo::ensure_demo_admin(&app.pool, email)
        .await
        .expect("demo admin");
    demo::seed_demo_network(&app.state, email)
        .await
        .expect("seed");
    wait_ready(&app).await;
    assert_eq!(
        app.count("SELECT count(*) FROM aws_accounts WHERE last_error IS NULL")
            .await,
        1,
        "the demo account is registered and verified"
    );
    assert_eq!(app.count("SELECT count(*) FROM sites").await, 3);
    assert_eq!(app.count("SELECT count(*) FROM key_epochs").await, 1);

    // A restart (the emulator forgot everything): the old network is retired
    // and a fresh one provisions.
    demo::seed_demo_network(&app.state, email)
        .await
        .expect("seed again");
    wait_ready(&app).await;
    assert_eq!(
        demo_status(&app).await,
        vec!["deleted".to_string(), "ready".to_string()]
    );
    assert_eq!(app.count("SELECT count(*) FROM aws_accounts").await, 1);
}
