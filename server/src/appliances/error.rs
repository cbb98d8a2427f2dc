use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde_json::json;

/// Everything the appliance API can refuse, with a stable code.
#[derive(Debug, thiserror::Error)]
pub enum ApplianceError {
    #[error("{field}: {message}")]
    InvalidInput {
        field: &'static str,
        message: String,
    },
    #[error("unknown bootstrap token")]
    UnknownToken,
    #[error("this bootstrap token expired; the site's stack must be updated with a new one")]
    TokenExpired,
    #[error("registration refused: {reason}")]
    NotVerified { reason: String },
    #[error("the instance cannot be checked with EC2 right now ({0}); try again")]
    VerificationUnavailable(String),
    #[error("instance {0} is registered and its agent is reporting; a second registration of a live instance is refused")]
    AlreadyRegistered(String),
    #[error("this member has used every SA generation it can have; recreate the site")]
    GenerationsExhausted,
    #[error("missing or unknown appliance credential")]
    Unauthenticated,
    #[error("the network of this site is being deleted or is gone")]
    SiteGone,
    #[error("no connectivity check {0} was asked of this appliance's site")]
    UnknownProbe(uuid::Uuid),
    #[error("too many {what}; retry in {retry_after} s")]
    RateLimited {
        what: &'static str,
        retry_after: u64,
    },
    #[error("this appliance already has {0} config requests waiting; one is enough")]
    TooManyPolls(u32),
    #[error("this network's keys are kept per tunnel, which an agent of protocol {0} cannot use; replace the instance to run the current agent")]
    AgentOutdated(u16),
    #[error("the server could not complete the request")]
    Internal,
}

impl ApplianceError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApplianceError::InvalidInput { .. } => (StatusCode::BAD_REQUEST, "invalid_input"),
            ApplianceError::UnknownToken => (StatusCode::UNAUTHORIZED, "unknown_token"),
            ApplianceError::TokenExpired => (StatusCode::UNAUTHORIZED, "token_expired"),
            ApplianceError::NotVerified { .. } => (StatusCode::FORBIDDEN, "instance_not_verified"),
            ApplianceError::VerificationUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "verification_unavailable")
            }
            ApplianceError::AlreadyRegistered(_) => (StatusCode::CONFLICT, "already_registered"),
            ApplianceError::GenerationsExhausted => (StatusCode::CONFLICT, "generations_exhausted"),
            ApplianceError::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            ApplianceError::SiteGone => (StatusCode::GONE, "site_gone"),
            ApplianceError::UnknownProbe(_) => (StatusCode::NOT_FOUND, "unknown_probe"),
            ApplianceError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApplianceError::TooManyPolls(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_polls"),
            ApplianceError::AgentOutdated(_) => (StatusCode::CONFLICT, "agent_outdated"),
            ApplianceError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<sqlx::Error> for ApplianceError {
    fn from(e: sqlx::Error) -> Self {
        tracing::error!(error = %e, "appliance API database error");
        ApplianceError::Internal
    }
}

impl IntoResponse for ApplianceError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        crate::metrics::METRICS
            .appliance_refusals
            .with_label_values(&[code])
            .inc();
        let mut body = json!({ "error": { "code": code, "message": self.to_string() } });
        if let ApplianceError::InvalidInput { field, .. } = &self {
            body["error"]["field"] = json!(field);
        }
        let retry_after = match &self {
            ApplianceError::RateLimited { retry_after, .. } => Some(*retry_after),
            ApplianceError::TooManyPolls(_) => Some(1),
            _ => None,
        };
        let mut res = (status, Json(body)).into_response();
        if let Some(secs) = retry_after {
            res.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        res
    }
}
