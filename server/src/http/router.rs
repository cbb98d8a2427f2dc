use crate::{
    auth::{csrf, session},
    http::{api, error::ApiError, health, pages, security_headers},
    state::AppState,
};
use app::api::ConsoleError;
use axum::{extract::DefaultBodyLimit, middleware, response::IntoResponse, routing::get, Router};
use leptos_axum::LeptosRoutes;
use tower_http::{
    compression::{CompressionLayer, CompressionLevel},
    limit::RequestBodyLimitLayer,
    services::ServeDir,
    trace::TraceLayer,
};

/// The whole HTTP surface, with its layers, ready to serve or to drive in tests.
pub fn router(state: AppState) -> Router {
    let limit = state.settings.max_body_bytes;
    let routes = (*state.routes).clone();
    let pkg = format!(
        "{}/{}",
        state.leptos_options.site_root, state.leptos_options.site_pkg_dir
    );
    let console = Router::new()
        .nest("/api/v1", api::routes())
        .route(
            "/api/{*fn_name}",
            get(pages::server_fn).post(pages::server_fn),
        )
        .leptos_routes_with_handler(routes, get(pages::page))
        .fallback(pages::fallback)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            csrf::require_same_origin,
        ))
        .layer(session::layer(&state.pool, &state.settings))
        // Pages and JSON are small: compress them, cheaply, on the fly.
        .layer(CompressionLayer::new().quality(CompressionLevel::Fastest));
    // Health checks and the static bundle need no session (and cause no session write).
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        // The bundle is never compressed per request: the build writes .gz
        // copies next to its files, served to browsers that accept gzip.
        .nest_service("/pkg", ServeDir::new(pkg).precompressed_gzip())
        // Appliances authenticate with their own credential: no session, no CSRF.
        .nest("/api/appliance/v1", crate::appliances::routes())
        .merge(crate::appliances::agent_binary::routes())
        .merge(console)
        .layer(middleware::map_response_with_state(limit, body_too_large))
        .layer(DefaultBodyLimit::max(limit))
        .layer(RequestBodyLimitLayer::new(limit))
        .layer(middleware::from_fn_with_state(
            security_headers::Policy {
                https: state.settings.secure_cookies,
            },
            security_headers::add,
        ))
        .layer(middleware::from_fn(crate::metrics::track))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// The body-limit layers answer 413 with a bare text; give it the API's shape.
async fn body_too_large(
    axum::extract::State(limit_bytes): axum::extract::State<usize>,
    res: axum::response::Response,
) -> axum::response::Response {
    if res.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError(ConsoleError::TooLarge { limit_bytes }).into_response();
    }
    res
}
