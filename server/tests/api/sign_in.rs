use crate::support::{TestApp, PASSWORD};
use axum::http::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn right_password_signs_in_and_sets_a_hardened_cookie() {
    let (app, _) = TestApp::acme().await;
    let mut c = app.client();
    let r = c.sign_in("Ada@Acme.test ", PASSWORD).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["email"], "ada@acme.test");
    assert_eq!(r.json()["role"], "admin");
    let cookie = r.header("set-cookie").expect("session cookie set");
    assert!(cookie.starts_with("vpcmesh_session="), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    let me = c.get("/api/v1/me").await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json()["org_name"], "Acme");
    assert_eq!(
        app.count("SELECT count(*) FROM audit_events WHERE action = 'sign_in'")
            .await,
        1
    );
}

#[tokio::test]
async fn wrong_password_is_refused_and_creates_no_session() {
    let (app, _) = TestApp::acme().await;
    let mut c = app.client();
    let r = c.sign_in("ada@acme.test", "not the password").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.error_code(), "invalid_credentials");
    assert_eq!(
        r.json()["error"]["message"],
        "Email or password is incorrect."
    );
    assert!(r.header("set-cookie").is_none());
    assert_eq!(app.session_rows().await, 0);
    assert_eq!(c.get("/api/v1/me").await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn unknown_user_gets_the_same_answer_as_a_wrong_password() {
    let (app, _) = TestApp::acme().await;
    let r = app.client().sign_in("nobody@acme.test", PASSWORD).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.error_code(), "invalid_credentials");
}

#[tokio::test]
async fn malformed_sign_in_fields_get_clear_errors() {
    let app = TestApp::start().await;
    let mut c = app.client();
    let r = c.sign_in("not-an-email", PASSWORD).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["field"], "email");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("name@example.com"));

    let r = c.sign_in("ada@acme.test", "").await;
    assert_eq!(r.json()["error"]["field"], "password");

    let r = c
        .json(
            Method::POST,
            "/api/v1/session",
            Some(json!({ "email": "ada@acme.test" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("password"), "{}", r.text());

    let r = c
        .json(
            Method::POST,
            "/api/v1/session",
            Some(json!({ "email": 7, "password": [] })),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error_code(), "request");
    assert_eq!(app.session_rows().await, 0);
}

/// Sign-ins started all at once, each with its own client; their statuses.
async fn burst(app: &TestApp, attempts: Vec<(String, &'static str)>) -> Vec<StatusCode> {
    let mut set = tokio::task::JoinSet::new();
    for (email, password) in attempts {
        let mut c = app.client();
        set.spawn(async move { c.sign_in(&email, password).await.status });
    }
    let mut statuses = Vec::new();
    while let Some(s) = set.join_next().await {
        statuses.push(s.expect("a sign-in task"));
    }
    statuses
}

fn count(statuses: &[StatusCode], want: StatusCode) -> usize {
    statuses.iter().filter(|s| **s == want).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_parallel_burst_gets_no_more_tries_than_the_limit_per_email_and_per_address() {
    use server::auth::rate_limit::{MAX_FAILURES_PER_EMAIL, MAX_FAILURES_PER_IP};
    let (app, _) = TestApp::acme().await;
    // 30 guesses at once for one email: only the limit's worth is tried.
    let guesses = (0..30)
        .map(|_| ("ada@acme.test".to_string(), "guess guess guess"))
        .collect();
    let statuses = burst(&app, guesses).await;
    assert_eq!(
        count(&statuses, StatusCode::UNAUTHORIZED),
        MAX_FAILURES_PER_EMAIL as usize,
        "{statuses:?}"
    );
    assert_eq!(
        count(&statuses, StatusCode::TOO_MANY_REQUESTS),
        30 - MAX_FAILURES_PER_EMAIL as usize,
        "{statuses:?}"
    );
    // From the same address, many emails at once: the address's limit
    // holds too (5 failures are in already).
    let spread = (0..40)
        .map(|i| (format!("guess{i}@acme.test"), "guess guess guess"))
        .collect();
    let statuses = burst(&app, spread).await;
    assert_eq!(
        count(&statuses, StatusCode::UNAUTHORIZED),
        (MAX_FAILURES_PER_IP - MAX_FAILURES_PER_EMAIL) as usize,
        "{statuses:?}"
    );
    assert_eq!(
        count(&statuses, StatusCode::UNAUTHORIZED)
            + count(&statuses, StatusCode::TOO_MANY_REQUESTS),
        40,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn repeated_failures_lock_the_email_even_for_the_right_password() {
    let (app, _) = TestApp::acme().await;
    let mut c = app.client();
    for _ in 0..server::auth::rate_limit::MAX_FAILURES_PER_EMAIL {
        assert_eq!(
            c.sign_in("ada@acme.test", "guess guess guess").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let r = c.sign_in("ada@acme.test", PASSWORD).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.error_code(), "rate_limited");
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!(retry > 0 && retry <= 15 * 60, "{retry}");
    assert!(c.cookie.is_none());
    // Another user is not affected by Ada's lock.
    let org: uuid::Uuid = sqlx::query_scalar("SELECT id FROM organizations")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    app.add_user(org, "bob@acme.test", app::api::Role::Member)
        .await;
    assert_eq!(
        app.client().sign_in("bob@acme.test", PASSWORD).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn plain_form_sign_in_without_javascript_redirects_to_the_console() {
    let (app, _) = TestApp::acme().await;
    let mut c = app.client();
    let r = c.form_sign_in("ada@acme.test", PASSWORD, "/admin").await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text());
    assert_eq!(r.header("location"), Some("/admin"));
    assert!(c.cookie.is_some());
    assert_eq!(c.get("/api/v1/me").await.status, StatusCode::OK);
}

#[tokio::test]
async fn form_sign_in_never_redirects_off_site_in_any_encoding() {
    let (app, _) = TestApp::acme().await;
    // Each is what a crafted link's `next` arrives as, after the form's own
    // URL decoding: raw slashes, tabs and newlines browsers drop, backslashes
    // they read as slashes, and the same once more percent-encoded.
    for evil in [
        "//evil.example/x",
        "/\\evil.example",
        "/\t/evil.example",
        "/\n/evil.example",
        "/%2F/evil.example",
        "/%5Cevil.example",
        "/%09/evil.example",
        "https://evil.example",
        "/\u{3000}/evil.example",
    ] {
        let r = app
            .client()
            .form_sign_in("ada@acme.test", PASSWORD, evil)
            .await;
        assert_eq!(r.header("location"), Some("/"), "{evil:?}");
    }
    let r = app
        .client()
        .form_sign_in("ada@acme.test", PASSWORD, "/networks?tab=keys")
        .await;
    assert_eq!(r.header("location"), Some("/networks?tab=keys"));
}

#[tokio::test]
async fn plain_form_with_a_wrong_password_returns_to_the_form_with_the_reason() {
    let (app, _) = TestApp::acme().await;
    let mut c = app.client();
    let r = c.form_sign_in("ada@acme.test", "nope nope nope", "").await;
    assert_eq!(r.status, StatusCode::FOUND);
    let location = r.header("location").expect("back to the form").to_string();
    let back = location
        .strip_prefix(crate::support::ORIGIN)
        .expect("same site");
    assert!(
        back.starts_with("/sign-in?__path=%2Fapi%2Fsign_in&__err="),
        "{location}"
    );
    assert!(c.cookie.is_none());
    let page = c.page(back).await.text();
    assert!(
        page.contains("Email or password is incorrect."),
        "the form page states the reason"
    );
}

#[tokio::test]
async fn a_session_ends_at_its_absolute_lifetime_however_busy() {
    use std::time::{Duration, Instant};
    let app = TestApp::with_settings(|s| s.session_lifetime = Duration::from_secs(2)).await;
    app.org_with_admin("Acme", "ada@acme.test").await;
    let mut c = app.signed_in("ada@acme.test").await;
    let started = Instant::now();
    assert_eq!(c.get("/api/v1/me").await.status, StatusCode::OK);
    // A request every 100 ms keeps the idle expiry fresh; the lifetime
    // (counted in whole seconds from the sign-in) still ends the session.
    let ended = loop {
        let status = c.get("/api/v1/me").await.status;
        if status == StatusCode::UNAUTHORIZED {
            break started.elapsed();
        }
        assert_eq!(status, StatusCode::OK);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the session outlived its lifetime"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(ended >= Duration::from_millis(900), "{ended:?}");
    assert_eq!(app.session_rows().await, 0, "the expired session is gone");
}

/// One person, two organizations: an admin adding an email that another
/// organization has learns nothing; sign-in opens the organization whose
/// password it is, and asks which when the password opens several.
#[tokio::test]
async fn an_email_in_two_organizations_leaks_nothing_and_signs_in_where_the_password_opens() {
    let (app, acme) = TestApp::acme().await;
    let globex = app.org_with_admin("Globex", "gus@globex.test").await;
    let initech = app.org_with_admin("Initech", "bill@initech.test").await;
    let mut gus = app.signed_in("gus@globex.test").await;
    let mut ada_acme = app.signed_in("ada@acme.test").await;
    let own = "a different long passphrase";
    let add = |email: &str, password: &str| json!({ "email": email, "name": "Someone", "role": "member", "password": password });

    // Acme has ada@acme.test: Globex may add her too, and is told nothing;
    // twice in one organization is refused.
    for expected in [StatusCode::CREATED, StatusCode::CONFLICT] {
        let r = gus
            .json(
                Method::POST,
                "/api/v1/users",
                Some(add("ada@acme.test", own)),
            )
            .await;
        assert_eq!(r.status, expected, "{}", r.text());
    }
    // Each password opens its own organization.
    for (password, org) in [(PASSWORD, "Acme"), (own, "Globex")] {
        let mut c = app.client();
        let r = c.sign_in("ada@acme.test", password).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(c.get("/api/v1/me").await.json()["org_name"], org);
    }

    // The same password in both: sign-in asks which, and opens nothing yet.
    let shared = "ana@shared.test";
    for admin in [&mut gus, &mut ada_acme] {
        let r = admin
            .json(Method::POST, "/api/v1/users", Some(add(shared, PASSWORD)))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    }
    let mut c = app.client();
    let r = c.sign_in(shared, PASSWORD).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    assert_eq!(r.error_code(), "choose_organization");
    assert_eq!(
        r.json()["error"]["organizations"],
        json!([
            { "id": acme.to_string(), "name": "Acme" },
            { "id": globex.to_string(), "name": "Globex" },
        ])
    );
    assert!(r.header("set-cookie").is_none() && c.cookie.is_none());
    let at = |org: &str| {
        let mut c = app.client();
        let body = json!({ "email": shared, "password": PASSWORD, "organization": org });
        async move {
            let r = c.json(Method::POST, "/api/v1/session", Some(body)).await;
            let me = c.get("/api/v1/me").await;
            (r, me)
        }
    };
    let (r, me) = at(&globex.to_string()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(me.json()["org_name"], "Globex");
    // An organization she is not in reads as a wrong password; a malformed
    // one names the field.
    let (r, _) = at(&initech.to_string()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.error_code(), "invalid_credentials");
    let (r, _) = at("not an id").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["field"], "organization");

    // A wrong password is logged as a failure in each organization.
    let r = app
        .client()
        .sign_in(shared, "not her password at all")
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.count(&format!(
            "SELECT count(DISTINCT a.org_id) FROM audit_events a JOIN users u ON u.id = a.actor_id
              WHERE a.action = 'sign_in.failed' AND u.email = '{shared}'"
        ))
        .await,
        2
    );

    // Without JavaScript the form comes back with the choice to make.
    let mut c = app.client();
    let r = c.form_sign_in(shared, PASSWORD, "").await;
    assert_eq!(r.status, StatusCode::FOUND);
    let location = r.header("location").expect("back to the form").to_string();
    let back = location
        .strip_prefix(crate::support::ORIGIN)
        .expect("same site");
    let page = c.page(back).await.text();
    assert!(page.contains("open more than one organization"), "{page}");
    assert!(
        page.contains(&format!("value=\"{acme}\""))
            && page.contains(&format!("value=\"{globex}\"")),
        "the page offers both organizations"
    );
    let r = c
        .form(
            "/api/sign_in",
            &[
                ("email", shared),
                ("password", PASSWORD),
                ("next", ""),
                ("organization", &acme.to_string()),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(c.get("/api/v1/me").await.json()["org_name"], "Acme");
}
