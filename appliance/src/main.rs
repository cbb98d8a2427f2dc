use appliance::config::AgentConfig;
use clap::Parser;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().init();
    let config = AgentConfig::parse();
    config.validate()?;
    tracing::info!(server = %config.server_url, "vpcmesh agent configured");
    anyhow::bail!("the agent loop is not wired yet in this build")
}
