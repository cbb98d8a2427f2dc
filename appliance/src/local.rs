//! `vpcmesh-agent local`: follow a config file instead of a server.

use crate::config::LocalArgs;
use crate::dataplane::{status_report, DataKey, EpochKeys, Kernel, NatTSocket};
use crate::protocol::{DesiredConfig, HaRole};
use anyhow::Context;
use base64::Engine;
use std::path::Path;
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(200);
const STATUS_EVERY: Duration = Duration::from_secs(1);
const RETRY_EVERY: Duration = Duration::from_secs(1);

pub fn run(args: LocalArgs) -> anyhow::Result<()> {
    let key_text = std::fs::read_to_string(&args.data_key)
        .with_context(|| format!("reading the data key {}", args.data_key.display()))?;
    // Labs and benchmarks: one data key stands for every epoch (the SA
    // keys still differ per epoch, since HKDF's info names the epoch).
    let key = DataKey::new(
        base64::engine::general_purpose::STANDARD
            .decode(key_text.trim())
            .context("the data key file is not base64")?,
    );
    let mut kernel = Kernel::open().context("opening netlink")?;
    // Held from the start (see NatTSocket): a restart leaves no gap.
    let mut nat_t: Option<NatTSocket> = NatTSocket::open().ok();
    let mut seen: Option<Vec<u8>> = None;
    let mut applied: Option<DesiredConfig> = None;
    let mut error: Option<String> = None;
    let mut kernel_failed_at: Option<Instant> = None;
    let mut last_status = Instant::now() - STATUS_EVERY;
    loop {
        // By content: file systems with coarse timestamps hide quick rewrites.
        let content = std::fs::read(&args.config).ok();
        // A config the kernel did not fully take is retried every second.
        let retry = kernel_failed_at.is_some_and(|t| t.elapsed() >= RETRY_EVERY);
        if content != seen || retry {
            seen = content.clone();
            match content
                .ok_or_else(|| anyhow::anyhow!("cannot read {}", args.config.display()))
                .and_then(|c| parse(&c))
            {
                Err(e) => {
                    tracing::warn!(error = %e, "config refused; keeping the last applied state");
                    error = Some(e.to_string());
                }
                Ok(config) => {
                    if config.nat_traversal && nat_t.is_none() {
                        nat_t = Some(NatTSocket::open().context("opening UDP 4500 for NAT-T")?);
                    }
                    let started = Instant::now();
                    let keys: EpochKeys = config
                        .epochs()
                        .into_iter()
                        .map(|e| (e, key.clone()))
                        .collect();
                    match kernel.apply_config(&config, &keys) {
                        Ok(report) => {
                            tracing::info!(
                                version = config.version,
                                added = report.added,
                                replaced = report.replaced,
                                deleted = report.deleted,
                                ms = started.elapsed().as_millis() as u64,
                                "config applied"
                            );
                            error = None;
                            kernel_failed_at = None;
                            applied = Some(config);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "config not fully applied; retrying");
                            error = Some(e.to_string());
                            kernel_failed_at = Some(Instant::now());
                        }
                    }
                }
            }
        }
        if let Some(path) = &args.status {
            if last_status.elapsed() >= STATUS_EVERY || args.once {
                last_status = Instant::now();
                write_status(path, &mut kernel, applied.as_ref(), error.clone())?;
            }
        }
        if args.once {
            return match error {
                None => Ok(()),
                Some(e) => Err(anyhow::anyhow!(e)),
            };
        }
        std::thread::sleep(POLL);
    }
}

fn parse(text: &[u8]) -> anyhow::Result<DesiredConfig> {
    let config: DesiredConfig = serde_json::from_slice(text).context("parsing the config")?;
    config.validate()?;
    Ok(config)
}

fn write_status(
    path: &Path,
    kernel: &mut Kernel,
    applied: Option<&DesiredConfig>,
    config_error: Option<String>,
) -> anyhow::Result<()> {
    let observed = match applied {
        Some(_) => Some(kernel.observe()?),
        None => None,
    };
    let report = status_report(
        applied,
        config_error,
        HaRole::Active,
        None,
        observed.as_ref(),
    );
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&report)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
