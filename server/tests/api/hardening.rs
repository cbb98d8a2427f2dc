//! Hostile or broken requests get clear errors and change nothing.

use crate::support::{TestApp, ORIGIN, PASSWORD};
use axum::{
    body::Body,
    http::{header, Method, StatusCode},
};
use serde_json::json;

#[tokio::test]
async fn oversized_bodies_are_refused_before_anything_happens() {
    let (app, _) = TestApp::acme().await;
    let mut ada = app.signed_in("ada@acme.test").await;
    let huge = "x".repeat(200 * 1024);
    let r = ada
        .json(
            Method::POST,
            "/api/v1/users",
            Some(json!({ "email": "big@acme.test", "name": huge, "role": "member", "password": PASSWORD })),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.error_code(), "too_large");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limit is 65536 bytes"),
        "{}",
        r.text()
    );
    // Also through a server function, and with no Content-Length to trust.
    let req = ada
        .request(Method::POST, "/api/create_user")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from_stream(tokio_stream::once(
            Ok::<_, std::io::Error>(format!(
                "email=big2%40acme.test&name={huge}&role=member&password=correct+horse+battery"
            )),
        )))
        .unwrap();
    let r = ada.send(req).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text());
    assert_eq!(app.user_rows().await, 1);
}

#[tokio::test]
async fn state_changes_without_csrf_proof_are_refused() {
    let (app, _) = TestApp::acme().await;
    let mut ada = app.signed_in("ada@acme.test").await;
    let body =
        json!({ "email": "eve@acme.test", "name": "Eve", "role": "admin", "password": PASSWORD })
            .to_string();
    let cookie = ada.cookie.clone().unwrap();

    let no_origin = axum::http::Request::post("/api/v1/users")
        .header(header::COOKIE, &cookie)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.clone()))
        .unwrap();
    let r = ada.send(no_origin).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.text().contains("CSRF"), "{}", r.text());

    let cross_site = axum::http::Request::post("/api/v1/users")
        .header(header::COOKIE, &cookie)
        .header(header::ORIGIN, "http://evil.example")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.clone()))
        .unwrap();
    assert_eq!(ada.send(cross_site).await.status, StatusCode::FORBIDDEN);

    let cross_site_form = axum::http::Request::post("/api/create_user")
        .header(header::COOKIE, &cookie)
        .header(header::REFERER, "http://evil.example/page")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(
            "email=eve%40acme.test&name=Eve&role=admin&password=correct+horse+battery",
        ))
        .unwrap();
    assert_eq!(
        ada.send(cross_site_form).await.status,
        StatusCode::FORBIDDEN
    );

    assert_eq!(app.user_rows().await, 1);
    // The same request from the console's origin goes through.
    let ok = axum::http::Request::post("/api/v1/users")
        .header(header::COOKIE, &cookie)
        .header(header::ORIGIN, ORIGIN)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap();
    assert_eq!(ada.send(ok).await.status, StatusCode::CREATED);
}

#[tokio::test]
async fn malformed_bodies_get_clear_errors() {
    let (app, _) = TestApp::acme().await;
    let mut ada = app.signed_in("ada@acme.test").await;
    let not_json = ada
        .request(Method::POST, "/api/v1/users")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"email\": "))
        .unwrap();
    let r = ada.send(not_json).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json()["error"]["message"],
        "The request could not be completed: the body is not valid JSON"
    );

    let wrong_type = ada
        .request(Method::POST, "/api/v1/users")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("{}"))
        .unwrap();
    let r = ada.send(wrong_type).await;
    assert!(r.status.is_client_error());
    assert!(
        r.text().contains("Content-Type: application/json"),
        "{}",
        r.text()
    );

    // A server function form with a missing field.
    let r = ada
        .send(
            ada.request(Method::POST, "/api/create_user")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from("email=x%40acme.test&role=member"))
                .unwrap(),
        )
        .await;
    assert!(
        r.status.is_client_error() || r.status.is_server_error(),
        "{}",
        r.status
    );
    let err: app::api::ConsoleError =
        serde_json::from_slice(&r.body).expect("server fn error is a ConsoleError");
    assert!(err.to_string().contains("missing or malformed"), "{err}");
    assert_eq!(app.user_rows().await, 1);
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = TestApp::start().await;
    let mut c = app.client();
    let r = c.get("/healthz").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["status"], "ok");
    let r = c.get("/readyz").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["database"], "ok");
    app.pool.close().await;
    let r = c.get("/readyz").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn behind_https_every_answer_tells_browsers_to_stay_on_https() {
    let app = TestApp::with_settings(|s| s.secure_cookies = true).await;
    let mut c = app.client();
    for path in ["/healthz", "/sign-in", "/api/v1/me"] {
        let r = c.get(path).await;
        assert_eq!(
            r.header("strict-transport-security"),
            Some("max-age=31536000; includeSubDomains"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn every_response_carries_security_headers() {
    let app = TestApp::start().await;
    let mut c = app.client();
    for path in ["/healthz", "/sign-in", "/api/v1/me"] {
        let r = c.get(path).await;
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(r.header("x-frame-options"), Some("DENY"), "{path}");
        assert!(
            r.header("content-security-policy")
                .unwrap()
                .contains("frame-ancestors 'none'"),
            "{path}"
        );
        // Pages and API answers hold a tenant's data: never stored.
        assert_eq!(r.header("cache-control"), Some("no-store"), "{path}");
        // Plain http (a local console): no HSTS, it would pin nothing.
        assert_eq!(r.header("strict-transport-security"), None, "{path}");
    }
    let page = c.get("/sign-in").await;
    let csp = page.header("content-security-policy").unwrap().to_string();
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .and_then(|s| s.split('\'').next())
        .expect("page CSP has a nonce");
    assert!(
        page.text().contains(&format!("nonce=\"{nonce}\"")),
        "scripts carry the CSP nonce"
    );
}
