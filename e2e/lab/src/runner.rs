//! The lab runner: boots the guest, then keeps the guest's network equal to
//! what the AWS emulator holds, round after round (see `model.rs` for the
//! layout). Used by `./run.sh` (the `run` command) and by the tests.

use crate::cloud::{Instance, Scope, Snapshot};
use crate::guest::{BootOptions, Guest, GuestError, Output};
use crate::instance::{self, StandIns};
use crate::model::{self, Host, InstanceBoot, Key, Names, Resource, Step};
use crate::netns::{LabNetns, HOST};
use crate::timeline::{self, InstanceTimeline, Timeline};
use appliance::imds::emulator::{EmulatedInstance, ImdsEmulator, RoleCredentials};
use appliance::imds::SpotAction;
use aws_config::SdkConfig;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// How to run a lab.
pub struct LabConfig {
    /// The lab's folder (shared with the guest): logs, captures, lab.json.
    pub dir: PathBuf,
    /// Name of the host namespace that holds the tap.
    pub netns: String,
    pub uml: String,
    pub mem_mb: u32,
    /// This binary, which the guest runs too (`guest`, `forward`).
    pub lab_bin: PathBuf,
    /// The AWS emulator (as the host reaches it).
    pub aws_endpoint: SocketAddr,
    /// The control plane (as the host reaches it).
    pub control_plane: SocketAddr,
    /// The regions watched from the start.
    pub regions: Vec<String>,
    /// Also watch every region that has a VPC of its own (looked up in the
    /// background every 30 s: asking every region takes moto a while).
    pub discover_regions: bool,
    /// How often the emulator is read once every instance runs its agent.
    pub poll: Duration,
    /// How often while an instance boots (its routes and addresses are
    /// about to change).
    pub poll_booting: Duration,
    /// Test hosts ping each other every few seconds (`./run.sh`'s demo).
    pub demo_traffic: bool,
}

/// The host side of one mirrored instance.
struct HostInstance {
    imds: Arc<ImdsEmulator>,
    facts: EmulatedInstance,
    boot: InstanceBoot,
    stand_ins: StandIns,
}

#[derive(Default)]
struct Shared {
    hosts: Vec<Host>,
    /// Instances whose boot has been started in the guest.
    instances: BTreeMap<String, PathBuf>,
    /// The IMDS emulators of the instances the runner knows.
    imds: BTreeMap<String, Arc<ImdsEmulator>>,
    rounds: u64,
    last_error: Option<String>,
    timeline: Timeline,
}

/// What the lab's user asks the runner to do between two rounds.
enum Command {
    Reboot {
        instance: String,
        done: oneshot::Sender<Result<(), LabError>>,
    },
}

/// A running lab; dropping it stops the runner (call [`Lab::stop`] to
/// power the guest off cleanly first).
pub struct Lab {
    cfg: Arc<LabConfig>,
    guest: Arc<Guest>,
    shared: Arc<Mutex<Shared>>,
    task: Option<JoinHandle<()>>,
    commands: Option<mpsc::UnboundedSender<Command>>,
    tasks: Vec<JoinHandle<()>>,
    ports: (u16, u16),
    pub dir: PathBuf,
    pub boot_took: Duration,
    netns: LabNetns,
}

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(transparent)]
    Guest(#[from] GuestError),
    #[error(transparent)]
    Netns(#[from] crate::netns::NetnsError),
    #[error("{0}")]
    Setup(String),
    #[error("the lab runs no instance {0} (not mirrored yet, or gone)")]
    NoInstance(String),
    #[error("rebooting {instance}: {error}")]
    Reboot { instance: String, error: String },
    #[error("the lab does not mirror the emulator (not started, or stopped)")]
    NotMirroring,
}

/// What the runner keeps between rounds.
struct Runner {
    cfg: Arc<LabConfig>,
    guest: Arc<Guest>,
    shared: Arc<Mutex<Shared>>,
    accounts: Vec<SdkConfig>,
    commands: mpsc::UnboundedReceiver<Command>,
    scopes: Vec<Scope>,
    discovered: Arc<Mutex<BTreeSet<String>>>,
    names: Names,
    applied: BTreeMap<Key, Resource>,
    hosts: BTreeMap<String, HostInstance>,
    unmirrorable: BTreeSet<String>,
    netns: String,
    ports: (u16, u16),
}

impl Lab {
    /// Boots the guest and starts mirroring `accounts`.
    pub async fn start(cfg: LabConfig, accounts: Vec<SdkConfig>) -> Result<Lab, LabError> {
        let mut lab = Lab::boot(cfg).await?;
        lab.mirror(accounts);
        Ok(lab)
    }

    /// Boots the guest, with the control plane and the AWS emulator
    /// forwarded to its tap; neither needs to answer yet (the lab notes when
    /// each first does). [`Lab::mirror`] starts the runner.
    pub async fn boot(cfg: LabConfig) -> Result<Lab, LabError> {
        let started = timeline::now();
        std::fs::create_dir_all(cfg.dir.join("instances"))
            .map_err(|e| LabError::Setup(format!("{}: {e}", cfg.dir.display())))?;
        let netns = LabNetns::create(&cfg.netns)?;
        let shared = Arc::new(Mutex::new(Shared {
            timeline: Timeline {
                started,
                ..Timeline::default()
            },
            ..Shared::default()
        }));
        // The control plane and the AWS emulator, on the tap's host end.
        let mut tasks = Vec::new();
        let mut ports = Vec::new();
        for target in [cfg.control_plane, cfg.aws_endpoint] {
            let listener = netns.listen(0)?;
            ports.push(
                listener
                    .local_addr()
                    .map_err(|e| LabError::Setup(e.to_string()))?
                    .port(),
            );
            tasks.push(tokio::spawn(crate::forward::serve(listener, move || {
                tokio::net::TcpStream::connect(target)
            })));
        }
        tasks.push(tokio::spawn(note_control_plane(
            cfg.control_plane,
            shared.clone(),
        )));
        let boot_started = Instant::now();
        let guest = Guest::boot(
            &netns,
            BootOptions {
                uml: &cfg.uml,
                mem_mb: cfg.mem_mb,
                lab_bin: &cfg.lab_bin,
                dir: &cfg.dir,
                within: Duration::from_secs(90),
            },
        )
        .await?;
        let boot_took = boot_started.elapsed();
        if let Ok(mut s) = shared.lock() {
            s.timeline.guest_booted = Some(timeline::now());
        }
        Ok(Lab {
            guest: Arc::new(guest),
            shared,
            task: None,
            commands: None,
            tasks,
            ports: (ports[0], ports[1]),
            dir: cfg.dir.clone(),
            boot_took,
            netns,
            cfg: Arc::new(cfg),
        })
    }

    /// Starts mirroring what `accounts` hold in the emulator (their roles
    /// assumed: the emulator answers).
    pub fn mirror(&mut self, accounts: Vec<SdkConfig>) {
        if self.task.is_some() {
            return;
        }
        if let Ok(mut s) = self.shared.lock() {
            s.timeline.aws_answered = Some(timeline::now());
        }
        let discovered: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        if self.cfg.discover_regions {
            let (found, accounts) = (discovered.clone(), accounts.clone());
            self.tasks.push(tokio::spawn(async move {
                loop {
                    for sdk in &accounts {
                        match regions_with_vpcs(sdk).await {
                            Ok(regions) => {
                                if let Ok(mut f) = found.lock() {
                                    f.extend(regions);
                                }
                            }
                            Err(e) => tracing::warn!(error = %e, "lab: region discovery failed"),
                        }
                    }
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
            }));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let runner = Runner {
            cfg: self.cfg.clone(),
            guest: self.guest.clone(),
            shared: self.shared.clone(),
            accounts,
            commands: rx,
            scopes: Vec::new(),
            discovered,
            names: Names::default(),
            applied: BTreeMap::new(),
            hosts: BTreeMap::new(),
            unmirrorable: BTreeSet::new(),
            netns: self.netns.name.clone(),
            ports: self.ports,
        };
        self.commands = Some(tx);
        self.task = Some(tokio::spawn(runner.run()));
    }

    /// Runs `script` in the guest's root namespace (in the lab folder).
    pub async fn exec(&self, script: &str, timeout: Duration) -> Result<Output, GuestError> {
        self.guest.exec(script, timeout).await
    }

    pub fn hosts(&self) -> Vec<Host> {
        self.shared
            .lock()
            .map(|s| s.hosts.clone())
            .unwrap_or_default()
    }

    /// The instances the lab has booted, with their folders.
    pub fn instances(&self) -> BTreeMap<String, PathBuf> {
        self.shared
            .lock()
            .map(|s| s.instances.clone())
            .unwrap_or_default()
    }

    pub fn rounds(&self) -> u64 {
        self.shared.lock().map(|s| s.rounds).unwrap_or_default()
    }

    pub fn last_error(&self) -> Option<String> {
        self.shared.lock().ok().and_then(|s| s.last_error.clone())
    }

    /// When each phase of the lab's start happened so far.
    pub fn timeline(&self) -> Timeline {
        self.shared
            .lock()
            .map(|s| s.timeline.clone())
            .unwrap_or_default()
    }

    pub fn netns(&self) -> &str {
        &self.netns.name
    }

    /// See [`Guest::pid`].
    pub fn guest_pid(&self) -> Option<u32> {
        self.guest.pid()
    }

    /// See [`Guest::silent_for`].
    pub fn guest_silent_for(&self) -> Option<Duration> {
        self.guest.silent_for()
    }

    /// See [`Guest::host_view`].
    pub async fn guest_host_view(&self) -> String {
        self.guest.host_view().await
    }

    /// The host's view of the wire to the guest, for a failure report
    /// (works when the guest no longer answers): the tap's counters and
    /// every TCP connection to the guest with its retransmissions and
    /// timers (a stalled wire shows as backoff, a stalled guest as none).
    pub fn wire_report(&self) -> String {
        let run = |args: &[&str]| match std::process::Command::new("ip").args(args).output() {
            Ok(out) => format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => format!("ip {}: {e}\n", args.join(" ")),
        };
        let ns = self.netns.name.as_str();
        let pressure: String = ["cpu", "io", "memory"]
            .iter()
            .map(|what| {
                let text =
                    std::fs::read_to_string(format!("/proc/pressure/{what}")).unwrap_or_default();
                format!("{what}: {}\n", text.lines().next().unwrap_or("-"))
            })
            .collect();
        format!(
            "host stalls (paused or starved) in this process so far: {:?}\n$ cat /proc/pressure/*\n{pressure}$ ip -s link show tap0\n{}$ ss -tnio\n{}",
            crate::stall::stalled(),
            run(&["-n", ns, "-s", "link", "show", "tap0"]),
            run(&["netns", "exec", ns, "ss", "-tnio"])
        )
    }

    /// Makes `instance`'s IMDS serve `spot/instance-action` (a Spot
    /// interruption notice), or with `None` withdraw it, as EC2 does about
    /// two minutes before it reclaims a Spot instance.
    pub fn set_spot_action(
        &self,
        instance: &str,
        notice: Option<SpotAction>,
    ) -> Result<(), LabError> {
        let imds = self
            .shared
            .lock()
            .ok()
            .and_then(|s| s.imds.get(instance).cloned())
            .ok_or_else(|| LabError::NoInstance(instance.to_string()))?;
        tracing::info!(instance, notice = ?notice, "lab: spot/instance-action set");
        imds.set_spot_action(notice);
        Ok(())
    }

    /// Reboots `instance` as EC2 does: every process in it is killed and its
    /// kernel's network state (XFRM states and policies, routes, addresses)
    /// is gone; its disk (the installed agent, unit and state directory)
    /// stays. It boots again without its user data (cloud-init runs that
    /// once per instance), and the units the user data enabled start as
    /// systemd would start them. Returns once the boot has started, as
    /// `RebootInstances` does.
    pub async fn reboot(&self, instance: &str) -> Result<(), LabError> {
        let commands = self.commands.as_ref().ok_or(LabError::NotMirroring)?;
        let (done, answer) = oneshot::channel();
        commands
            .send(Command::Reboot {
                instance: instance.to_string(),
                done,
            })
            .map_err(|_| LabError::NotMirroring)?;
        answer.await.map_err(|_| LabError::NotMirroring)?
    }

    /// Stops mirroring and powers the guest off.
    pub async fn stop(mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        for t in &self.tasks {
            t.abort();
        }
        self.guest.shutdown().await;
        tracing::info!("lab stopped");
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Notes when the control plane's `/readyz` first answers 200 (the lab's
/// instances download the agent from it).
async fn note_control_plane(at: SocketAddr, shared: Arc<Mutex<Shared>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let ready = async {
            let mut s = tokio::net::TcpStream::connect(at).await.ok()?;
            s.write_all(b"GET /readyz HTTP/1.0\r\nHost: lab\r\n\r\n")
                .await
                .ok()?;
            let mut head = [0u8; 12];
            s.read_exact(&mut head).await.ok()?;
            head.ends_with(b" 200").then_some(())
        };
        if tokio::time::timeout(Duration::from_secs(2), ready)
            .await
            .ok()
            .flatten()
            .is_some()
        {
            let at_ = timeline::now();
            if let Ok(mut s) = shared.lock() {
                s.timeline.control_plane_answered = Some(at_);
                tracing::info!(
                    after_start_s = timeline::after(s.timeline.started, Some(at_)),
                    "lab: the control plane answers"
                );
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl Runner {
    async fn run(mut self) {
        loop {
            let started = Instant::now();
            if let Err(e) = self.round().await {
                tracing::warn!(error = %e, "lab: this round did not finish; trying again");
                if let Ok(mut s) = self.shared.lock() {
                    s.last_error = Some(e);
                }
            }
            if let Ok(mut s) = self.shared.lock() {
                s.rounds += 1;
            }
            let poll = if self.booting() {
                self.cfg.poll_booting
            } else {
                self.cfg.poll
            };
            // Commands run between rounds, never during one.
            let wait = tokio::time::sleep(poll.saturating_sub(started.elapsed()));
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    _ = &mut wait => break,
                    Some(command) = self.commands.recv() => self.command(command).await,
                }
            }
        }
    }

    /// Some instance has not applied its first config yet.
    fn booting(&self) -> bool {
        let Ok(s) = self.shared.lock() else {
            return false;
        };
        self.hosts.keys().any(|id| {
            s.timeline
                .instances
                .get(id)
                .is_none_or(|t| t.config_applied.is_none())
        })
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Reboot { instance, done } => {
                let outcome = self.reboot(&instance).await;
                match &outcome {
                    Ok(()) => tracing::info!(%instance, "lab: rebooted; it boots again"),
                    Err(e) => tracing::warn!(%instance, error = %e, "lab: the reboot failed"),
                }
                let _ = done.send(outcome);
            }
        }
    }

    /// Powers the instance off, makes its network again from the same
    /// resource as its first boot, and boots it again from its disk.
    async fn reboot(&mut self, id: &str) -> Result<(), LabError> {
        let no = || LabError::NoInstance(id.to_string());
        let up = self
            .applied
            .get(&Key::Instance(id.to_string()))
            .ok_or_else(no)?
            .up
            .clone();
        let host = self.hosts.get(id).ok_or_else(no)?;
        let dir = std::path::Path::new(&host.boot.dir);
        let script = format!(
            "set -e\n{}\n{}\n{}",
            instance::power_off_script(id),
            up.trim_end(),
            instance::reboot_script(id, dir, &host.stand_ins)
        );
        let out = self.guest.exec(&script, Duration::from_secs(60)).await?;
        if !out.ok() {
            return Err(LabError::Reboot {
                instance: id.to_string(),
                error: format!(
                    "exit {}: {}{}",
                    out.rc,
                    out.stderr.trim(),
                    out.stdout.trim()
                ),
            });
        }
        // The namespace is new: EC2's stand-ins listen in it again.
        self.guest
            .forward(instance::forwarding(id, &host.stand_ins))
            .await?;
        Ok(())
    }

    /// EC2's stand-ins for the instances this round booted (their boot
    /// waits for them), and no more for those it removed: all at once, each
    /// instance's boot starts as soon as its own listen.
    async fn forward(&self, steps: &[(&Step, bool)]) {
        let forwards = steps.iter().filter_map(|(step, ok)| match step {
            Step::Up(Key::Instance(id), _) if *ok => self
                .hosts
                .get(id)
                .map(|h| instance::forwarding(id, &h.stand_ins)),
            Step::Down(Key::Instance(id), _) => Some(crate::guest::Forward {
                netns: id.clone(),
                mappings: Vec::new(),
                ready: None,
            }),
            _ => None,
        });
        futures::future::join_all(forwards.map(|f| async move {
            let id = f.netns.clone();
            if let Err(e) = self.guest.forward(f).await {
                tracing::warn!(instance = %id, error = %e, "lab: EC2's stand-ins for an instance");
            }
        }))
        .await;
    }

    /// The watched (account, region) pairs: the configured regions and
    /// those the background discovery found VPCs in.
    async fn scopes(&mut self) -> Result<(), String> {
        let mut wanted: BTreeSet<String> = self.cfg.regions.iter().cloned().collect();
        if let Ok(found) = self.discovered.lock() {
            wanted.extend(found.iter().cloned());
        }
        let have: BTreeSet<String> = self.scopes.iter().map(|s| s.region.clone()).collect();
        if wanted == have {
            return Ok(());
        }
        let mut scopes = Vec::new();
        for sdk in &self.accounts {
            for region in &wanted {
                let conf = aws_sdk_ec2::config::Builder::from(sdk)
                    .region(aws_config::Region::new(region.clone()))
                    .build();
                scopes.push(Scope {
                    region: region.clone(),
                    ec2: aws_sdk_ec2::Client::from_conf(conf),
                    sdk: sdk.clone(),
                });
            }
        }
        tracing::info!(regions = ?wanted, "lab: watching these regions");
        self.scopes = scopes;
        Ok(())
    }

    async fn round(&mut self) -> Result<(), String> {
        self.scopes().await?;
        // One failed read skips the round: a partial snapshot would look
        // like instances that vanished.
        let reads = futures::future::join_all(self.scopes.iter().map(|s| s.read())).await;
        let mut snap = Snapshot::default();
        for r in reads {
            snap.merge(r.map_err(|e| e.to_string())?);
        }
        self.note_seen(&snap);
        self.prepare_instances(&snap).await;
        let hosts = &self.hosts;
        let desired = model::build(
            &snap,
            &mut self.names,
            &|i: &Instance| hosts.get(&i.id).map(|h| h.boot.clone()),
            self.cfg.demo_traffic,
        );
        let steps = model::plan(&self.applied, &desired.resources);
        let mut failed = None;
        // One round trip for the whole plan: a process start in the guest
        // costs milliseconds, and a plan can have hundreds of steps.
        let results = if steps.is_empty() {
            Vec::new()
        } else {
            let out = self
                .guest
                .exec(&batch(&steps), Duration::from_secs(120))
                .await
                .map_err(|e| e.to_string())?;
            outcomes(&out.stdout, steps.len())
        };
        let done: Vec<(&Step, bool)> = steps
            .iter()
            .zip(&results)
            .map(|(s, r)| (s, r.is_ok()))
            .collect();
        self.forward(&done).await;
        for (step, result) in steps.iter().zip(results) {
            match (step, result) {
                (Step::Down(k, r), Ok(())) => {
                    log_step("down", k, r);
                    self.applied.remove(k);
                }
                (Step::Up(k, r), Ok(())) => {
                    log_step("up", k, r);
                    if let Key::Instance(id) = k {
                        if let Ok(mut s) = self.shared.lock() {
                            let t = s.timeline.instances.entry(id.clone()).or_default();
                            t.mirrored.get_or_insert_with(timeline::now);
                        }
                    }
                    self.applied.insert(k.clone(), r.clone());
                }
                (Step::Down(k, r), Err(e)) | (Step::Up(k, r), Err(e)) => {
                    tracing::warn!(what = %r.what, error = %e, "lab: a step failed");
                    // A failed removal is forgotten too: its parent's
                    // removal takes it along.
                    if matches!(step, Step::Down(..)) {
                        self.applied.remove(k);
                    }
                    failed.get_or_insert_with(|| format!("{}: {e}", r.what));
                }
            }
        }
        // Descriptions that changed alone (nothing to do in the guest).
        for (k, r) in &desired.resources {
            if let Some(a) = self.applied.get_mut(k) {
                if a.what != r.what && a.same_effect(r) {
                    tracing::info!(what = %r.what, "lab: now");
                    a.what = r.what.clone();
                }
            }
        }
        // Host sides of instances that are gone from the guest.
        let live: BTreeSet<String> = self
            .applied
            .keys()
            .filter_map(|k| match k {
                Key::Instance(id) => Some(id.clone()),
                _ => None,
            })
            .collect();
        let running: BTreeSet<&str> = snap.instances.iter().map(|i| i.id.as_str()).collect();
        self.hosts
            .retain(|id, _| live.contains(id) || running.contains(id.as_str()));
        self.note_boots(&live);
        if let Ok(mut s) = self.shared.lock() {
            s.imds = self
                .hosts
                .iter()
                .map(|(id, h)| (id.clone(), h.imds.clone()))
                .collect();
            s.hosts = desired.hosts.clone();
            s.instances = live
                .iter()
                .map(|id| (id.clone(), self.cfg.dir.join("instances").join(id)))
                .collect();
        }
        self.write_state(&desired.hosts, &live);
        match failed {
            Some(f) => Err(f),
            None => Ok(()),
        }
    }

    /// Stamps the first round, and each instance's first sighting.
    fn note_seen(&self, snap: &Snapshot) {
        let Ok(mut s) = self.shared.lock() else {
            return;
        };
        let now = timeline::now();
        let t = &mut s.timeline;
        t.first_round.get_or_insert(now);
        for i in &snap.instances {
            if !t.instances.contains_key(&i.id) {
                tracing::info!(
                    instance = %i.id,
                    after_start_s = timeline::after(t.started, Some(now)),
                    "lab: a new instance runs in the emulator"
                );
                t.first_instance_seen.get_or_insert(now);
                t.instances.insert(
                    i.id.clone(),
                    InstanceTimeline {
                        seen: Some(now),
                        ..InstanceTimeline::default()
                    },
                );
            }
        }
    }

    /// Reads how far each booting instance got (its `phases` and agent
    /// log), and the demo traffic's first answers.
    fn note_boots(&self, live: &BTreeSet<String>) {
        let Ok(mut s) = self.shared.lock() else {
            return;
        };
        let started = s.timeline.started;
        for id in live {
            let t = s.timeline.instances.entry(id.clone()).or_default();
            if t.complete() {
                continue;
            }
            let dir = self.cfg.dir.join("instances").join(id);
            let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
            t.read(&read("phases"), &read("agent.log"));
            if t.complete() {
                let since = |at: Option<f64>| timeline::after(started, at);
                tracing::info!(
                    instance = %id,
                    seen_s = since(t.seen),
                    mirrored_s = since(t.mirrored),
                    user_data_s = since(t.user_data),
                    agent_installed_s = since(t.agent_installed),
                    agent_running_s = since(t.agent_running),
                    registered_s = since(t.registered),
                    config_applied_s = since(t.config_applied),
                    "lab: an instance booted (seconds after the lab started)"
                );
            }
        }
        if self.cfg.demo_traffic {
            let marks = std::fs::read_dir(self.cfg.dir.join(model::TRAFFIC_MARKS))
                .into_iter()
                .flatten()
                .flatten();
            for mark in marks {
                let pair = mark.file_name().to_string_lossy().replacen('-', "->", 1);
                if s.timeline.pings.contains_key(&pair) {
                    continue;
                }
                let Some(at) = std::fs::read_to_string(mark.path())
                    .ok()
                    .and_then(|t| t.trim().parse::<f64>().ok())
                else {
                    continue;
                };
                // A mark an earlier lab left in the same folder is not this
                // lab's first answer (it is overwritten by this one's).
                if at < started {
                    continue;
                }
                tracing::info!(
                    pair,
                    after_start_s = timeline::after(started, Some(at)),
                    "lab: demo traffic: a first answer through the tunnels"
                );
                s.timeline.pings.insert(pair, at);
                if s.timeline.first_ping.is_none_or(|f| at < f) {
                    s.timeline.first_ping = Some(at);
                }
            }
        }
    }

    /// Gives every new instance its host side (IMDS, its folder and user
    /// data) and keeps the facts of known ones current.
    async fn prepare_instances(&mut self, snap: &Snapshot) {
        for i in &snap.instances {
            let public_ip = snap
                .addresses
                .iter()
                .find(|a| {
                    a.instance_id.as_deref() == Some(i.id.as_str())
                        || a.interface_id.as_deref() == Some(i.interface_id.as_str())
                })
                .map(|a| a.public_ip.to_string());
            if let Some(h) = self.hosts.get_mut(&i.id) {
                if h.facts.public_ip != public_ip {
                    h.facts.public_ip = public_ip;
                    h.imds.set_instance(h.facts.clone());
                }
                continue;
            }
            if self.unmirrorable.contains(&i.id) {
                continue;
            }
            match self.host_side(snap, i, public_ip).await {
                Ok(h) => {
                    self.hosts.insert(i.id.clone(), h);
                }
                Err(e) => {
                    tracing::warn!(instance = %i.id, error = %e, "lab: cannot mirror this instance");
                    self.unmirrorable.insert(i.id.clone());
                }
            }
        }
    }

    async fn host_side(
        &self,
        snap: &Snapshot,
        i: &Instance,
        public_ip: Option<String>,
    ) -> Result<HostInstance, String> {
        let _ = snap;
        let scope = self
            .scopes
            .iter()
            .find(|s| s.region == i.region)
            .ok_or("no scope for its region")?;
        let user_data = scope
            .user_data(i)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("it has no user data")?;
        let server_port = instance::server_port(&user_data).map_err(|e| e.to_string())?;
        let dir = self.cfg.dir.join("instances").join(&i.id);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        std::fs::write(dir.join("user-data"), &user_data).map_err(|e| e.to_string())?;
        let listener =
            crate::netns::in_netns(&self.netns, || std::net::TcpListener::bind((HOST, 0)))
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
        let imds_port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let facts = EmulatedInstance {
            instance_id: i.id.clone(),
            availability_zone: i.availability_zone.clone(),
            region: i.region.clone(),
            private_ip: i.private_ip.to_string(),
            mac: i.mac.clone(),
            interface_id: i.interface_id.clone(),
            public_ip,
            identity: None,
        };
        let imds = ImdsEmulator::start_std(listener, facts.clone()).map_err(|e| e.to_string())?;
        imds.set_role(role_credentials(scope).await);
        let stand_ins = StandIns {
            host: HOST,
            imds: imds_port,
            server: (server_port, self.ports.0),
            aws: (self.cfg.aws_endpoint.port(), self.ports.1),
        };
        let boot = instance::boot_script(&i.id, &dir, &stand_ins);
        Ok(HostInstance {
            imds: Arc::new(imds),
            facts,
            boot: InstanceBoot {
                dir: dir.display().to_string(),
                boot,
            },
            stand_ins,
        })
    }

    /// `lab.json`: how the CLI finds this lab, and what is in it.
    fn write_state(&self, hosts: &[Host], instances: &BTreeSet<String>) {
        let timeline = self
            .shared
            .lock()
            .map(|s| s.timeline.clone())
            .unwrap_or_default();
        let state = serde_json::json!({
            "netns": self.netns,
            "guest": format!("{}:{}", crate::netns::GUEST, crate::guest::PORT),
            "dir": self.cfg.dir,
            "hosts": hosts,
            "instances": instances,
            "timeline": timeline,
        });
        let path = self.cfg.dir.join("lab.json");
        let tmp = self.cfg.dir.join(".lab.json.tmp");
        if std::fs::write(&tmp, state.to_string()).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }
}

/// One script for a plan: each step in a subshell with `set -e` (not in
/// an `if`, where the shell would ignore it), its outcome on a line
/// of its own (`@@ok N`, or `@@fail N RC` followed by its error output).
fn batch(steps: &[Step]) -> String {
    let mut s = String::new();
    for (n, step) in steps.iter().enumerate() {
        s += &format!(
            "( set -e\n{}\n) >/run/lab/step.err 2>&1\nrc=$?\nif [ $rc = 0 ]; then echo '@@ok {n}'; else echo \"@@fail {n} $rc\"; sed 's/^/@@err {n} /' /run/lab/step.err; fi\n",
            step.script().trim_end()
        );
    }
    s
}

/// Each step's outcome from a batch's output; a step the output does not
/// mention (the batch was cut short) failed.
fn outcomes(stdout: &str, steps: usize) -> Vec<Result<(), String>> {
    let mut results: Vec<Result<(), String>> =
        vec![Err("the batch ended before this step".into()); steps];
    for line in stdout.lines() {
        let mut words = line.splitn(3, ' ');
        let (tag, n) = (
            words.next(),
            words.next().and_then(|n| n.parse::<usize>().ok()),
        );
        let Some(n) = n.filter(|n| *n < steps) else {
            continue;
        };
        match tag {
            Some("@@ok") => results[n] = Ok(()),
            Some("@@fail") => results[n] = Err(format!("exit {}", words.next().unwrap_or("?"))),
            Some("@@err") => {
                if let Err(e) = &mut results[n] {
                    e.push_str("; ");
                    e.push_str(words.next().unwrap_or_default());
                }
            }
            _ => {}
        }
    }
    results
}

fn log_step(how: &str, k: &Key, r: &Resource) {
    match k {
        Key::Instance(_) | Key::Host(_) | Key::Nat(..) | Key::Vpc(_) | Key::Gateway(_) => {
            tracing::info!(what = %r.what, "lab: {how}")
        }
        _ => tracing::debug!(what = %r.what, "lab: {how}"),
    }
}

/// The instance role's credentials, as IMDS serves them. moto evaluates
/// no IAM policy, so the watched account's own credentials stand in.
async fn role_credentials(scope: &Scope) -> Option<RoleCredentials> {
    use aws_credential_types::provider::ProvideCredentials;
    let provider = scope.sdk.credentials_provider()?;
    let c = provider.provide_credentials().await.ok()?;
    Some(RoleCredentials {
        role: "vpcmesh-appliance".into(),
        access_key_id: c.access_key_id().to_string(),
        secret_access_key: c.secret_access_key().to_string(),
        token: c.session_token().unwrap_or_default().to_string(),
    })
}

async fn regions_with_vpcs(sdk: &SdkConfig) -> Result<Vec<String>, String> {
    let ec2 = aws_sdk_ec2::Client::new(sdk);
    let regions = ec2
        .describe_regions()
        .send()
        .await
        .map_err(|e| format!("ec2:DescribeRegions: {e:?}"))?;
    let names: Vec<String> = regions
        .regions()
        .iter()
        .filter_map(|r| r.region_name().map(str::to_string))
        .collect();
    let checks = names.iter().map(|r| async move {
        let conf = aws_sdk_ec2::config::Builder::from(sdk)
            .region(aws_config::Region::new(r.clone()))
            .build();
        let out = aws_sdk_ec2::Client::from_conf(conf)
            .describe_vpcs()
            .send()
            .await;
        // moto's default VPC is in every region: only VPCs of our own count.
        let ours = out
            .ok()
            .is_some_and(|o| o.vpcs().iter().any(|v| v.is_default() != Some(true)));
        ours.then(|| r.clone())
    });
    Ok(futures::future::join_all(checks)
        .await
        .into_iter()
        .flatten()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_reports_every_step_and_a_cut_short_batch_fails_the_rest() {
        let r = outcomes(
            "@@ok 0\n@@fail 1 2\n@@err 1 RTNETLINK answers: File exists\nnoise\n",
            3,
        );
        assert_eq!(r[0], Ok(()));
        assert_eq!(
            r[1],
            Err("exit 2; RTNETLINK answers: File exists".to_string())
        );
        assert!(r[2].is_err());
    }

    #[test]
    fn each_step_runs_with_set_e_outside_a_condition() {
        let marker = std::env::temp_dir().join(format!("lab-set-e-{}", std::process::id()));
        let _ = std::fs::remove_file(&marker);
        let step = Step::Up(
            Key::Wan,
            Resource {
                what: "x".into(),
                up: format!("false\ntouch {}", marker.display()),
                down: String::new(),
                in_place: false,
            },
        );
        let script = batch(&[step]);
        let out = std::process::Command::new("sh")
            .args(["-c", &script.replace("/run/lab/step.err", "/dev/null")])
            .output()
            .expect("sh runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("@@fail 0 1"), "{text}");
        assert!(!marker.exists(), "the step went on after a failure");
    }
}
