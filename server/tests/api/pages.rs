//! Server-rendered pages: complete HTML without JavaScript, redirects for
//! visitors without a session, honest status codes.

use crate::support::TestApp;
use app::api::Role;
use axum::http::StatusCode;

#[tokio::test]
async fn signed_out_visitors_are_sent_to_sign_in_with_their_destination() {
    let app = TestApp::start().await;
    let mut c = app.client();
    let r = c.page("/admin").await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text());
    assert_eq!(r.header("location"), Some("/sign-in?next=/admin"));
    let r = c.page("/").await;
    assert_eq!(r.header("location"), Some("/sign-in"));
}

#[tokio::test]
async fn sign_in_page_is_a_complete_form() {
    let app = TestApp::start().await;
    let r = app.client().page("/sign-in").await;
    assert_eq!(r.status, StatusCode::OK);
    let html = r.text();
    for needle in [
        "<form action=\"/api/sign_in\" method=\"post\"",
        "name=\"email\"",
        "name=\"password\"",
        "<label for=\"password\">",
    ] {
        assert!(html.contains(needle), "missing {needle}");
    }
}

#[tokio::test]
async fn dashboard_renders_the_organization_without_javascript() {
    let (app, _) = TestApp::acme().await;
    let mut c = app.signed_in("ada@acme.test").await;
    let r = c.page("/").await;
    assert_eq!(r.status, StatusCode::OK);
    let html = r.text();
    let body = html.split("<body>").nth(1).expect("body");
    assert!(
        body.contains("<h1>Dashboard</h1>"),
        "dashboard heading in the HTML itself"
    );
    assert!(body.contains("Acme"));
    assert!(body.contains("Getting started"));
    for nav in ["Networks", "Accounts", "Keys", "Admin"] {
        assert!(body.contains(&format!(">{nav}</a>")), "nav {nav}");
    }
    assert!(
        !body.contains("Loading…"),
        "no placeholder left for a reader without JavaScript"
    );
}

#[tokio::test]
async fn members_get_a_clear_forbidden_page_for_admin() {
    let (app, org) = TestApp::acme().await;
    app.add_user(org, "mia@acme.test", Role::Member).await;
    let mut mia = app.signed_in("mia@acme.test").await;
    let r = mia.page("/admin").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.text().contains("Only organization admins can do this."));
    assert!(
        !r.text().contains("ada@acme.test"),
        "no user data leaks to members"
    );
    let home = mia.page("/").await.text();
    assert!(!home.contains(">Admin</a>"), "members get no Admin link");
}

#[tokio::test]
async fn admins_see_users_and_audit_log() {
    let (app, _) = TestApp::acme().await;
    let mut ada = app.signed_in("ada@acme.test").await;
    let html = ada.page("/admin").await.text();
    assert!(html.contains("ada@acme.test"));
    assert!(html.contains("Add a user"));
    assert!(
        html.contains("<code>sign_in</code>"),
        "audit log lists the sign-in"
    );
}

#[tokio::test]
async fn unknown_pages_are_404_with_a_way_back() {
    let app = TestApp::start().await;
    let r = app.client().page("/no/such/page").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.text().contains("Page not found"));
    assert!(r.text().contains("href=\"/\""));
}

#[tokio::test]
async fn sign_in_page_carries_the_destination_in_the_form() {
    let app = TestApp::start().await;
    let html = app.client().page("/sign-in?next=/admin").await.text();
    assert!(
        html.contains("name=\"next\" value=\"/admin\""),
        "the no-JS form posts the destination"
    );
}

#[tokio::test]
async fn pages_are_compressed_for_browsers_that_accept_it() {
    let app = TestApp::start().await;
    let mut c = app.client();
    let req = c
        .request(axum::http::Method::GET, "/sign-in")
        .header("accept", "text/html")
        .header("accept-encoding", "br, gzip")
        .body(axum::body::Body::empty())
        .unwrap();
    let r = c.send(req).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-encoding"), Some("br"));
}
