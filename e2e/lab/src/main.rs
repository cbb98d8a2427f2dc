//! `vpcmesh-lab`: run the lab (`run`), or talk to a running one (`exec`,
//! `hosts`). `guest` is what the lab runs inside its guest.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "vpcmesh-lab",
    version,
    about = "the vpcmesh lab: moto's network, for real, in a User-Mode Linux guest"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot the guest and mirror the AWS emulator into it until stopped.
    Run {
        /// The lab's folder: logs, lab.json, captures.
        #[arg(long, default_value = ".data/lab")]
        dir: PathBuf,
        /// The AWS emulator.
        #[arg(long, env = "VPCMESH_AWS_ENDPOINT_URL")]
        aws_endpoint_url: url::Url,
        /// The control plane, as this host reaches it.
        #[arg(long, default_value = "127.0.0.1:3000")]
        control_plane: SocketAddr,
        /// An account to mirror (its role is assumed in the emulator). Repeatable.
        #[arg(long = "account", required = true)]
        accounts: Vec<String>,
        /// Regions to watch from the start (every region with a VPC is
        /// found too, in the background).
        #[arg(long = "region")]
        regions: Vec<String>,
        /// The guest's memory (a 3-region HA demo uses about 800 MiB).
        #[arg(long, default_value_t = 2048)]
        mem_mb: u32,
        #[arg(long, env = "VPCMESH_UML", default_value = "linux.uml")]
        uml: String,
        #[arg(long, default_value = "vpcmesh-lab")]
        netns: String,
        /// Test hosts ping each other's every few seconds, so tunnels carry
        /// traffic (and the console shows counters) with nobody at a shell.
        #[arg(long)]
        demo_traffic: bool,
    },
    /// Run a shell script in the running lab's guest (e.g. `ip netns exec h1 ping -c 3 10.20.63.254`).
    Exec {
        #[arg(long, default_value = ".data/lab")]
        dir: PathBuf,
        #[arg(long, default_value_t = 120)]
        timeout_secs: u64,
        script: Vec<String>,
    },
    /// List the running lab's test hosts and instances.
    Hosts {
        #[arg(long, default_value = ".data/lab")]
        dir: PathBuf,
    },
    /// Measure the running lab: its start (from lab.json), the guest's
    /// memory, and iperf3 through one tunnel next to the same path without
    /// IPsec.
    Bench {
        #[arg(long, default_value = ".data/lab")]
        dir: PathBuf,
        /// Seconds per iperf3 run.
        #[arg(long, default_value_t = 8)]
        seconds: u32,
    },
    /// (In the guest.) Serve the host's commands.
    Guest {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        dir: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,aws_config=warn,aws_smithy_runtime=warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: the guest's log and `.data/lab.log` are files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Guest { listen, dir } => vpcmesh_lab::guest::serve(listen, dir).await,
        Command::Run {
            dir,
            aws_endpoint_url,
            control_plane,
            accounts,
            regions,
            mem_mb,
            uml,
            netns,
            demo_traffic,
        } => {
            let dir = std::path::absolute(&dir)?;
            let aws = aws_endpoint_url
                .socket_addrs(|| None)?
                .into_iter()
                .next()
                .context("the AWS endpoint URL names no address")?;
            // The guest boots while the emulator (and the control plane)
            // start: neither is needed before the first round.
            let endpoint = aws_endpoint_url.as_str();
            let (lab, sdks) = tokio::join!(
                vpcmesh_lab::Lab::boot(vpcmesh_lab::LabConfig {
                    dir,
                    netns,
                    uml,
                    mem_mb,
                    lab_bin: std::env::current_exe()?,
                    aws_endpoint: aws,
                    control_plane,
                    regions,
                    discover_regions: true,
                    poll: Duration::from_millis(500),
                    poll_booting: Duration::from_millis(250),
                    demo_traffic,
                }),
                futures::future::try_join_all(accounts.iter().map(|a| assume(a, endpoint)))
            );
            let mut lab = lab?;
            tracing::info!(took = ?lab.boot_took, "lab: the guest booted");
            lab.mirror(sdks?);
            tracing::info!("lab: mirroring the AWS emulator (Ctrl-C stops)");
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            lab.stop().await;
            Ok(())
        }
        Command::Exec {
            dir,
            timeout_secs,
            script,
        } => {
            let state = read_state(&dir)?;
            let netns = state["netns"]
                .as_str()
                .context("lab.json names no namespace")?;
            let guest: SocketAddr = state["guest"]
                .as_str()
                .context("lab.json names no guest")?
                .parse()?;
            let out = exec(netns, guest, &script.join(" "), timeout_secs).await?;
            print!("{}", out.stdout);
            eprint!("{}", out.stderr);
            std::process::exit(out.rc);
        }
        Command::Bench { dir, seconds } => {
            let state = read_state(&dir)?;
            let netns = state["netns"]
                .as_str()
                .context("lab.json names no namespace")?
                .to_string();
            let guest: SocketAddr = state["guest"]
                .as_str()
                .context("lab.json names no guest")?
                .parse()?;
            let lab: vpcmesh_lab::bench::LabState = serde_json::from_value(state)?;
            let timeout = vpcmesh_lab::bench::timeout(seconds).as_secs();
            vpcmesh_lab::bench::run(&lab, seconds, |script| {
                let netns = netns.clone();
                async move {
                    exec(&netns, guest, &script, timeout)
                        .await
                        .map_err(|e| vpcmesh_lab::bench::BenchError::Guest(e.to_string()))
                }
            })
            .await?;
            Ok(())
        }
        Command::Hosts { dir } => {
            let state = read_state(&dir)?;
            println!(
                "{:<10} {:<16} {:<16} {:<22} vpc",
                "host", "address", "region", "cidr"
            );
            for h in state["hosts"].as_array().into_iter().flatten() {
                println!(
                    "{:<10} {:<16} {:<16} {:<22} {}",
                    h["name"].as_str().unwrap_or_default(),
                    h["address"].as_str().unwrap_or_default(),
                    h["region"].as_str().unwrap_or_default(),
                    h["cidr"].as_str().unwrap_or_default(),
                    h["vpc_id"].as_str().unwrap_or_default()
                );
            }
            for i in state["instances"].as_array().into_iter().flatten() {
                println!("instance {}", i.as_str().unwrap_or_default());
            }
            Ok(())
        }
    }
}

fn read_state(dir: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    let path = dir.join("lab.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{} (is the lab running? ./run.sh starts it)",
            path.display()
        )
    })?;
    Ok(serde_json::from_str(&text)?)
}

async fn exec(
    netns: &str,
    guest: SocketAddr,
    script: &str,
    timeout_secs: u64,
) -> anyhow::Result<vpcmesh_lab::guest::Output> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut stream = vpcmesh_lab::netns::connect_in(netns, guest).await?;
    let mut req = serde_json::to_string(&vpcmesh_lab::guest::Request {
        script: script.to_string(),
        timeout_secs,
        forward: None,
    })?;
    req.push('\n');
    stream.write_all(req.as_bytes()).await?;
    let mut line = String::new();
    tokio::io::BufReader::new(stream)
        .read_line(&mut line)
        .await?;
    Ok(serde_json::from_str(&line)?)
}

/// The account's role in the emulator: moto hands out credentials of the
/// account a role ARN names.
async fn assume(account: &str, endpoint: &str) -> anyhow::Result<aws_config::SdkConfig> {
    anyhow::ensure!(
        account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()),
        "--account {account}: an AWS account ID is 12 digits"
    );
    let base = appliance::aws::sdk_config("us-east-1", Some(endpoint), None).await;
    let sts = aws_sdk_sts::Client::new(&base);
    // The emulator may still be starting (./run.sh starts everything at once).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let out = loop {
        match sts
            .assume_role()
            .role_arn(format!("arn:aws:iam::{account}:role/vpcmesh-lab"))
            .role_session_name("vpcmesh-lab")
            .send()
            .await
        {
            Ok(out) => break out,
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::info!(error = %e, "lab: waiting for the AWS emulator at {endpoint}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("sts:AssumeRole into {account} at {endpoint}"))
            }
        }
    };
    let c = out
        .credentials()
        .context("AssumeRole returned no credentials")?;
    let creds = aws_credential_types::Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_string()),
        None,
        "vpcmesh-lab",
    );
    Ok(appliance::aws::sdk_config("us-east-1", Some(endpoint), Some(creds)).await)
}
