//! `vpcmesh-agent run`: register once, then follow the server.

use super::backoff::Backoff;
use super::{BootConfig, ControlPlane, Identity, StoredCredential, SyncError};
use crate::config::RunArgs;
use crate::dataplane::{status_report, DataKey, EpochKeys, Kernel, NatTSocket, ReconcileReport};
use crate::kms::Kms;
use crate::protocol::{DesiredConfig, HaRole, Member, RegisterRequest};
use anyhow::Context;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// What the status reporter reads: the last applied config and the last error.
#[derive(Default)]
struct Shared {
    applied: Option<DesiredConfig>,
    error: Option<String>,
}

type SharedKernel = Arc<Mutex<Kernel>>;

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    args.validate()?;
    let boot = BootConfig::load(&args.agent_config)?;
    let server = args
        .server_url
        .clone()
        .unwrap_or_else(|| boot.server_url.clone());
    let cp = Arc::new(ControlPlane::new(server.clone())?);
    let identity = Identity {
        instance_id: args.instance_id.clone(),
        availability_zone: args.availability_zone.clone(),
        private_ip: args.private_ip,
        public_ip: args.public_ip,
    };
    let credential = match StoredCredential::load(&args.state_dir) {
        Some(c) if c.site_id == boot.site_id && c.member == boot.member => c,
        _ => {
            let c = register(&cp, &boot, &identity).await?;
            c.save(&args.state_dir).with_context(|| {
                format!("saving the credential in {}", args.state_dir.display())
            })?;
            c
        }
    };
    tracing::info!(appliance_id = %credential.appliance_id, member = credential.member.as_str(), server = %server, "following the control plane");

    let kernel: SharedKernel = Arc::new(Mutex::new(Kernel::open().context("opening netlink")?));
    let shared = Arc::new(Mutex::new(Shared::default()));
    let report_now = Arc::new(Notify::new());
    // Until failover exists, member A is the active one: the EIP and the VPC
    // routes point at it.
    let ha_role = match credential.member {
        Member::A => HaRole::Active,
        Member::B => HaRole::Passive,
    };
    tokio::spawn(report_status(
        ha_role,
        cp.clone(),
        credential.credential.clone(),
        kernel.clone(),
        shared.clone(),
        report_now.clone(),
        Duration::from_secs(args.status_every_secs.max(1)),
    ));
    follow_config(
        &args,
        &cp,
        &credential.credential,
        kernel,
        shared,
        report_now,
    )
    .await
}

async fn register(
    cp: &ControlPlane,
    boot: &BootConfig,
    id: &Identity,
) -> anyhow::Result<StoredCredential> {
    let req = RegisterRequest {
        bootstrap_token: boot.bootstrap_token.clone(),
        instance_id: id.instance_id.clone(),
        availability_zone: id.availability_zone.clone(),
        private_ip: id.private_ip,
        public_ip: id.public_ip,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        match cp.register(&req).await {
            Ok(r) => {
                return Ok(StoredCredential {
                    appliance_id: r.appliance_id,
                    credential: r.credential,
                    site_id: r.site_id,
                    member: r.member,
                })
            }
            Err(e) if e.is_permanent() => {
                anyhow::bail!("registration refused: {e}")
            }
            Err(e) => {
                let wait = backoff.next_wait();
                tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "registration failed; retrying");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

async fn follow_config(
    args: &RunArgs,
    cp: &ControlPlane,
    credential: &str,
    kernel: SharedKernel,
    shared: Arc<Mutex<Shared>>,
    report_now: Arc<Notify>,
) -> anyhow::Result<()> {
    let kms = Kms::new(args.aws_endpoint_url.clone());
    // Held from the start, so a restarted agent is ready for ESP-in-UDP
    // before its first config arrives.
    let mut nat_t: Option<NatTSocket> = NatTSocket::open()
        .map_err(|e| tracing::warn!(error = %e, "UDP 4500 not open yet; retrying with the first NAT-T config"))
        .ok();
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    let mut after: Option<u64> = None;
    // Decrypted keys by epoch, with the ciphertext they came from; epochs
    // that leave the config are dropped (and wiped) with it.
    let mut keys: BTreeMap<u32, (String, DataKey)> = BTreeMap::new();
    let wait = Duration::from_secs(args.long_poll_secs.clamp(1, 30));
    let set_error = |e: String| {
        if let Ok(mut s) = shared.lock() {
            s.error = Some(e);
        }
        report_now.notify_one();
    };
    loop {
        let config = match cp.config(credential, after, wait).await {
            Ok(None) => {
                backoff.reset();
                continue;
            }
            Ok(Some(c)) => c,
            Err(e) => {
                // Fail static: the kernel keeps the last applied config.
                let wait = backoff.next_wait();
                tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "no config from the server; keeping the last one");
                if matches!(e, SyncError::Decode(_)) {
                    set_error(e.to_string());
                }
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        after = Some(config.version);
        if let Err(e) = config.validate() {
            tracing::warn!(version = config.version, error = %e, "config refused as a whole; keeping the last one");
            set_error(format!("config {} refused: {e}", config.version));
            continue;
        }
        keys.retain(|epoch, (ciphertext, _)| {
            config
                .keys
                .iter()
                .any(|k| k.epoch == *epoch && k.ciphertext == *ciphertext)
        });
        let mut failed = None;
        for k in &config.keys {
            if keys.contains_key(&k.epoch) {
                continue;
            }
            match kms.data_key(&config.network_id, k).await {
                Ok(dk) => {
                    keys.insert(k.epoch, (k.ciphertext.clone(), dk));
                }
                Err(e) => {
                    tracing::warn!(epoch = k.epoch, error = %e, "cannot decrypt the epoch key");
                    failed = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failed {
            set_error(e.to_string());
            after = None;
            tokio::time::sleep(backoff.next_wait()).await;
            continue;
        }
        let data_keys: EpochKeys = keys.iter().map(|(e, (_, dk))| (*e, dk.clone())).collect();
        if config.nat_traversal && nat_t.is_none() {
            match NatTSocket::open() {
                Ok(s) => nat_t = Some(s),
                Err(e) => {
                    set_error(format!("opening UDP 4500 for NAT-T: {e}"));
                    after = None;
                    tokio::time::sleep(backoff.next_wait()).await;
                    continue;
                }
            }
        }
        match apply(kernel.clone(), config.clone(), data_keys).await {
            Ok(report) => {
                backoff.reset();
                tracing::info!(
                    version = config.version,
                    epochs = ?config.epochs(),
                    added = report.added,
                    replaced = report.replaced,
                    deleted = report.deleted,
                    "config applied"
                );
                if let Ok(mut s) = shared.lock() {
                    s.applied = Some(config);
                    s.error = None;
                }
                report_now.notify_one();
            }
            Err(e) => {
                tracing::warn!(version = config.version, error = %e, "config not fully applied; retrying");
                set_error(e.to_string());
                after = None;
                tokio::time::sleep(backoff.next_wait()).await;
            }
        }
    }
}

async fn apply(
    kernel: SharedKernel,
    config: DesiredConfig,
    keys: EpochKeys,
) -> anyhow::Result<ReconcileReport> {
    tokio::task::spawn_blocking(move || {
        let mut k = kernel
            .lock()
            .map_err(|_| anyhow::anyhow!("the kernel handle is poisoned"))?;
        let started = Instant::now();
        let report = k.apply_config(&config, &keys)?;
        tracing::debug!(ms = started.elapsed().as_millis() as u64, "reconciled");
        Ok(report)
    })
    .await?
}

async fn report_status(
    ha_role: HaRole,
    cp: Arc<ControlPlane>,
    credential: String,
    kernel: SharedKernel,
    shared: Arc<Mutex<Shared>>,
    now: Arc<Notify>,
    every: Duration,
) {
    loop {
        let _ = tokio::time::timeout(every, now.notified()).await;
        let (applied, error) = match shared.lock() {
            Ok(s) => (s.applied.clone(), s.error.clone()),
            Err(_) => return,
        };
        let k = kernel.clone();
        // One snapshot: the version reported is the one whose tunnels are read.
        let report = tokio::task::spawn_blocking(move || {
            let observed = k.lock().ok().and_then(|mut k| k.observe().ok());
            status_report(applied.as_ref(), error, ha_role, observed.as_ref())
        })
        .await;
        let Ok(report) = report else {
            continue;
        };
        if let Err(e) = cp.status(&credential, &report).await {
            tracing::warn!(error = %e, "status report not delivered");
        }
    }
}
