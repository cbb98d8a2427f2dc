//! The agent binary appliances install: read once at start-up, pinned by its
//! SHA-256 in every appliance stack's user data, and served at a URL that
//! names the release, `/api/appliance/v1/agent/{version}/vpcmesh-agent`.
//! No credential is needed to fetch it: it holds no secret, and an instance
//! fetches it before it has one. A client that accepts gzip (the user data's
//! `curl --compressed`) gets it compressed once at start-up: a third of the
//! bytes on the wire; the pinned digest is of the binary itself.

use crate::state::AppState;
use axum::{
    body::{Body, Bytes},
    extract::{Path, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
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
    /// `bytes`, gzip-compressed.
    gzip: Bytes,
    sha256: String,
}

/// `bytes` as a gzip stream.
fn gzip(bytes: &[u8]) -> Bytes {
    use std::io::Write;
    let mut out = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 3),
        flate2::Compression::default(),
    );
    // Writing into a Vec cannot fail.
    let done = out.write_all(bytes).and_then(|()| out.finish());
    Bytes::from(done.unwrap_or_default())
}

/// Whether an `Accept-Encoding` value takes gzip (and not with q=0).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
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
        let gzip = gzip(&bytes);
        AgentRelease {
            bytes,
            gzip,
            sha256,
        }
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
    headers: HeaderMap,
) -> Result<Response, DownloadError> {
    if version != VERSION {
        return Err(DownloadError::UnknownVersion {
            asked: version.chars().take(64).collect(),
        });
    }
    let agent = state.agent.as_ref().ok_or(DownloadError::Unavailable)?;
    let gzipped = accepts_gzip(&headers) && !agent.gzip.is_empty();
    let (body, etag, encoding) = if gzipped {
        (
            agent.gzip.clone(),
            format!("\"{}-gzip\"", agent.sha256),
            "gzip",
        )
    } else {
        (
            agent.bytes.clone(),
            format!("\"{}\"", agent.sha256),
            "identity",
        )
    };
    tracing::info!(version = VERSION, bytes = agent.len(), sent = body.len(), encoding, sha256 = %agent.sha256, "serving the agent binary");
    let etag = HeaderValue::from_str(&etag).expect("a quoted hex digest is a valid header value");
    let mut res = (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (header::ETAG, etag),
            // Dev builds reuse a version number with new bytes: no cache may
            // hand out an old one (the digest pin would refuse it forever).
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::VARY, HeaderValue::from_static("accept-encoding")),
        ],
        Body::from(body),
    )
        .into_response();
    if gzipped {
        res.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(value).expect("a header value"),
        );
        h
    }

    #[test]
    fn gzip_is_sent_only_to_clients_that_take_it() {
        assert!(accepts_gzip(&with("deflate, gzip")));
        assert!(accepts_gzip(&with("br;q=1.0, GZIP;q=0.5")));
        assert!(accepts_gzip(&with("*")));
        assert!(!accepts_gzip(&with("gzip;q=0")));
        assert!(!accepts_gzip(&with("br, deflate")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn the_compressed_copy_is_the_binary() {
        use std::io::Read;
        let bytes: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let release = AgentRelease::from_bytes(bytes.clone());
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&release.gzip[..])
            .read_to_end(&mut back)
            .expect("a gzip stream");
        assert_eq!(back, bytes);
        assert!(release.gzip.len() < bytes.len() / 2);
    }
}
