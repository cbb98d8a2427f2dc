//! `vpcmesh-agent run`: register once, then follow the server.

use super::backoff::Backoff;
use super::cadence::{self, Cadence, OBSERVE_EVERY};
use super::drift::{DriftCheck, Repaired};
use super::generation::{Decision, Generations};
use super::{BootConfig, ControlPlane, Identity, StoredCredential, SyncError};
use crate::address::SiteAddress;
use crate::config::RunArgs;
use crate::dataplane::{
    heartbeat_key, inbound_drops, status_report, DataKey, EpochKeys, Kernel, NatTSocket,
    ReconcileError, ReconcileReport,
};
use crate::ha::stopping::HANDOVER_WITHIN;
use crate::ha::{HaInputs, HaTask, HaView, Stopping, ROUTES_RECHECK};
use crate::kms::Kms;
use crate::metrics::METRICS;
use crate::protocol::{DesiredConfig, KeyScope, RegisterRequest};
use crate::vpc_routes;
use anyhow::Context;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// What the status reporter reads: the last applied config and the last error.
#[derive(Default)]
struct Shared {
    applied: Option<DesiredConfig>,
    error: Option<String>,
    repaired: Option<Repaired>,
}

type SharedKernel = Arc<Mutex<Kernel>>;

/// Follows the server until SIGTERM; then the HA task says its goodbye
/// (see `ha::stopping`) before the agent exits.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let (stop, _) = watch::channel(None);
    let mut following = Box::pin(follow_server(args, &stop));
    tokio::select! {
        r = &mut following => return r,
        _ = term.recv() => {}
    }
    let how = Stopping::detect().await;
    stop.send_replace(Some(how));
    if stop.receiver_count() > 0 {
        // The HA task ends once it has said goodbye (its receiver goes).
        tokio::select! {
            r = &mut following => return r,
            done = tokio::time::timeout(HANDOVER_WITHIN + Duration::from_secs(2), stop.closed()) => {
                if done.is_err() {
                    tracing::warn!("the HA task did not finish its goodbye in time");
                }
            }
        }
    }
    tracing::info!(?how, "stopped on SIGTERM");
    Ok(())
}

async fn follow_server(
    args: RunArgs,
    stop: &watch::Sender<Option<Stopping>>,
) -> anyhow::Result<()> {
    args.validate()?;
    let boot = BootConfig::load(&args.agent_config)?;
    let server = args
        .server_url
        .clone()
        .unwrap_or_else(|| boot.server_url.clone());
    let cp = Arc::new(ControlPlane::new(server.clone())?);
    args.require_tls(&server)?;
    if let Some(addr) = args.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening for metrics on {addr}"))?;
        tracing::info!(%addr, "serving metrics");
        tokio::spawn(crate::metrics::serve(listener));
    }
    let identity = Identity::resolve(&args, &crate::imds::Imds::new(args.imds_url.clone())).await?;
    let kernel: SharedKernel = Arc::new(Mutex::new(Kernel::open().context("opening netlink")?));
    let mut ha_task = None;
    // What the applied config gives the HA task, and the role it reports.
    let (ha_inputs, ha_inputs_rx) = watch::channel(HaInputs::default());
    let (ha_view, ha_view_rx) = watch::channel(HaView::starting());
    let report_now = Arc::new(Notify::new());
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
        // may take part in its site's pair (once per process).
        if ha_task.is_none() {
            let task = HaTask {
                ec2: SiteAddress::new(&identity.region, args.aws_endpoint_url.as_deref()).await,
                identity: identity.clone(),
                allocation_id: boot.allocation_id.clone(),
                member: credential.member,
                site_id: credential.site_id,
                imds: Some(crate::imds::Imds::new(args.imds_url.clone())),
                routes_recheck: ROUTES_RECHECK,
                port: HaTask::default_port(),
                state_dir: args.state_dir.clone(),
                stopping: stop.subscribe(),
            };
            ha_task = Some(tokio::spawn(task.run(
                ha_inputs_rx.clone(),
                ha_view.clone(),
                report_now.clone(),
            )));
        }

        let shared = Arc::new(Mutex::new(Shared::default()));
        let reporter = tokio::spawn(report_status(
            ha_view_rx.clone(),
            cp.clone(),
            credential.credential.clone(),
            kernel.clone(),
            shared.clone(),
            report_now.clone(),
            Duration::from_secs(args.status_every_secs.max(1)),
        ));
        let (probes, prober) = crate::probe::Probes::spawn(
            cp.clone(),
            credential.credential.clone(),
            args.state_dir.clone(),
        );
        let followed = follow_config(
            &args,
            &boot,
            &cp,
            &credential,
            generations,
            kernel.clone(),
            shared,
            report_now.clone(),
            &probes,
            &ha_inputs,
        )
        .await;
        reporter.abort();
        prober.abort();
        let Revoked = followed;
        // This instance was registered again, or replaced: register anew
        // (the server checks with EC2 that it is still ours).
        tracing::warn!(appliance_id = %credential.appliance_id, "the credential no longer works; registering again");
        StoredCredential::forget(&args.state_dir)
            .with_context(|| format!("removing the credential in {}", args.state_dir.display()))?;
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
    probes: &crate::probe::Probes,
    ha_inputs: &watch::Sender<HaInputs>,
) -> Revoked {
    let credential = stored.credential.as_str();
    let mut ready_sent = false;
    let kms = Arc::new(Kms::new(args.aws_endpoint_url.clone()));
    // Held from the start, so a restarted agent is ready for ESP-in-UDP
    // before its first config arrives.
    let mut nat_t: Option<NatTSocket> = NatTSocket::open()
        .map_err(|e| tracing::warn!(error = %e, "UDP 4500 not open yet; retrying with the first NAT-T config"))
        .ok();
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    // A kernel that refused changes is asked again soon: what it refused
    // (a route while the interface was down) is often fine a moment later,
    // and this member may have to carry the site's traffic by then.
    let mut kernel_backoff = Backoff::new(KERNEL_RETRY_BASE, KERNEL_RETRY_MAX);
    let mut after: Option<u64> = None;
    // Decrypted keys by epoch and scope, with the ciphertext they came
    // from; keys that leave the config are dropped (and wiped) with it.
    let mut keys: DecryptedKeys = BTreeMap::new();
    let wait = Duration::from_secs(args.long_poll_secs.clamp(1, 30));
    // The config version last given to the HA task.
    let mut ha_sent: Option<u64> = None;
    // The applied config (`shared.applied`) is planned again against the
    // kernel when no new one comes (see `drift`).
    let mut drift = DriftCheck::new(Duration::from_secs(args.drift_check_secs), Instant::now());
    let set_error = |e: String| {
        METRICS.config_error();
        if let Ok(mut s) = shared.lock() {
            s.error = Some(e);
        }
        report_now.notify_one();
    };
    loop {
        let poll_wait = drift.poll_wait(wait, Instant::now());
        let (config, checking) = match cp.config(credential, after, poll_wait).await {
            Ok(None) => {
                backoff.reset();
                let applied = drift
                    .due(Instant::now())
                    .then(|| shared.lock().ok().and_then(|s| s.applied.clone()))
                    .flatten();
                match applied {
                    Some(c) => (c, true),
                    None => continue,
                }
            }
            Ok(Some(c)) => (c, false),
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
        // A connectivity check runs beside the reconcile, never in its way.
        probes.offer(&config);
        let wanted = config.key_blobs();
        keys.retain(|(epoch, scope), (ciphertext, _)| {
            wanted
                .iter()
                .any(|(k, s, c)| k.epoch == *epoch && s == scope && c == ciphertext)
        });
        let failed = decrypt_missing(&kms, config.network_id, &wanted, &mut keys)
            .await
            .err();
        if let Some(e) = failed {
            set_error(e.to_string());
            after = None;
            tokio::time::sleep(backoff.next_wait()).await;
            continue;
        }
        let data_keys = epoch_keys(&keys);
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
        let reconciling = Instant::now();
        let outcome = apply(
            kernel.clone(),
            config.clone(),
            data_keys,
            generations.clone(),
        )
        .await;
        match outcome {
            Ok(Applied::Done(report, g)) => {
                METRICS.applied(config.version, &report, reconciling.elapsed());
                generations = g;
                backoff.reset();
                kernel_backoff.reset();
                let changes = report.added + report.replaced + report.deleted;
                if let Some(r) = drift.applied(checking, changes, Instant::now()) {
                    METRICS.drift_repaired();
                    tracing::warn!(
                        version = config.version,
                        added = report.added,
                        replaced = report.replaced,
                        deleted = report.deleted,
                        "the kernel had changed behind the agent's back; put the applied config back"
                    );
                    if let Ok(mut s) = shared.lock() {
                        s.repaired = Some(r);
                    }
                    report_now.notify_one();
                }
                if checking {
                    // Nothing new for the HA task, systemd or the report.
                    continue;
                }
                tracing::info!(
                    version = config.version,
                    generation = config.generation,
                    epochs = ?config.epochs(),
                    added = report.added,
                    replaced = report.replaced,
                    deleted = report.deleted,
                    "config applied"
                );
                // The VPC's routes come here once this appliance forwards
                // (the kernel holds the policies, forwarding is on), never
                // before: a fresh instance with nothing applied would drop
                // the traffic as surely as the blackhole.
                ha_sent = Some(config.version);
                ha_inputs.send_replace(ha_inputs_of(&config, &keys));
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
                if checking {
                    tracing::warn!(
                        version = config.version,
                        "the kernel lost SAs behind the agent's back; moving to a fresh generation"
                    );
                    drift.renewing();
                }
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
                // The kernel refused some changes (an SA it cannot hold) but
                // holds every block policy, and forwards: this member carries
                // every tunnel that works (the rest is dropped, never sent in
                // clear), so it takes its part in the pair (the status report
                // tells the server what failed). Once per version: a retry
                // must not restart the pair's timers.
                let partial = matches!(
                    e.downcast_ref::<ReconcileError>(),
                    Some(ReconcileError::Apply {
                        blocks_in: true,
                        ..
                    })
                );
                if partial && ha_sent != Some(config.version) {
                    ha_sent = Some(config.version);
                    ha_inputs.send_replace(ha_inputs_of(&config, &keys));
                }
                set_error(e.to_string());
                after = None;
                tokio::time::sleep(kernel_backoff.next_wait()).await;
            }
        }
    }
}

/// Decrypted data keys by (epoch, scope), with the ciphertext each came from.
type DecryptedKeys = BTreeMap<(u32, KeyScope), (String, DataKey)>;

/// KMS decrypts in flight at once: a config names one data key per tunnel,
/// and one at a time would add a round trip to KMS per peer site.
const DECRYPT_AT_ONCE: usize = 8;

/// Decrypts the data keys of `wanted` (a config's `key_blobs`) that `keys`
/// lacks, up to [`DECRYPT_AT_ONCE`] at a time. On a refusal nothing more is
/// started; the keys decrypted by then are kept, and the first error is
/// returned.
async fn decrypt_missing(
    kms: &Arc<Kms>,
    network: uuid::Uuid,
    wanted: &[(&crate::protocol::EpochKey, KeyScope, &str)],
    keys: &mut DecryptedKeys,
) -> Result<(), crate::kms::KmsError> {
    let mut todo: Vec<(crate::protocol::EpochKey, KeyScope, String)> = wanted
        .iter()
        .filter(|(k, scope, _)| !keys.contains_key(&(k.epoch, *scope)))
        .map(|(k, scope, c)| ((*k).clone(), *scope, c.to_string()))
        .collect();
    if todo.is_empty() {
        return Ok(());
    }
    let (count, started) = (todo.len(), Instant::now());
    let mut running = tokio::task::JoinSet::new();
    let mut failed = None;
    loop {
        while running.len() < DECRYPT_AT_ONCE && failed.is_none() {
            let Some((key, scope, ciphertext)) = todo.pop() else {
                break;
            };
            let kms = kms.clone();
            running.spawn(async move {
                let r = kms.data_key(&network, &key, scope, &ciphertext).await;
                (key.epoch, scope, ciphertext, r)
            });
        }
        let Some(done) = running.join_next().await else {
            break;
        };
        match done {
            Ok((epoch, scope, ciphertext, Ok(dk))) => {
                keys.insert((epoch, scope), (ciphertext, dk));
            }
            Ok((epoch, scope, _, Err(e))) => {
                tracing::warn!(epoch, ?scope, error = %e, "cannot decrypt a data key");
                failed.get_or_insert(e);
            }
            // Nothing aborts these tasks: only a panic ends one early.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    match failed {
        Some(e) => Err(e),
        None => {
            tracing::info!(
                count,
                took_ms = started.elapsed().as_millis() as u64,
                "data keys decrypted"
            );
            Ok(())
        }
    }
}

/// The decrypted keys as the kernel and HA code look them up.
fn epoch_keys(keys: &DecryptedKeys) -> EpochKeys {
    let mut out = EpochKeys::default();
    for ((epoch, scope), (_, dk)) in keys {
        out.insert(*epoch, *scope, dk.clone());
    }
    out
}

/// The first and the longest wait before a config the kernel did not fully
/// take is applied again.
const KERNEL_RETRY_BASE: Duration = Duration::from_millis(200);
const KERNEL_RETRY_MAX: Duration = Duration::from_secs(5);

/// What a config the kernel holds gives the HA task: its HA settings, the
/// heartbeat keys of its epochs (newest first) and the remote CIDRs.
fn ha_inputs_of(config: &DesiredConfig, keys: &DecryptedKeys) -> HaInputs {
    let (keys, site) = (epoch_keys(keys), config.site_id);
    HaInputs {
        applied: true,
        ha: config.ha.clone(),
        keys: config
            .epochs()
            .into_iter()
            .filter_map(|e| {
                let dk = keys.site(e, site)?;
                Some((e, heartbeat_key(dk, config.network_id, e, site)))
            })
            .collect(),
        remote: vpc_routes::remote_cidrs(config),
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

/// Reads the tunnels from the kernel every [`OBSERVE_EVERY`] (the metrics
/// follow each reading) and sends a status report when [`Cadence`] says.
async fn report_status(
    ha: watch::Receiver<HaView>,
    cp: Arc<ControlPlane>,
    credential: String,
    kernel: SharedKernel,
    shared: Arc<Mutex<Shared>>,
    now: Arc<Notify>,
    every: Duration,
) {
    let mut cadence = Cadence::new(every);
    loop {
        let asked = tokio::time::timeout(OBSERVE_EVERY.min(every), now.notified())
            .await
            .is_ok();
        let (applied, error, repaired) = match shared.lock() {
            Ok(s) => (s.applied.clone(), s.error.clone(), s.repaired),
            Err(_) => return,
        };
        let k = kernel.clone();
        let view = ha.borrow().clone();
        // One snapshot: the version reported is the one whose tunnels are read.
        let report = tokio::task::spawn_blocking(move || {
            let observed = k.lock().ok().and_then(|mut k| k.observe().ok());
            let drops = match (&applied, &observed) {
                (Some(c), Some(o)) => inbound_drops(c, o),
                _ => Vec::new(),
            };
            let mut report = status_report(
                applied.as_ref(),
                error,
                view.role,
                Some(view.status()),
                observed.as_ref(),
            );
            report.repairs = repaired.map(|r| r.report(Instant::now()));
            METRICS.tunnels(report.ha_role, &report.tunnels, &drops);
            report
        })
        .await;
        let Ok(report) = report else {
            continue;
        };
        let states = cadence::states(&report.tunnels);
        if !cadence.due(&states, asked, Instant::now()) {
            continue;
        }
        let delivered = cp.status(&credential, &report).await;
        cadence.tried(states, delivered.is_ok(), Instant::now());
        METRICS.status_report(delivered.is_ok());
        if let Err(e) = delivered {
            tracing::warn!(error = %e, "status report not delivered");
        }
    }
}
