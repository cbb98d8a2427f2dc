//! A user can never read or change another organization's rows.

use crate::support::TestApp;
use app::api::Role;
use axum::http::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn admins_see_and_change_only_their_own_organization() {
    let (app, acme) = TestApp::acme().await;
    let globex = app.org_with_admin("Globex", "hank@globex.test").await;
    let acme_member = app.add_user(acme, "mia@acme.test", Role::Member).await;
    app.add_user(globex, "gus@globex.test", Role::Member).await;

    let mut hank = app.signed_in("hank@globex.test").await;
    let listed = hank.get("/api/v1/users").await.json();
    let emails: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails.len(), 2);
    assert!(
        emails.iter().all(|e| e.ends_with("@globex.test")),
        "{emails:?}"
    );

    // Changing Acme's user by id looks exactly like a user that does not exist.
    let r = hank.set_role(&acme_member.to_string(), "admin").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    let role: String = sqlx::query_scalar("SELECT role FROM users WHERE id = $1")
        .bind(acme_member)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(role, "member");

    // New users land in the caller's organization, whatever the body says.
    let r = hank
        .json(
            Method::POST,
            "/api/v1/users",
            Some(
                json!({ "email": "new@globex.test", "name": "N", "role": "member",
                         "password": "correct horse battery staple", "org_id": acme.to_string() }),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let org: uuid::Uuid =
        sqlx::query_scalar("SELECT org_id FROM users WHERE email = 'new@globex.test'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(org, globex);

    // Audit logs and overviews are per organization too.
    let audit = hank.get("/api/v1/audit").await.json();
    assert!(audit.as_array().unwrap().iter().all(|e| e["actor"]
        .as_str()
        .is_none_or(|a| a.ends_with("@globex.test"))));
    let overview = hank.get("/api/v1/overview").await.json();
    assert_eq!(overview["org_name"], "Globex");
    assert_eq!(overview["users"], 3);
    let mut ada = app.signed_in("ada@acme.test").await;
    assert_eq!(ada.get("/api/v1/overview").await.json()["users"], 2);
}

#[tokio::test]
async fn a_session_from_one_organization_cannot_be_pointed_at_another() {
    // The session stores user and organization together; a user row moved out
    // of that organization (or deleted) ends the session instead of leaking.
    let (app, acme) = TestApp::acme().await;
    let bob = app.add_user(acme, "bob@acme.test", Role::Member).await;
    let mut c = app.signed_in("bob@acme.test").await;
    let globex = server::identity::orgs::create(&app.pool, "Globex")
        .await
        .unwrap();
    sqlx::query("UPDATE users SET org_id = $1 WHERE id = $2")
        .bind(globex.id)
        .bind(bob)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(c.get("/api/v1/me").await.status, StatusCode::UNAUTHORIZED);
}
