//! What an appliance starts from: the bootstrap file its user data wrote,
//! its instance facts, and (after registration) its stored credential.

use crate::config::RunArgs;
use crate::imds::{Imds, ImdsError};
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub instance_id: String,
    pub availability_zone: String,
    pub region: String,
    pub private_ip: Ipv4Addr,
    pub public_ip: Option<Ipv4Addr>,
    /// The primary interface's MAC and ENI id; always known from IMDS,
    /// unknown when the facts come from flags alone and these were not given.
    pub mac: Option<String>,
    pub interface_id: Option<String>,
}

impl Identity {
    /// Each fact from its flag when given, from IMDS otherwise. IMDS is not
    /// contacted when the flags name the instance, zone, region (or a zone
    /// it follows from) and private address, so a lab without IMDS runs on
    /// flags alone.
    pub async fn resolve(args: &RunArgs, imds: &Imds) -> Result<Self, ImdsError> {
        let region = args.region.clone().or_else(|| {
            args.availability_zone
                .as_deref()
                .and_then(crate::imds::region_of_zone)
        });
        if let (Some(instance_id), Some(availability_zone), Some(region), Some(private_ip)) = (
            &args.instance_id,
            &args.availability_zone,
            region,
            args.private_ip,
        ) {
            tracing::info!(
                instance_id,
                availability_zone,
                region,
                source = "flags",
                "instance facts"
            );
            return Ok(Self {
                instance_id: instance_id.clone(),
                availability_zone: availability_zone.clone(),
                region,
                private_ip,
                public_ip: args.public_ip,
                mac: args.mac.clone(),
                interface_id: args.interface_id.clone(),
            });
        }
        let facts = imds.instance_facts().await?;
        let identity = Self {
            instance_id: args.instance_id.clone().unwrap_or(facts.instance_id),
            availability_zone: args
                .availability_zone
                .clone()
                .unwrap_or(facts.availability_zone),
            region: args.region.clone().unwrap_or(facts.region),
            private_ip: args.private_ip.unwrap_or(facts.private_ip),
            public_ip: args.public_ip.or(facts.public_ip),
            mac: Some(args.mac.clone().unwrap_or(facts.mac)),
            interface_id: Some(args.interface_id.clone().unwrap_or(facts.interface_id)),
        };
        tracing::info!(
            instance_id = %identity.instance_id,
            availability_zone = %identity.availability_zone,
            region = %identity.region,
            interface_id = identity.interface_id.as_deref(),
            source = "imds",
            "instance facts"
        );
        Ok(identity)
    }
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

    /// Removes a credential the server no longer accepts.
    pub fn forget(dir: &Path) -> std::io::Result<()> {
        match std::fs::remove_file(dir.join(Self::FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        crate::state_file::write_atomically(dir, Self::FILE, &bytes)
    }
}

#[cfg(test)]
mod identity_tests {
    use super::*;
    use crate::config::{Cli, Command};
    use crate::imds::{EmulatedInstance, ImdsEmulator};
    use clap::Parser;

    fn run_args(flags: &[&str]) -> RunArgs {
        let argv = ["vpcmesh-agent", "run"].iter().chain(flags);
        match Cli::try_parse_from(argv).expect("parses").command {
            Command::Run(r) => r,
            other => panic!("expected run, got {other:?}"),
        }
    }

    async fn emulator() -> ImdsEmulator {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        ImdsEmulator::start(listener, EmulatedInstance::example()).expect("the emulator starts")
    }

    #[tokio::test]
    async fn the_lab_flags_alone_never_contact_imds() {
        let emu = emulator().await;
        let args = run_args(&[
            "--instance-id",
            "i-0fedcba9876543210",
            "--availability-zone",
            "eu-west-1b",
            "--private-ip",
            "198.51.100.1",
        ]);
        let identity = Identity::resolve(&args, &Imds::new(emu.url()))
            .await
            .expect("flags suffice");
        assert_eq!(
            identity,
            Identity {
                instance_id: "i-0fedcba9876543210".into(),
                availability_zone: "eu-west-1b".into(),
                region: "eu-west-1".into(),
                private_ip: "198.51.100.1".parse().expect("an address"),
                public_ip: None,
                mac: None,
                interface_id: None,
            }
        );
        assert_eq!(emu.counters(), Default::default(), "IMDS saw no request");
    }

    #[tokio::test]
    async fn missing_facts_come_from_imds_and_flags_override_them() {
        let emu = emulator().await;
        let args = run_args(&["--private-ip", "10.9.9.9", "--region", "us-east-1"]);
        let identity = Identity::resolve(&args, &Imds::new(emu.url()))
            .await
            .expect("facts from IMDS");
        assert_eq!(
            identity,
            Identity {
                instance_id: "i-0123456789abcdef0".into(),
                availability_zone: "us-east-1a".into(),
                region: "us-east-1".into(),
                private_ip: "10.9.9.9".parse().expect("an address"),
                public_ip: Some("198.51.100.7".parse().expect("an address")),
                mac: Some("0e:12:34:56:78:9a".into()),
                interface_id: Some("eni-0123456789abcdef0".into()),
            }
        );
        assert_eq!(emu.counters().token_requests, 1);
    }

    #[tokio::test]
    async fn a_zone_without_a_region_shape_asks_imds_for_the_region() {
        let emu = emulator().await;
        let args = run_args(&[
            "--instance-id",
            "i-0fedcba9876543210",
            "--availability-zone",
            "lab-a",
            "--private-ip",
            "198.51.100.1",
        ]);
        let identity = Identity::resolve(&args, &Imds::new(emu.url()))
            .await
            .expect("facts");
        assert_eq!(identity.region, "us-east-1");
        assert_eq!(identity.availability_zone, "lab-a");
        assert!(emu.counters().metadata_requests > 0);
    }
}
