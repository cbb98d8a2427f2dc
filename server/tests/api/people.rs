//! Removing users, ending their sessions, and changing one's own password.

use crate::support::{Client, TestApp, PASSWORD};
use app::api::Role;
use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

const NEW_PASSWORD: &str = "a different long passphrase";

async fn me(c: &mut Client) -> StatusCode {
    c.get("/api/v1/me").await.status
}

async fn audit(admin: &mut Client) -> Vec<Value> {
    admin
        .get("/api/v1/audit")
        .await
        .json()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn change_password(current: &str, new: &str) -> Option<Value> {
    Some(json!({ "current_password": current, "new_password": new }))
}

/// Acme with member bob signed in on two devices, and admin ada signed in:
/// (app, bob's id, ada, bob's laptop, bob's phone).
async fn bob_on_two_devices() -> (TestApp, uuid::Uuid, Client, Client, Client) {
    let (app, org) = TestApp::acme().await;
    let bob = app.add_user(org, "bob@acme.test", Role::Member).await;
    let ada = app.signed_in("ada@acme.test").await;
    let laptop = app.signed_in("bob@acme.test").await;
    let phone = app.signed_in("bob@acme.test").await;
    (app, bob, ada, laptop, phone)
}

#[tokio::test]
async fn a_removed_user_is_signed_out_at_once_and_the_log_keeps_their_name() {
    let (app, bob, mut ada, mut bob_laptop, mut bob_phone) = bob_on_two_devices().await;
    // Something bob did, in the log under his name.
    let r = bob_laptop
        .json(
            Method::PUT,
            "/api/v1/me/password",
            change_password(PASSWORD, NEW_PASSWORD),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let r = ada
        .json(Method::DELETE, &format!("/api/v1/users/{bob}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    assert_eq!(me(&mut bob_laptop).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&mut bob_phone).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.client()
            .sign_in("bob@acme.test", NEW_PASSWORD)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.user_rows().await, 1);
    let log = audit(&mut ada).await;
    assert!(log.iter().any(|e| e["action"] == "user.removed"
        && e["target"] == "bob@acme.test"
        && e["actor"] == "ada@acme.test"));
    assert!(
        log.iter()
            .any(|e| e["action"] == "password.changed" && e["actor"] == "bob@acme.test"),
        "{log:?}"
    );
    // Gone is gone: a second removal finds nobody.
    let r = ada
        .json(Method::DELETE, &format!("/api/v1/users/{bob}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn admins_cannot_remove_themselves_nor_users_of_another_organization() {
    let (app, _) = TestApp::acme().await;
    let other = app.org_with_admin("Globex", "gil@globex.test").await;
    let hank = app.add_user(other, "hank@globex.test", Role::Member).await;
    let mut ada = app.signed_in("ada@acme.test").await;
    let ada_id = my_id(&mut ada).await;
    let r = ada
        .json(Method::DELETE, &format!("/api/v1/users/{ada_id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.text().contains("cannot remove yourself"), "{}", r.text());
    for path in [
        format!("/api/v1/users/{hank}"),
        format!("/api/v1/users/{hank}/sessions"),
    ] {
        let r = ada.json(Method::DELETE, &path, None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {}", r.text());
    }
    let r = ada
        .json(Method::DELETE, "/api/v1/users/not-a-uuid", None)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(app.user_rows().await, 3);
    let mut hank_c = app.signed_in("hank@globex.test").await;
    assert_eq!(me(&mut hank_c).await, StatusCode::OK);
}

/// The signed-in user's id, as `/api/v1/me` gives it.
async fn my_id(c: &mut Client) -> String {
    c.get("/api/v1/me").await.json()["user_id"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Acme with a second admin, bea: (app, bea's id, ada, bea), both signed in.
async fn two_admins() -> (TestApp, uuid::Uuid, Client, Client) {
    let (app, org) = TestApp::acme().await;
    let bea = app.add_user(org, "bea@acme.test", Role::Admin).await;
    let ada = app.signed_in("ada@acme.test").await;
    let bea_c = app.signed_in("bea@acme.test").await;
    (app, bea, ada, bea_c)
}

#[tokio::test]
async fn two_admins_removing_each_other_at_once_leave_one_admin() {
    for _ in 0..5 {
        let (app, bea, mut ada_c, mut bea_c) = two_admins().await;
        let ada_id = my_id(&mut ada_c).await;
        let remove_bea = format!("/api/v1/users/{bea}");
        let remove_ada = format!("/api/v1/users/{ada_id}");
        let (a, b) = tokio::join!(
            ada_c.json(Method::DELETE, &remove_bea, None),
            bea_c.json(Method::DELETE, &remove_ada, None),
        );
        let done = [&a, &b]
            .iter()
            .filter(|r| r.status == StatusCode::NO_CONTENT)
            .count();
        assert_eq!(
            done,
            1,
            "{} {} / {} {}",
            a.status,
            a.text(),
            b.status,
            b.text()
        );
        for r in [&a, &b] {
            assert!(!r.status.is_server_error(), "{}", r.text());
        }
        assert_eq!(
            app.count("SELECT count(*) FROM users WHERE role = 'admin'")
                .await,
            1
        );
    }
}

#[tokio::test]
async fn two_admins_demoting_each_other_at_once_leave_one_admin() {
    for _ in 0..5 {
        let (app, bea, mut ada_c, mut bea_c) = two_admins().await;
        let ada_id = my_id(&mut ada_c).await;
        let bea_id = bea.to_string();
        let (a, b) = tokio::join!(
            ada_c.set_role(&bea_id, "viewer"),
            bea_c.set_role(&ada_id, "viewer"),
        );
        for r in [&a, &b] {
            assert!(!r.status.is_server_error(), "{}", r.text());
        }
        assert_eq!(
            app.count("SELECT count(*) FROM users WHERE role = 'admin'")
                .await,
            1,
            "{} {} / {} {}",
            a.status,
            a.text(),
            b.status,
            b.text()
        );
    }
}

#[tokio::test]
async fn revoking_sessions_signs_a_user_out_everywhere_until_they_sign_in_again() {
    let (app, bob, mut ada, mut laptop, mut phone) = bob_on_two_devices().await;
    let r = ada
        .json(
            Method::DELETE,
            &format!("/api/v1/users/{bob}/sessions"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    assert_eq!(me(&mut laptop).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&mut phone).await, StatusCode::UNAUTHORIZED);
    // The old cookie stays dead; a fresh sign-in works.
    assert_eq!(me(&mut laptop).await, StatusCode::UNAUTHORIZED);
    let mut again = app.signed_in("bob@acme.test").await;
    assert_eq!(me(&mut again).await, StatusCode::OK);
    // The admin who did it is still signed in.
    assert_eq!(me(&mut ada).await, StatusCode::OK);
    assert!(audit(&mut ada)
        .await
        .iter()
        .any(|e| e["action"] == "user.sessions_revoked" && e["target"] == "bob@acme.test"));
}

#[tokio::test]
async fn a_password_change_keeps_this_session_and_ends_the_others() {
    let (app, _) = TestApp::acme().await;
    let mut here = app.signed_in("ada@acme.test").await;
    let mut elsewhere = app.signed_in("ada@acme.test").await;
    let cookie_before = here.cookie.clone();
    let r = here
        .json(
            Method::PUT,
            "/api/v1/me/password",
            change_password(PASSWORD, NEW_PASSWORD),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    assert_ne!(
        here.cookie, cookie_before,
        "the session id changes with the password"
    );
    assert_eq!(me(&mut here).await, StatusCode::OK);
    assert_eq!(me(&mut elsewhere).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.client().sign_in("ada@acme.test", PASSWORD).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.client()
            .sign_in("ada@acme.test", NEW_PASSWORD)
            .await
            .status,
        StatusCode::OK
    );
    // The stored hash is new and is a hash.
    let hash: String =
        sqlx::query_scalar("SELECT password_hash FROM users WHERE email = 'ada@acme.test'")
            .fetch_one(&app.pool)
            .await
            .expect("hash");
    assert!(hash.starts_with("$argon2id$") && !hash.contains(NEW_PASSWORD));
}

#[tokio::test]
async fn a_wrong_or_weak_password_change_is_refused_and_guessing_is_limited() {
    let (app, _) = TestApp::acme().await;
    let mut ada = app.signed_in("ada@acme.test").await;
    let hash_before = app
        .table_checksums()
        .await
        .remove("users")
        .unwrap_or_default();
    for (body, field) in [
        (change_password("", NEW_PASSWORD), "current_password"),
        (change_password(PASSWORD, "short"), "new_password"),
        (change_password(PASSWORD, PASSWORD), "new_password"),
        (
            change_password("not my password", NEW_PASSWORD),
            "current_password",
        ),
    ] {
        let r = ada.json(Method::PUT, "/api/v1/me/password", body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
        assert_eq!(r.json()["error"]["field"], field, "{}", r.text());
    }
    let r = ada
        .json(
            Method::PUT,
            "/api/v1/me/password",
            Some(json!({ "new_password": NEW_PASSWORD })),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Guesses count against the sign-in limit: a borrowed session cannot
    // try passwords faster than the sign-in form.
    let mut limited = None;
    for i in 0..10 {
        let r = ada
            .json(
                Method::PUT,
                "/api/v1/me/password",
                change_password(&format!("guess number {i}"), NEW_PASSWORD),
            )
            .await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(i);
            break;
        }
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    }
    let limited = limited.expect("password guesses are rate limited");
    assert!(limited <= 4, "limited after {limited} more guesses");
    // Even the right password waits now.
    let r = ada
        .json(
            Method::PUT,
            "/api/v1/me/password",
            change_password(PASSWORD, NEW_PASSWORD),
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        app.table_checksums()
            .await
            .remove("users")
            .unwrap_or_default(),
        hash_before,
        "no refused change touched the user"
    );
    assert_eq!(me(&mut ada).await, StatusCode::OK);
}
