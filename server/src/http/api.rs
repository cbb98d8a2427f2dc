//! The JSON API (`/api/v1`), for scripts and tests; the same operations the
//! console's server functions call.

use crate::{console::ConsoleSession, http::error::ApiError};
use app::{
    api::{ConsoleError, NetworkRequest, NewAccount, NewUser, Role},
    backend::Console,
};
use axum::{
    extract::{rejection::JsonRejection, FromRequest, FromRequestParts, Path, Query, Request},
    http::request::Parts,
    http::StatusCode,
    response::IntoResponse,
    routing::{delete, get, patch, post, put},
    Json, Router,
};
use serde::{de::DeserializeOwned, Deserialize};

pub fn routes() -> Router<crate::state::AppState> {
    Router::new()
        .route("/session", post(sign_in).delete(sign_out))
        .route("/me", get(me))
        .route("/me/password", put(change_password))
        .route("/overview", get(overview))
        .route("/organization", patch(rename_org))
        .route("/users", get(list_users).post(create_user))
        .route("/users/{id}", patch(update_user).delete(remove_user))
        .route("/users/{id}/sessions", delete(revoke_sessions))
        .route("/audit", get(audit))
        .route("/accounts", get(list_accounts).post(add_account))
        .route("/accounts/setup", get(account_setup))
        .route("/accounts/role-template.yaml", get(role_template))
        .route("/accounts/{id}", delete(remove_account))
        .route("/accounts/{id}/verify", post(verify_account))
        .route("/accounts/{id}/vpcs", get(account_vpcs))
        .route("/accounts/{id}/kms-keys", get(account_kms_keys))
        .route("/networks", get(list_networks).post(create_network))
        .route("/networks/{id}", get(network))
        .route("/networks/{id}/plan", get(network_plan))
        .route("/networks/{id}/apply", post(apply_network))
        .route("/networks/{id}/teardown", post(teardown_network))
        .route("/networks/{id}/job", get(network_job))
        .route("/networks/{id}/events", get(network_events))
        .route(
            "/networks/{id}/connectivity",
            get(connectivity).post(check_connectivity),
        )
        .route("/networks/{id}/sites/{site_id}/failover", post(fail_over))
        .route("/networks/{id}/keys/rotate", post(rotate_key))
        .route("/networks/{id}/keys/schedule", put(set_rotation_schedule))
        .route(
            "/networks/{id}/keys/{epoch}/invalidate",
            post(invalidate_key),
        )
}

/// `Json` whose rejections (malformed JSON, wrong content type, missing or
/// mistyped fields) answer in the API's error shape.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(ApiError(rejection_error(rejection))),
        }
    }
}

/// `Query` whose rejections (a mistyped or missing parameter) answer in the
/// API's error shape.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(ApiQuery(v)),
            Err(rejection) => Err(ApiError(ConsoleError::Request {
                message: format!("the query string is malformed: {}", rejection.body_text()),
            })),
        }
    }
}

fn rejection_error(rejection: JsonRejection) -> ConsoleError {
    if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        // The router's limit layer rewrites this into `TooLarge` with the limit.
        return ConsoleError::TooLarge { limit_bytes: 0 };
    }
    match rejection {
        JsonRejection::JsonDataError(e) => ConsoleError::Request {
            message: format!(
                "a field is missing or has the wrong type: {}",
                e.body_text()
            ),
        },
        JsonRejection::JsonSyntaxError(_) => ConsoleError::Request {
            message: "the body is not valid JSON".into(),
        },
        JsonRejection::MissingJsonContentType(_) => ConsoleError::Request {
            message: "send the body as JSON with Content-Type: application/json".into(),
        },
        other => ConsoleError::Request {
            message: other.body_text(),
        },
    }
}

#[derive(Deserialize)]
struct SignInBody {
    email: String,
    password: String,
    /// Needed only when the email and password open several organizations.
    organization: Option<String>,
}

async fn sign_in(
    console: ConsoleSession,
    ApiJson(body): ApiJson<SignInBody>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(
        console
            .sign_in(&body.email, &body.password, body.organization.as_deref())
            .await?,
    ))
}

async fn sign_out(console: ConsoleSession) -> Result<impl IntoResponse, ApiError> {
    console.sign_out().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn me(console: ConsoleSession) -> Result<impl IntoResponse, ApiError> {
    console
        .viewer()
        .await?
        .map(Json)
        .ok_or(ApiError(ConsoleError::Unauthenticated))
}

async fn overview(console: ConsoleSession) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(console.overview().await?))
}

async fn list_users(console: ConsoleSession) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(console.list_users().await?))
}

async fn create_user(
    console: ConsoleSession,
    ApiJson(body): ApiJson<NewUser>,
) -> Result<impl IntoResponse, ApiError> {
    Ok((StatusCode::CREATED, Json(console.create_user(body).await?)))
}

#[derive(Deserialize)]
struct UpdateUserBody {
    role: Role,
}

async fn update_user(
    console: ConsoleSession,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateUserBody>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(console.set_user_role(&id, body.role).await?))
}

async fn remove_user(
    console: ConsoleSession,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    console.remove_user(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn revoke_sessions(
    console: ConsoleSession,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    console.revoke_sessions(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct PasswordBody {
    current_password: String,
    new_password: String,
}

async fn change_password(
    console: ConsoleSession,
    ApiJson(body): ApiJson<PasswordBody>,
) -> Result<impl IntoResponse, ApiError> {
    console
        .change_password(&body.current_password, &body.new_password)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn audit(console: ConsoleSession) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(console.audit_log(200).await?))
}

async fn account_setup(console: ConsoleSession) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(console.account_setup().await?))
}

/// The role template as a download, with this organization's values filled in.
async fn role_template(console: ConsoleSession) -> Result<impl IntoResponse, ApiError> {
    let setup = console.account_setup().await?;
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "application/yaml"),
            (
                axum::http::header::CONTENT_DISPOSITION,
                "attachment; filename=\"vpcmesh-access-role.yaml\"",
            ),
        ],
        setup.template_yaml,
    ))
}

async fn list_accounts(console: ConsoleSession) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(console.list_accounts().await?))
}

async fn add_account(
    console: ConsoleSession,
    ApiJson(body): ApiJson<NewAccount>,
) -> Result<impl IntoResponse, ApiError> {
    Ok((StatusCode::CREATED, Json(console.add_account(body).await?)))
}

async fn verify_account(
    console: ConsoleSession,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(console.verify_account(&id).await?))
}

async fn remove_account(
    console: ConsoleSession,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    console.remove_account(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_networks(console: ConsoleSession) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(console.list_networks().await?))
}

async fn create_network(
    console: ConsoleSession,
    ApiJson(body): ApiJson<NetworkRequest>,
) -> Result<impl IntoResponse, ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(console.create_network(body).await?),
    ))
}

async fn network(
    console: ConsoleSession,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(console.network(&id).await?))
}

#[derive(Deserialize)]
struct PlanQuery {
    #[serde(default)]
    kind: Option<String>,
}

fn teardown_kind(kind: Option<&str>) -> Result<bool, ConsoleError> {
    match kind.unwrap_or("apply") {
        "apply" => Ok(false),
        "teardown" => Ok(true),
        other => Err(ConsoleError::invalid(
            "kind",
            format!("'{other}' is not a plan kind: use apply or teardown"),
        )),
    }
}

async fn network_plan(
    console: ConsoleSession,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<PlanQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let teardown = teardown_kind(q.kind.as_deref())?;
    Ok(Json(console.network_plan(&id, teardown).await?))
}

#[derive(Deserialize)]
struct StartBody {
    fingerprint: String,
}

async fn apply_network(
    console: ConsoleSession,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<StartBody>,
) -> Result<impl IntoResponse, ApiError> {
    Ok((
        StatusCode::ACCEPTED,
        Json(console.start_job(&id, false, &body.fingerprint).await?),
    ))
}

async fn teardown_network(
    console: ConsoleSession,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<StartBody>,
) -> Result<impl IntoResponse, ApiError> {
    Ok((
        StatusCode::ACCEPTED,
        Json(console.start_job(&id, true, &body.fingerprint).await?),
    ))
}

async fn network_job(
    console: ConsoleSession,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(console.network_job(&id).await?))
}

#[derive(Deserialize)]
struct EventsQuery {
    #[serde(default)]
    after: i64,
}

async fn network_events(
    console: ConsoleSession,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(console.network_events(&id, q.after).await?))
}

#[derive(Deserialize)]
struct RegionQuery {
    region: String,
}

async fn account_vpcs(
    console: ConsoleSession,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<RegionQuery>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(console.discover_vpcs(&id, &q.region).await?))
}

async fn account_kms_keys(
    console: ConsoleSession,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<RegionQuery>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(console.kms_keys(&id, &q.region).await?))
}

/// Starts a check; 202: the appliances ping and report while it runs
/// (poll the GET). 409 while one runs, or without live appliances.
async fn check_connectivity(
    console: ConsoleSession,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok((
        StatusCode::ACCEPTED,
        Json(console.check_connectivity(&id).await?),
    ))
}

/// The latest check (`null`: never checked).
async fn connectivity(
    console: ConsoleSession,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(console.connectivity(&id).await?))
}

/// "Fail over now" (admins): 202 with the takeover request; the site's
/// passive appliance carries it out and the network's `failovers` show it.
/// 409 without a live passive partner, or while a request is in progress.
async fn fail_over(
    console: ConsoleSession,
    Path((id, site_id)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    Ok((
        StatusCode::ACCEPTED,
        Json(console.fail_over(&id, &site_id).await?),
    ))
}

async fn rotate_key(
    console: ConsoleSession,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(console.rotate_key(&id).await?))
}

#[derive(Deserialize)]
struct ScheduleBody {
    every_days: Option<u32>,
}

async fn set_rotation_schedule(
    console: ConsoleSession,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ScheduleBody>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(
        console.set_rotation_schedule(&id, body.every_days).await?,
    ))
}

async fn invalidate_key(
    console: ConsoleSession,
    Path((id, epoch)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let epoch: i32 = epoch
        .parse()
        .map_err(|_| ConsoleError::invalid("epoch", "is not an epoch number"))?;
    Ok(Json(console.invalidate_key(&id, epoch).await?))
}

#[derive(Deserialize)]
struct RenameBody {
    name: String,
}

async fn rename_org(
    console: ConsoleSession,
    ApiJson(body): ApiJson<RenameBody>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(console.rename_org(&body.name).await?))
}
