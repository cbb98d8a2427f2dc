use clap::Parser;
use url::Url;

#[derive(Parser, Debug, Clone)]
#[command(name = "vpcmesh-agent", version, about = "vpcmesh appliance agent")]
pub struct AgentConfig {
    /// The control plane's base URL (from the instance's user data).
    #[arg(long, env = "VPCMESH_SERVER_URL")]
    pub server_url: Url,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AgentConfigError {
    #[error("--server-url must be http or https, got '{0}'")]
    Scheme(String),
}

impl AgentConfig {
    pub fn validate(&self) -> Result<(), AgentConfigError> {
        match self.server_url.scheme() {
            "http" | "https" => Ok(()),
            other => Err(AgentConfigError::Scheme(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_url_must_be_http() {
        let c = AgentConfig::try_parse_from(["a", "--server-url", "ftp://x"]).expect("parses");
        assert_eq!(c.validate(), Err(AgentConfigError::Scheme("ftp".into())));
        let c = AgentConfig::try_parse_from(["a", "--server-url", "https://cp.example"])
            .expect("parses");
        assert!(c.validate().is_ok());
    }
}
