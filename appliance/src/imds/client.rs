//! An IMDSv2 client: a session token (PUT), then GETs that carry it.
//!
//! IMDS is link-local and answers in milliseconds, so timeouts are short and
//! retries few; a token is renewed shortly before it expires and once more
//! when IMDS refuses it (the instance was stopped and started, say).

use super::facts::{self, IdentityDocument, InstanceFacts, SpotAction};
use super::paths;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::time::Duration;
use tokio::time::Instant;
use url::Url;

/// Where IMDS lives on every EC2 instance.
pub const DEFAULT_URL: &str = "http://169.254.169.254";

/// The largest answer read: identity documents are under a kilobyte.
pub const MAX_ANSWER: usize = 64 << 10;

/// Tries per request, for answers that may succeed the next time (no
/// connection, a timeout, 5xx, 429).
const ATTEMPTS: u32 = 4;
const FIRST_RETRY: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum ImdsError {
    #[error("IMDS {path}: no answer after {attempts} tries: {reason} (is the instance metadata service enabled, with a PUT hop limit that reaches this agent? --imds-url overrides its address)")]
    Unreachable {
        path: String,
        attempts: u32,
        reason: String,
    },
    #[error("IMDS {path}: answered {status}")]
    Status { path: String, status: u16 },
    #[error("IMDS {path}: refused a fresh session token (401)")]
    Unauthorized { path: String },
    #[error("IMDS {path}: not found (404)")]
    Missing { path: String },
    #[error("IMDS {path}: the answer is larger than {limit} bytes")]
    TooLarge { path: String, limit: usize },
    #[error("IMDS {path}: {value:?} is not {expected}")]
    Invalid {
        path: String,
        value: String,
        expected: String,
    },
}

impl ImdsError {
    /// The IMDS path the failed request asked for.
    pub fn path(&self) -> &str {
        match self {
            ImdsError::Unreachable { path, .. }
            | ImdsError::Status { path, .. }
            | ImdsError::Unauthorized { path }
            | ImdsError::Missing { path }
            | ImdsError::TooLarge { path, .. }
            | ImdsError::Invalid { path, .. } => path,
        }
    }

    fn invalid(path: &str, value: &str, expected: &str) -> Self {
        // Enough of a wrong answer to recognize it, not a page of HTML.
        let mut shown: String = value.chars().take(80).collect();
        if value.chars().nth(80).is_some() {
            shown.push('…');
        }
        ImdsError::Invalid {
            path: path.to_string(),
            value: shown,
            expected: expected.to_string(),
        }
    }
}

/// A session token. (No `Debug`: it is a credential for the instance's
/// metadata, including its role's keys.)
struct Token {
    value: HeaderValue,
    renew_at: Instant,
}

pub struct Imds {
    base: String,
    http: Client<HttpConnector, Empty<Bytes>>,
    token_ttl: Duration,
    timeout: Duration,
    token: tokio::sync::Mutex<Option<Token>>,
}

impl Imds {
    /// A client of the IMDS at `base` (`DEFAULT_URL` on EC2). Nothing is
    /// sent until the first question.
    pub fn new(base: Url) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(1)));
        connector.set_nodelay(true);
        Self {
            base: base.as_str().trim_end_matches('/').to_string(),
            http: Client::builder(TokioExecutor::new()).build(connector),
            token_ttl: Duration::from_secs(paths::MAX_TOKEN_TTL_SECS.into()),
            timeout: Duration::from_secs(1),
            token: tokio::sync::Mutex::new(None),
        }
    }

    /// Asks for tokens of this lifetime (whole seconds in 1..=21600).
    pub fn with_token_ttl(mut self, ttl: Duration) -> Self {
        self.token_ttl =
            Duration::from_secs(ttl.as_secs().clamp(1, paths::MAX_TOKEN_TTL_SECS.into()));
        self
    }

    /// Gives up on one try of a request after this long.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The instance's identity and addresses, each one checked.
    pub async fn instance_facts(&self) -> Result<InstanceFacts, ImdsError> {
        let instance_id = self.fact(paths::INSTANCE_ID, facts::instance_id).await?;
        let availability_zone = self
            .fact(paths::AVAILABILITY_ZONE, facts::availability_zone)
            .await?;
        let region = self.fact(paths::REGION, facts::region).await?;
        facts::zone_in_region(&availability_zone, &region).map_err(|expected| {
            ImdsError::invalid(
                paths::AVAILABILITY_ZONE,
                &availability_zone,
                &format!("{expected} ({region})"),
            )
        })?;
        let private_ip = self.fact(paths::LOCAL_IPV4, facts::ipv4).await?;
        let mac = self.fact(paths::MAC, facts::mac).await?;
        let interface_id = self
            .fact(&paths::interface_id(&mac), facts::interface_id)
            .await?;
        let public_ip = self.optional_fact(paths::PUBLIC_IPV4, facts::ipv4).await?;
        let facts = InstanceFacts {
            instance_id,
            availability_zone,
            region,
            private_ip,
            mac,
            interface_id,
            public_ip,
        };
        tracing::debug!(instance_id = %facts.instance_id, zone = %facts.availability_zone, interface_id = %facts.interface_id, "instance facts from IMDS");
        Ok(facts)
    }

    /// The spot interruption notice, `None` while there is none.
    pub async fn spot_instance_action(&self) -> Result<Option<SpotAction>, ImdsError> {
        self.optional_fact(paths::SPOT_INSTANCE_ACTION, facts::spot_action)
            .await
    }

    /// The signed instance identity document, `None` where it is not offered.
    pub async fn identity_document(&self) -> Result<Option<IdentityDocument>, ImdsError> {
        let Some(document) = self
            .optional_fact(paths::IDENTITY_DOCUMENT, facts::identity_document)
            .await?
        else {
            return Ok(None);
        };
        let signature = self
            .fact(paths::IDENTITY_SIGNATURE, facts::identity_signature)
            .await?;
        Ok(Some(IdentityDocument {
            document,
            signature,
        }))
    }

    async fn fact<T>(
        &self,
        path: &str,
        check: fn(&str) -> Result<T, facts::Expected>,
    ) -> Result<T, ImdsError> {
        self.optional_fact(path, check)
            .await?
            .ok_or_else(|| ImdsError::Missing {
                path: path.to_string(),
            })
    }

    async fn optional_fact<T>(
        &self,
        path: &str,
        check: fn(&str) -> Result<T, facts::Expected>,
    ) -> Result<Option<T>, ImdsError> {
        let Some(body) = self.get(path).await? else {
            return Ok(None);
        };
        let text = std::str::from_utf8(&body)
            .map_err(|_| ImdsError::invalid(path, &String::from_utf8_lossy(&body), "UTF-8 text"))?;
        check(text.trim())
            .map(Some)
            .map_err(|expected| ImdsError::invalid(path, text, expected))
    }

    /// The body of `path`, `None` on 404.
    async fn get(&self, path: &str) -> Result<Option<Bytes>, ImdsError> {
        let mut refused: Option<HeaderValue> = None;
        loop {
            let token = self.token(refused.as_ref()).await?;
            let (status, body) = self.send(Method::GET, path, Some(&token)).await?;
            match status {
                StatusCode::OK => return Ok(Some(body)),
                StatusCode::NOT_FOUND => return Ok(None),
                // Once: a token IMDS forgot (it expired early, or the
                // instance restarted) is replaced; a fresh one refused is
                // an error.
                StatusCode::UNAUTHORIZED if refused.is_none() => {
                    tracing::debug!(path, "IMDS refused the session token; renewing it");
                    refused = Some(token);
                }
                StatusCode::UNAUTHORIZED => {
                    return Err(ImdsError::Unauthorized {
                        path: path.to_string(),
                    })
                }
                other => {
                    return Err(ImdsError::Status {
                        path: path.to_string(),
                        status: other.as_u16(),
                    })
                }
            }
        }
    }

    /// The cached token, or a new one when it is due for renewal or is the
    /// one IMDS just `refused` (unless another request renewed it already).
    async fn token(&self, refused: Option<&HeaderValue>) -> Result<HeaderValue, ImdsError> {
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref() {
            if Instant::now() < t.renew_at && Some(&t.value) != refused {
                return Ok(t.value.clone());
            }
        }
        let asked_at = Instant::now();
        let (status, body) = self.send(Method::PUT, paths::TOKEN, None).await?;
        if status != StatusCode::OK {
            return Err(ImdsError::Status {
                path: paths::TOKEN.to_string(),
                status: status.as_u16(),
            });
        }
        let value = std::str::from_utf8(&body)
            .ok()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .and_then(|t| HeaderValue::from_str(t).ok())
            .ok_or_else(|| ImdsError::Invalid {
                path: paths::TOKEN.to_string(),
                // Never echo a token, even a malformed one.
                value: format!("{} bytes", body.len()),
                expected: "a session token".to_string(),
            })?;
        // Renew a tenth of the lifetime (at most a minute) early, so no
        // request leaves with a token about to lapse.
        let margin = (self.token_ttl / 10).min(Duration::from_secs(60));
        *cached = Some(Token {
            value: value.clone(),
            renew_at: asked_at + self.token_ttl - margin,
        });
        Ok(value)
    }

    /// One request with bounded retries; the status and the (size-limited)
    /// body of the last try.
    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&HeaderValue>,
    ) -> Result<(StatusCode, Bytes), ImdsError> {
        let mut wait = FIRST_RETRY;
        let mut attempt = 1;
        loop {
            let outcome = self.try_once(method.clone(), path, token).await;
            let retry = match &outcome {
                Ok((status, _)) => {
                    status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
                }
                Err(Failure::Transport(_)) => true,
                Err(Failure::TooLarge) => false,
            };
            if !retry || attempt == ATTEMPTS {
                return outcome.map_err(|f| match f {
                    Failure::Transport(reason) => ImdsError::Unreachable {
                        path: path.to_string(),
                        attempts: attempt,
                        reason,
                    },
                    Failure::TooLarge => ImdsError::TooLarge {
                        path: path.to_string(),
                        limit: MAX_ANSWER,
                    },
                });
            }
            tracing::debug!(
                path,
                attempt,
                wait_ms = wait.as_millis() as u64,
                "IMDS request failed; retrying"
            );
            tokio::time::sleep(wait).await;
            wait *= 2;
            attempt += 1;
        }
    }

    async fn try_once(
        &self,
        method: Method,
        path: &str,
        token: Option<&HeaderValue>,
    ) -> Result<(StatusCode, Bytes), Failure> {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.base));
        if method == Method::PUT {
            req = req.header(paths::TTL_HEADER, self.token_ttl.as_secs());
        }
        if let Some(token) = token {
            req = req.header(paths::TOKEN_HEADER, token.clone());
        }
        let req = req
            .body(Empty::new())
            .map_err(|e| Failure::Transport(format!("bad request: {e}")))?;
        tokio::time::timeout(self.timeout, async {
            let res = self
                .http
                .request(req)
                .await
                .map_err(|e| Failure::Transport(error_chain(&e)))?;
            let status = res.status();
            let body = http_body_util::Limited::new(res.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        Failure::TooLarge
                    } else {
                        Failure::Transport(e.to_string())
                    }
                })?
                .to_bytes();
            Ok((status, body))
        })
        .await
        .map_err(|_| Failure::Transport(format!("no answer within {:?}", self.timeout)))?
    }
}

enum Failure {
    Transport(String),
    TooLarge,
}

/// hyper's errors say little at the top ("client error (Connect)").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text += &format!(": {s}");
        source = s.source();
    }
    text
}
