use crate::support::{TestApp, PASSWORD};
use app::api::Role;
use axum::http::{Method, StatusCode};
use serde_json::json;

fn new_user(email: &str, role: &str) -> serde_json::Value {
    json!({ "email": email, "name": "New Person", "role": role, "password": PASSWORD })
}

#[tokio::test]
async fn admin_adds_a_user_who_can_then_sign_in() {
    let (app, _) = TestApp::acme().await;
    let mut admin = app.signed_in("ada@acme.test").await;
    let r = admin
        .json(
            Method::POST,
            "/api/v1/users",
            Some(new_user("Bob@Acme.test", "member")),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["email"], "bob@acme.test");
    assert_eq!(r.json()["role"], "member");
    let listed = admin.get("/api/v1/users").await.json();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    let bob = app.signed_in("bob@acme.test").await;
    assert!(bob.cookie.is_some());
    let audit = admin.get("/api/v1/audit").await.json();
    assert!(audit
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "user.created" && e["target"] == "bob@acme.test"));
    // The hash, never the password, is stored.
    let hash: String =
        sqlx::query_scalar("SELECT password_hash FROM users WHERE email = 'bob@acme.test'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(hash.starts_with("$argon2id$") && !hash.contains(PASSWORD));
}

#[tokio::test]
async fn members_cannot_manage_users() {
    let (app, org) = TestApp::acme().await;
    app.add_user(org, "mia@acme.test", Role::Member).await;
    let mut mia = app.signed_in("mia@acme.test").await;
    for r in [
        mia.get("/api/v1/users").await,
        mia.get("/api/v1/audit").await,
        mia.json(
            Method::POST,
            "/api/v1/users",
            Some(new_user("eve@acme.test", "admin")),
        )
        .await,
    ] {
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
        assert_eq!(r.error_code(), "forbidden");
    }
    let ada: String =
        sqlx::query_scalar("SELECT id::text FROM users WHERE email = 'ada@acme.test'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let r = mia.set_role(&ada.to_string(), "member").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(app.user_rows().await, 2);
    assert_eq!(
        app.count("SELECT count(*) FROM users WHERE role = 'admin'")
            .await,
        1
    );
    // Members still read their own organization's overview.
    assert_eq!(mia.get("/api/v1/overview").await.json()["users"], 2);
}

#[tokio::test]
async fn a_role_change_applies_to_the_next_request() {
    let (app, org) = TestApp::acme().await;
    let bob = app.add_user(org, "bob@acme.test", Role::Member).await;
    let mut ada = app.signed_in("ada@acme.test").await;
    let mut bob_c = app.signed_in("bob@acme.test").await;
    assert_eq!(
        bob_c.get("/api/v1/users").await.status,
        StatusCode::FORBIDDEN
    );
    let r = ada.set_role(&bob.to_string(), "admin").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(bob_c.get("/api/v1/users").await.status, StatusCode::OK);
}

#[tokio::test]
async fn the_last_admin_cannot_be_demoted() {
    let (app, _) = TestApp::acme().await;
    let mut ada = app.signed_in("ada@acme.test").await;
    let me = ada.get("/api/v1/me").await.json();
    let id = me["user_id"].as_str().unwrap().to_string();
    let r = ada.set_role(&id.to_string(), "member").await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("at least one admin"));
    assert_eq!(
        app.count("SELECT count(*) FROM users WHERE role = 'admin'")
            .await,
        1
    );
}

#[tokio::test]
async fn bad_new_user_input_is_refused_and_adds_nobody() {
    let (app, _) = TestApp::acme().await;
    let mut ada = app.signed_in("ada@acme.test").await;
    let cases = [
        (new_user("not-an-email", "member"), "email"),
        (
            json!({ "email": "x@acme.test", "name": " ", "role": "member", "password": PASSWORD }),
            "name",
        ),
        (
            json!({ "email": "x@acme.test", "name": "X", "role": "member", "password": "short" }),
            "password",
        ),
    ];
    for (body, field) in cases {
        let r = ada.json(Method::POST, "/api/v1/users", Some(body)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
        assert_eq!(r.json()["error"]["field"], field);
    }
    let r = ada
        .json(
            Method::POST,
            "/api/v1/users",
            Some(new_user("x@acme.test", "owner")),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("role"), "{}", r.text());
    let r = ada
        .json(
            Method::POST,
            "/api/v1/users",
            Some(new_user("ada@acme.test", "member")),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = ada.set_role("not-a-uuid", "admin").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(app.user_rows().await, 1);
}

#[tokio::test]
async fn server_functions_answer_with_the_error_status() {
    let (app, org) = TestApp::acme().await;
    app.add_user(org, "mia@acme.test", Role::Member).await;
    let mut mia = app.signed_in("mia@acme.test").await;
    let r = mia.json(Method::POST, "/api/users", None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    let err: app::api::ConsoleError = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        err,
        app::api::ConsoleError::Forbidden { needs: Role::Admin }
    );
    let mut anonymous = app.client();
    assert_eq!(
        anonymous
            .json(Method::POST, "/api/overview", None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn admins_rename_their_organization_and_members_cannot() {
    let (app, org) = TestApp::acme().await;
    app.add_user(org, "max@acme.test", Role::Member).await;
    let mut admin = app.signed_in("ada@acme.test").await;
    let r = admin
        .json(
            Method::PATCH,
            "/api/v1/organization",
            Some(json!({"name": "  Acme Corp  "})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["org_name"], "Acme Corp");
    assert_eq!(
        admin.get("/api/v1/me").await.json()["org_name"],
        "Acme Corp"
    );
    for bad in [
        json!({"name": ""}),
        json!({"name": "x".repeat(101)}),
        json!({"name": "a\u{7}b"}),
    ] {
        let r = admin
            .json(Method::PATCH, "/api/v1/organization", Some(bad.clone()))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let mut member = app.signed_in("max@acme.test").await;
    let r = member
        .json(
            Method::PATCH,
            "/api/v1/organization",
            Some(json!({"name": "Mine"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        app.count("SELECT count(*) FROM organizations WHERE name = 'Acme Corp'")
            .await,
        1
    );
}
