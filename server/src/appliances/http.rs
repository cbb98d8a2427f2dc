//! Thin handlers: parse, authenticate the appliance, call the domain, answer.

use super::{
    config::{desired_config, served_protocol},
    probe, register, status, store, ApplianceError,
};
use crate::failover::config::Timing;
use crate::http::client_ip::ClientIp;
use crate::metrics::METRICS;
use crate::state::AppState;
use axum::{
    extract::{
        rejection::{JsonRejection, QueryRejection},
        Query, State,
    },
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::Deserialize;
use std::time::{Duration, Instant};
use vpcmesh_protocol::{
    GenerationRequest, GenerationResponse, ProbeReport, RegisterRequest, RegisterResponse,
    StatusReport, MAX_MEMBER_GENERATION,
};

/// How long a config long-poll waits for a change at most.
const MAX_WAIT_SECS: u64 = 30;
/// A backstop: long-polls recheck this often even without a notification.
const RECHECK: Duration = Duration::from_secs(15);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/register", post(register_appliance))
        .route("/config", get(config))
        .route("/status", post(report_status))
        .route("/generation", post(new_generation))
        .route("/probe", post(report_probe))
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApplianceError> {
    body.map(|Json(v)| v)
        .map_err(|e| ApplianceError::InvalidInput {
            field: "body",
            message: e.body_text(),
        })
}

async fn register_appliance(
    State(state): State<AppState>,
    ClientIp(from): ClientIp,
    body: Result<Json<RegisterRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<RegisterResponse>), ApplianceError> {
    state.appliance_limits.registration(from)?;
    let req = json_body(body)?;
    Ok((
        StatusCode::CREATED,
        Json(register::register(&state, req).await?),
    ))
}

/// The appliance a request's credential belongs to, counted against its
/// request limit. A known credential is served from the cache; an address
/// that sent too many unknown ones gets no further lookups for a while.
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    from: std::net::IpAddr,
) -> Result<store::ApplianceRow, ApplianceError> {
    let limits = &state.appliance_limits;
    let Some(credential) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|c| c.len() <= 256)
    else {
        limits.lookup_allowed(from)?;
        limits.failed_credential(from);
        return Err(ApplianceError::Unauthenticated);
    };
    let hash = register::hash(credential);
    let lookups = &METRICS.credential_lookups;
    let appliance = match state.credentials.get(&hash) {
        Ok(row) => {
            lookups.with_label_values(&["cached"]).inc();
            row
        }
        Err(ticket) => {
            limits.lookup_allowed(from)?;
            match store::by_credential(&state.pool, &hash).await? {
                Some(row) => {
                    lookups.with_label_values(&["database"]).inc();
                    state.credentials.store(hash, row.clone(), ticket);
                    row
                }
                None => {
                    lookups.with_label_values(&["unknown"]).inc();
                    limits.failed_credential(from);
                    return Err(ApplianceError::Unauthenticated);
                }
            }
        }
    };
    limits.request(appliance.id)?;
    Ok(appliance)
}

#[derive(Deserialize)]
struct ConfigQuery {
    /// The version the appliance has; the answer waits until there is another.
    after: Option<u64>,
    /// Seconds to wait for a change (default and maximum 30).
    wait: Option<u64>,
    /// The protocol the agent speaks (absent: the previous one, 2).
    protocol: Option<u16>,
}

async fn config(
    State(state): State<AppState>,
    ClientIp(from): ClientIp,
    headers: HeaderMap,
    q: Result<Query<ConfigQuery>, QueryRejection>,
) -> Result<Response, ApplianceError> {
    let appliance = authenticate(&state, &headers, from).await?;
    let Query(q) = q.map_err(|e| ApplianceError::InvalidInput {
        field: "query",
        message: e.body_text(),
    })?;
    let _slot = state.appliance_limits.poll(appliance.id)?;
    let protocol = served_protocol(q.protocol)?;
    // Written once per change of agent, not on every poll.
    if appliance.protocol != Some(protocol) {
        store::record_protocol(&state.pool, appliance.id, protocol).await?;
        state.credentials.note_protocol(appliance.id, protocol);
    }
    let wait = Duration::from_secs(q.wait.unwrap_or(MAX_WAIT_SECS).min(MAX_WAIT_SECS));
    let deadline = Instant::now() + wait;
    // Subscribe before computing, so a change in between is not missed.
    let mut changes = state.config_waiters.subscribe(appliance.network_id);
    let timing = Timing {
        heartbeat_ms: state.settings.ha_heartbeat_ms,
        dead_after: state.settings.ha_dead_after,
    };
    loop {
        // A poll that names the version it has waits for a change and shares
        // the network's snapshot; one without a config reads the network now.
        let snapshot = match q.after {
            None => {
                state
                    .snapshots
                    .fresh(&state.pool, appliance.network_id)
                    .await?
            }
            Some(_) => {
                state
                    .snapshots
                    .get(&state.pool, appliance.network_id)
                    .await?
            }
        };
        let config = desired_config(&snapshot, &appliance, protocol, timing)?;
        if Some(config.version) != q.after {
            METRICS.config_answers.with_label_values(&["changed"]).inc();
            return Ok(Json(config).into_response());
        }
        let left = deadline
            .min(Instant::now() + RECHECK)
            .saturating_duration_since(Instant::now());
        // Woken by a change of this network (or a resync), or rechecking.
        if let Ok(Err(_)) = tokio::time::timeout(left, changes.changed()).await {
            tracing::error!("the network's change counter is gone while waited for");
            tokio::time::sleep(left).await;
        }
        if Instant::now() >= deadline {
            METRICS
                .config_answers
                .with_label_values(&["unchanged"])
                .inc();
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
    }
}

async fn report_status(
    State(state): State<AppState>,
    ClientIp(from): ClientIp,
    headers: HeaderMap,
    body: Result<Json<StatusReport>, JsonRejection>,
) -> Result<StatusCode, ApplianceError> {
    let appliance = authenticate(&state, &headers, from).await?;
    status::record(
        &state.pool,
        &appliance,
        json_body(body)?,
        state.settings.rotation_grace,
    )
    .await?;
    METRICS.status_reports.inc();
    Ok(StatusCode::NO_CONTENT)
}

/// What a connectivity probe measured (see `probe`).
async fn report_probe(
    State(state): State<AppState>,
    ClientIp(from): ClientIp,
    headers: HeaderMap,
    body: Result<Json<ProbeReport>, JsonRejection>,
) -> Result<StatusCode, ApplianceError> {
    let appliance = authenticate(&state, &headers, from).await?;
    probe::record(&state.pool, &appliance, json_body(body)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A kernel that lost SAs of its generation gets a fresh one: its peers'
/// configs change with it (a notification from the generation's trigger).
async fn new_generation(
    State(state): State<AppState>,
    ClientIp(from): ClientIp,
    headers: HeaderMap,
    body: Result<Json<GenerationRequest>, JsonRejection>,
) -> Result<Json<GenerationResponse>, ApplianceError> {
    let appliance = authenticate(&state, &headers, from).await?;
    let req = json_body(body)?;
    let generation =
        store::next_generation(&state.pool, appliance.id, req.above, MAX_MEMBER_GENERATION)
            .await?
            .ok_or(ApplianceError::GenerationsExhausted)?;
    tracing::info!(appliance_id = %appliance.id, above = req.above, generation, "fresh SA generation");
    Ok(Json(GenerationResponse { generation }))
}
