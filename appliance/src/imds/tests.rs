//! The client against the emulator, on loopback; the emulator's token rules
//! with raw requests.

use super::*;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Empty;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

async fn emulator(instance: EmulatedInstance) -> ImdsEmulator {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    ImdsEmulator::start(listener, instance).expect("the emulator starts")
}

/// One request as a client without IMDS manners would send it.
async fn raw(
    emu: &ImdsEmulator,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> StatusCode {
    let http: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", emu.addr()));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    http.request(req.body(Empty::new()).expect("a request"))
        .await
        .expect("the emulator answers")
        .status()
}

/// A token straight from the emulator.
async fn raw_token(emu: &ImdsEmulator) -> String {
    use http_body_util::BodyExt;
    let http: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let req = Request::put(format!("http://{}{}", emu.addr(), paths::TOKEN))
        .header(paths::TTL_HEADER, "60")
        .body(Empty::new())
        .expect("a request");
    let res = http.request(req).await.expect("the emulator answers");
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.into_body().collect().await.expect("a body").to_bytes();
    String::from_utf8(body.to_vec()).expect("a text token")
}

fn expected_facts() -> InstanceFacts {
    InstanceFacts {
        instance_id: "i-0123456789abcdef0".into(),
        availability_zone: "us-east-1a".into(),
        region: "us-east-1".into(),
        private_ip: "10.0.0.5".parse().expect("an address"),
        mac: "0e:12:34:56:78:9a".into(),
        interface_id: "eni-0123456789abcdef0".into(),
        public_ip: Some("198.51.100.7".parse().expect("an address")),
    }
}

#[tokio::test]
async fn metadata_without_a_live_token_is_refused_401() {
    let emu = emulator(EmulatedInstance::example()).await;
    assert_eq!(
        raw(&emu, Method::GET, paths::INSTANCE_ID, &[]).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        raw(
            &emu,
            Method::GET,
            paths::INSTANCE_ID,
            &[(paths::TOKEN_HEADER, "made-up")]
        )
        .await,
        StatusCode::UNAUTHORIZED
    );
    // The token is checked before the path: no probing without one.
    assert_eq!(
        raw(&emu, Method::GET, "/latest/meta-data/nope", &[]).await,
        StatusCode::UNAUTHORIZED
    );
    let token = raw_token(&emu).await;
    let with_token = [(paths::TOKEN_HEADER, token.as_str())];
    assert_eq!(
        raw(&emu, Method::GET, paths::INSTANCE_ID, &with_token).await,
        StatusCode::OK
    );
    assert_eq!(
        raw(&emu, Method::GET, "/latest/meta-data/nope", &with_token).await,
        StatusCode::NOT_FOUND
    );
    emu.expire_tokens();
    assert_eq!(
        raw(&emu, Method::GET, paths::INSTANCE_ID, &with_token).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(emu.counters().unauthorized, 4);
}

#[tokio::test]
async fn a_token_request_needs_a_ttl_of_1_to_21600_seconds() {
    let emu = emulator(EmulatedInstance::example()).await;
    for ttl in [None, Some("0"), Some("21601"), Some("-5"), Some("an hour")] {
        let headers: Vec<(&str, &str)> = ttl.map(|t| (paths::TTL_HEADER, t)).into_iter().collect();
        assert_eq!(
            raw(&emu, Method::PUT, paths::TOKEN, &headers).await,
            StatusCode::BAD_REQUEST,
            "TTL {ttl:?}"
        );
    }
    for ttl in ["1", "21600"] {
        assert_eq!(
            raw(&emu, Method::PUT, paths::TOKEN, &[(paths::TTL_HEADER, ttl)]).await,
            StatusCode::OK,
            "TTL {ttl}"
        );
    }
    assert_eq!(
        raw(
            &emu,
            Method::PUT,
            paths::TOKEN,
            &[(paths::TTL_HEADER, "60"), ("X-Forwarded-For", "10.0.0.9")]
        )
        .await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        raw(
            &emu,
            Method::GET,
            paths::TOKEN,
            &[(paths::TTL_HEADER, "60")]
        )
        .await,
        StatusCode::METHOD_NOT_ALLOWED
    );
    let seen = emu.counters();
    assert_eq!(
        (seen.bad_requests, seen.tokens_issued, seen.token_requests),
        (5, 2, 9)
    );
}

#[tokio::test]
async fn the_client_reads_the_instance_facts_with_one_token() {
    let emu = emulator(EmulatedInstance::example()).await;
    let imds = Imds::new(emu.url());
    assert_eq!(
        imds.instance_facts().await.expect("facts"),
        expected_facts()
    );
    let seen = emu.counters();
    assert_eq!(seen.token_requests, 1, "the token is cached: {seen:?}");
    assert_eq!(seen.metadata_requests, 7);
    assert_eq!(seen.unauthorized, 0);
}

#[tokio::test]
async fn an_instance_without_a_public_address_has_none() {
    let emu = emulator(EmulatedInstance {
        public_ip: None,
        ..EmulatedInstance::example()
    })
    .await;
    let facts = Imds::new(emu.url()).instance_facts().await.expect("facts");
    assert_eq!(facts.public_ip, None);
    assert_eq!(facts.private_ip, expected_facts().private_ip);
}

#[tokio::test]
async fn an_expired_token_is_renewed_transparently() {
    let emu = emulator(EmulatedInstance::example()).await;
    let imds = Imds::new(emu.url());
    imds.instance_facts().await.expect("facts");
    emu.expire_tokens();
    assert_eq!(
        imds.instance_facts().await.expect("facts after expiry"),
        expected_facts()
    );
    let seen = emu.counters();
    assert_eq!(seen.token_requests, 2, "one renewal: {seen:?}");
    assert_eq!(
        seen.unauthorized, 1,
        "only the first request after expiry was refused"
    );
}

#[tokio::test]
async fn a_token_is_renewed_before_it_lapses() {
    let emu = emulator(EmulatedInstance::example()).await;
    let imds = Imds::new(emu.url()).with_token_ttl(Duration::from_secs(1));
    let first = tokio::time::Instant::now();
    imds.instance_facts().await.expect("facts");
    // Past the one-second lifetime: both sides consider the token lapsed.
    tokio::time::sleep_until(first + Duration::from_millis(1100)).await;
    imds.instance_facts().await.expect("facts later");
    let seen = emu.counters();
    assert_eq!(seen.token_requests, 2, "{seen:?}");
    assert_eq!(
        seen.unauthorized, 0,
        "the client renewed before IMDS had to refuse: {seen:?}"
    );
}

#[tokio::test]
async fn the_spot_notice_is_none_until_one_is_posted() {
    let emu = emulator(EmulatedInstance::example()).await;
    let imds = Imds::new(emu.url());
    assert_eq!(imds.spot_instance_action().await.expect("no notice"), None);
    let notice = SpotAction {
        action: SpotActionKind::Terminate,
        time: "2026-01-02T03:04:05Z".into(),
    };
    emu.set_spot_action(Some(notice.clone()));
    assert_eq!(
        imds.spot_instance_action().await.expect("a notice"),
        Some(notice)
    );
    emu.set_spot_action(None);
    assert_eq!(imds.spot_instance_action().await.expect("withdrawn"), None);
}

#[tokio::test]
async fn the_identity_document_is_none_unless_offered() {
    let emu = emulator(EmulatedInstance::example()).await;
    let imds = Imds::new(emu.url());
    assert_eq!(imds.identity_document().await.expect("none"), None);
    let document = IdentityDocument {
        document: r#"{"instanceId":"i-0123456789abcdef0","region":"us-east-1"}"#.into(),
        signature: "c2lnbmVk\nYnlBV1M=".into(),
    };
    emu.set_instance(EmulatedInstance {
        identity: Some(document.clone()),
        ..EmulatedInstance::example()
    });
    assert_eq!(
        imds.identity_document().await.expect("a document"),
        Some(document)
    );
}

#[tokio::test]
async fn the_client_refuses_malformed_facts() {
    let cases = [
        (
            EmulatedInstance {
                instance_id: "<html>captive portal</html>".into(),
                ..EmulatedInstance::example()
            },
            paths::INSTANCE_ID.to_string(),
        ),
        (
            EmulatedInstance {
                private_ip: "10.0.0.300".into(),
                ..EmulatedInstance::example()
            },
            paths::LOCAL_IPV4.to_string(),
        ),
        (
            EmulatedInstance {
                availability_zone: "eu-west-1a".into(),
                ..EmulatedInstance::example()
            },
            paths::AVAILABILITY_ZONE.to_string(),
        ),
        (
            EmulatedInstance {
                interface_id: "i-0123456789abcdef0".into(),
                ..EmulatedInstance::example()
            },
            paths::interface_id("0e:12:34:56:78:9a"),
        ),
    ];
    for (instance, bad_path) in cases {
        let emu = emulator(instance).await;
        match Imds::new(emu.url()).instance_facts().await {
            Err(e @ ImdsError::Invalid { .. }) => {
                assert_eq!(e.path(), bad_path);
                assert!(
                    e.to_string().contains(&bad_path),
                    "the message names the path: {e}"
                );
            }
            other => panic!("{bad_path}: expected a refusal, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_oversized_answer_is_refused() {
    let emu = emulator(EmulatedInstance {
        instance_id: "i-".to_string() + &"0".repeat(MAX_ANSWER),
        ..EmulatedInstance::example()
    })
    .await;
    match Imds::new(emu.url()).instance_facts().await {
        Err(ImdsError::TooLarge { path, .. }) => assert_eq!(path, paths::INSTANCE_ID),
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[tokio::test]
async fn an_absent_imds_is_an_error_naming_the_token_path_after_bounded_tries() {
    // A port that was just free: connections are refused at once.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a loopback port");
    let url = url::Url::parse(&format!("http://{addr}")).expect("a URL");
    let started = tokio::time::Instant::now();
    match Imds::new(url).instance_facts().await {
        Err(ImdsError::Unreachable { path, attempts, .. }) => {
            assert_eq!(path, paths::TOKEN);
            assert_eq!(attempts, 4);
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "retries are bounded"
    );
}
