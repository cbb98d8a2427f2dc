//! `/metrics`: the server's Prometheus exposition, checked by `promtool`
//! and read back after real appliance API traffic.

use crate::appliances::{
    config, instance, ready_east_west, register, registration, status, tokens,
};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;
use vpcmesh_protocol::RegisterResponse;

/// The value of the sample whose line starts with `series` (name and labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_count_appliance_traffic_compiles_and_steps_and_pass_promtool() {
    let (w, _) = ready_east_west("metrics").await;
    let east = tokens(&w, "us-east-1").await;
    let mut c = w.app.client();
    let (s, a) = register(
        &mut c,
        registration(&east[&'a'], &instance(&w, "us-east-1", 'a').await),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    let a: RegisterResponse = serde_json::from_value(a).expect("response");
    let (s, cfg) = config(&mut c, &a.credential, "").await;
    assert_eq!(s, StatusCode::OK);
    let version = cfg.expect("config").version;
    let (s, _) = config(&mut c, &a.credential, &format!("?after={version}&wait=0")).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let report = format!(
        r#"{{"agent_version":"0.1.0","applied_version":{version},"ha_role":"active","tunnels":[]}}"#
    );
    assert_eq!(
        status(&mut c, &a.credential, &report).await,
        StatusCode::NO_CONTENT
    );
    let (s, _) = config(&mut c, "vma_unknown", "").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Not on the public listener.
    let public = c.get("/metrics").await;
    assert_eq!(public.status, StatusCode::NOT_FOUND);
    assert!(!public.text().contains("vpcmesh_http_requests_total"));

    let scrape = || async {
        let res = server::metrics::router(w.app.state.clone())
            .oneshot(
                Request::get("/metrics")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("answer");
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/plain; version=0.0.4"));
        let body = res.into_body().collect().await.expect("body").to_bytes();
        String::from_utf8(body.to_vec()).expect("utf-8")
    };
    // The registration's notification reaches the listener on its own time.
    let text = crate::support::eventually(
        std::time::Duration::from_secs(10),
        "a config notification counted",
        || async {
            let text = scrape().await;
            (sample(
                &text,
                r#"vpcmesh_config_notifications_total{kind="network"}"#,
            ) >= Some(1.0))
            .then_some(text)
        },
    )
    .await;
    appliance::metrics::promtool_check(&text).unwrap_or_else(|e| panic!("promtool: {e}\n{text}"));
    let at_least = |series: &str, n: f64| {
        let v = sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
        assert!(v >= n, "{series} = {v}, expected at least {n}");
    };
    at_least(
        r#"vpcmesh_http_requests_total{method="GET",route="/api/appliance/v1/config",status="200"}"#,
        1.0,
    );
    at_least(
        r#"vpcmesh_http_requests_total{method="POST",route="/api/appliance/v1/register",status="201"}"#,
        1.0,
    );
    at_least(r#"vpcmesh_config_polls_total{answer="changed"}"#, 1.0);
    at_least(r#"vpcmesh_config_polls_total{answer="unchanged"}"#, 1.0);
    at_least("vpcmesh_config_compiles_total", 1.0);
    at_least("vpcmesh_config_compile_duration_seconds_count", 1.0);
    at_least("vpcmesh_appliance_status_reports_total", 1.0);
    at_least(
        r#"vpcmesh_appliance_refusals_total{code="unauthenticated"}"#,
        1.0,
    );
    at_least(
        r#"vpcmesh_appliance_credential_lookups_total{result="cached"}"#,
        1.0,
    );
    at_least(
        r#"vpcmesh_appliance_credential_lookups_total{result="unknown"}"#,
        1.0,
    );
    at_least(
        r#"vpcmesh_http_request_duration_seconds_bucket{route="/api/appliance/v1/config",le="+Inf"}"#,
        2.0,
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("vpcmesh_provisioning_step_turns_total{")
                && l.contains(r#"outcome="succeeded""#)),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"vpcmesh_db_pool_connections{state="max"}"#),
        Some(16.0)
    );
    assert_eq!(sample(&text, "vpcmesh_appliance_polls_waiting"), Some(0.0));
}
