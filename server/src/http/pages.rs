//! Leptos: server-rendered pages and server-function calls, each given the
//! caller's [`ConsoleSession`] as context.

use crate::{console::ConsoleSession, state::AppState};
use app::backend::ConsoleHandle;
use axum::{
    body::Body,
    extract::State,
    http::Request,
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

pub async fn server_fn(console: ConsoleSession, req: Request<Body>) -> impl IntoResponse {
    leptos_axum::handle_server_fns_with_context(provide(console), req).await
}

pub async fn page(State(state): State<AppState>, console: ConsoleSession, req: Request<Body>) -> Response {
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
