//! Reconcile = diff. Read what the kernel has (only objects the agent owns:
//! SAs by reqid range, policies by priority, routes by protocol), compare with
//! the desired state, apply only the difference, in an order that never
//! leaves a policy without its SAs.

use super::desired::{desired_state, EpochKeys, KernelState, MissingKey, Underlay};
use crate::netlink::NetlinkError;
use crate::protocol::DesiredConfig;
use crate::protocol::OWNED_REQIDS;
use crate::route::{Route, Routes};
use crate::xfrm::{Block, Change, ObservedSa, Policy, PolicyId, Sa, SaId, Xfrm};
use ipnet::Ipv4Net;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

/// What the kernel has of ours.
#[derive(Clone, Debug, Default)]
pub struct ObservedState {
    pub sas: BTreeMap<SaId, ObservedSa>,
    pub policies: BTreeMap<PolicyId, Policy>,
    pub blocks: BTreeMap<PolicyId, Block>,
    pub routes: BTreeMap<Ipv4Net, Route>,
}

/// The changes that take the kernel from observed to desired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeSet {
    pub sas: Vec<Change<SaId, Sa>>,
    pub policies: Vec<Change<PolicyId, Policy>>,
    pub blocks: Vec<Change<PolicyId, Block>>,
    pub routes: Vec<Change<Ipv4Net, Route>>,
}

impl ChangeSet {
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        self.sas.len() + self.policies.len() + self.blocks.len() + self.routes.len()
    }
}

/// One config against the kernel: the changes, and what the run mode needs
/// to decide whether the SAs may be installed at all (an SA is installed
/// once in its life: see `sync::generation`).
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub changes: ChangeSet,
    /// Non-carried SAs of the config that the kernel lacks.
    pub missing: BTreeSet<SaId>,
    /// Non-carried SAs the kernel has in another shape, or whose key it holds
    /// under another ID: installing one would restart its sequence numbers
    /// under the same key.
    pub stale: BTreeSet<SaId>,
    /// Every non-carried SA of the config.
    pub fresh: BTreeSet<SaId>,
}

/// The SAs a config marks as carried over from an earlier generation.
fn carried_sas(config: &DesiredConfig) -> BTreeSet<SaId> {
    let mut out = BTreeSet::new();
    for t in &config.tunnels {
        if t.out.carried {
            out.insert(SaId {
                dst: t.peer_address,
                spi: t.out.spi,
            });
        }
        for i in t.inbound.iter().filter(|i| i.carried) {
            out.insert(SaId {
                dst: config.local_address,
                spi: i.spi,
            });
        }
    }
    out
}

/// Counts of what one reconcile did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    pub added: usize,
    pub replaced: usize,
    pub deleted: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("reading the kernel's state: {0}")]
    Read(NetlinkError),
    #[error("turning on IPv4 forwarding: {0}")]
    Forwarding(std::io::Error),
    #[error(transparent)]
    MissingKey(#[from] MissingKey),
    #[error("the interface holding the local address {0} was not found")]
    NoUnderlay(std::net::Ipv4Addr),
    #[error("{failed} of {total} kernel changes failed; first: {first}")]
    Apply {
        failed: usize,
        total: usize,
        first: NetlinkError,
        /// Every block policy is in: forwarding is safe (the rest failed).
        blocks_in: bool,
    },
}

/// Pure diff. An SA whose content changed is deleted and added again (the
/// kernel cannot change an SA's key in place), except when only its shape
/// changed under the same key and addresses: adding it again would restart
/// its sequence numbers under that key (GCM nonces repeat), so it stays as
/// it is until new SPIs replace it (see [`Plan::stale`]). Policies and
/// routes are replaced atomically.
pub fn diff(desired: &KernelState, observed: &ObservedState) -> ChangeSet {
    let mut out = ChangeSet::default();
    for (id, sa) in &desired.sas {
        match observed.sas.get(id) {
            None => out.sas.push(Change::Add(sa.clone())),
            Some(o)
                if o.sa.as_ref().is_some_and(|have| {
                    have.key == sa.key && have.src == sa.src && have.dst == sa.dst
                }) => {}
            Some(o) if o.sa.as_ref() != Some(sa) => {
                out.sas.push(Change::Delete(*id));
                out.sas.push(Change::Add(sa.clone()));
            }
            Some(_) => {}
        }
    }
    out.policies = diff_map(&desired.policies, &observed.policies);
    out.blocks = diff_map(&desired.blocks, &observed.blocks);
    out.routes = diff_map(&desired.routes, &observed.routes);
    for id in observed.sas.keys() {
        if !desired.sas.contains_key(id) {
            out.sas.push(Change::Delete(*id));
        }
    }
    out
}

fn diff_map<K: Ord + Copy, T: PartialEq + Clone>(
    desired: &BTreeMap<K, T>,
    observed: &BTreeMap<K, T>,
) -> Vec<Change<K, T>> {
    let mut changes = Vec::new();
    for (k, want) in desired {
        match observed.get(k) {
            None => changes.push(Change::Add(want.clone())),
            Some(have) if have != want => changes.push(Change::Replace(want.clone())),
            Some(_) => {}
        }
    }
    for k in observed.keys() {
        if !desired.contains_key(k) {
            changes.push(Change::Delete(*k));
        }
    }
    changes
}

/// The agent's view of one network namespace's kernel.
pub struct Kernel {
    pub xfrm: Xfrm,
    pub routes: Routes,
}

impl Kernel {
    /// Opens XFRM and route sockets in the calling thread's namespace.
    pub fn open() -> Result<Self, NetlinkError> {
        Ok(Self {
            xfrm: Xfrm::open()?,
            routes: Routes::open()?,
        })
    }

    pub fn observe(&mut self) -> Result<ObservedState, ReconcileError> {
        let sas = self
            .xfrm
            .state()
            .list()
            .map_err(ReconcileError::Read)?
            .into_iter()
            .filter(|s| OWNED_REQIDS.contains(&s.reqid))
            .map(|s| (s.id, s))
            .collect();
        let (tunnels, blocks) = self.xfrm.policy().list().map_err(ReconcileError::Read)?;
        let policies = tunnels.into_iter().map(|p| (p.id, p)).collect();
        let blocks = blocks.into_iter().map(|b| (b.id, b)).collect();
        let routes = self
            .routes
            .list()
            .map_err(ReconcileError::Read)?
            .into_iter()
            .map(|r| (r.dst, r))
            .collect();
        Ok(ObservedState {
            sas,
            policies,
            blocks,
            routes,
        })
    }

    /// Where this config's tunnels leave: the interface holding the local
    /// address, and as preferred source the first own address inside the
    /// local CIDRs (on AWS the two are the same address).
    pub fn underlay(&mut self, config: &DesiredConfig) -> Result<Underlay, ReconcileError> {
        let addresses = self.routes.addresses().map_err(ReconcileError::Read)?;
        let oif = addresses
            .iter()
            .find_map(|(i, ip)| (*ip == config.local_address).then_some(*i))
            .ok_or(ReconcileError::NoUnderlay(config.local_address))?;
        let prefsrc = addresses.iter().map(|(_, ip)| *ip).find(|ip| {
            config
                .tunnels
                .iter()
                .any(|t| t.local_cidrs.iter().any(|c| c.contains(ip)))
        });
        Ok(Underlay { oif, prefsrc })
    }

    /// Takes the kernel to what `config` asks for, with SA keys derived
    /// from each epoch's data key in `keys`.
    pub fn apply_config(
        &mut self,
        config: &DesiredConfig,
        keys: &EpochKeys,
    ) -> Result<ReconcileReport, ReconcileError> {
        let plan = self.plan(config, keys)?;
        self.apply_plan(plan)
    }

    /// What `config` would change in the kernel, and which of its SAs the
    /// kernel lacks or holds in another shape. Carried SAs (an earlier
    /// generation, see the protocol) are kept where the kernel has them and
    /// never installed anew.
    pub fn plan(
        &mut self,
        config: &DesiredConfig,
        keys: &EpochKeys,
    ) -> Result<Plan, ReconcileError> {
        let underlay = self.underlay(config)?;
        let mut desired = desired_state(config, keys, underlay)?;
        let observed = self.observe()?;
        let carried = carried_sas(config);
        desired
            .sas
            .retain(|id, _| !carried.contains(id) || observed.sas.contains_key(id));
        let mut missing = BTreeSet::new();
        let mut stale = BTreeSet::new();
        for (id, sa) in &desired.sas {
            match observed.sas.get(id) {
                // Under another ID (a peer that moved): the same key would
                // start its sequence numbers over.
                None if !carried.contains(id)
                    && observed
                        .sas
                        .values()
                        .any(|o| o.sa.as_ref().is_some_and(|have| have.key == sa.key)) =>
                {
                    stale.insert(*id);
                }
                None => {
                    missing.insert(*id);
                }
                Some(o) if o.sa.as_ref() != Some(sa) && !carried.contains(id) => {
                    stale.insert(*id);
                }
                Some(_) => {}
            }
        }
        let changes = diff(&desired, &observed);
        Ok(Plan {
            changes,
            missing,
            stale,
            fresh: desired
                .sas
                .keys()
                .filter(|id| !carried.contains(id))
                .copied()
                .collect(),
        })
    }

    /// Applies a plan (see [`Kernel::plan`]), then turns on IPv4 forwarding.
    pub fn apply_plan(&mut self, plan: Plan) -> Result<ReconcileReport, ReconcileError> {
        let applied = self.apply(plan.changes);
        forward_if_blocked(applied)
    }

    /// Takes the kernel to `desired`, touching only what differs, then turns
    /// on IPv4 forwarding: an appliance forwards between its VPC and tunnels,
    /// but only once its block policies are in (a rebooted instance forwards
    /// nothing towards remote CIDRs before that, so nothing leaves in clear).
    /// A change the kernel refused (an SA, a tunnel's policy) does not keep
    /// forwarding off: what it would have carried hits a block policy.
    pub fn reconcile(&mut self, desired: &KernelState) -> Result<ReconcileReport, ReconcileError> {
        let observed = self.observe()?;
        let changes = diff(desired, &observed);
        let applied = self.apply(changes);
        forward_if_blocked(applied)
    }

    /// Applies in a safe order: block policies first (so nothing for a
    /// remote CIDR can leave in clear while the rest changes), then SAs,
    /// policies and routes; removals in reverse (routes, policies, SAs, and
    /// block policies last).
    pub fn apply(&mut self, changes: ChangeSet) -> Result<ReconcileReport, ReconcileError> {
        let total = changes.len();
        let (sa_deletes, sa_puts) = split_trailing_deletes(changes.sas);
        let (policy_deletes, policy_puts) = split_deletes(changes.policies);
        let (route_deletes, route_puts) = split_deletes(changes.routes);
        let (block_deletes, block_puts) = split_deletes(changes.blocks);

        let mut tally = Tally::default();
        let results = self.xfrm.policy().apply_blocks(&block_puts);
        tally.take(results, &block_puts, Landing::BlockPut);
        let results = self.xfrm.state().apply(&sa_puts);
        tally.take(results, &sa_puts, Landing::Sa);
        let results = self.xfrm.policy().apply(&policy_puts);
        tally.take(results, &policy_puts, Landing::Policy);
        let results = self.routes.apply(&route_puts);
        tally.take(results, &route_puts, Landing::Route);
        let results = self.routes.apply(&route_deletes);
        tally.take(results, &route_deletes, Landing::Route);
        let results = self.xfrm.policy().apply(&policy_deletes);
        tally.take(results, &policy_deletes, Landing::Policy);
        let results = self.xfrm.state().apply(&sa_deletes);
        tally.take(results, &sa_deletes, Landing::Sa);
        let results = self.xfrm.policy().apply_blocks(&block_deletes);
        tally.take(results, &block_deletes, Landing::Block);
        if !tally.unconfirmed.is_empty() {
            // Answers were lost, not the changes: read the kernel back.
            let observed = self.observe()?;
            let readded = sa_puts
                .iter()
                .filter_map(|c| match c {
                    Change::Add(sa) => Some((sa.id(), sa.clone())),
                    _ => None,
                })
                .collect();
            tally.read_back(&observed, &readded);
        }
        tally.finish(total)
    }
}

/// A change whose answer was lost, to be read back from the kernel.
enum Landing {
    /// A block policy going in: forwarding waits for every one.
    BlockPut(Change<PolicyId, Block>),
    Block(Change<PolicyId, Block>),
    Sa(Change<SaId, Sa>),
    Policy(Change<PolicyId, Policy>),
    Route(Change<Ipv4Net, Route>),
}

impl Landing {
    /// Whether `observed` holds what the change asked for; `readded` are
    /// the SAs of the same apply that were deleted to be added anew.
    fn landed(&self, observed: &ObservedState, readded: &BTreeMap<SaId, Sa>) -> bool {
        fn in_map<K: Ord, T: PartialEq>(
            c: &Change<K, T>,
            map: &BTreeMap<K, T>,
            key: impl Fn(&T) -> K,
        ) -> bool {
            match c {
                Change::Add(want) | Change::Replace(want) => map.get(&key(want)) == Some(want),
                Change::Delete(k) => !map.contains_key(k),
            }
        }
        let sa_is = |id: &SaId, want: &Sa| {
            observed
                .sas
                .get(id)
                .is_some_and(|o| o.sa.as_ref() == Some(want))
        };
        match self {
            Landing::BlockPut(c) | Landing::Block(c) => in_map(c, &observed.blocks, |b| b.id),
            Landing::Policy(c) => in_map(c, &observed.policies, |p| p.id),
            Landing::Route(c) => in_map(c, &observed.routes, |r| r.dst),
            Landing::Sa(Change::Add(sa) | Change::Replace(sa)) => sa_is(&sa.id(), sa),
            // A changed SA is deleted and added under the same id: the new
            // one in place means the old one went first.
            Landing::Sa(Change::Delete(id)) => match readded.get(id) {
                Some(new) => sa_is(id, new),
                None => !observed.sas.contains_key(id),
            },
        }
    }

    fn kind(&self) -> Kind {
        match self {
            Landing::BlockPut(c) | Landing::Block(c) => c.kind(),
            Landing::Sa(c) => c.kind(),
            Landing::Policy(c) => c.kind(),
            Landing::Route(c) => c.kind(),
        }
    }
}

trait ChangeKind {
    fn kind(&self) -> Kind;
}

impl<K, T> ChangeKind for Change<K, T> {
    fn kind(&self) -> Kind {
        match self {
            Change::Add(_) => Kind::Add,
            Change::Replace(_) => Kind::Replace,
            Change::Delete(_) => Kind::Delete,
        }
    }
}

/// The outcome of an apply, change by change.
#[derive(Default)]
struct Tally {
    report: ReconcileReport,
    errors: Vec<NetlinkError>,
    /// Block policies that did not go in: forwarding stays off.
    blocks_missing: usize,
    unconfirmed: Vec<(Landing, NetlinkError)>,
}

impl Tally {
    fn count(&mut self, kind: Kind) {
        match kind {
            Kind::Add => self.report.added += 1,
            Kind::Replace => self.report.replaced += 1,
            Kind::Delete => self.report.deleted += 1,
        }
    }

    fn take<C: Clone + ChangeKind>(
        &mut self,
        results: Vec<Result<(), NetlinkError>>,
        changes: &[C],
        landing: fn(C) -> Landing,
    ) {
        for (r, c) in results.into_iter().zip(changes) {
            match r {
                Ok(()) => self.count(c.kind()),
                // Only what failed is copied (an SA change holds its key).
                Err(e @ NetlinkError::Unconfirmed { .. }) => {
                    self.unconfirmed.push((landing(c.clone()), e))
                }
                Err(e) => self.fail(&landing(c.clone()), e),
            }
        }
    }

    fn fail(&mut self, l: &Landing, e: NetlinkError) {
        if matches!(l, Landing::BlockPut(_)) {
            self.blocks_missing += 1;
        }
        self.errors.push(e);
    }

    /// Counts each unconfirmed change `observed` shows in place; the rest
    /// failed.
    fn read_back(&mut self, observed: &ObservedState, readded: &BTreeMap<SaId, Sa>) {
        for (l, e) in std::mem::take(&mut self.unconfirmed) {
            if l.landed(observed, readded) {
                self.count(l.kind());
            } else {
                self.fail(&l, e);
            }
        }
    }

    fn finish(self, total: usize) -> Result<ReconcileReport, ReconcileError> {
        let failed = self.errors.len();
        match self.errors.into_iter().next() {
            None => Ok(self.report),
            Some(first) => Err(ReconcileError::Apply {
                failed,
                total,
                first,
                blocks_in: self.blocks_missing == 0,
            }),
        }
    }
}

/// Forwarding on after `applied`, unless a block policy is missing.
fn forward_if_blocked(
    applied: Result<ReconcileReport, ReconcileError>,
) -> Result<ReconcileReport, ReconcileError> {
    match applied {
        Ok(report) => {
            enable_forwarding().map_err(ReconcileError::Forwarding)?;
            Ok(report)
        }
        Err(
            e @ ReconcileError::Apply {
                blocks_in: true, ..
            },
        ) => {
            enable_forwarding().map_err(ReconcileError::Forwarding)?;
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// `net.ipv4.ip_forward = 1` in the calling thread's namespace (network
/// sysctls resolve to the namespace of the task that opens them).
fn enable_forwarding() -> std::io::Result<()> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(PATH)?.trim() != "1" {
        std::fs::write(PATH, "1")?;
        tracing::info!("IPv4 forwarding turned on");
    }
    no_redirects()
}

/// No ICMP redirects: an appliance forwards out of the interface traffic
/// came in on (the VPC routes through it), and a redirect would tell the
/// VPC's hosts to go around it. The kernel sends them when `all` or the
/// interface says so, hence every interface.
fn no_redirects() -> std::io::Result<()> {
    let mut changed = false;
    for entry in std::fs::read_dir("/proc/sys/net/ipv4/conf")? {
        let path = entry?.path().join("send_redirects");
        if std::fs::read_to_string(&path)?.trim() != "0" {
            std::fs::write(&path, "0")?;
            changed = true;
        }
    }
    if changed {
        tracing::info!("ICMP redirects turned off");
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Kind {
    Add,
    Replace,
    Delete,
}

/// (deletions, the rest) of a list of changes.
type Split<K, T> = (Vec<Change<K, T>>, Vec<Change<K, T>>);

fn split_deletes<K: Debug, T: Debug>(changes: Vec<Change<K, T>>) -> Split<K, T> {
    changes
        .into_iter()
        .partition(|c| matches!(c, Change::Delete(_)))
}

/// SA changes keep delete-then-add pairs (a changed SA) together with the
/// puts; only deletions of SAs no longer wanted wait until the end.
fn split_trailing_deletes(changes: Vec<Change<SaId, Sa>>) -> Split<SaId, Sa> {
    let readded: std::collections::BTreeSet<SaId> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Add(sa) => Some(sa.id()),
            _ => None,
        })
        .collect();
    changes
        .into_iter()
        .partition(|c| matches!(c, Change::Delete(id) if !readded.contains(id)))
}

#[cfg(test)]
mod tests;
