//! HTTP(S) to the control plane's appliance API.

use crate::protocol::{
    paths, DesiredConfig, GenerationRequest, GenerationResponse, ProbeReport, RegisterRequest,
    RegisterResponse, StatusReport, PROTOCOL_VERSION,
};
use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::time::Duration;
use url::Url;

/// Answers larger than this are refused unread (a config at its limits is far
/// smaller).
const MAX_ANSWER: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("the server is unreachable: {0}")]
    Unreachable(String),
    #[error("the server refused ({status}): {code}: {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    #[error("the server's answer is unreadable: {0}")]
    Decode(String),
}

impl SyncError {
    /// Errors that retrying the same request will not fix.
    pub fn is_permanent(&self) -> bool {
        matches!(self, SyncError::Refused { status, .. } if (400..500).contains(status) && *status != 429)
    }
}

pub struct ControlPlane {
    base: Url,
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl ControlPlane {
    pub fn new(base: Url) -> Result<Self, SyncError> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| SyncError::Unreachable(format!("no TLS roots: {e}")))?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            base,
            http: Client::builder(TokioExecutor::new()).build(https),
        })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        credential: Option<&str>,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), SyncError> {
        let url = self
            .base
            .join(path)
            .map_err(|e| SyncError::Unreachable(format!("bad URL {path}: {e}")))?;
        let mut req = Request::builder().method(method).uri(url.as_str()).header(
            header::USER_AGENT,
            concat!("vpcmesh-agent/", env!("CARGO_PKG_VERSION")),
        );
        if let Some(c) = credential {
            req = req.header(header::AUTHORIZATION, format!("Bearer {c}"));
        }
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| SyncError::Unreachable(e.to_string()))?;
        let answer = tokio::time::timeout(timeout, async {
            let res = self
                .http
                .request(req)
                .await
                .map_err(|e| SyncError::Unreachable(e.to_string()))?;
            let status = res.status();
            let body = http_body_util::Limited::new(res.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| SyncError::Decode(e.to_string()))?
                .to_bytes();
            Ok::<_, SyncError>((status, body))
        })
        .await
        .map_err(|_| SyncError::Unreachable(format!("no answer within {timeout:?}")))??;
        let (status, body) = answer;
        if status.is_success() {
            return Ok((status, body));
        }
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        Err(SyncError::Refused {
            status: status.as_u16(),
            code: v["error"]["code"].as_str().unwrap_or("unknown").to_string(),
            message: v["error"]["message"]
                .as_str()
                .unwrap_or("no explanation")
                .to_string(),
        })
    }

    pub async fn register(&self, req: &RegisterRequest) -> Result<RegisterResponse, SyncError> {
        let body = serde_json::to_vec(req).map_err(|e| SyncError::Decode(e.to_string()))?;
        let (_, answer) = self
            .send(
                Method::POST,
                paths::REGISTER,
                None,
                Some(body),
                Duration::from_secs(30),
            )
            .await?;
        serde_json::from_slice(&answer).map_err(|e| SyncError::Decode(e.to_string()))
    }

    /// The config if its version differs from `after`; `None` when the wait
    /// passed without a change.
    pub async fn config(
        &self,
        credential: &str,
        after: Option<u64>,
        wait: Duration,
    ) -> Result<Option<DesiredConfig>, SyncError> {
        let mut path = format!(
            "{}?protocol={PROTOCOL_VERSION}&wait={}",
            paths::CONFIG,
            wait.as_secs()
        );
        if let Some(v) = after {
            path += &format!("&after={v}");
        }
        let (status, answer) = self
            .send(
                Method::GET,
                &path,
                Some(credential),
                None,
                wait + Duration::from_secs(5),
            )
            .await?;
        if status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        serde_json::from_slice(&answer)
            .map(Some)
            .map_err(|e| SyncError::Decode(format!("the config: {e}")))
    }

    pub async fn status(&self, credential: &str, report: &StatusReport) -> Result<(), SyncError> {
        let body = serde_json::to_vec(report).map_err(|e| SyncError::Decode(e.to_string()))?;
        self.send(
            Method::POST,
            paths::STATUS,
            Some(credential),
            Some(body),
            Duration::from_secs(5),
        )
        .await?;
        Ok(())
    }

    /// What a connectivity probe measured.
    pub async fn probe_report(
        &self,
        credential: &str,
        report: &ProbeReport,
    ) -> Result<(), SyncError> {
        let body = serde_json::to_vec(report).map_err(|e| SyncError::Decode(e.to_string()))?;
        self.send(
            Method::POST,
            paths::PROBE,
            Some(credential),
            Some(body),
            Duration::from_secs(10),
        )
        .await?;
        Ok(())
    }

    /// A fresh SA generation, above `above` and any this member had.
    pub async fn new_generation(&self, credential: &str, above: u32) -> Result<u32, SyncError> {
        let body = serde_json::to_vec(&GenerationRequest { above })
            .map_err(|e| SyncError::Decode(e.to_string()))?;
        let (_, answer) = self
            .send(
                Method::POST,
                paths::GENERATION,
                Some(credential),
                Some(body),
                Duration::from_secs(10),
            )
            .await?;
        serde_json::from_slice::<GenerationResponse>(&answer)
            .map(|g| g.generation)
            .map_err(|e| SyncError::Decode(format!("the generation: {e}")))
    }
}
