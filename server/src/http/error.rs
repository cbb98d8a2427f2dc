//! The one error response: a status and `{"error": {"code", "message"}}`.

use app::api::ConsoleError;
use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde_json::json;

#[derive(Debug)]
pub struct ApiError(pub ConsoleError);

/// An [`ApiError`] answered with a status other than the error's own.
pub struct ApiErrorWithStatus(ConsoleError, u16);

impl ApiError {
    pub fn with_status(self, status: u16) -> ApiErrorWithStatus {
        ApiErrorWithStatus(self.0, status)
    }
}

impl From<ConsoleError> for ApiError {
    fn from(e: ConsoleError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        ApiErrorWithStatus(self.0, status).into_response()
    }
}

impl IntoResponse for ApiErrorWithStatus {
    fn into_response(self) -> Response {
        let ApiErrorWithStatus(error, status) = self;
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut body = json!({ "error": { "code": error.code(), "message": error.to_string() } });
        match &error {
            ConsoleError::InvalidInput { field, .. } => body["error"]["field"] = json!(field),
            ConsoleError::ChooseOrganization { organizations } => {
                body["error"]["organizations"] = json!(organizations)
            }
            _ => {}
        }
        let mut res = (status, Json(body)).into_response();
        if let ConsoleError::RateLimited { retry_after_secs } = error {
            if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                res.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        res
    }
}
