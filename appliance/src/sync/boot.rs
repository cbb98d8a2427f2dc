//! What an appliance starts from: the bootstrap file its user data wrote,
//! its instance facts, and (after registration) its stored credential.

use crate::protocol::Member;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::Path;
use uuid::Uuid;

/// `/etc/vpcmesh/agent.json`, written by the launch template's user data.
/// (No `Debug`: it holds the bootstrap token.)
#[derive(Clone, Deserialize)]
pub struct BootConfig {
    pub server_url: url::Url,
    pub network_id: Uuid,
    pub site_id: Uuid,
    pub member: Member,
    #[serde(default)]
    pub allocation_id: Option<String>,
    pub bootstrap_token: String,
}

impl BootConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        let boot: BootConfig = serde_json::from_slice(&text)
            .map_err(|e| anyhow::anyhow!("{} is not a vpcmesh agent file: {e}", path.display()))?;
        match boot.server_url.scheme() {
            "http" | "https" => Ok(boot),
            other => anyhow::bail!("server_url must be http or https, got '{other}'"),
        }
    }
}

/// The instance this agent runs on.
#[derive(Clone, Debug)]
pub struct Identity {
    pub instance_id: String,
    pub availability_zone: String,
    pub private_ip: Ipv4Addr,
    pub public_ip: Option<Ipv4Addr>,
}

/// The credential from registration, kept in the state folder (mode 0600).
#[derive(Clone, Serialize, Deserialize)]
pub struct StoredCredential {
    pub appliance_id: Uuid,
    pub credential: String,
    pub site_id: Uuid,
    pub member: Member,
}

impl std::fmt::Debug for StoredCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCredential")
            .field("appliance_id", &self.appliance_id)
            .field("credential", &"[redacted]")
            .finish()
    }
}

impl StoredCredential {
    const FILE: &'static str = "credential.json";

    pub fn load(dir: &Path) -> Option<Self> {
        let text = std::fs::read(dir.join(Self::FILE)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join("credential.json.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec(self).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(tmp, dir.join(Self::FILE))
    }
}
