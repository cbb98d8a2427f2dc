//! A local IMDSv2 endpoint that keeps EC2's token rules (`HttpTokens:
//! required`), for the lab (one per instance namespace) and for tests.
//!
//! Tokens: `PUT /latest/api/token` with a TTL of 1..=21600 seconds, else
//! 400; a proxied PUT (`X-Forwarded-For`) is 403. Every other request needs a
//! live token, else 401, before its path is even looked at; unknown paths
//! are 404.

use super::facts::{IdentityDocument, SpotAction};
use super::paths;
use base64::Engine;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rand::RngCore;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// What the emulated instance answers. Plain text, as IMDS serves it, so a
/// test can serve a malformed answer too.
#[derive(Clone, Debug)]
pub struct EmulatedInstance {
    pub instance_id: String,
    pub availability_zone: String,
    pub region: String,
    pub private_ip: String,
    pub mac: String,
    pub interface_id: String,
    /// `None`: `public-ipv4` is 404, as on an instance without one.
    pub public_ip: Option<String>,
    /// `None`: the identity document and signature are 404.
    pub identity: Option<IdentityDocument>,
}

impl EmulatedInstance {
    /// A plausible instance in us-east-1a, for tests.
    pub fn example() -> Self {
        Self {
            instance_id: "i-0123456789abcdef0".into(),
            availability_zone: "us-east-1a".into(),
            region: "us-east-1".into(),
            private_ip: "10.0.0.5".into(),
            mac: "0e:12:34:56:78:9a".into(),
            interface_id: "eni-0123456789abcdef0".into(),
            public_ip: Some("198.51.100.7".into()),
            identity: None,
        }
    }

    fn answer(&self, spot: Option<&SpotAction>, path: &str) -> Option<(String, &'static str)> {
        const TEXT: &str = "text/plain";
        const JSON: &str = "application/json";
        let text = |s: &String| Some((s.clone(), TEXT));
        match path {
            paths::INSTANCE_ID => text(&self.instance_id),
            paths::AVAILABILITY_ZONE => text(&self.availability_zone),
            paths::REGION => text(&self.region),
            paths::LOCAL_IPV4 => text(&self.private_ip),
            paths::MAC => text(&self.mac),
            paths::PUBLIC_IPV4 => self.public_ip.as_ref().and_then(text),
            paths::SPOT_INSTANCE_ACTION => spot
                .and_then(|s| serde_json::to_string(s).ok())
                .map(|s| (s, JSON)),
            paths::IDENTITY_DOCUMENT => self.identity.as_ref().map(|d| (d.document.clone(), JSON)),
            paths::IDENTITY_SIGNATURE => self.identity.as_ref().and_then(|d| text(&d.signature)),
            p if p == paths::interface_id(&self.mac) => text(&self.interface_id),
            _ => None,
        }
    }
}

/// How many requests of each kind the emulator saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImdsCounters {
    /// Every `PUT /latest/api/token`, granted or not.
    pub token_requests: u64,
    pub tokens_issued: u64,
    /// Every other request.
    pub metadata_requests: u64,
    /// Answers 400 (a token request without a valid TTL).
    pub bad_requests: u64,
    /// Answers 401 (no token, an unknown or an expired one).
    pub unauthorized: u64,
    pub not_found: u64,
}

/// The instance profile's role, as IMDS hands its credentials to the SDKs.
#[derive(Clone, Debug)]
pub struct RoleCredentials {
    pub role: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub token: String,
}

const ROLE_PATH: &str = "/latest/meta-data/iam/security-credentials/";

impl RoleCredentials {
    fn answer(&self, path: &str) -> Option<String> {
        if path == ROLE_PATH {
            return Some(self.role.clone());
        }
        (path.strip_prefix(ROLE_PATH) == Some(self.role.as_str())).then(|| {
            // A lab's credentials do not lapse: the expiry is far away.
            serde_json::json!({
                "Code": "Success",
                "LastUpdated": "2026-01-01T00:00:00Z",
                "Type": "AWS-HMAC",
                "AccessKeyId": self.access_key_id,
                "SecretAccessKey": self.secret_access_key,
                "Token": self.token,
                "Expiration": "2099-01-01T00:00:00Z",
            })
            .to_string()
        })
    }
}

struct State {
    instance: EmulatedInstance,
    role: Option<RoleCredentials>,
    spot: Option<SpotAction>,
    /// Token -> when it expires.
    tokens: HashMap<String, Instant>,
    counters: ImdsCounters,
}

/// A running emulator; it stops (with its connections) when dropped.
pub struct ImdsEmulator {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl ImdsEmulator {
    /// Serves `instance` on `listener` from the current tokio runtime.
    pub fn start(listener: TcpListener, instance: EmulatedInstance) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            instance,
            role: None,
            spot: None,
            tokens: HashMap::new(),
            counters: ImdsCounters::default(),
        }));
        let task = tokio::spawn(serve(listener, state.clone()));
        Ok(Self { addr, state, task })
    }

    /// As `start`, for a listener bound elsewhere (say, inside a network
    /// namespace by the lab runner).
    pub fn start_std(
        listener: std::net::TcpListener,
        instance: EmulatedInstance,
    ) -> std::io::Result<Self> {
        listener.set_nonblocking(true)?;
        Self::start(TcpListener::from_std(listener)?, instance)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL a client uses (`--imds-url`).
    pub fn url(&self) -> url::Url {
        url::Url::parse(&format!("http://{}", self.addr))
            .expect("a socket address makes a valid http URL")
    }

    pub fn counters(&self) -> ImdsCounters {
        self.state().counters
    }

    /// Posts (or with `None`, withdraws) a spot interruption notice.
    pub fn set_spot_action(&self, notice: Option<SpotAction>) {
        self.state().spot = notice;
    }

    pub fn set_instance(&self, instance: EmulatedInstance) {
        self.state().instance = instance;
    }

    /// Serves `role`'s credentials under `iam/security-credentials/`.
    pub fn set_role(&self, role: Option<RoleCredentials>) {
        self.state().role = role;
    }

    /// Every token issued so far lapses now (as after hours, or a stop and
    /// start of the instance).
    pub fn expire_tokens(&self) {
        let now = Instant::now();
        for expiry in self.state().tokens.values_mut() {
            *expiry = now;
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

impl Drop for ImdsEmulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The state stays consistent under a panic (every update is one
/// assignment), so a poisoned lock is taken over.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

async fn serve(listener: TcpListener, state: Arc<Mutex<State>>) {
    // Owned here, so aborting this task drops every connection with it.
    let mut connections = JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "IMDS emulator: accept failed");
                // Out of descriptors, say: let connections finish first.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let state = state.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let answer = answer(&state, &req);
                async move { Ok::<_, std::convert::Infallible>(answer) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "IMDS emulator: connection ended");
            }
        });
    }
}

fn answer(state: &Mutex<State>, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let mut state = lock(state);
    let path = req.uri().path();
    if path == paths::TOKEN {
        state.counters.token_requests += 1;
        return issue_token(&mut state, req);
    }
    state.counters.metadata_requests += 1;
    let now = Instant::now();
    let live = req
        .headers()
        .get(paths::TOKEN_HEADER)
        .and_then(|t| t.to_str().ok())
        .and_then(|t| state.tokens.get(t))
        .is_some_and(|expiry| now < *expiry);
    if !live {
        state.counters.unauthorized += 1;
        return status_only(StatusCode::UNAUTHORIZED);
    }
    if req.method() != Method::GET {
        return status_only(StatusCode::METHOD_NOT_ALLOWED);
    }
    let role = state.role.as_ref().and_then(|r| r.answer(path));
    let answer = match role {
        Some(json) => Some((json, "text/plain")),
        None => state.instance.answer(state.spot.as_ref(), path),
    };
    match answer {
        Some((body, content_type)) => Response::builder()
            .header(header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_else(|_| status_only(StatusCode::INTERNAL_SERVER_ERROR)),
        None => {
            state.counters.not_found += 1;
            status_only(StatusCode::NOT_FOUND)
        }
    }
}

fn issue_token(state: &mut State, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::PUT {
        return status_only(StatusCode::METHOD_NOT_ALLOWED);
    }
    if req.headers().contains_key(paths::FORWARDED_FOR_HEADER) {
        return status_only(StatusCode::FORBIDDEN);
    }
    let ttl = req
        .headers()
        .get(paths::TTL_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|ttl| (1..=paths::MAX_TOKEN_TTL_SECS).contains(ttl));
    let Some(ttl) = ttl else {
        state.counters.bad_requests += 1;
        return status_only(StatusCode::BAD_REQUEST);
    };
    let now = Instant::now();
    state.tokens.retain(|_, expiry| now < *expiry);
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let token = base64::engine::general_purpose::STANDARD.encode(raw);
    state
        .tokens
        .insert(token.clone(), now + Duration::from_secs(ttl.into()));
    state.counters.tokens_issued += 1;
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain")
        .header(paths::TTL_HEADER, ttl)
        .body(Full::new(Bytes::from(token)))
        .unwrap_or_else(|_| status_only(StatusCode::INTERNAL_SERVER_ERROR))
}

fn status_only(status: StatusCode) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::new()));
    *res.status_mut() = status;
    res
}
