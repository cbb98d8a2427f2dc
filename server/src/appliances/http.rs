//! Thin handlers: parse, authenticate the appliance, call the domain, answer.

use super::{
    config::{desired_config, served_protocol},
    probe, register, status, store, ApplianceError,
};
use crate::failover::config::Timing;
use crate::state::AppState;
use appliance::protocol::{
    GenerationRequest, GenerationResponse, ProbeReport, RegisterRequest, RegisterResponse,
    StatusReport, MAX_MEMBER_GENERATION,
};
use axum::{
    extract::{rejection::JsonRejection, Query, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::Deserialize;
use std::time::{Duration, Instant};

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
    body: Result<Json<RegisterRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<RegisterResponse>), ApplianceError> {
    let req = json_body(body)?;
    Ok((
        StatusCode::CREATED,
        Json(register::register(&state, req).await?),
    ))
}

async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<store::ApplianceRow, ApplianceError> {
    let credential = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|c| c.len() <= 256)
        .ok_or(ApplianceError::Unauthenticated)?;
    store::by_credential(&state.pool, &register::hash(credential))
        .await?
        .ok_or(ApplianceError::Unauthenticated)
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
    headers: HeaderMap,
    Query(q): Query<ConfigQuery>,
) -> Result<Response, ApplianceError> {
    let appliance = authenticate(&state, &headers).await?;
    let protocol = served_protocol(q.protocol)?;
    store::record_protocol(&state.pool, appliance.id, protocol).await?;
    let wait = Duration::from_secs(q.wait.unwrap_or(MAX_WAIT_SECS).min(MAX_WAIT_SECS));
    let deadline = Instant::now() + wait;
    // Subscribe before computing, so a change in between is not missed.
    let mut changes = state.config_changes.subscribe();
    let timing = Timing {
        heartbeat_ms: state.settings.ha_heartbeat_ms,
        dead_after: state.settings.ha_dead_after,
    };
    loop {
        let config = desired_config(&state.pool, &appliance, protocol, timing).await?;
        if Some(config.version) != q.after {
            return Ok(Json(config).into_response());
        }
        let until = deadline.min(Instant::now() + RECHECK);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, changes.recv()).await {
                Ok(Ok(id)) if id != appliance.network_id => continue,
                // Ours, or lagged/closed: recompute.
                Ok(_) => break,
                Err(_) => break,
            }
        }
        if Instant::now() >= deadline {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
    }
}

async fn report_status(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<StatusReport>, JsonRejection>,
) -> Result<StatusCode, ApplianceError> {
    let appliance = authenticate(&state, &headers).await?;
    status::record(
        &state.pool,
        &appliance,
        json_body(body)?,
        state.settings.rotation_grace,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What a connectivity probe measured (see `probe`).
async fn report_probe(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<ProbeReport>, JsonRejection>,
) -> Result<StatusCode, ApplianceError> {
    let appliance = authenticate(&state, &headers).await?;
    probe::record(&state.pool, &appliance, json_body(body)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A kernel that lost SAs of its generation gets a fresh one: its peers'
/// configs change with it (a notification from the generation's trigger).
async fn new_generation(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<GenerationRequest>, JsonRejection>,
) -> Result<Json<GenerationResponse>, ApplianceError> {
    let appliance = authenticate(&state, &headers).await?;
    let req = json_body(body)?;
    let generation =
        store::next_generation(&state.pool, appliance.id, req.above, MAX_MEMBER_GENERATION)
            .await?
            .ok_or(ApplianceError::GenerationsExhausted)?;
    tracing::info!(appliance_id = %appliance.id, above = req.above, generation, "fresh SA generation");
    Ok(Json(GenerationResponse { generation }))
}
