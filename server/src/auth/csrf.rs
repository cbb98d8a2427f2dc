//! CSRF defence for cookie-authenticated requests: a state-changing request
//! must say it comes from the console's own origin (`Origin`, or `Referer`
//! when a browser omits `Origin`). Together with SameSite=Lax cookies this
//! stops cross-site form posts and fetches.

use crate::state::AppState;
use app::api::ConsoleError;
use axum::{
    extract::{Request, State},
    http::{header, Method},
    middleware::Next,
    response::{IntoResponse, Response},
};

pub async fn require_same_origin(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    if is_safe(req.method()) {
        return next.run(req).await;
    }
    match check(&req, &state.settings.public_origin) {
        Ok(()) => next.run(req).await,
        Err(reason) => {
            tracing::warn!(method = %req.method(), path = req.uri().path(), reason, "csrf check refused request");
            crate::http::error::ApiError(ConsoleError::Request {
                message: format!("{reason}; reload the console page and try again"),
            })
            .with_status(403)
            .into_response()
        }
    }
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn check(req: &Request, origin: &str) -> Result<(), &'static str> {
    let headers = req.headers();
    if let Some(o) = headers.get(header::ORIGIN) {
        return if o.as_bytes() == origin.as_bytes() {
            Ok(())
        } else {
            Err("request comes from another site (Origin mismatch)")
        };
    }
    if let Some(r) = headers.get(header::REFERER).and_then(|r| r.to_str().ok()) {
        let same = r == origin
            || r.strip_prefix(origin)
                .is_some_and(|rest| rest.starts_with('/'));
        return if same {
            Ok(())
        } else {
            Err("request comes from another site (Referer mismatch)")
        };
    }
    Err("request lacks an Origin or Referer header (CSRF proof)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    fn req(headers: &[(&str, &str)]) -> Request {
        let mut b = axum::http::Request::builder().method("POST").uri("/api/x");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Body::empty()).unwrap()
    }

    const ORIGIN: &str = "http://127.0.0.1:3000";

    #[test]
    fn same_origin_passes() {
        assert!(check(&req(&[("origin", ORIGIN)]), ORIGIN).is_ok());
        assert!(check(&req(&[("referer", "http://127.0.0.1:3000/admin")]), ORIGIN).is_ok());
    }

    #[test]
    fn other_origins_and_missing_proof_fail() {
        assert!(check(&req(&[("origin", "http://evil.example")]), ORIGIN).is_err());
        assert!(check(&req(&[("origin", "null")]), ORIGIN).is_err());
        assert!(check(&req(&[("referer", "http://127.0.0.1:30001/")]), ORIGIN).is_err());
        assert!(check(
            &req(&[("referer", "http://127.0.0.1:3000.evil.example/")]),
            ORIGIN
        )
        .is_err());
        assert!(check(&req(&[]), ORIGIN).is_err());
    }
}
