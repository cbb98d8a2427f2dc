//! The agent's command line: one typed struct per mode, validated at start.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use url::Url;

#[derive(Parser, Debug, Clone)]
#[command(name = "vpcmesh-agent", version, about = "vpcmesh appliance agent")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Register with the control plane and keep the kernel in sync with it.
    Run(RunArgs),
    /// Apply a config file without a control plane (lab, air-gapped sites,
    /// benchmarks) and keep it applied while the file changes.
    Local(LocalArgs),
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The bootstrap file the instance's user data wrote.
    #[arg(long, default_value = "/etc/vpcmesh/agent.json")]
    pub agent_config: PathBuf,
    /// Where the agent keeps its credential after registering.
    #[arg(long, default_value = "/var/lib/vpcmesh")]
    pub state_dir: PathBuf,
    /// Overrides the bootstrap file's server URL.
    #[arg(long, env = "VPCMESH_SERVER_URL")]
    pub server_url: Option<Url>,
    /// This instance's ID, AZ and addresses.
    #[arg(long, env = "VPCMESH_INSTANCE_ID")]
    pub instance_id: String,
    #[arg(long, env = "VPCMESH_AVAILABILITY_ZONE")]
    pub availability_zone: String,
    #[arg(long, env = "VPCMESH_PRIVATE_IP")]
    pub private_ip: std::net::Ipv4Addr,
    #[arg(long, env = "VPCMESH_PUBLIC_IP")]
    pub public_ip: Option<std::net::Ipv4Addr>,
    /// An AWS endpoint override for KMS (a local emulator).
    #[arg(long, env = "VPCMESH_AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,
    /// Seconds between status reports.
    #[arg(long, default_value_t = 10)]
    pub status_every_secs: u64,
    /// Seconds a config long-poll waits for a change.
    #[arg(long, default_value_t = 25)]
    pub long_poll_secs: u64,
}

#[derive(Args, Debug, Clone)]
pub struct LocalArgs {
    /// A DesiredConfig as JSON.
    #[arg(long)]
    pub config: PathBuf,
    /// The epoch's plaintext data key, base64 (only for labs and benchmarks:
    /// on an appliance KMS decrypts it).
    #[arg(long)]
    pub data_key: PathBuf,
    /// Where to write the status report (JSON) every second.
    #[arg(long)]
    pub status: Option<PathBuf>,
    /// Apply once and exit instead of following the file.
    #[arg(long)]
    pub once: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AgentConfigError {
    #[error("--server-url must be http or https, got '{0}'")]
    Scheme(String),
}

impl RunArgs {
    pub fn validate(&self) -> Result<(), AgentConfigError> {
        match self.server_url.as_ref().map(Url::scheme) {
            None | Some("http") | Some("https") => Ok(()),
            Some(other) => Err(AgentConfigError::Scheme(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(url: &str) -> RunArgs {
        match Cli::try_parse_from([
            "a",
            "run",
            "--server-url",
            url,
            "--instance-id",
            "i-0123456789abcdef0",
            "--availability-zone",
            "us-east-1a",
            "--private-ip",
            "10.0.0.5",
        ])
        .expect("parses")
        .command
        {
            Command::Run(r) => r,
            other => panic!("expected run, got {other:?}"),
        }
    }

    #[test]
    fn server_url_must_be_http() {
        assert_eq!(
            run_args("ftp://x").validate(),
            Err(AgentConfigError::Scheme("ftp".into()))
        );
        assert!(run_args("https://cp.example").validate().is_ok());
    }
}
