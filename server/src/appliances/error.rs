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
    #[error("this bootstrap token was already used; a token registers one instance once")]
    TokenUsed,
    #[error("this bootstrap token expired; the site's stack must be updated with a new one")]
    TokenExpired,
    #[error("missing or unknown appliance credential")]
    Unauthenticated,
    #[error("the network of this site is being deleted or is gone")]
    SiteGone,
    #[error("the server could not complete the request")]
    Internal,
}

impl ApplianceError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApplianceError::InvalidInput { .. } => (StatusCode::BAD_REQUEST, "invalid_input"),
            ApplianceError::UnknownToken => (StatusCode::UNAUTHORIZED, "unknown_token"),
            ApplianceError::TokenUsed => (StatusCode::CONFLICT, "token_used"),
            ApplianceError::TokenExpired => (StatusCode::UNAUTHORIZED, "token_expired"),
            ApplianceError::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            ApplianceError::SiteGone => (StatusCode::GONE, "site_gone"),
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
        let mut body = json!({ "error": { "code": code, "message": self.to_string() } });
        if let ApplianceError::InvalidInput { field, .. } = &self {
            body["error"]["field"] = json!(field);
        }
        (status, Json(body)).into_response()
    }
}
