//! The bad-input corpus: hundreds of hostile requests across every public
//! endpoint and server function (malformed JSON, wrong types, huge and deep
//! bodies, unknown ids, other tenants' ids, bad and replayed credentials).
//! Every answer is a 4xx that says what was wrong; none is a 5xx; and no row
//! of any table changes.

use crate::support::{Client, Response, TestApp};
use app::api::Role;
use axum::{
    body::Body,
    http::{header, Method, Request, StatusCode},
};
use serde_json::{json, Value};
use uuid::Uuid;

struct Case {
    what: String,
    req: Request<Body>,
}

fn raw(
    c: &Client,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> Request<Body> {
    let mut b = c.request(method, path);
    if let Some(t) = content_type {
        b = b.header(header::CONTENT_TYPE, t);
    }
    b.body(body.into()).expect("request")
}

/// Bodies that are wrong whatever the route expects.
fn hostile_bodies(wrong_types: Value) -> Vec<(&'static str, Option<&'static str>, Vec<u8>)> {
    let json = Some("application/json");
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    vec![
        ("truncated JSON", json, b"{\"a\": ".to_vec()),
        ("not JSON", json, b"hello".to_vec()),
        ("an array", json, b"[]".to_vec()),
        ("a string", json, b"\"x\"".to_vec()),
        ("null", json, b"null".to_vec()),
        ("no fields", json, b"{}".to_vec()),
        ("wrong types", json, wrong_types.to_string().into_bytes()),
        ("deep nesting", json, deep.into_bytes()),
        (
            "a huge body",
            json,
            json!({ "x": "a".repeat(200 * 1024) })
                .to_string()
                .into_bytes(),
        ),
        ("no content type", None, b"{}".to_vec()),
        (
            "a form body",
            Some("application/x-www-form-urlencoded"),
            b"a=b".to_vec(),
        ),
        ("invalid UTF-8", json, vec![b'"', 0xff, 0xfe, b'"']),
    ]
}

/// What a clear refusal says: the API's `{error: {code, message}}`, or for
/// a server function a `ConsoleError` the page shows.
fn says_why(what: &str, r: &Response) {
    assert!(
        r.status.is_client_error(),
        "{what}: {} {}",
        r.status,
        r.text()
    );
    if let Ok(err) = serde_json::from_slice::<app::api::ConsoleError>(&r.body) {
        assert!(!err.to_string().is_empty(), "{what}");
        return;
    }
    let body: Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("{what}: {} answered {} ({e})", r.status, r.text()));
    let message = body["error"]["message"].as_str().unwrap_or_default();
    let code = body["error"]["code"].as_str().unwrap_or_default();
    assert!(
        !message.trim().is_empty() && !code.is_empty(),
        "{what}: no message in {}",
        r.text()
    );
}

#[tokio::test]
async fn two_hundred_hostile_requests_get_clear_4xx_answers_and_change_nothing() {
    let (app, org) = TestApp::acme().await;
    let globex = app.org_with_admin("Globex", "gil@globex.test").await;
    let hank = app.add_user(globex, "hank@globex.test", Role::Member).await;
    app.add_user(org, "mia@acme.test", Role::Member).await;
    let mut ada = app.signed_in("ada@acme.test").await;
    // A session that was signed out: its cookie is replayed below.
    let mut gone = app.signed_in("mia@acme.test").await;
    let replayed = gone.cookie.clone();
    let r = gone.json(Method::DELETE, "/api/v1/session", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let mut anonymous = app.client();
    let mut stale = app.client();
    stale.cookie = replayed;

    let net = format!("/api/v1/networks/{}", Uuid::new_v4());
    let acct = format!("/api/v1/accounts/{}", Uuid::new_v4());
    let before = app.table_checksums().await;
    let mut cases: Vec<(&str, Case)> = Vec::new();

    // 1. Every JSON body route, with every kind of broken body.
    let body_routes: Vec<(Method, String, Value)> = vec![
        (
            Method::POST,
            "/api/v1/session".into(),
            json!({"email": 1, "password": []}),
        ),
        (
            Method::PUT,
            "/api/v1/me/password".into(),
            json!({"current_password": 5, "new_password": {}}),
        ),
        (
            Method::PATCH,
            "/api/v1/organization".into(),
            json!({"name": 7}),
        ),
        (
            Method::POST,
            "/api/v1/users".into(),
            json!({"email": [], "name": 1, "role": "owner", "password": null}),
        ),
        (
            Method::PATCH,
            format!("/api/v1/users/{hank}"),
            json!({"role": 1}),
        ),
        (
            Method::POST,
            "/api/v1/accounts".into(),
            json!({"account_id": 123456789012_u64, "role_arn": false}),
        ),
        (
            Method::POST,
            "/api/v1/networks".into(),
            json!({"name": "n", "topology": "star", "sites": {}, "options": []}),
        ),
        (
            Method::POST,
            format!("{net}/apply"),
            json!({"fingerprint": 12}),
        ),
        (
            Method::POST,
            format!("{net}/teardown"),
            json!({"fingerprint": null}),
        ),
        (
            Method::PUT,
            format!("{net}/keys/schedule"),
            json!({"every_days": "weekly"}),
        ),
    ];
    for (method, path, wrong) in &body_routes {
        for (kind, content_type, body) in hostile_bodies(wrong.clone()) {
            cases.push((
                "ada",
                Case {
                    what: format!("{method} {path} with {kind}"),
                    req: raw(&ada, method.clone(), path, content_type, body),
                },
            ));
        }
    }

    // 2. Ids that are malformed, unknown, or another organization's.
    let id_routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/api/v1/networks/{}".into(), None),
        (Method::GET, "/api/v1/networks/{}/job".into(), None),
        (Method::GET, "/api/v1/networks/{}/events".into(), None),
        (Method::GET, "/api/v1/networks/{}/plan".into(), None),
        (Method::GET, "/api/v1/networks/{}/connectivity".into(), None),
        (
            Method::POST,
            "/api/v1/networks/{}/connectivity".into(),
            None,
        ),
        (
            Method::POST,
            "/api/v1/networks/{}/apply".into(),
            Some(json!({"fingerprint": "f"})),
        ),
        (
            Method::POST,
            "/api/v1/networks/{}/teardown".into(),
            Some(json!({"fingerprint": "f"})),
        ),
        (Method::POST, "/api/v1/networks/{}/keys/rotate".into(), None),
        (
            Method::PUT,
            "/api/v1/networks/{}/keys/schedule".into(),
            Some(json!({"every_days": 30})),
        ),
        (
            Method::POST,
            "/api/v1/networks/{}/keys/1/invalidate".into(),
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/networks/{{}}/sites/{}/failover", Uuid::new_v4()),
            None,
        ),
        (Method::DELETE, "/api/v1/accounts/{}".into(), None),
        (Method::POST, "/api/v1/accounts/{}/verify".into(), None),
        (
            Method::GET,
            "/api/v1/accounts/{}/vpcs?region=us-east-1".into(),
            None,
        ),
        (
            Method::GET,
            "/api/v1/accounts/{}/kms-keys?region=us-east-1".into(),
            None,
        ),
        (
            Method::PATCH,
            "/api/v1/users/{}".into(),
            Some(json!({"role": "member"})),
        ),
        (Method::DELETE, "/api/v1/users/{}".into(), None),
        (Method::DELETE, "/api/v1/users/{}/sessions".into(), None),
    ];
    let bad_ids = [
        "not-a-uuid".to_string(),
        Uuid::new_v4().to_string(),
        "%27%20OR%201%3D1--".to_string(),
        "0".repeat(300),
    ];
    for (method, pattern, body) in &id_routes {
        let mut ids: Vec<String> = bad_ids.to_vec();
        if pattern.starts_with("/api/v1/users") {
            ids.push(hank.to_string());
        }
        for id in ids {
            let path = pattern.replacen("{}", &id, 1);
            let body = body.as_ref().map(Value::to_string).unwrap_or_default();
            cases.push((
                "ada",
                Case {
                    what: format!("{method} {path}"),
                    req: raw(&ada, method.clone(), &path, Some("application/json"), body),
                },
            ));
        }
    }

    // 3. Query strings and path parts of the wrong kind.
    for path in [
        format!("{net}/events?after=abc"),
        format!("{net}/events?after=-99999999999999999999"),
        format!("{net}/plan?kind=destroy"),
        format!("{acct}/vpcs"),
        format!("{acct}/vpcs?region=mars-north-1"),
        format!("{acct}/kms-keys?region="),
        format!("{acct}/kms-keys?region={}", "a".repeat(500)),
        format!("{net}/keys/abc/invalidate"),
        format!("{net}/keys/-1/invalidate"),
        format!("{net}/keys/99999999999/invalidate"),
        format!("{net}/sites/not-a-site/failover"),
        "/api/v1/nothing-here".to_string(),
    ] {
        let method = if path.contains("invalidate") || path.contains("failover") {
            Method::POST
        } else {
            Method::GET
        };
        cases.push((
            "ada",
            Case {
                what: format!("{method} {path}"),
                req: raw(&ada, method, &path, None, Body::empty()),
            },
        ));
    }

    // 4. Every signed-in route without a session, and with a signed-out one.
    let signed_in_routes: Vec<(Method, String)> = vec![
        (Method::GET, "/api/v1/me".into()),
        (Method::GET, "/api/v1/overview".into()),
        (Method::PUT, "/api/v1/me/password".into()),
        (Method::PATCH, "/api/v1/organization".into()),
        (Method::GET, "/api/v1/users".into()),
        (Method::POST, "/api/v1/users".into()),
        (Method::DELETE, format!("/api/v1/users/{hank}")),
        (Method::GET, "/api/v1/audit".into()),
        (Method::GET, "/api/v1/accounts".into()),
        (Method::GET, "/api/v1/accounts/setup".into()),
        (Method::POST, "/api/v1/accounts".into()),
        (Method::GET, "/api/v1/networks".into()),
        (Method::POST, "/api/v1/networks".into()),
        (Method::GET, net.clone()),
        (Method::POST, format!("{net}/keys/rotate")),
        (Method::POST, format!("{net}/connectivity")),
    ];
    for (who, client) in [("anonymous", &anonymous), ("signed out", &stale)] {
        for (method, path) in &signed_in_routes {
            cases.push((
                who,
                Case {
                    what: format!("{who}: {method} {path}"),
                    req: raw(client, method.clone(), path, Some("application/json"), "{}"),
                },
            ));
        }
    }

    // 5. Server functions: missing, mistyped and oversized arguments.
    let server_fns: Vec<(&str, String)> = vec![
        ("get_network", String::new()),
        ("get_network", "id=not-a-uuid".into()),
        ("network_plan", format!("id={}", Uuid::new_v4())),
        (
            "network_plan",
            format!("id={}&teardown=perhaps", Uuid::new_v4()),
        ),
        ("start_job", format!("id={}&teardown=false", Uuid::new_v4())),
        ("network_events", format!("id={}&after=x", Uuid::new_v4())),
        ("set_user_role", format!("user_id={hank}&role=admin")),
        ("set_user_role", "user_id=x&role=root".into()),
        ("remove_user", format!("user_id={hank}")),
        ("revoke_sessions", "user_id=".into()),
        ("create_user", "email=x".into()),
        (
            "change_password",
            "current_password=&new_password=x&confirm_password=y".into(),
        ),
        ("rename_org", format!("name={}", "x".repeat(500))),
        (
            "invalidate_key",
            format!("id={}&epoch=zero", Uuid::new_v4()),
        ),
        ("add_account", "account_id=12&role_arn=arn".into()),
        (
            "discover_vpcs",
            format!("account_id={}&region=nowhere-1", Uuid::new_v4()),
        ),
        ("no_such_function", String::new()),
        ("create_network", "{\"request\": 5}".into()),
    ];
    for (name, body) in &server_fns {
        let content_type = if *name == "create_network" {
            "application/json"
        } else {
            "application/x-www-form-urlencoded"
        };
        cases.push((
            "ada",
            Case {
                what: format!("server fn {name}({body})"),
                req: raw(
                    &ada,
                    Method::POST,
                    &format!("/api/{name}"),
                    Some(content_type),
                    body.clone(),
                ),
            },
        ));
    }

    // 6. A state-changing call from another site (no same Origin).
    let mut cross = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/users")
        .header(header::ORIGIN, "https://evil.example")
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(c) = &ada.cookie {
        cross = cross.header(header::COOKIE, c);
    }
    cases.push((
        "ada",
        Case {
            what: "cross-site POST /api/v1/users".into(),
            req: cross
                .body(Body::from(
                    json!({"email": "eve@acme.test", "name": "Eve", "role": "admin", "password": "a long enough passphrase"})
                        .to_string(),
                ))
                .expect("request"),
        },
    ));

    // 7. The appliance API: bad bodies, no credential, forged credentials.
    for (kind, content_type, body) in
        hostile_bodies(json!({"bootstrap_token": 5, "instance_id": [], "availability_zone": null}))
    {
        cases.push((
            "appliance",
            Case {
                what: format!("POST /register with {kind}"),
                req: raw(
                    &anonymous,
                    Method::POST,
                    "/api/appliance/v1/register",
                    content_type,
                    body,
                ),
            },
        ));
    }
    cases.push((
        "appliance",
        Case {
            what: "POST /register with an unknown token".into(),
            req: raw(
                &anonymous,
                Method::POST,
                "/api/appliance/v1/register",
                Some("application/json"),
                json!({"bootstrap_token": "vpcmesh-bt-0000", "instance_id": "i-0123456789abcdef0",
                       "availability_zone": "us-east-1a", "private_ip": "10.0.0.5", "agent_version": "0.1.0"})
                    .to_string(),
            ),
        },
    ));
    let credentials = [
        None,
        Some("Bearer".to_string()),
        Some("Bearer ".to_string()),
        Some(format!("Bearer {}", "A".repeat(64))),
        Some("Basic YWRtaW46YWRtaW4=".to_string()),
        Some(format!("Bearer {}", "x".repeat(5000))),
    ];
    for (method, path) in [
        (Method::GET, "/api/appliance/v1/config"),
        (Method::GET, "/api/appliance/v1/config?after=zzz"),
        (Method::POST, "/api/appliance/v1/status"),
        (Method::POST, "/api/appliance/v1/generation"),
        (Method::POST, "/api/appliance/v1/probe"),
    ] {
        for credential in &credentials {
            let mut b = Request::builder()
                .method(method.clone())
                .uri(path)
                .header(header::CONTENT_TYPE, "application/json");
            if let Some(c) = credential {
                b = b.header(header::AUTHORIZATION, c);
            }
            cases.push((
                "appliance",
                Case {
                    what: format!(
                        "{method} {path} with {:?}",
                        credential.as_deref().map(|c| &c[..c.len().min(12)])
                    ),
                    req: b.body(Body::from("{}")).expect("request"),
                },
            ));
        }
    }
    cases.push((
        "appliance",
        Case {
            what: "an agent version that was never built".into(),
            req: raw(
                &anonymous,
                Method::GET,
                "/api/appliance/v1/agent/9.9.9-nothing/vpcmesh-agent",
                None,
                Body::empty(),
            ),
        },
    ));

    assert!(cases.len() >= 200, "only {} hostile requests", cases.len());
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for (who, case) in cases {
        let client = match who {
            "ada" => &mut ada,
            "signed out" => &mut stale,
            _ => &mut anonymous,
        };
        let r = client.send(case.req).await;
        says_why(&case.what, &r);
        *statuses.entry(r.status.as_u16()).or_default() += 1;
    }
    println!("answers by status: {statuses:?}");
    assert_eq!(
        app.table_checksums().await,
        before,
        "a refused request changed a row"
    );
    // Nobody was let in along the way.
    assert_eq!(ada.get("/api/v1/me").await.status, StatusCode::OK);
    assert_eq!(
        stale.get("/api/v1/me").await.status,
        StatusCode::UNAUTHORIZED
    );
}
