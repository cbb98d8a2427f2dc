//! Who may do what: every role against every JSON route and the server
//! functions the pages call. The least role each route needs is written out
//! here by hand (not read from `Action::needs`), so a change to the access
//! rules shows up as a failing row.

use crate::support::{Client, TestApp};
use app::api::Role;
use axum::{
    body::Body,
    http::{header, Method, StatusCode},
};
use serde_json::{json, Value};
use uuid::Uuid;

struct Route {
    method: Method,
    path: String,
    body: Option<Value>,
    least: Role,
}

fn route(method: Method, path: impl Into<String>, body: Option<Value>, least: Role) -> Route {
    Route {
        method,
        path: path.into(),
        body,
        least,
    }
}

fn rank(role: Role) -> u8 {
    match role {
        Role::Viewer => 0,
        Role::Member => 1,
        Role::Admin => 2,
    }
}

/// Every JSON route behind a sign-in. Ids are random (nothing has them), and
/// bodies are well-formed but refused by validation, so an allowed call
/// changes nothing either: the answer shows only whether the role got past
/// the access check (403 `forbidden`) or not (anything else but a 5xx).
fn routes() -> Vec<Route> {
    let net = format!("/api/v1/networks/{}", Uuid::new_v4());
    let acct = format!("/api/v1/accounts/{}", Uuid::new_v4());
    let user = format!("/api/v1/users/{}", Uuid::new_v4());
    let site = Uuid::new_v4();
    let fingerprint = Some(json!({ "fingerprint": "0".repeat(64) }));
    let network = json!({
        "name": "",
        "topology": "full_mesh",
        "sites": [],
        "options": { "kms_key_arn": "not-an-arn" },
    });
    use Method as M;
    use Role::{Admin, Member, Viewer};
    vec![
        // Reading: everyone in the organization.
        route(M::GET, "/api/v1/me", None, Viewer),
        route(M::GET, "/api/v1/overview", None, Viewer),
        route(M::GET, "/api/v1/accounts", None, Viewer),
        route(M::GET, "/api/v1/accounts/setup", None, Viewer),
        route(M::GET, "/api/v1/accounts/role-template.yaml", None, Viewer),
        route(M::GET, "/api/v1/networks", None, Viewer),
        route(M::GET, net.clone(), None, Viewer),
        route(M::GET, format!("{net}/job"), None, Viewer),
        route(M::GET, format!("{net}/events"), None, Viewer),
        route(M::GET, format!("{net}/connectivity"), None, Viewer),
        // One's own password: everyone (the wrong current password is refused).
        route(
            M::PUT,
            "/api/v1/me/password",
            Some(
                json!({ "current_password": "not the password", "new_password": "a new long passphrase" }),
            ),
            Viewer,
        ),
        // Building and running networks: members.
        route(M::POST, "/api/v1/networks", Some(network), Member),
        route(M::GET, format!("{net}/plan"), None, Member),
        route(M::POST, format!("{net}/apply"), fingerprint.clone(), Member),
        route(M::POST, format!("{net}/connectivity"), None, Member),
        route(
            M::GET,
            format!("{acct}/vpcs?region=us-east-1"),
            None,
            Member,
        ),
        route(
            M::GET,
            format!("{acct}/kms-keys?region=us-east-1"),
            None,
            Member,
        ),
        // Tearing down, keys, failover, accounts, people, the audit log: admins.
        route(M::POST, format!("{net}/teardown"), fingerprint, Admin),
        route(M::POST, format!("{net}/keys/rotate"), None, Admin),
        route(
            M::PUT,
            format!("{net}/keys/schedule"),
            Some(json!({ "every_days": 30 })),
            Admin,
        ),
        route(M::POST, format!("{net}/keys/1/invalidate"), None, Admin),
        route(M::POST, format!("{net}/sites/{site}/failover"), None, Admin),
        route(
            M::POST,
            "/api/v1/accounts",
            Some(json!({ "account_id": "123456789012", "role_arn": "not-an-arn" })),
            Admin,
        ),
        route(M::DELETE, acct.clone(), None, Admin),
        route(M::POST, format!("{acct}/verify"), None, Admin),
        route(
            M::PATCH,
            "/api/v1/organization",
            Some(json!({ "name": "" })),
            Admin,
        ),
        route(M::GET, "/api/v1/users", None, Admin),
        route(
            M::POST,
            "/api/v1/users",
            Some(
                json!({ "email": "not-an-email", "name": "X", "role": "member", "password": "a long enough passphrase" }),
            ),
            Admin,
        ),
        route(
            M::PATCH,
            user.clone(),
            Some(json!({ "role": "admin" })),
            Admin,
        ),
        route(M::DELETE, user.clone(), None, Admin),
        route(M::DELETE, format!("{user}/sessions"), None, Admin),
        route(M::GET, "/api/v1/audit", None, Admin),
    ]
}

async fn people(app: &TestApp, org: Uuid) -> Vec<(Role, Client)> {
    app.add_user(org, "mia@acme.test", Role::Member).await;
    app.add_user(org, "vic@acme.test", Role::Viewer).await;
    vec![
        (Role::Admin, app.signed_in("ada@acme.test").await),
        (Role::Member, app.signed_in("mia@acme.test").await),
        (Role::Viewer, app.signed_in("vic@acme.test").await),
    ]
}

#[tokio::test]
async fn every_role_against_every_route() {
    // On the local AWS emulator: the account setup asks STS who vpcmesh is.
    let (app, org) = TestApp::acme_on_moto().await;
    let mut people = people(&app, org).await;
    let routes = routes();
    // Refusals first, all of them, and they change no row.
    let before = app.table_checksums().await;
    let mut refused = 0;
    for r in &routes {
        for (role, client) in people.iter_mut() {
            if rank(*role) >= rank(r.least) {
                continue;
            }
            let a = client.json(r.method.clone(), &r.path, r.body.clone()).await;
            let what = format!("{:?} {} {} as {role:?}", r.method, r.path, r.body.is_some());
            assert_eq!(a.status, StatusCode::FORBIDDEN, "{what}: {}", a.text());
            assert_eq!(a.error_code(), "forbidden", "{what}");
            let message = a.json()["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let expected = if r.least == Role::Admin {
                "admins"
            } else {
                "Viewers can only look"
            };
            assert!(message.contains(expected), "{what}: {message}");
            refused += 1;
        }
    }
    assert_eq!(
        app.table_checksums().await,
        before,
        "a refused call changed a row"
    );
    // 11 viewer-level routes refuse nobody; 6 member routes refuse the viewer;
    // 15 admin routes refuse the member and the viewer.
    assert_eq!(routes.len(), 11 + 6 + 15);
    assert_eq!(refused, 6 + 15 * 2);
    // Allowed calls pass the check: their answer is about the request itself.
    for r in &routes {
        for (role, client) in people.iter_mut() {
            if rank(*role) < rank(r.least) {
                continue;
            }
            let a = client.json(r.method.clone(), &r.path, r.body.clone()).await;
            let what = format!("{:?} {} as {role:?}", r.method, r.path);
            assert_ne!(a.status, StatusCode::FORBIDDEN, "{what}: {}", a.text());
            assert!(!a.status.is_server_error(), "{what}: {}", a.text());
            if a.status.is_client_error() {
                assert!(!a.error_code().is_empty(), "{what}: {}", a.text());
            }
        }
    }
}

/// (endpoint, form fields, least role)
type ServerFnCall<'a> = (&'a str, Vec<(&'a str, &'a str)>, Role);

#[tokio::test]
async fn server_functions_hold_the_same_line() {
    let (app, org) = TestApp::acme().await;
    let mut people = people(&app, org).await;
    let net = Uuid::new_v4().to_string();
    let calls: [ServerFnCall; 8] = [
        ("list_networks", vec![], Role::Viewer),
        ("get_network", vec![("id", &net)], Role::Viewer),
        (
            "network_plan",
            vec![("id", &net), ("teardown", "false")],
            Role::Member,
        ),
        ("check_connectivity", vec![("id", &net)], Role::Member),
        ("rotate_key", vec![("id", &net)], Role::Admin),
        ("users", vec![], Role::Admin),
        ("remove_user", vec![("user_id", &net)], Role::Admin),
        ("audit_log", vec![], Role::Admin),
    ];
    let before = app.table_checksums().await;
    for (endpoint, fields, least) in &calls {
        for (role, client) in people.iter_mut() {
            // As the hydrated page calls it (JSON answers, no redirect).
            let body = fields
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&");
            let req = client
                .request(Method::POST, &format!("/api/{endpoint}"))
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(body))
                .expect("request");
            let a = client.send(req).await;
            let what = format!("{endpoint} as {role:?}");
            assert!(!a.status.is_server_error(), "{what}: {}", a.text());
            if rank(*role) >= rank(*least) {
                assert_ne!(a.status, StatusCode::FORBIDDEN, "{what}: {}", a.text());
            } else {
                assert_eq!(a.status, StatusCode::FORBIDDEN, "{what}: {}", a.text());
                let err: app::api::ConsoleError = serde_json::from_slice(&a.body)
                    .unwrap_or_else(|e| panic!("{what}: {e}: {}", a.text()));
                assert_eq!(err, app::api::ConsoleError::Forbidden { needs: *least });
            }
        }
    }
    assert_eq!(app.table_checksums().await, before);
}

#[tokio::test]
async fn a_viewer_reads_everything_but_the_admin_pages() {
    let (app, org) = TestApp::acme().await;
    app.add_user(org, "vic@acme.test", Role::Viewer).await;
    let mut vic = app.signed_in("vic@acme.test").await;
    let me = vic.get("/api/v1/me").await.json();
    assert_eq!(me["role"], "viewer");
    let me_id = me["user_id"].as_str().unwrap_or_default().to_string();
    for page in ["/", "/networks", "/accounts", "/account"] {
        let r = vic.page(page).await;
        assert_eq!(r.status, StatusCode::OK, "{page}: {}", r.text());
    }
    // A viewer cannot promote themself.
    let r = vic.set_role(&me_id, "admin").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        app.count("SELECT count(*) FROM users WHERE role = 'viewer'")
            .await,
        1
    );
}
