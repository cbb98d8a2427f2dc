//! The agent binary appliances install: read once at start-up, pinned by its
//! SHA-256 in every appliance stack's user data, and served at a URL that
//! names the release, `/api/appliance/v1/agent/{version}/vpcmesh-agent`.
//! No credential is needed to fetch it: it holds no secret, and an instance
//! fetches it before it has one.

use crate::state::AppState;
use axum::{
    body::{Body, Bytes},
    extract::{Path, State},
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::path::{Path as FsPath, PathBuf};

/// Server and agent are one workspace release: the server hands out its own.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The binary's file name, next to the server executable and in the URL.
pub const FILE_NAME: &str = "vpcmesh-agent";

/// The URL path (on the server's public origin) of this release's agent.
pub fn download_path() -> String {
    format!("/api/appliance/v1/agent/{VERSION}/{FILE_NAME}")
}

/// One agent binary and its digest; cheap to clone (the bytes are shared).
#[derive(Clone)]
pub struct AgentRelease {
    bytes: Bytes,
    sha256: String,
}

impl std::fmt::Debug for AgentRelease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentRelease")
            .field("bytes", &self.bytes.len())
            .field("sha256", &self.sha256)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentBinaryError {
    #[error("--agent-binary {}: cannot read it: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--agent-binary {}: not a Linux executable (ELF); point it at a built vpcmesh-agent", path.display())]
    NotExecutable { path: PathBuf },
}

impl AgentRelease {
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        let sha256 = hex::encode(Sha256::digest(&bytes));
        AgentRelease { bytes, sha256 }
    }

    pub fn load(path: &FsPath) -> Result<Self, AgentBinaryError> {
        let bytes = std::fs::read(path).map_err(|source| AgentBinaryError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        // Catches a flag pointing at the wrong file (a script, the server's
        // config) before any instance downloads it.
        if !bytes.starts_with(b"\x7fELF") {
            return Err(AgentBinaryError::NotExecutable {
                path: path.to_path_buf(),
            });
        }
        Ok(Self::from_bytes(bytes))
    }

    /// The binary from `--agent-binary`, or else the `vpcmesh-agent` next to
    /// the running server executable if there is one. `None`: this server
    /// can neither serve an agent nor provision appliances.
    pub fn locate(flag: Option<&FsPath>) -> Result<Option<(Self, PathBuf)>, AgentBinaryError> {
        let path = match flag {
            Some(p) => p.to_path_buf(),
            None => match std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(|dir| dir.join(FILE_NAME)))
            {
                Some(beside) if beside.is_file() => beside,
                _ => return Ok(None),
            },
        };
        Ok(Some((Self::load(&path)?, path)))
    }

    /// Lowercase hex, as `sha256sum` prints it.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// `AgentUrl` and `AgentSha256` of an appliance stack whose instances
    /// reach this server at `origin` (`scheme://host[:port]`).
    pub fn stack_parameters(&self, origin: &str) -> [(&'static str, String); 2] {
        [
            (
                "AgentUrl",
                format!("{}{}", origin.trim_end_matches('/'), download_path()),
            ),
            ("AgentSha256", self.sha256.clone()),
        ]
    }
}

/// Why a download is refused, with the API's error shape.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("this server hands out vpcmesh-agent {VERSION}, not {asked}")]
    UnknownVersion { asked: String },
    #[error("this server has no agent binary to hand out: start it with --agent-binary PATH (VPCMESH_AGENT_BINARY) pointing at a built vpcmesh-agent")]
    Unavailable,
}

impl IntoResponse for DownloadError {
    fn into_response(self) -> Response {
        let (status, code) = match self {
            DownloadError::UnknownVersion { .. } => {
                (StatusCode::NOT_FOUND, "unknown_agent_version")
            }
            DownloadError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "agent_unavailable"),
        };
        let body = json!({ "error": { "code": code, "message": self.to_string() } });
        (status, Json(body)).into_response()
    }
}

pub fn routes() -> Router<AppState> {
    Router::new().route(
        &format!("/api/appliance/v1/agent/{{version}}/{FILE_NAME}"),
        get(download),
    )
}

async fn download(
    State(state): State<AppState>,
    Path(version): Path<String>,
) -> Result<Response, DownloadError> {
    if version != VERSION {
        return Err(DownloadError::UnknownVersion {
            asked: version.chars().take(64).collect(),
        });
    }
    let agent = state.agent.as_ref().ok_or(DownloadError::Unavailable)?;
    tracing::info!(version = VERSION, bytes = agent.len(), sha256 = %agent.sha256, "serving the agent binary");
    let etag = HeaderValue::from_str(&format!("\"{}\"", agent.sha256))
        .expect("a quoted hex digest is a valid header value");
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (header::ETAG, etag),
            // Dev builds reuse a version number with new bytes: no cache may
            // hand out an old one (the digest pin would refuse it forever).
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        Body::from(agent.bytes.clone()),
    )
        .into_response())
}
