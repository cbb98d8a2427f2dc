//! Leptos: server-rendered pages and server-function calls, each given the
//! caller's [`ConsoleSession`] as context.

use crate::{console::ConsoleSession, http::error::ApiError, state::AppState};
use app::api::ConsoleError;
use app::backend::ConsoleHandle;
use axum::{
    body::Body,
    extract::State,
    http::{Request, StatusCode},
    response::{IntoResponse, Response},
};
use leptos::prelude::provide_context;
use std::sync::Arc;

fn provide(console: ConsoleSession) -> impl Fn() + Clone + Send + Sync + 'static {
    move || {
        provide_context::<ConsoleHandle>(Arc::new(console.clone()));
        leptos::nonce::provide_nonce();
    }
}

/// Server-function calls. The body is read up front against the limit, so an
/// oversized call is a clear 413 rather than a failure inside the function.
pub async fn server_fn(
    State(state): State<AppState>,
    console: ConsoleSession,
    req: Request<Body>,
) -> Response {
    let limit_bytes = state.settings.max_body_bytes;
    let known = leptos::server_fn::axum::server_fn_paths()
        .any(|(path, method)| path == req.uri().path() && method == req.method());
    if !known {
        tracing::info!(path = %req.uri().path(), method = %req.method(), "no such server function");
        return ApiError(ConsoleError::not_found("Server function")).into_response();
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, limit_bytes).await else {
        return ApiError(ConsoleError::TooLarge { limit_bytes }).into_response();
    };
    let req = Request::from_parts(parts, Body::from(bytes));
    let res = leptos_axum::handle_server_fns_with_context(provide(console), req)
        .await
        .into_response();
    with_error_status(res, limit_bytes).await
}

/// Server functions answer every error with 500; give a [`ConsoleError`] its
/// own status (401, 403, 409…), as the JSON API does.
async fn with_error_status(res: Response, limit: usize) -> Response {
    if res.status() != StatusCode::INTERNAL_SERVER_ERROR {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let bytes = axum::body::to_bytes(body, limit).await.unwrap_or_default();
    if let Ok(error) = serde_json::from_slice::<ConsoleError>(&bytes) {
        parts.status = StatusCode::from_u16(error.status()).unwrap_or(parts.status);
    }
    Response::from_parts(parts, Body::from(bytes))
}

pub async fn page(
    State(state): State<AppState>,
    console: ConsoleSession,
    req: Request<Body>,
) -> Response {
    let options = state.leptos_options.clone();
    let handler = leptos_axum::render_route_with_context(
        (*state.routes).clone(),
        provide(console),
        move || app::shell(options.clone()),
    );
    handler(State(state), req).await
}

pub async fn fallback(
    uri: axum::http::Uri,
    State(state): State<AppState>,
    console: ConsoleSession,
    req: Request<Body>,
) -> Response {
    let handler = leptos_axum::file_and_error_handler_with_context(provide(console), app::shell);
    handler(uri, State(state), req).await
}
