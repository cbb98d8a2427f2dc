//! Security headers on every response. Pages set their own
//! Content-Security-Policy (see `app::shell`, it knows the script nonce);
//! everything else gets a deny-all policy. Nothing but the static bundle
//! may be stored by a browser or a proxy (pages and API answers carry a
//! tenant's data), and behind https browsers are told to stay on https.

use axum::{
    extract::{Request, State},
    http::{header, HeaderName, HeaderValue},
    middleware::Next,
    response::Response,
};

/// What the headers depend on.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// The public URL is https: send Strict-Transport-Security.
    pub https: bool,
}

/// One year, subdomains included: the console is only ever served on https
/// once it is.
const HSTS: &str = "max-age=31536000; includeSubDomains";

/// The static bundle (hashed file names) is the one thing caches may keep.
fn cacheable(path: &str) -> bool {
    path.starts_with("/pkg/")
}

pub async fn add(State(policy): State<Policy>, req: Request, next: Next) -> Response {
    let no_store = !cacheable(req.uri().path());
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, name: HeaderName, value: &'static str| {
        h.entry(name).or_insert(HeaderValue::from_static(value));
    };
    if no_store {
        set(h, header::CACHE_CONTROL, "no-store");
    }
    if policy.https {
        set(h, header::STRICT_TRANSPORT_SECURITY, HSTS);
    }
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::REFERRER_POLICY, "same-origin");
    set(
        h,
        HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    set(
        h,
        HeaderName::from_static("permissions-policy"),
        "camera=(), microphone=(), geolocation=()",
    );
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; frame-ancestors 'none'",
    );
    res
}
