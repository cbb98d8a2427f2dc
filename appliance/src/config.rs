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
// Parsed once at start-up: the size of the larger variant costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Register with the control plane and keep the kernel in sync with it.
    Run(RunArgs),
    /// Apply a config file without a control plane (lab, air-gapped sites,
    /// benchmarks) and keep it applied while the file changes.
    Local(LocalArgs),
    /// Hold an ESP-in-UDP socket (UDP 4500) for the kernel, in a unit of
    /// its own, so ESP-in-UDP is still received while `run` restarts.
    HoldNatT,
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
    /// Lets the agent speak plain HTTP to a server that is not on loopback
    /// (labs only: the bootstrap token and the credential cross in clear).
    #[arg(long, env = "VPCMESH_ALLOW_INSECURE_HTTP", value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_insecure_http: bool,
    /// The instance metadata service (IMDSv2) the instance facts come from.
    #[arg(long, env = "VPCMESH_IMDS_URL", default_value = crate::imds::DEFAULT_URL)]
    pub imds_url: Url,
    /// Instance facts that override IMDS. When the instance id, zone and
    /// private address are all given (and the region is given or follows
    /// from the zone), IMDS is not asked at all; unset optional facts (public
    /// address, MAC, interface) then stay unknown.
    #[arg(long, env = "VPCMESH_INSTANCE_ID")]
    pub instance_id: Option<String>,
    #[arg(long, env = "VPCMESH_AVAILABILITY_ZONE")]
    pub availability_zone: Option<String>,
    #[arg(long, env = "VPCMESH_REGION")]
    pub region: Option<String>,
    #[arg(long, env = "VPCMESH_PRIVATE_IP")]
    pub private_ip: Option<std::net::Ipv4Addr>,
    #[arg(long, env = "VPCMESH_PUBLIC_IP")]
    pub public_ip: Option<std::net::Ipv4Addr>,
    #[arg(long, env = "VPCMESH_MAC")]
    pub mac: Option<String>,
    #[arg(long, env = "VPCMESH_INTERFACE_ID")]
    pub interface_id: Option<String>,
    /// An AWS endpoint override for KMS (a local emulator).
    #[arg(long, env = "VPCMESH_AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,
    /// Serve Prometheus metrics (`GET /metrics`) on this address. Default:
    /// not served.
    #[arg(long, env = "VPCMESH_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Seconds between status reports while nothing changes (a tunnel
    /// whose state changes is reported within a second).
    #[arg(long, default_value_t = 10)]
    pub status_every_secs: u64,
    /// Seconds a config long-poll waits for a change.
    #[arg(long, default_value_t = 25)]
    pub long_poll_secs: u64,
    /// Seconds between checks of the kernel against the applied config
    /// when no new config came (what drifted is put back).
    #[arg(long, env = "VPCMESH_DRIFT_CHECK_SECS", default_value_t = crate::sync::DRIFT_CHECK_EVERY.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub drift_check_secs: u64,
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
    #[error("the server URL {0} is plain HTTP to a host that is not loopback: the bootstrap token and the credential would cross the network in clear; use an https:// URL (the bootstrap file's server_url or --server-url), or pass --allow-insecure-http in a lab")]
    InsecureHttp(String),
    #[error("--imds-url must be http (IMDS has no TLS), got '{0}'")]
    ImdsScheme(String),
}

impl RunArgs {
    pub fn validate(&self) -> Result<(), AgentConfigError> {
        if let Some(url) = &self.server_url {
            self.require_tls(url)?;
        }
        match self.imds_url.scheme() {
            "http" => Ok(()),
            other => Err(AgentConfigError::ImdsScheme(other.to_string())),
        }
    }

    /// The rule for every server URL, from the flag or the bootstrap file.
    pub fn require_tls(&self, server: &Url) -> Result<(), AgentConfigError> {
        require_tls(server, self.allow_insecure_http)
    }
}

/// The control plane is spoken to over TLS; plain HTTP only to loopback
/// (the traffic never leaves the host) or when a lab says so.
pub fn require_tls(server: &Url, allow_insecure_http: bool) -> Result<(), AgentConfigError> {
    match server.scheme() {
        "https" => Ok(()),
        "http" if allow_insecure_http || is_loopback(server) => Ok(()),
        "http" => Err(AgentConfigError::InsecureHttp(format!(
            "http://{}",
            server.host_str().unwrap_or_default()
        ))),
        other => Err(AgentConfigError::Scheme(other.to_string())),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        // RFC 6761: localhost names loopback.
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
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

    fn url(text: &str) -> Url {
        Url::parse(text).expect("a URL")
    }

    #[test]
    fn plain_http_to_a_remote_server_is_refused() {
        let refused = require_tls(&url("http://cp.example:8080/"), false);
        assert_eq!(
            refused,
            Err(AgentConfigError::InsecureHttp("http://cp.example".into()))
        );
        let message = refused.expect_err("refused").to_string();
        assert!(message.contains("https://") && message.contains("--allow-insecure-http"));
        assert!(require_tls(&url("http://100.64.0.1:3000/"), false).is_err());
        assert!(require_tls(&url("http://[2001:db8::1]/"), false).is_err());
        assert!(run_args("http://cp.example").validate().is_err());
    }

    #[test]
    fn plain_http_is_allowed_to_loopback_or_by_the_lab_flag() {
        for loopback in [
            "http://127.0.0.1:3000/",
            "http://127.1.2.3/",
            "http://[::1]:3000/",
            "http://localhost:3000/",
        ] {
            assert!(require_tls(&url(loopback), false).is_ok(), "{loopback}");
        }
        assert!(require_tls(&url("http://100.64.0.1:3000/"), true).is_ok());
        assert!(require_tls(&url("https://cp.example/"), false).is_ok());
        assert!(require_tls(&url("ftp://cp.example/"), true).is_err());
    }

    #[test]
    fn the_lab_flag_reaches_the_run_args() {
        let args = match Cli::try_parse_from([
            "a",
            "run",
            "--allow-insecure-http",
            "--server-url",
            "http://100.64.0.1:3000",
        ])
        .expect("parses")
        .command
        {
            Command::Run(r) => r,
            other => panic!("expected run, got {other:?}"),
        };
        assert!(args.allow_insecure_http);
        assert!(args.validate().is_ok());
    }

    #[test]
    fn instance_facts_are_optional_and_imds_has_a_default() {
        let args = match Cli::try_parse_from(["a", "run"]).expect("parses").command {
            Command::Run(r) => r,
            other => panic!("expected run, got {other:?}"),
        };
        assert_eq!(args.instance_id, None);
        assert_eq!(args.imds_url.as_str(), "http://169.254.169.254/");
        assert!(!args.allow_insecure_http);
    }

    #[test]
    fn imds_url_must_be_http() {
        let args = match Cli::try_parse_from(["a", "run", "--imds-url", "https://169.254.169.254"])
            .expect("parses")
            .command
        {
            Command::Run(r) => r,
            other => panic!("expected run, got {other:?}"),
        };
        assert_eq!(
            args.validate(),
            Err(AgentConfigError::ImdsScheme("https".into()))
        );
    }
}
