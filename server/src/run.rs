//! The server process: database, migrations, demo data, background chores,
//! and the HTTP listener with graceful shutdown.

use crate::{
    appliances::agent_binary::AgentRelease,
    auth::{rate_limit, session},
    aws::Aws,
    db::{self, Durability, PrivateCluster},
    demo, http, provisioning, AppState, Config,
};
use anyhow::Context;
use leptos::prelude::LeptosOptions;
use std::{net::SocketAddr, time::Duration};
use tower_sessions::ExpiredDeletion;

pub async fn run(config: Config) -> anyhow::Result<()> {
    let settings = config.settings()?;
    // Kept alive for the life of the process; dropping it stops Postgres.
    let mut _cluster = None;
    let database_url = match (&config.database_url, &config.embedded_postgres) {
        (Some(url), _) => url.clone(),
        (None, Some(dir)) => {
            let cluster = PrivateCluster::start(dir, Durability::Durable)
                .await
                .context("start the embedded Postgres")?;
            let url = cluster.ensure_database("vpcmesh").await?;
            _cluster = Some(cluster);
            url
        }
        (None, None) => unreachable!("Config::settings requires a database"),
    };
    let pool = db::connect(&database_url, config.db_pool_size)
        .await
        .context("connect to Postgres")?;
    db::migrate(&pool).await.context("apply migrations")?;

    if let Some(email) = &config.demo_admin {
        let password = demo::ensure_demo_admin(&pool, email).await?;
        // Printed for the person at the terminal, never logged.
        println!(
            "\n  Demo console: {}\n  Sign in as {email} with password {password}\n",
            settings.public_origin
        );
    }

    let leptos_options = LeptosOptions::builder()
        .output_name(config.output_name.as_str())
        .site_root(config.site_root.as_str())
        .site_pkg_dir("pkg")
        .site_addr(config.listen)
        .build();
    let aws = match &settings.aws_endpoint_url {
        Some(endpoint) => Aws::local(endpoint.as_str()),
        None => Aws::from_environment().await,
    };
    let workers = settings.engine_workers;
    let agent = match AgentRelease::locate(config.agent_binary.as_deref())? {
        Some((agent, path)) => {
            tracing::info!(path = %path.display(), sha256 = agent.sha256(), bytes = agent.len(), "serving this agent binary to appliances");
            Some(agent)
        }
        None => {
            tracing::warn!("no vpcmesh-agent binary (set --agent-binary PATH): appliance stacks cannot be provisioned");
            None
        }
    };
    let state = AppState::new(pool.clone(), settings, leptos_options, aws).with_agent(agent);
    let owner = provisioning::engine::spawn(state.clone(), workers);
    tracing::info!(%owner, workers, "provisioning engine started");
    crate::networks::schedule::spawn(state.clone());
    if state.settings.failover_after < Duration::from_secs(15) {
        // Agents report every 10 s: a healthy active could be taken over from.
        tracing::warn!(
            secs = state.settings.failover_after.as_secs(),
            "--failover-after-secs is below 15 s; a single late status report can move a site"
        );
    }
    crate::failover::monitor::spawn(state.clone());
    tracing::info!(
        after_secs = state.settings.failover_after.as_secs(),
        retry_secs = state.settings.failover_retry.as_secs(),
        "health monitor started"
    );
    if let (true, Some(email)) = (config.demo_network, &config.demo_admin) {
        // A failed demo seed is worth a warning, not a refusal to start.
        match demo::seed_demo_network(&state, email).await {
            Ok(()) => println!(
                "  Demo network '{}' is provisioning in the local emulator.\n",
                demo::DEMO_NETWORK
            ),
            Err(e) => tracing::warn!(error = %e, "could not seed the demo network"),
        }
    }
    spawn_chores(&pool);
    if let Some(addr) = config.metrics_listen {
        let metrics = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listen for metrics on {addr}"))?;
        tracing::info!(%addr, "serving metrics");
        let router = crate::metrics::router(state.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(metrics, router).await {
                tracing::error!(error = %e, "the metrics listener stopped");
            }
        });
    }

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listen on {}", config.listen))?;
    tracing::info!(addr = %config.listen, aws_endpoint = ?config.aws_endpoint_url.as_ref().map(|u| u.as_str()), "serving the console");
    axum::serve(
        listener,
        http::router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await?;
    pool.close().await;
    tracing::info!("stopped");
    Ok(())
}

fn spawn_chores(pool: &sqlx::PgPool) {
    let store = session::store(pool);
    tokio::spawn(async move {
        if let Err(e) = store
            .continuously_delete_expired(Duration::from_secs(300))
            .await
        {
            tracing::error!(error = %e, "expired-session cleanup stopped");
        }
    });
    let pool = pool.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(300));
        loop {
            tick.tick().await;
            if let Err(e) = rate_limit::prune(&pool).await {
                tracing::warn!(error = %e, "pruning sign-in attempts failed");
            }
        }
    });
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down: finishing open requests");
}
