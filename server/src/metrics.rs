//! The server's Prometheus metrics: what the appliance API, the config
//! compiler, the provisioning engine and the HTTP layer count, rendered in
//! the text exposition format on `--metrics-listen` (never on the public
//! listener: the numbers describe every customer's traffic).

use axum::{
    extract::{MatchedPath, Request, State},
    http::{header, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::LazyLock;
use std::time::Instant;

/// Every metric of the process (one registry: the process is the unit
/// Prometheus scrapes).
pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_seconds: HistogramVec,
    pub config_compiles: IntCounter,
    pub config_compile_seconds: Histogram,
    pub config_answers: IntCounterVec,
    pub config_notifications: IntCounterVec,
    pub polls_waiting: IntGauge,
    pub status_reports: IntCounter,
    pub appliance_refusals: IntCounterVec,
    pub credential_lookups: IntCounterVec,
    pub job_steps: IntCounterVec,
    db_connections: IntGaugeVec,
}

/// Short requests to long-polls: 1 ms to 35 s.
const SECONDS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 35.0,
];

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("a valid metric name");
    r.register(Box::new(c.clone())).expect("registered once");
    c
}

fn counters(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric name");
    r.register(Box::new(c.clone())).expect("registered once");
    c
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let r = Registry::new();
    let http_seconds = HistogramVec::new(
        HistogramOpts::new(
            "vpcmesh_http_request_duration_seconds",
            "Time to answer an HTTP request, by route (long-polls included)",
        )
        .buckets(SECONDS.to_vec()),
        &["route"],
    )
    .expect("a valid histogram");
    r.register(Box::new(http_seconds.clone()))
        .expect("registered once");
    let config_compile_seconds = Histogram::with_opts(
        HistogramOpts::new(
            "vpcmesh_config_compile_duration_seconds",
            "Time to read and compile one network's snapshot",
        )
        .buckets(SECONDS[..9].to_vec()),
    )
    .expect("a valid histogram");
    r.register(Box::new(config_compile_seconds.clone()))
        .expect("registered once");
    let polls_waiting = IntGauge::new(
        "vpcmesh_appliance_polls_waiting",
        "Config long-polls waiting in this process",
    )
    .expect("a valid metric name");
    r.register(Box::new(polls_waiting.clone()))
        .expect("registered once");
    let db_connections = IntGaugeVec::new(
        Opts::new(
            "vpcmesh_db_pool_connections",
            "Postgres connections of this process's pool: idle, in use, and the most it opens",
        ),
        &["state"],
    )
    .expect("a valid metric name");
    r.register(Box::new(db_connections.clone()))
        .expect("registered once");
    Metrics {
        http_requests: counters(
            &r,
            "vpcmesh_http_requests_total",
            "HTTP requests answered, by route, method and status",
            &["route", "method", "status"],
        ),
        http_seconds,
        config_compiles: counter(
            &r,
            "vpcmesh_config_compiles_total",
            "Network snapshots read and compiled (each shared by the network's waiting polls)",
        ),
        config_compile_seconds,
        config_answers: counters(
            &r,
            "vpcmesh_config_polls_total",
            "Config long-polls answered: with a new config, or unchanged at the end of the wait",
            &["answer"],
        ),
        config_notifications: counters(
            &r,
            "vpcmesh_config_notifications_total",
            "Notifications heard from Postgres: config changes by network, revoked credentials, resyncs after a reconnect",
            &["kind"],
        ),
        polls_waiting,
        status_reports: counter(
            &r,
            "vpcmesh_appliance_status_reports_total",
            "Appliance status reports recorded",
        ),
        appliance_refusals: counters(
            &r,
            "vpcmesh_appliance_refusals_total",
            "Appliance API requests refused, by error code",
            &["code"],
        ),
        credential_lookups: counters(
            &r,
            "vpcmesh_appliance_credential_lookups_total",
            "Appliance credentials checked: from the cache, from Postgres, or unknown",
            &["result"],
        ),
        job_steps: counters(
            &r,
            "vpcmesh_provisioning_step_turns_total",
            "Provisioning step turns, by action and outcome",
            &["action", "outcome"],
        ),
        db_connections,
        registry: r,
    }
});

/// The text exposition of every metric, with the gauges read now.
pub fn render(pool: &sqlx::PgPool, polls_waiting: u64) -> String {
    let m = &*METRICS;
    let size = i64::from(pool.size());
    let idle = pool.num_idle() as i64;
    m.db_connections.with_label_values(&["idle"]).set(idle);
    m.db_connections
        .with_label_values(&["in_use"])
        .set((size - idle).max(0));
    m.db_connections
        .with_label_values(&["max"])
        .set(i64::from(pool.options().get_max_connections()));
    m.polls_waiting.set(polls_waiting as i64);
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&m.registry.gather(), &mut out) {
        tracing::error!(error = %e, "metrics could not be rendered");
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Counts every request by its route template (never the raw path: ids
/// would make a series per network).
pub async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().as_str().to_string();
    let started = Instant::now();
    let res = next.run(req).await;
    let m = &*METRICS;
    m.http_requests
        .with_label_values(&[route.as_str(), method.as_str(), res.status().as_str()])
        .inc();
    m.http_seconds
        .with_label_values(&[route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    res
}

/// `GET /metrics`, for the metrics listener.
pub fn router(state: crate::state::AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn metrics(State(state): State<crate::state::AppState>) -> Response {
    let body = render(&state.pool, state.appliance_limits.polls_waiting());
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        body,
    )
        .into_response()
}
