//! Start-up configuration: flags and environment, validated once.

use crate::appliances::limits::LimitSettings;
use clap::{Parser, ValueEnum};
use std::{net::SocketAddr, path::PathBuf, time::Duration};
use url::Url;
use vpcmesh_protocol::{
    DEAD_AFTER_BEATS, DEFAULT_DEAD_AFTER, DEFAULT_HEARTBEAT_MS, HEARTBEAT_INTERVALS_MS,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Parser, Debug, Clone)]
#[command(
    name = "vpcmesh-server",
    version,
    about = "vpcmesh control plane and console"
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "LEPTOS_SITE_ADDR", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,
    /// The URL users type to reach the console (scheme + host + port). Cookies
    /// are Secure when it is https; state-changing requests must come from it.
    #[arg(long, env = "VPCMESH_PUBLIC_URL")]
    pub public_url: Option<Url>,
    /// Allow a plain-http public URL on a non-loopback host (closed labs only).
    #[arg(long, env = "VPCMESH_INSECURE_HTTP")]
    pub insecure_http: bool,
    /// Postgres connection URL. Overrides --embedded-postgres.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Run a private Postgres cluster with its data in this folder.
    #[arg(long, env = "VPCMESH_EMBEDDED_POSTGRES")]
    pub embedded_postgres: Option<PathBuf>,
    /// Folder with the built site (pkg/ with the WASM bundle and CSS).
    #[arg(long, env = "LEPTOS_SITE_ROOT", default_value = "target/site")]
    pub site_root: String,
    /// Name of the WASM/JS/CSS bundle inside pkg/.
    #[arg(long, env = "LEPTOS_OUTPUT_NAME", default_value = "vpcmesh")]
    pub output_name: String,
    /// A console session ends after this long without a request.
    #[arg(long, env = "VPCMESH_SESSION_IDLE_SECS", default_value_t = 12 * 3600)]
    pub session_idle_secs: u64,
    /// A console session ends this long after its sign-in, however busy.
    #[arg(long, env = "VPCMESH_SESSION_LIFETIME_SECS", default_value_t = 7 * 24 * 3600)]
    pub session_lifetime_secs: u64,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "VPCMESH_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,
    /// Take the client address from X-Forwarded-For (only behind a trusted load balancer).
    #[arg(long, env = "VPCMESH_TRUST_FORWARDED_FOR")]
    pub trust_forwarded_for: bool,
    /// AWS endpoint override (the local emulator); unset means real AWS.
    #[arg(long, env = "VPCMESH_AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<Url>,
    /// A provisioning step leased by a crashed replica is picked up by another after this long.
    #[arg(long, env = "VPCMESH_STEP_LEASE_SECS", default_value_t = 60)]
    pub step_lease_secs: u64,
    /// After every live appliance sends with a rotated key, the old key's
    /// SAs stay accepted this long (packets in flight), then are removed.
    #[arg(long, env = "VPCMESH_ROTATION_GRACE_SECS", default_value_t = 30)]
    pub rotation_grace_secs: u64,
    /// A connectivity check waits this long beyond its echoes for the
    /// appliances' reports; pairs without one then show "no report" (1-300).
    #[arg(long, env = "VPCMESH_CONNECTIVITY_GRACE_SECS", default_value_t = 10)]
    pub connectivity_grace_secs: u64,
    /// Interval of the heartbeats between a site's two appliances, in ms
    /// (20-5000); with --ha-dead-after it sets how fast a passive notices a
    /// dead active (default 100 ms x 3 = 300 ms).
    #[arg(long, env = "VPCMESH_HA_HEARTBEAT_MS", default_value_t = DEFAULT_HEARTBEAT_MS)]
    pub ha_heartbeat_ms: u32,
    /// Heartbeats missed in a row before a member counts its partner as gone (2-50).
    #[arg(long, env = "VPCMESH_HA_DEAD_AFTER", default_value_t = DEFAULT_DEAD_AFTER)]
    pub ha_dead_after: u32,
    /// The health monitor's backstop: an active appliance that has not
    /// reported for this long, while its passive partner reports, is taken
    /// over from on the server's request (1-3600 s). The default is two
    /// missed status reports (agents report every 10 s) plus 5 s for a late
    /// one, so a single slow report never moves a site.
    #[arg(long, env = "VPCMESH_FAILOVER_AFTER_SECS", default_value_t = 25)]
    pub failover_after_secs: u64,
    /// A takeover the health monitor asked for that is not done this long
    /// after is asked for once more, never again (1-3600 s). The default is
    /// two config long-polls (30 s each): a member that got the request has
    /// long reported it done by then.
    #[arg(long, env = "VPCMESH_FAILOVER_RETRY_SECS", default_value_t = 60)]
    pub failover_retry_secs: u64,
    /// Provisioning workers in this process (steps run in parallel across regions).
    #[arg(long, env = "VPCMESH_ENGINE_WORKERS", default_value_t = 4)]
    pub engine_workers: usize,
    /// Ensure a demo organization whose admin has this email; prints a fresh password.
    #[arg(long, env = "VPCMESH_DEMO_ADMIN")]
    pub demo_admin: Option<String>,
    /// With --demo-admin and a local AWS emulator: seed a customer account with
    /// VPCs in three regions and provision a demo full mesh over them.
    #[arg(long, env = "VPCMESH_DEMO_NETWORK", requires = "demo_admin")]
    pub demo_network: bool,
    /// The vpcmesh-agent binary appliances download (pinned by its SHA-256
    /// in their stacks). Default: `vpcmesh-agent` next to this executable.
    #[arg(long, env = "VPCMESH_AGENT_BINARY")]
    pub agent_binary: Option<PathBuf>,
    #[arg(long, env = "VPCMESH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Serve Prometheus metrics (`GET /metrics`) on this address, apart from
    /// the console and the appliance API. Default: no metrics listener.
    #[arg(long, env = "VPCMESH_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Postgres connections this process keeps at most (console, appliance
    /// API and background work share them).
    #[arg(long, env = "VPCMESH_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: u32,
    /// Config long-polls one appliance may have waiting at once.
    #[arg(long, env = "VPCMESH_APPLIANCE_POLLS", default_value_t = 2)]
    pub appliance_polls: u32,
    /// Requests per minute one appliance may send (polls, status, probes).
    #[arg(
        long,
        env = "VPCMESH_APPLIANCE_REQUESTS_PER_MIN",
        default_value_t = 600
    )]
    pub appliance_requests_per_min: u32,
    /// Appliance registrations per minute from one client address.
    #[arg(
        long,
        env = "VPCMESH_APPLIANCE_REGISTRATIONS_PER_MIN",
        default_value_t = 30
    )]
    pub appliance_registrations_per_min: u32,
    /// Missing or unknown appliance credentials per minute from one client
    /// address before that address's unknown credentials are refused unread.
    #[arg(
        long,
        env = "VPCMESH_APPLIANCE_FAILED_CREDENTIALS_PER_MIN",
        default_value_t = 20
    )]
    pub appliance_failed_credentials_per_min: u32,
}

/// What the running server needs to know, derived from [`Config`] and checked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `scheme://host[:port]` that state-changing requests must come from.
    pub public_origin: String,
    pub secure_cookies: bool,
    pub session_idle: Duration,
    /// Absolute: from the sign-in.
    pub session_lifetime: Duration,
    pub max_body_bytes: usize,
    pub trust_forwarded_for: bool,
    pub aws_endpoint_url: Option<Url>,
    pub step_lease: Duration,
    pub engine_workers: usize,
    pub rotation_grace: Duration,
    /// How long beyond its echoes a connectivity check waits for reports.
    pub connectivity_grace: Duration,
    /// A provisioning step's retry budget and backoff (no flag: tests shorten it).
    pub step_retry: crate::provisioning::retry::RetryPolicy,
    /// Heartbeat timing the appliances' configs carry (within the protocol's ranges).
    pub ha_heartbeat_ms: u32,
    pub ha_dead_after: u32,
    /// The health monitor's backstop (see `--failover-after-secs`).
    pub failover_after: Duration,
    /// When an unfinished monitor request is asked once more.
    pub failover_retry: Duration,
    /// What each appliance and client address may ask of the appliance API.
    pub appliance_limits: LimitSettings,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("--public-url must be http or https, got '{0}'")]
    Scheme(String),
    #[error("--public-url must have a host")]
    NoHost,
    #[error("--public-url {0} is plain http on a non-loopback host: use https (TLS at the load balancer) or pass --insecure-http for a closed lab")]
    InsecureHttp(String),
    #[error("--session-idle-secs must be between 1 and 2592000 (30 days)")]
    SessionIdle,
    #[error("--session-lifetime-secs must be at least --session-idle-secs and at most 7776000 (90 days)")]
    SessionLifetime,
    #[error("--max-body-bytes must be between 1024 and 16777216")]
    BodyLimit,
    #[error("set --database-url (DATABASE_URL) or --embedded-postgres DIR")]
    NoDatabase,
    #[error("--ha-heartbeat-ms is {0}; appliances accept 20 to 5000 ms")]
    HaHeartbeat(u32),
    #[error("--ha-dead-after is {0}; appliances accept 2 to 50 missed heartbeats")]
    HaDeadAfter(u32),
    #[error("--failover-after-secs must be between 1 and 3600")]
    FailoverAfter,
    #[error("--failover-retry-secs must be between 1 and 3600")]
    FailoverRetry,
    #[error("--db-pool-size must be between 2 and 1000")]
    DbPoolSize,
    #[error("--{0} must be between 1 and {1}")]
    ApplianceLimit(&'static str, u32),
}

impl Config {
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let public = match &self.public_url {
            Some(u) => u.clone(),
            None => {
                Url::parse(&format!("http://{}", self.listen)).map_err(|_| ConfigError::NoHost)?
            }
        };
        let scheme = public.scheme();
        if scheme != "http" && scheme != "https" {
            return Err(ConfigError::Scheme(scheme.to_string()));
        }
        let host = public.host_str().ok_or(ConfigError::NoHost)?;
        if scheme == "http" && !is_loopback_host(host) && !self.insecure_http {
            return Err(ConfigError::InsecureHttp(public.to_string()));
        }
        if self.session_idle_secs == 0 || self.session_idle_secs > 30 * 24 * 3600 {
            return Err(ConfigError::SessionIdle);
        }
        if self.session_lifetime_secs < self.session_idle_secs
            || self.session_lifetime_secs > 90 * 24 * 3600
        {
            return Err(ConfigError::SessionLifetime);
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.max_body_bytes) {
            return Err(ConfigError::BodyLimit);
        }
        if self.database_url.is_none() && self.embedded_postgres.is_none() {
            return Err(ConfigError::NoDatabase);
        }
        if !HEARTBEAT_INTERVALS_MS.contains(&self.ha_heartbeat_ms) {
            return Err(ConfigError::HaHeartbeat(self.ha_heartbeat_ms));
        }
        if !DEAD_AFTER_BEATS.contains(&self.ha_dead_after) {
            return Err(ConfigError::HaDeadAfter(self.ha_dead_after));
        }
        if !(1..=3600).contains(&self.failover_after_secs) {
            return Err(ConfigError::FailoverAfter);
        }
        if !(1..=3600).contains(&self.failover_retry_secs) {
            return Err(ConfigError::FailoverRetry);
        }
        if !(2..=1000).contains(&self.db_pool_size) {
            return Err(ConfigError::DbPoolSize);
        }
        for (flag, value, max) in [
            ("appliance-polls", self.appliance_polls, 16),
            (
                "appliance-requests-per-min",
                self.appliance_requests_per_min,
                100_000,
            ),
            (
                "appliance-registrations-per-min",
                self.appliance_registrations_per_min,
                100_000,
            ),
            (
                "appliance-failed-credentials-per-min",
                self.appliance_failed_credentials_per_min,
                100_000,
            ),
        ] {
            if !(1..=max).contains(&value) {
                return Err(ConfigError::ApplianceLimit(flag, max));
            }
        }
        Ok(Settings {
            public_origin: public.origin().ascii_serialization(),
            secure_cookies: scheme == "https",
            session_idle: Duration::from_secs(self.session_idle_secs),
            session_lifetime: Duration::from_secs(self.session_lifetime_secs),
            max_body_bytes: self.max_body_bytes,
            trust_forwarded_for: self.trust_forwarded_for,
            aws_endpoint_url: self.aws_endpoint_url.clone(),
            step_lease: Duration::from_secs(self.step_lease_secs.max(1)),
            engine_workers: self.engine_workers.clamp(1, 64),
            rotation_grace: Duration::from_secs(self.rotation_grace_secs.min(3600)),
            connectivity_grace: Duration::from_secs(self.connectivity_grace_secs.clamp(1, 300)),
            step_retry: Default::default(),
            ha_heartbeat_ms: self.ha_heartbeat_ms,
            ha_dead_after: self.ha_dead_after,
            failover_after: Duration::from_secs(self.failover_after_secs),
            failover_retry: Duration::from_secs(self.failover_retry_secs),
            appliance_limits: LimitSettings {
                polls_per_appliance: self.appliance_polls,
                requests_per_appliance: self.appliance_requests_per_min,
                registrations_per_address: self.appliance_registrations_per_min,
                failed_credentials_per_address: self.appliance_failed_credentials_per_min,
            },
        })
    }
}

fn is_loopback_host(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

impl Settings {
    /// Settings for a server on loopback, as tests and the local demo use.
    pub fn local(origin: &str) -> Self {
        Settings {
            public_origin: origin.to_string(),
            secure_cookies: false,
            session_idle: Duration::from_secs(12 * 3600),
            session_lifetime: Duration::from_secs(7 * 24 * 3600),
            max_body_bytes: 64 * 1024,
            trust_forwarded_for: false,
            aws_endpoint_url: None,
            step_lease: Duration::from_secs(60),
            engine_workers: 4,
            rotation_grace: Duration::from_secs(30),
            connectivity_grace: Duration::from_secs(10),
            step_retry: Default::default(),
            ha_heartbeat_ms: DEFAULT_HEARTBEAT_MS,
            ha_dead_after: DEFAULT_DEAD_AFTER,
            failover_after: Duration::from_secs(25),
            failover_retry: Duration::from_secs(60),
            appliance_limits: LimitSettings::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        let mut all = vec!["vpcmesh-server", "--database-url", "postgres://x"];
        all.extend_from_slice(args);
        Config::try_parse_from(all).expect("flags parse")
    }

    #[test]
    fn default_origin_follows_listen_address() {
        let s = parse(&["--listen", "127.0.0.1:4000"])
            .settings()
            .expect("valid");
        assert_eq!(s.public_origin, "http://127.0.0.1:4000");
        assert!(!s.secure_cookies);
    }

    #[test]
    fn https_public_url_makes_cookies_secure() {
        let s = parse(&["--public-url", "https://vpn.example.com/"])
            .settings()
            .expect("valid");
        assert_eq!(s.public_origin, "https://vpn.example.com");
        assert!(s.secure_cookies);
    }

    #[test]
    fn plain_http_on_a_public_host_is_refused() {
        let err = parse(&["--public-url", "http://vpn.example.com"])
            .settings()
            .unwrap_err();
        assert!(matches!(err, ConfigError::InsecureHttp(_)));
        assert!(
            parse(&["--public-url", "http://vpn.example.com", "--insecure-http"])
                .settings()
                .is_ok()
        );
    }

    #[test]
    fn out_of_range_limits_are_refused() {
        assert_eq!(
            parse(&["--session-idle-secs", "0"]).settings().unwrap_err(),
            ConfigError::SessionIdle
        );
        assert_eq!(
            parse(&[
                "--session-idle-secs",
                "7200",
                "--session-lifetime-secs",
                "3600"
            ])
            .settings()
            .unwrap_err(),
            ConfigError::SessionLifetime
        );
        assert_eq!(
            parse(&["--max-body-bytes", "10"]).settings().unwrap_err(),
            ConfigError::BodyLimit
        );
        assert!(matches!(
            parse(&["--public-url", "ftp://x"]).settings().unwrap_err(),
            ConfigError::Scheme(_)
        ));
    }

    #[test]
    fn ha_timing_outside_what_appliances_accept_is_refused_at_start() {
        assert_eq!(
            parse(&["--ha-heartbeat-ms", "10"]).settings().unwrap_err(),
            ConfigError::HaHeartbeat(10)
        );
        assert_eq!(
            parse(&["--ha-dead-after", "1"]).settings().unwrap_err(),
            ConfigError::HaDeadAfter(1)
        );
        assert_eq!(
            parse(&["--failover-after-secs", "0"])
                .settings()
                .unwrap_err(),
            ConfigError::FailoverAfter
        );
        assert_eq!(
            parse(&["--failover-retry-secs", "7200"])
                .settings()
                .unwrap_err(),
            ConfigError::FailoverRetry
        );
        assert_eq!(
            parse(&["--db-pool-size", "1"]).settings().unwrap_err(),
            ConfigError::DbPoolSize
        );
        assert_eq!(
            parse(&["--appliance-polls", "0"]).settings().unwrap_err(),
            ConfigError::ApplianceLimit("appliance-polls", 16)
        );
        let l = parse(&["--appliance-requests-per-min", "60"])
            .settings()
            .expect("valid")
            .appliance_limits;
        assert_eq!((l.requests_per_appliance, l.polls_per_appliance), (60, 2));
        let s = parse(&["--ha-heartbeat-ms", "50", "--ha-dead-after", "4"])
            .settings()
            .expect("valid");
        assert_eq!((s.ha_heartbeat_ms, s.ha_dead_after), (50, 4));
        let d = parse(&[]).settings().expect("valid");
        assert_eq!(
            (d.ha_heartbeat_ms, d.ha_dead_after, d.failover_after),
            (100, 3, Duration::from_secs(25))
        );
    }

    #[test]
    fn a_database_is_required() {
        let c = Config::try_parse_from(["vpcmesh-server"]).expect("flags parse");
        assert_eq!(c.settings().unwrap_err(), ConfigError::NoDatabase);
    }
}
