//! `vpcmesh-agent run`: register once, then follow the server.

use super::backoff::Backoff;
use super::generation::{Decision, Generations};
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
    args.require_tls(&server)?;
    let identity = Identity::resolve(&args, &crate::imds::Imds::new(args.imds_url.clone())).await?;
    let kernel: SharedKernel = Arc::new(Mutex::new(Kernel::open().context("opening netlink")?));
    let mut ownership = None;
    loop {
        let (credential, generations) = match StoredCredential::load(&args.state_dir) {
            Some(c) if c.site_id == boot.site_id && c.member == boot.member => {
                (c, Generations::unknown())
            }
            _ => {
                let (c, generation) = register(&cp, &boot, &identity).await?;
                c.save(&args.state_dir).with_context(|| {
                    format!("saving the credential in {}", args.state_dir.display())
                })?;
                (c, Generations::fresh(generation))
            }
        };
        tracing::info!(appliance_id = %credential.appliance_id, member = credential.member.as_str(), server = %server, "following the control plane");
        // Registered: the server (and EC2) vouch for this instance, so it
        // may take the site's address (once per process).
        if ownership.is_none() {
            ownership = Some(tokio::spawn(super::ownership::own(
                identity.clone(),
                boot.allocation_id.clone(),
                member_role(credential.member),
                args.aws_endpoint_url.clone(),
            )));
        }

        let shared = Arc::new(Mutex::new(Shared::default()));
        let report_now = Arc::new(Notify::new());
        let ha_role = member_role(credential.member);
        let reporter = tokio::spawn(report_status(
            ha_role,
            cp.clone(),
            credential.credential.clone(),
            kernel.clone(),
            shared.clone(),
            report_now.clone(),
            Duration::from_secs(args.status_every_secs.max(1)),
        ));
        let followed = follow_config(
            &args,
            &boot,
            &cp,
            &credential,
            generations,
            kernel.clone(),
            shared,
            report_now,
        )
        .await;
        reporter.abort();
        let Revoked = followed;
        // This instance was registered again, or replaced: register anew
        // (the server checks with EC2 that it is still ours).
        tracing::warn!(appliance_id = %credential.appliance_id, "the credential no longer works; registering again");
        StoredCredential::forget(&args.state_dir)
            .with_context(|| format!("removing the credential in {}", args.state_dir.display()))?;
    }
}

/// Until failover exists, member A is the active one: the EIP and the VPC
/// routes point at it.
fn member_role(member: Member) -> HaRole {
    match member {
        Member::A => HaRole::Active,
        Member::B => HaRole::Passive,
    }
}

/// The server no longer accepts this appliance's credential.
struct Revoked;

async fn register(
    cp: &ControlPlane,
    boot: &BootConfig,
    id: &Identity,
) -> anyhow::Result<(StoredCredential, u32)> {
    let req = RegisterRequest {
        bootstrap_token: boot.bootstrap_token.clone(),
        instance_id: id.instance_id.clone(),
        availability_zone: id.availability_zone.clone(),
        private_ip: id.private_ip,
        public_ip: id.public_ip,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    let mut slow = Backoff::new(Duration::from_secs(5), Duration::from_secs(300));
    loop {
        match cp.register(&req).await {
            Ok(r) => {
                if (r.network_id, r.site_id, r.member)
                    != (boot.network_id, boot.site_id, boot.member)
                {
                    anyhow::bail!(
                        "the server registered this instance as site {} member {}, but its bootstrap file names site {} member {}",
                        r.site_id,
                        r.member.as_str(),
                        boot.site_id,
                        boot.member.as_str()
                    );
                }
                let generation = r.generation;
                return Ok((
                    StoredCredential {
                        appliance_id: r.appliance_id,
                        credential: r.credential,
                        site_id: r.site_id,
                        member: r.member,
                    },
                    generation,
                ));
            }
            // A refusal can end by itself (the instance is not running in
            // EC2's eyes yet, its previous agent is still live): keep
            // trying, slowly, and say why.
            Err(e) if e.is_permanent() => {
                let wait = slow.next_wait();
                tracing::error!(error = %e, wait_ms = wait.as_millis() as u64, "registration refused; trying again later");
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
                let wait = backoff.next_wait();
                tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "registration failed; retrying");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn follow_config(
    args: &RunArgs,
    boot: &BootConfig,
    cp: &ControlPlane,
    stored: &StoredCredential,
    mut generations: Generations,
    kernel: SharedKernel,
    shared: Arc<Mutex<Shared>>,
    report_now: Arc<Notify>,
) -> Revoked {
    let credential = stored.credential.as_str();
    let mut ready_sent = false;
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
            Err(SyncError::Refused { status: 401, .. }) => return Revoked,
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
        if let Err(e) = config
            .validate()
            .and_then(|()| config.check_owner(boot.network_id, stored.site_id, stored.member))
        {
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
        let outcome = apply(
            kernel.clone(),
            config.clone(),
            data_keys,
            generations.clone(),
        )
        .await;
        match outcome {
            Ok(Applied::Done(report, g)) => {
                generations = g;
                backoff.reset();
                tracing::info!(
                    version = config.version,
                    generation = config.generation,
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
                if !ready_sent {
                    // systemd (Type=notify): UDP 4500 is bound (above) and
                    // the first reconcile is done.
                    ready_sent = true;
                    match super::systemd::ready() {
                        Ok(true) => tracing::info!("told systemd the agent is ready"),
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "could not tell systemd the agent is ready")
                        }
                    }
                }
            }
            Ok(Applied::Renew { above }) => {
                // Never put lost SAs back: get SPIs no kernel ever held.
                match cp.new_generation(credential, above).await {
                    Ok(g) => {
                        tracing::info!(
                            above,
                            generation = g,
                            "the kernel lost SAs of this generation; moved to a fresh one"
                        );
                        generations.renewed(g);
                    }
                    Err(SyncError::Refused { status: 401, .. }) => return Revoked,
                    Err(e) => {
                        tracing::warn!(error = %e, "no fresh SA generation from the server; keeping the kernel as it is");
                        set_error(format!("waiting for a fresh SA generation: {e}"));
                        tokio::time::sleep(backoff.next_wait()).await;
                    }
                }
                after = None;
            }
            Ok(Applied::Outdated) => {
                // A config from before our renewal; the next one has it.
                after = None;
                tokio::time::sleep(Duration::from_millis(100)).await;
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

/// What became of a config.
enum Applied {
    Done(ReconcileReport, Generations),
    Renew { above: u32 },
    Outdated,
}

async fn apply(
    kernel: SharedKernel,
    config: DesiredConfig,
    keys: EpochKeys,
    mut generations: Generations,
) -> anyhow::Result<Applied> {
    tokio::task::spawn_blocking(move || {
        let mut k = kernel
            .lock()
            .map_err(|_| anyhow::anyhow!("the kernel handle is poisoned"))?;
        let started = Instant::now();
        let plan = k.plan(&config, &keys)?;
        match generations.decide(config.generation, &plan) {
            Decision::Apply => {}
            Decision::Renew { above } => return Ok(Applied::Renew { above }),
            Decision::Outdated => return Ok(Applied::Outdated),
        }
        let installed = plan.fresh.clone();
        let report = k.apply_plan(plan)?;
        generations.applied(config.generation, &installed);
        tracing::debug!(ms = started.elapsed().as_millis() as u64, "reconciled");
        Ok(Applied::Done(report, generations))
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
