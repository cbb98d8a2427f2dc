use crate::support::{TestApp, PASSWORD};
use axum::http::{Method, StatusCode};
use std::time::Duration;

#[tokio::test]
async fn session_expires_after_the_idle_time() {
    let app = TestApp::with_settings(|s| s.session_idle = Duration::from_secs(2)).await;
    app.org_with_admin("Acme", "ada@acme.test").await;
    let mut c = app.signed_in("ada@acme.test").await;
    assert_eq!(c.get("/api/v1/me").await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let r = c.get("/api/v1/me").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.error_code(), "unauthenticated");
}

#[tokio::test]
async fn activity_keeps_a_session_alive() {
    let app = TestApp::with_settings(|s| s.session_idle = Duration::from_secs(3)).await;
    app.org_with_admin("Acme", "ada@acme.test").await;
    let mut c = app.signed_in("ada@acme.test").await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(c.get("/api/v1/me").await.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn sign_in_rotates_the_session_id_and_the_old_one_dies() {
    let (app, _) = TestApp::acme().await;
    let mut c = app.signed_in("ada@acme.test").await;
    let first = c.cookie.clone().expect("cookie");
    assert_eq!(
        c.sign_in("ada@acme.test", PASSWORD).await.status,
        StatusCode::OK
    );
    let second = c.cookie.clone().expect("cookie");
    assert_ne!(first, second, "session id must change at sign-in");
    let mut old = app.client();
    old.cookie = Some(first);
    assert_eq!(old.get("/api/v1/me").await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn sign_out_ends_the_session_for_good() {
    let (app, _) = TestApp::acme().await;
    let mut c = app.signed_in("ada@acme.test").await;
    let cookie = c.cookie.clone();
    assert_eq!(
        c.json(Method::DELETE, "/api/v1/session", None).await.status,
        StatusCode::NO_CONTENT
    );
    let mut replay = app.client();
    replay.cookie = cookie;
    assert_eq!(
        replay.get("/api/v1/me").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.session_rows().await, 0);
}

#[tokio::test]
async fn a_forged_cookie_is_just_signed_out() {
    let app = TestApp::start().await;
    let mut c = app.client();
    c.cookie = Some("vpcmesh_session=AAAAAAAAAAAAAAAAAAAAAA".into());
    assert_eq!(c.get("/api/v1/me").await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn behind_https_the_session_cookie_is_secure() {
    let app = TestApp::with_settings(|s| s.secure_cookies = true).await;
    app.org_with_admin("Acme", "ada@acme.test").await;
    let r = app.client().sign_in("ada@acme.test", PASSWORD).await;
    let cookie = r.header("set-cookie").expect("cookie").to_string();
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
}
