//! The HA task of `vpcmesh-agent run`: sends heartbeats to the partner and
//! reads its, feeds them, EC2's answers, the server's requests and spot
//! notices to the failover rules (`super::decide`), and carries out what
//! they decide — moving the site's Elastic IP, then (through
//! `super::routes`) the VPC's routes. EC2 calls run beside the loop, never
//! in it, so heartbeats keep their pace while EC2 is slow.

use super::decide::{Action, Holder, Pair, Settings};
use super::heartbeat::{Beat, Receiver, BEAT_LEN};
use super::remembered;
use super::routes::{forwarding_on, RouteOwner};
use super::stopping::{Stopping, HANDOVER_WITHIN};
use crate::address::{SiteAddress, TakeOver};
use crate::dataplane::HeartbeatKey;
use crate::imds::Imds;
use crate::protocol::{HaConfig, HaReason, HaRole, HaStatus, Member, HEARTBEAT_PORT};
use crate::sync::Identity;
use crate::vpc_routes::RemoteCidrs;
use rand::RngCore;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch, Notify};
use uuid::Uuid;

/// How often IMDS is asked for a spot interruption notice (AWS suggests
/// every 5 s; the notice comes two minutes ahead).
pub const SPOT_POLL: Duration = Duration::from_secs(1);

/// What the applied config gives the HA task (sent after each apply).
#[derive(Clone, Debug, Default)]
pub struct HaInputs {
    /// A config is applied: this member forwards.
    pub applied: bool,
    pub ha: Option<HaConfig>,
    /// Heartbeat keys of the epochs in play, newest first.
    pub keys: Vec<(u32, HeartbeatKey)>,
    pub remote: RemoteCidrs,
}

/// This member's HA state, for its status reports.
#[derive(Clone, Debug)]
pub struct HaView {
    pub role: HaRole,
    pub reason: HaReason,
    pub since: Instant,
    pub take_over_done: Option<u64>,
    pub last_heard: Option<Instant>,
}

impl HaView {
    pub fn starting() -> Self {
        HaView {
            role: HaRole::Passive,
            reason: HaReason::Starting,
            since: Instant::now(),
            take_over_done: None,
            last_heard: None,
        }
    }

    pub fn status(&self) -> HaStatus {
        HaStatus {
            reason: self.reason,
            role_for_ms: self.since.elapsed().as_millis() as u64,
            take_over_done: self.take_over_done,
            partner_heard_ms_ago: self.last_heard.map(|t| t.elapsed().as_millis() as u64),
        }
    }
}

pub struct HaTask {
    pub ec2: SiteAddress,
    pub identity: Identity,
    /// The site's Elastic IP (from the bootstrap file).
    pub allocation_id: Option<String>,
    pub member: Member,
    pub site_id: Uuid,
    /// For spot interruption notices (None: not on EC2, never asked).
    pub imds: Option<Imds>,
    /// How often the active member rechecks its VPC routes.
    pub routes_recheck: Duration,
    /// The heartbeat port (tests on one host use others).
    pub port: u16,
    /// Where this member remembers that it was armed (see `remembered`).
    pub state_dir: PathBuf,
    /// Set on SIGTERM: the task says its goodbye (see `stopping`) and ends.
    pub stopping: watch::Receiver<Option<Stopping>>,
}

/// What an EC2 call beside the loop came back with.
enum Outcome {
    Holder(Option<Holder>),
    TookOver(bool),
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

impl HaTask {
    pub fn default_port() -> u16 {
        HEARTBEAT_PORT
    }

    /// Runs until `inputs` has no sender (the agent is shutting down).
    /// `view` carries the role to the status reporter; `changed` is
    /// notified on every change of role, so it reports at once.
    pub async fn run(
        self,
        mut inputs: watch::Receiver<HaInputs>,
        view: watch::Sender<HaView>,
        changed: Arc<Notify>,
    ) {
        let HaTask {
            ec2,
            identity,
            allocation_id,
            member,
            site_id,
            imds,
            routes_recheck,
            port,
            state_dir,
            mut stopping,
        } = self;
        if allocation_id.is_none() {
            tracing::error!("this site's bootstrap file names no Elastic IP allocation; member A stays active and B passive, with no failover");
        }
        {
            let (ec2, identity) = (ec2.clone(), identity.clone());
            tokio::spawn(async move { forwarding_on(&ec2, &identity).await });
        }
        let (active_tx, active_rx) = watch::channel(false);
        let (remote_tx, remote_rx) = watch::channel(RemoteCidrs::new());
        tokio::spawn(
            RouteOwner {
                ec2: ec2.clone(),
                identity: identity.clone(),
                allocation_id: allocation_id.clone(),
                recheck: routes_recheck,
            }
            .run(active_rx, remote_rx),
        );
        let (spot_tx, mut spot_rx) = mpsc::channel::<()>(1);
        if let Some(imds) = imds {
            tokio::spawn(watch_spot(imds, spot_tx));
        }
        let (done_tx, mut done_rx) = mpsc::channel::<Outcome>(4);
        let ops = Ops {
            ec2,
            identity: identity.clone(),
            allocation_id,
            member,
            done: done_tx,
        };

        let mut pair = Pair::new(member, Instant::now());
        if let Some(age) = remembered::load(&state_dir, site_id, member, unix_ms()) {
            tracing::info!(
                heard_ms_before = age.as_millis() as u64,
                "armed before this restart: the partner's silence will still mean a failover"
            );
            pair.resume_armed();
        }
        let mut mark_refreshed: Option<Instant> = None;
        // The partner's last real beat (a resumed arming is no beat).
        let mut beat_at: Option<Instant> = None;
        // SIGTERM: the last beats say "restarting" (then the task ends), or
        // the site is handed over until this deadline.
        let mut goodbye: Option<Stopping> = None;
        let mut handover_until: Option<Instant> = None;
        let mut receiver = Receiver::new(site_id, member);
        let mut boot = [0u8; 16];
        rand::rng().fill_bytes(&mut boot);
        let mut seq: u64 = 0;
        let mut current = HaInputs::default();
        let mut socket: Option<UdpSocket> = None;
        let mut buf = [0u8; 512];
        let mut tick = tokio::time::interval(pair.interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut bind_failed_logged = false;
        let mut refused = 0u32;
        let mut armed = false;
        let mut last_tick = Instant::now();
        loop {
            let mut beat_now = false;
            let action = tokio::select! {
                _ = tick.tick() => {
                    if socket.is_none() {
                        match bind(port).await {
                            Ok(s) => socket = Some(s),
                            Err(e) if !bind_failed_logged => {
                                bind_failed_logged = true;
                                tracing::error!(port, error = %e, "cannot open the heartbeat port; retrying");
                            }
                            Err(_) => {}
                        }
                    }
                    beat_now = true;
                    let now = Instant::now();
                    // This process was not scheduled for a while (a busy
                    // host): the partner's beats may be late for the same
                    // reason, so its silence does not count for a moment.
                    if now.duration_since(last_tick) > 2 * pair.interval() {
                        tracing::warn!(late_ms = (now.duration_since(last_tick) - pair.interval()).as_millis() as u64, "the heartbeat loop ran late");
                        pair.on_stall(now);
                    }
                    last_tick = now;
                    // Beats already waiting in the socket come first: a
                    // silence is judged on everything that has arrived.
                    let mut first = None;
                    if let Some(s) = socket.as_ref() {
                        while let Ok((n, from)) = s.try_recv_from(&mut buf) {
                            let n = n.min(BEAT_LEN + 1);
                            if let Some(b) = check_beat(&mut receiver, &current, &buf[..n], from, &mut refused) {
                                beat_at = Some(now);
                                first = first.or(heard(&mut pair, now, &b));
                            }
                        }
                    }
                    first.or(pair.next(now))
                }
                got = recv(socket.as_ref(), &mut buf) => {
                    match got {
                        Ok((n, from)) => match check_beat(&mut receiver, &current, &buf[..n], from, &mut refused) {
                            Some(b) => {
                                beat_at = Some(Instant::now());
                                heard(&mut pair, Instant::now(), &b)
                            }
                            None => None,
                        },
                        Err(e) => {
                            tracing::warn!(error = %e, "heartbeat socket failed; opening it again");
                            socket = None;
                            None
                        }
                    }
                }
                c = inputs.changed() => {
                    if c.is_err() {
                        return;
                    }
                    current = inputs.borrow_and_update().clone();
                    let interval = current.ha.as_ref().map(|h| Duration::from_millis(h.heartbeat_ms.into()));
                    if current.applied {
                        pair.configure(current.ha.as_ref().map(|h| Settings {
                            interval: Duration::from_millis(h.heartbeat_ms.into()),
                            dead_after: Duration::from_millis(h.dead_after_ms()),
                            partner_known: h.partner.is_some(),
                            take_over: h.take_over,
                        }), Instant::now());
                    }
                    if let Some(i) = interval.filter(|i| *i != tick.period()) {
                        tick = tokio::time::interval(i);
                        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    }
                    remote_tx.send_if_modified(|r| {
                        let changed = *r != current.remote;
                        *r = current.remote.clone();
                        changed
                    });
                    pair.next(Instant::now())
                }
                Some(o) = done_rx.recv() => {
                    let now = Instant::now();
                    match o {
                        Outcome::Holder(h) => pair.on_holder(now, h),
                        Outcome::TookOver(moved) => pair.on_took_over(now, moved),
                    }
                }
                Some(()) = spot_rx.recv() => {
                    tracing::warn!(role = ?pair.role(), "spot interruption notice: handing the site to the partner");
                    pair.on_leaving(Instant::now())
                }
                c = stopping.changed(), if goodbye.is_none() => {
                    let how = if c.is_ok() { *stopping.borrow_and_update() } else { None };
                    let active = pair.role() == HaRole::Active;
                    let partner = current.ha.as_ref().is_some_and(|h| h.partner.is_some());
                    match how {
                        // A passive member, or one without a partner, has
                        // nothing to hand over: it just goes.
                        Some(_) if !active || !partner => return,
                        Some(Stopping::Restart) => {
                            tracing::info!("the agent restarts: telling the partner, while the kernel forwards on");
                            goodbye = how;
                            beat_now = true;
                            None
                        }
                        Some(Stopping::Shutdown) => {
                            tracing::warn!("the instance shuts down: handing the site to the partner");
                            goodbye = how;
                            handover_until = Some(Instant::now() + HANDOVER_WITHIN);
                            pair.on_leaving(Instant::now())
                        }
                        None => return,
                    }
                }
            };
            if let Some(a) = action {
                ops.start(a, current.ha.as_ref());
            }
            // Publish the role; a change is reported (and beaten) at once.
            let role_changed = view.send_if_modified(|v| {
                let changed = v.role != pair.role() || v.reason != pair.reason();
                v.role = pair.role();
                v.reason = pair.reason();
                v.since = pair.since();
                v.take_over_done = pair.take_over_done();
                v.last_heard = pair.last_heard();
                changed
            });
            if role_changed {
                tracing::info!(role = ?pair.role(), reason = pair.reason().as_str(), "HA role");
                changed.notify_one();
                active_tx.send_replace(pair.role() == HaRole::Active);
                beat_now = true;
            }
            if pair.armed() != armed {
                armed = pair.armed();
                if armed {
                    tracing::info!("armed: the partner's heartbeats are heard, and their silence will mean a failover");
                } else {
                    mark_refreshed = None;
                    if let Err(e) = remembered::clear(&state_dir) {
                        tracing::warn!(error = %e, "cannot remove the HA mark");
                    }
                }
            }
            // While armed and hearing the partner, remember it (a restart
            // then stays armed).
            if armed
                && beat_at.is_some_and(|t| t.elapsed() <= pair.interval() * 3)
                && mark_refreshed.is_none_or(|t| t.elapsed() >= remembered::REFRESH_EVERY)
            {
                mark_refreshed = Some(Instant::now());
                if let Err(e) = remembered::save(&state_dir, site_id, member, unix_ms()) {
                    tracing::warn!(error = %e, "cannot write the HA mark; a restart would start unarmed");
                }
            }
            if beat_now {
                if let (Some(s), Some(partner), Some((epoch, key))) = (
                    socket.as_ref(),
                    current.ha.as_ref().and_then(|h| h.partner.as_ref()),
                    current.keys.first(),
                ) {
                    let restarting = goodbye == Some(Stopping::Restart);
                    // A datagram may be lost: the last words go three times.
                    for _ in 0..if restarting { 3 } else { 1 } {
                        seq += 1;
                        let beat = Beat {
                            member,
                            site: site_id,
                            epoch: *epoch,
                            boot,
                            seq,
                            unix_ms: unix_ms(),
                            active: pair.role() == HaRole::Active,
                            handover: pair.leaving() && pair.role() == HaRole::Active,
                            restarting,
                        };
                        let to = SocketAddrV4::new(partner.private_ip, port);
                        if let Err(e) = s.send_to(&beat.encode(key), to).await {
                            tracing::debug!(to = %to, error = %e, "heartbeat not sent");
                        }
                    }
                }
            }
            match (goodbye, handover_until) {
                (Some(Stopping::Restart), _) => return,
                (Some(Stopping::Shutdown), Some(until)) => {
                    if pair.role() == HaRole::Passive {
                        tracing::info!("the partner holds the site: stopping");
                        return;
                    }
                    if Instant::now() >= until {
                        tracing::warn!(within = ?HANDOVER_WITHIN, "the partner did not take the site in time: stopping anyway");
                        return;
                    }
                }
                _ => {}
            }
        }
    }
}

/// Feeds a beat of the partner's to the pair.
fn heard(pair: &mut Pair, now: Instant, b: &Beat) -> Option<Action> {
    let action = pair.on_beat(now, b.active, b.handover);
    if b.restarting && b.active {
        tracing::info!(grace = ?super::decide::RESTART_GRACE, "the partner's agent restarts; its silence is no failure for a while");
        pair.on_partner_restarting(now);
    }
    action
}

/// The partner's beat in `datagram`, if it is one (else counted and, the
/// first few times and then at powers of two, logged: junk must not flood
/// the log).
fn check_beat(
    receiver: &mut Receiver,
    current: &HaInputs,
    datagram: &[u8],
    from: SocketAddr,
    refused: &mut u32,
) -> Option<Beat> {
    let partner_ip = current
        .ha
        .as_ref()
        .and_then(|h| h.partner.as_ref())
        .map(|p| p.private_ip);
    let keys = &current.keys;
    let checked = match from {
        SocketAddr::V4(a) if Some(*a.ip()) == partner_ip => receiver
            .accept(datagram, unix_ms(), |e| {
                keys.iter().find(|(k, _)| *k == e).map(|(_, k)| k)
            })
            .map_err(|e| e.to_string()),
        other => Err(format!("from {other}, not the partner")),
    };
    match checked {
        Ok(b) => Some(b),
        Err(e) => {
            *refused += 1;
            if *refused <= 5 || refused.is_power_of_two() {
                tracing::warn!(from = %from, error = %e, refused = *refused, "heartbeat refused");
            }
            None
        }
    }
}

async fn bind(port: u16) -> std::io::Result<UdpSocket> {
    UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)).await
}

/// One datagram, or never when there is no socket.
async fn recv(s: Option<&UdpSocket>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match s {
        Some(s) => {
            let (n, from) = s.recv_from(buf).await?;
            // Longer than a beat: the receiver refuses it by its length.
            Ok((n.min(BEAT_LEN + 1), from))
        }
        None => std::future::pending().await,
    }
}

/// The EC2 side of the actions, run beside the loop.
struct Ops {
    ec2: SiteAddress,
    identity: Identity,
    allocation_id: Option<String>,
    member: Member,
    done: mpsc::Sender<Outcome>,
}

impl Ops {
    fn start(&self, action: Action, ha: Option<&HaConfig>) {
        let (ec2, done) = (self.ec2.clone(), self.done.clone());
        let me = self.identity.instance_id.clone();
        let eni = self.identity.interface_id.clone();
        let partner = ha
            .and_then(|h| h.partner.as_ref())
            .map(|p| p.instance_id.clone());
        let Some(alloc) = self.allocation_id.clone() else {
            // No address to arbitrate: static roles.
            let o = match action {
                Action::CheckHolder => Outcome::Holder(Some(if self.member == Member::A {
                    Holder::Me
                } else {
                    Holder::Partner
                })),
                Action::TakeOver(_) => Outcome::TookOver(self.member == Member::A),
            };
            tokio::spawn(async move {
                let _ = done.send(o).await;
            });
            return;
        };
        tokio::spawn(async move {
            let started = Instant::now();
            let outcome = match action {
                Action::CheckHolder => Outcome::Holder(match ec2.holder(&alloc).await {
                    Ok(Some(id)) if id == me => Some(Holder::Me),
                    Ok(Some(id)) if Some(&id) == partner.as_ref() => Some(Holder::Partner),
                    Ok(other) => Some(Holder::Elsewhere(other)),
                    Err(e) => {
                        tracing::warn!(error = %e, "EC2 did not say who holds the site's address");
                        None
                    }
                }),
                Action::TakeOver(reason) => {
                    // A free address is claimed (EC2 refuses if another
                    // got it first); a failover moves it from the partner.
                    // An address on an instance that is neither member
                    // (the one this instance replaced) is moved here too.
                    let moved = if reason == HaReason::Claimed {
                        match ec2.holder(&alloc).await {
                            Ok(None) => ec2.claim(&alloc, &me, eni.as_deref()).await,
                            Ok(Some(h)) if Some(&h) != partner.as_ref() => {
                                ec2.take_over(&alloc, &me, eni.as_deref()).await
                            }
                            Ok(Some(_)) => Err(crate::address::AddressError::Rejected {
                                action: "ec2:AssociateAddress",
                                resource: alloc.clone(),
                                code: "Resource.AlreadyAssociated".into(),
                                message: "the partner holds the address".into(),
                            }),
                            Err(e) => Err(e),
                        }
                    } else {
                        ec2.take_over(&alloc, &me, eni.as_deref()).await
                    };
                    match moved {
                        Ok(t) => {
                            let from = match t {
                                TakeOver::AlreadyOurs => None,
                                TakeOver::Moved { from } => from,
                            };
                            tracing::info!(
                                reason = reason.as_str(),
                                from = from.as_deref(),
                                ms = started.elapsed().as_millis() as u64,
                                "took over the site's address"
                            );
                            Outcome::TookOver(true)
                        }
                        Err(e) => {
                            tracing::error!(reason = reason.as_str(), error = %e, "could not take over the site's address");
                            Outcome::TookOver(false)
                        }
                    }
                }
            };
            let _ = done.send(outcome).await;
        });
    }
}

/// Tells the loop once when IMDS posts a spot interruption notice.
async fn watch_spot(imds: Imds, notice: mpsc::Sender<()>) {
    let mut failing = false;
    loop {
        match imds.spot_instance_action().await {
            Ok(Some(action)) => {
                tracing::warn!(action = ?action.action, time = %action.time, "EC2 will interrupt this spot instance");
                let _ = notice.send(()).await;
                return;
            }
            Ok(None) => failing = false,
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot read the spot interruption notice from IMDS");
                }
                failing = true;
            }
        }
        tokio::time::sleep(SPOT_POLL).await;
    }
}
