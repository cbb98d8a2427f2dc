//! The appliance wire protocol: what the server and the agent say to each
//! other (serde types, their validation and versions). This crate is its one
//! owner and has no agent dependencies; the server and the agent both depend
//! on it. With feature `routes`, also [`route_owner`]: which VPC routes are
//! vpcmesh's, a rule both sides apply to what EC2 holds.
//!
//! Versioned: every config carries [`PROTOCOL_VERSION`]; an agent refuses a
//! config of a protocol it does not speak instead of guessing.

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use uuid::Uuid;

#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
mod ha;
#[cfg(feature = "routes")]
pub mod route_owner;
pub use ha::{
    HaConfig, HaConfigError, HaPartner, HaReason, HaStatus, DEAD_AFTER_BEATS, DEFAULT_DEAD_AFTER,
    DEFAULT_HEARTBEAT_MS, HEARTBEAT_INTERVALS_MS, HEARTBEAT_PORT,
};

/// 2: key epochs in play (make-before-break rotation) and per-epoch SAs.
/// 3: SA generations: every SPI carries its flow's generation, which grows
/// whenever a kernel at either end of the flow lost its state (a new
/// instance, a reboot, SAs deleted behind the agent's back), so no (key,
/// SPI) pair is ever installed twice with a reset sequence number; SAs kept
/// from an earlier generation while peers switch are marked `carried`.
/// 4: keys per tunnel: an epoch made since carries a data key per site pair
/// (on each [`Tunnel`]) and one per site (for the HA heartbeat), each bound
/// by its KMS encryption context to the sites it serves, so an appliance can
/// decrypt only the keys of its own site's tunnels.
pub const PROTOCOL_VERSION: u16 = 4;
/// The first protocol with SA generations, connectivity probes and HA.
pub const GENERATIONS_PROTOCOL_VERSION: u16 = 3;
/// The oldest protocol the server still serves (an agent that does not ask
/// for a protocol gets this one), so agents of earlier releases keep working
/// during an upgrade.
pub const PREVIOUS_PROTOCOL_VERSION: u16 = 2;

/// Paths of the appliance API, relative to the server's base URL.
pub mod paths {
    pub const REGISTER: &str = "/api/appliance/v1/register";
    pub const CONFIG: &str = "/api/appliance/v1/config";
    pub const STATUS: &str = "/api/appliance/v1/status";
    pub const GENERATION: &str = "/api/appliance/v1/generation";
    pub const PROBE: &str = "/api/appliance/v1/probe";
}

/// Limits a config must stay within; the agent refuses anything larger as a
/// whole, so a hostile or broken server cannot make it program the kernel
/// without bound.
pub const MAX_TUNNELS: usize = 4096;
pub const MAX_CIDRS_PER_SELECTOR: usize = 64;
/// Reqids the agent owns in the kernel: its SAs and policies carry one of
/// these, and it never touches state outside the range.
pub const OWNED_REQIDS: std::ops::Range<u32> = 1..(1 << 30);
/// At most this many key epochs are in play at once: the active one and,
/// during a rotation, the one it replaces.
pub const MAX_EPOCHS_IN_PLAY: usize = 2;

/// Bits of an SPI: the key epoch's parity on top, then the flow's
/// generation, then the flow's base (unique per receiving site).
const SPI_GENERATION_SHIFT: u32 = 16;
const SPI_GENERATION_MASK: u32 = 0x7fff;
pub const SPI_BASE_MASK: u32 = 0xffff;

/// A member's generation never exceeds this: a flow's generation is the sum
/// of three member generations (the sender's and the receiving site's two),
/// so it always fits the SPI's 15 generation bits without wrapping, and an
/// SPI (and with it the HKDF-derived key) is never used for two generations
/// of one flow in one epoch.
pub const MAX_MEMBER_GENERATION: u32 = SPI_GENERATION_MASK / 3;

/// The SPI of a flow (`base`, below 2^16 and at least 0x100) in `epoch` and
/// flow `generation`. The two epochs in play differ in parity and two
/// generations of a flow differ in the generation bits, so such SAs never
/// share an SPI and can be installed side by side.
pub fn spi_for(base: u32, epoch: u32, generation: u32) -> u32 {
    ((epoch & 1) << 31)
        | ((generation & SPI_GENERATION_MASK) << SPI_GENERATION_SHIFT)
        | (base & SPI_BASE_MASK)
}

/// The flow generation an SPI was made for (see [`spi_for`]).
pub fn spi_generation(spi: u32) -> u32 {
    (spi >> SPI_GENERATION_SHIFT) & SPI_GENERATION_MASK
}

/// The parity bit of the epoch an SPI was made for.
pub fn spi_epoch_parity(spi: u32) -> u32 {
    spi >> 31
}

/// The encryption context key naming the sites a data key serves.
pub const SITES_CONTEXT_KEY: &str = "vpcmesh:sites";

/// The KMS encryption context that binds a data key to its network, epoch
/// and (protocol 4) the sites it serves: the server generates under it,
/// appliances decrypt under it, and their instance role allows `kms:Decrypt`
/// only with a context naming their own site.
pub fn encryption_context(
    network_id: &Uuid,
    epoch: u32,
    scope: KeyScope,
) -> Vec<(&'static str, String)> {
    let mut context = vec![
        ("vpcmesh:network", network_id.to_string()),
        ("vpcmesh:epoch", epoch.to_string()),
    ];
    if let Some(sites) = scope.sites() {
        context.push((SITES_CONTEXT_KEY, sites));
    }
    context
}

/// What a data key serves. Both ends of a pair name it alike: the two site
/// ids in ascending order, so `"{low}/{high}"` (a site's own key names it
/// twice). Any site id can be matched in IAM as `"{id}/*"` or `"*/{id}"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyScope {
    /// One key for the whole network (epochs made before protocol 4).
    Network,
    /// The two members of one site (their heartbeats).
    Site(Uuid),
    /// The tunnel between two sites.
    Pair(Uuid, Uuid),
}

impl KeyScope {
    /// The scope of the tunnel between `a` and `b`, whichever end asks.
    pub fn pair(a: Uuid, b: Uuid) -> Self {
        KeyScope::Pair(a.min(b), a.max(b))
    }

    /// The two site ids it serves, in ascending order (a site's own key
    /// names it twice); none for a network key.
    pub fn site_ids(self) -> Option<(Uuid, Uuid)> {
        match self {
            KeyScope::Network => None,
            KeyScope::Site(s) => Some((s, s)),
            KeyScope::Pair(a, b) => Some((a.min(b), a.max(b))),
        }
    }

    /// The scope of what `site_ids` gave.
    pub fn from_site_ids(low: Uuid, high: Uuid) -> Self {
        if low == high {
            KeyScope::Site(low)
        } else {
            KeyScope::pair(low, high)
        }
    }

    /// The encryption context's sites value (none for a network key).
    pub fn sites(self) -> Option<String> {
        self.site_ids().map(|(low, high)| format!("{low}/{high}"))
    }
}

/// Which member of a site's HA pair an appliance is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Member {
    A,
    B,
}

impl Member {
    pub const BOTH: [Member; 2] = [Member::A, Member::B];

    pub fn index(self) -> usize {
        match self {
            Member::A => 0,
            Member::B => 1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Member::A => "a",
            Member::B => "b",
        }
    }
}

/// Sent once by a new instance with the bootstrap token from its user data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterRequest {
    pub bootstrap_token: String,
    pub instance_id: String,
    pub availability_zone: String,
    pub private_ip: Ipv4Addr,
    #[serde(default)]
    pub public_ip: Option<Ipv4Addr>,
    pub agent_version: String,
}

/// The server's answer: who the appliance is and the credential it uses from
/// now on (the server keeps only its hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub appliance_id: Uuid,
    pub credential: String,
    pub network_id: Uuid,
    pub site_id: Uuid,
    pub member: Member,
    /// The appliance's first SA generation: fresh, never used by any
    /// instance of this member before (0 from a server that predates it).
    #[serde(default)]
    pub generation: u32,
}

/// Asks for a fresh SA generation: sent by an agent whose kernel lost SAs
/// of `above` (a reboot, or SAs deleted behind its back), which it must not
/// install again with reset sequence numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationRequest {
    pub above: u32,
}

/// The appliance's new generation: greater than `above` and than any it had.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationResponse {
    pub generation: u32,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A key epoch in play. Only KMS ciphertexts travel; the appliance
/// decrypts them with its own role. Before protocol 4 this is the network's
/// one data key of the epoch; since, with `per_tunnel`, it is this site's own
/// key (the HA heartbeat) and every tunnel carries its pair's key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochKey {
    pub epoch: u32,
    pub kms_key_arn: String,
    pub region: String,
    /// Base64 of the KMS ciphertext blob.
    pub ciphertext: String,
    /// Keys per tunnel (protocol 4): `ciphertext` is the site's own key.
    #[serde(default, skip_serializing_if = "is_false")]
    pub per_tunnel: bool,
}

impl EpochKey {
    /// What `ciphertext` serves for an appliance of `site`.
    pub fn scope(&self, site: Uuid) -> KeyScope {
        if self.per_tunnel {
            KeyScope::Site(site)
        } else {
            KeyScope::Network
        }
    }
}

/// One tunnel's data key of one epoch (protocol 4): its scope is the pair
/// of the tunnel's two sites.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelKey {
    pub epoch: u32,
    /// Base64 of the KMS ciphertext blob.
    pub ciphertext: String,
}

/// The SA an appliance sends with on one tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundSa {
    pub epoch: u32,
    pub spi: u32,
    /// Kept from an earlier generation while the peers install the new one:
    /// the agent keeps it if the kernel still has it but never installs it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub carried: bool,
}

/// An SA an appliance accepts on one tunnel: from one of the peer's members,
/// keyed from one epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InboundSa {
    pub epoch: u32,
    pub member: Member,
    pub spi: u32,
    /// What the peer member still sends with from an earlier generation:
    /// kept if the kernel has it, never installed anew (its replay state
    /// would start over).
    #[serde(default, skip_serializing_if = "is_false")]
    pub carried: bool,
}

impl InboundSa {
    /// The SAs from the peer's members A and B in one epoch.
    pub fn pair(epoch: u32, spis: [u32; 2]) -> [InboundSa; 2] {
        Member::BOTH.map(|member| InboundSa {
            epoch,
            member,
            spi: spis[member.index()],
            carried: false,
        })
    }
}

/// One IPsec tunnel from this appliance's site to a peer site.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tunnel {
    pub peer_site: Uuid,
    /// The peer's public (Elastic IP) address: the outer destination.
    pub peer_address: Ipv4Addr,
    /// Ties this tunnel's SAs and policies together in the kernel.
    pub reqid: u32,
    /// What this appliance sends with. During a rotation the server moves
    /// it to the new epoch only once the peer accepts that epoch.
    pub out: OutboundSa,
    /// What it accepts from the peer's members A and B: every epoch in play.
    pub inbound: Vec<InboundSa>,
    /// What this end sends into the tunnel...
    pub local_cidrs: Vec<Ipv4Net>,
    /// ...and what it receives from it (and routes towards it).
    pub remote_cidrs: Vec<Ipv4Net>,
    /// An agent of protocol 2 sits at one end: the tunnel's SAs take the
    /// shape that agent programs (no ESN, a 32-packet window), as both ends
    /// of an SA must agree on ESN. Cleared once both ends speak protocol 3.
    #[serde(default, skip_serializing_if = "is_false")]
    pub legacy_sa: bool,
    /// This tunnel's keys, one per epoch kept per tunnel (protocol 4).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<TunnelKey>,
}

/// Echoes per target of a connectivity probe.
pub const PROBE_COUNTS: std::ops::RangeInclusive<u16> = 1..=20;
/// Milliseconds between a probe's rounds of echoes.
pub const PROBE_INTERVALS_MS: std::ops::RangeInclusive<u32> = 100..=1000;
/// An echo whose reply takes longer than this counts as lost.
pub const PROBE_ECHO_TIMEOUT_MS: u32 = 1000;
/// A probe never names more targets than a config can have tunnels.
pub const MAX_PROBE_TARGETS: usize = MAX_TUNNELS;

/// A connectivity check the server asks this appliance to run once: ICMP
/// echo from its own inside address (`local_address`) to every target,
/// `count` echoes `interval_ms` apart, then a [`ProbeReport`]. Added in
/// protocol 3 without a version bump: absent means no check (older servers
/// never send it, older agents ignore it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectivityProbe {
    /// Names the check; an agent runs each id at most once.
    pub id: Uuid,
    pub count: u16,
    pub interval_ms: u32,
    pub targets: Vec<ProbeTarget>,
}

/// One peer site's appliance to ping: its inside (private) address, which
/// the tunnels' selectors cover.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeTarget {
    pub peer_site: Uuid,
    pub address: Ipv4Addr,
}

/// Everything one appliance programs. Same version, same content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredConfig {
    pub protocol: u16,
    pub version: u64,
    pub network_id: Uuid,
    pub site_id: Uuid,
    pub member: Member,
    /// This appliance's SA generation: every SA of this config that is not
    /// `carried` was made for it (0 in protocol 2).
    #[serde(default)]
    pub generation: u32,
    /// This appliance's own underlay address: the outer source of its SAs.
    pub local_address: Ipv4Addr,
    /// ESP in UDP 4500 (needed behind AWS's 1:1 NAT of Elastic IPs).
    pub nat_traversal: bool,
    /// The key epochs in play, newest first: one, or two during a rotation.
    pub keys: Vec<EpochKey>,
    pub tunnels: Vec<Tunnel>,
    /// A connectivity check to run (see [`ConnectivityProbe`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ConnectivityProbe>,
    /// The site's HA pair (absent from servers before failover existed:
    /// the agent then keeps member A active and B passive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha: Option<HaConfig>,
}

/// Why a config was refused. The agent keeps its last good state and
/// reports this text as its status.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("protocol {0} is not spoken by this agent (it speaks {PROTOCOL_VERSION})")]
    Protocol(u16),
    #[error("{0} tunnels exceed the limit of {MAX_TUNNELS}")]
    TooManyTunnels(usize),
    #[error("tunnel to {peer}: {count} CIDRs exceed the limit of {MAX_CIDRS_PER_SELECTOR}")]
    TooManyCidrs { peer: Uuid, count: usize },
    #[error("tunnel to {0}: a selector needs at least one local and one remote CIDR")]
    EmptySelector(Uuid),
    #[error("tunnel to {peer}: CIDR {cidr} is not in canonical form (host bits set)")]
    NonCanonicalCidr { peer: Uuid, cidr: Ipv4Net },
    #[error("remote CIDR {cidr} of the tunnel to {peer} overlaps {other}")]
    OverlappingRemote {
        peer: Uuid,
        cidr: Ipv4Net,
        other: Ipv4Net,
    },
    #[error("SPI {spi:#x} is used twice")]
    DuplicateSpi { spi: u32 },
    #[error("SPI {spi:#x} is reserved (SPIs below 256 are not valid)")]
    ReservedSpi { spi: u32 },
    #[error("reqid {reqid} is outside the agent's range or used twice")]
    BadReqid { reqid: u32 },
    #[error("peer {0} appears in two tunnels")]
    DuplicatePeer(Uuid),
    #[error("peer address {0} is not a usable unicast address")]
    BadPeerAddress(Ipv4Addr),
    #[error("the key ciphertext of epoch {0} is empty")]
    EmptyKey(u32),
    #[error("{0} key epochs given; between 1 and {MAX_EPOCHS_IN_PLAY} are in play at once")]
    EpochCount(usize),
    #[error("key epoch {0} is given twice")]
    DuplicateEpoch(u32),
    #[error("tunnel to {peer}: epoch {epoch} has no key in this config")]
    UnknownEpoch { peer: Uuid, epoch: u32 },
    #[error("tunnel to {peer}: epoch {epoch} needs exactly one tunnel key (keys per tunnel) or none (one network key)")]
    TunnelKey { peer: Uuid, epoch: u32 },
    #[error("tunnel to {0}: it accepts nothing, or the same epoch and member twice")]
    BadInbound(Uuid),
    #[error("this config is for {got}, but this appliance is {expected}")]
    NotOurs { expected: String, got: String },
    #[error("probe: {0} echoes per target; between 1 and 20 are allowed")]
    ProbeCount(u16),
    #[error("probe: {0} ms between echoes; between 100 and 1000 ms are allowed")]
    ProbeInterval(u32),
    #[error("probe: {0} targets; between 1 and {MAX_PROBE_TARGETS} are allowed")]
    ProbeTargets(usize),
    #[error("probe: peer {0} is named twice, or is this appliance's own site")]
    ProbePeer(Uuid),
    #[error("probe: target address {0} is not a usable unicast address, or is named twice")]
    ProbeAddress(Ipv4Addr),
    #[error(transparent)]
    Ha(#[from] HaConfigError),
}

impl DesiredConfig {
    /// The epochs this config holds keys for, newest first.
    pub fn epochs(&self) -> Vec<u32> {
        let mut e: Vec<u32> = self.keys.iter().map(|k| k.epoch).collect();
        e.sort_unstable_by(|a, b| b.cmp(a));
        e
    }

    /// Every data key this config carries: the epoch it belongs to, what it
    /// serves (for this appliance's site) and its base64 ciphertext.
    pub fn key_blobs(&self) -> Vec<(&EpochKey, KeyScope, &str)> {
        let mut out = Vec::new();
        for k in &self.keys {
            out.push((k, k.scope(self.site_id), k.ciphertext.as_str()));
            if !k.per_tunnel {
                continue;
            }
            for t in &self.tunnels {
                for tk in t.keys.iter().filter(|tk| tk.epoch == k.epoch) {
                    let scope = KeyScope::pair(self.site_id, t.peer_site);
                    out.push((k, scope, tk.ciphertext.as_str()));
                }
            }
        }
        out
    }

    /// Refuses a config meant for another network, site or HA member: a
    /// confused or hostile server must not make an appliance program
    /// another appliance's tunnels.
    pub fn check_owner(
        &self,
        network_id: Uuid,
        site_id: Uuid,
        member: Member,
    ) -> Result<(), ConfigError> {
        let name =
            |n: Uuid, s: Uuid, m: Member| format!("network {n}, site {s}, member {}", m.as_str());
        if (self.network_id, self.site_id, self.member) != (network_id, site_id, member) {
            return Err(ConfigError::NotOurs {
                expected: name(network_id, site_id, member),
                got: name(self.network_id, self.site_id, self.member),
            });
        }
        Ok(())
    }

    /// Checks the whole config; the first problem refuses all of it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.protocol != PROTOCOL_VERSION {
            return Err(ConfigError::Protocol(self.protocol));
        }
        if self.tunnels.len() > MAX_TUNNELS {
            return Err(ConfigError::TooManyTunnels(self.tunnels.len()));
        }
        if self.keys.is_empty() || self.keys.len() > MAX_EPOCHS_IN_PLAY {
            return Err(ConfigError::EpochCount(self.keys.len()));
        }
        let mut epochs = BTreeSet::new();
        for k in &self.keys {
            if !epochs.insert(k.epoch) {
                return Err(ConfigError::DuplicateEpoch(k.epoch));
            }
            if k.ciphertext.is_empty() {
                return Err(ConfigError::EmptyKey(k.epoch));
            }
        }
        let mut peers = BTreeSet::new();
        let mut reqids = BTreeSet::new();
        let mut out_spis = BTreeSet::new();
        let mut in_spis = BTreeSet::new();
        let mut remotes: Vec<(Ipv4Net, Uuid)> = Vec::new();
        for t in &self.tunnels {
            if !peers.insert(t.peer_site) {
                return Err(ConfigError::DuplicatePeer(t.peer_site));
            }
            if !OWNED_REQIDS.contains(&t.reqid) || !reqids.insert(t.reqid) {
                return Err(ConfigError::BadReqid { reqid: t.reqid });
            }
            let a = t.peer_address;
            if a.is_unspecified() || a.is_broadcast() || a.is_multicast() {
                return Err(ConfigError::BadPeerAddress(a));
            }
            // Outbound SPIs are unique per destination and inbound ones per
            // this appliance; both sets must be free of repeats.
            if !out_spis.insert((t.peer_address, t.out.spi)) {
                return Err(ConfigError::DuplicateSpi { spi: t.out.spi });
            }
            // Per epoch and peer member: the current SA and, while the peer
            // member switches generations, the one it still sends with.
            let mut accepted = BTreeSet::new();
            if t.inbound.is_empty()
                || t.inbound.len() > 4 * MAX_EPOCHS_IN_PLAY
                || !t
                    .inbound
                    .iter()
                    .all(|i| accepted.insert((i.epoch, i.member, i.carried)))
            {
                return Err(ConfigError::BadInbound(t.peer_site));
            }
            for epoch in std::iter::once(t.out.epoch).chain(t.inbound.iter().map(|i| i.epoch)) {
                if !epochs.contains(&epoch) {
                    return Err(ConfigError::UnknownEpoch {
                        peer: t.peer_site,
                        epoch,
                    });
                }
            }
            // Per epoch: its own key if the epoch is kept per tunnel, and
            // none if the network's key serves it.
            for k in &self.keys {
                let given = t.keys.iter().filter(|tk| tk.epoch == k.epoch);
                let ok = match (k.per_tunnel, given.count()) {
                    (true, 1) => t.keys.iter().all(|tk| !tk.ciphertext.is_empty()),
                    (false, 0) => true,
                    _ => false,
                };
                if !ok {
                    return Err(ConfigError::TunnelKey {
                        peer: t.peer_site,
                        epoch: k.epoch,
                    });
                }
            }
            if let Some(tk) = t.keys.iter().find(|tk| !epochs.contains(&tk.epoch)) {
                return Err(ConfigError::TunnelKey {
                    peer: t.peer_site,
                    epoch: tk.epoch,
                });
            }
            for spi in std::iter::once(t.out.spi).chain(t.inbound.iter().map(|i| i.spi)) {
                if spi < 0x100 {
                    return Err(ConfigError::ReservedSpi { spi });
                }
            }
            for i in &t.inbound {
                if !in_spis.insert(i.spi) {
                    return Err(ConfigError::DuplicateSpi { spi: i.spi });
                }
            }
            for cidrs in [&t.local_cidrs, &t.remote_cidrs] {
                if cidrs.is_empty() {
                    return Err(ConfigError::EmptySelector(t.peer_site));
                }
                if cidrs.len() > MAX_CIDRS_PER_SELECTOR {
                    return Err(ConfigError::TooManyCidrs {
                        peer: t.peer_site,
                        count: cidrs.len(),
                    });
                }
                if let Some(c) = cidrs.iter().find(|c| c.trunc() != **c) {
                    return Err(ConfigError::NonCanonicalCidr {
                        peer: t.peer_site,
                        cidr: *c,
                    });
                }
            }
            for cidr in &t.remote_cidrs {
                if let Some((other, _)) = remotes
                    .iter()
                    .find(|(o, _)| o.contains(cidr) || cidr.contains(o))
                {
                    return Err(ConfigError::OverlappingRemote {
                        peer: t.peer_site,
                        cidr: *cidr,
                        other: *other,
                    });
                }
                remotes.push((*cidr, t.peer_site));
            }
        }
        if let Some(p) = &self.probe {
            p.validate(self.site_id, self.local_address)?;
        }
        if let Some(ha) = &self.ha {
            ha.validate(self.member, self.local_address)?;
        }
        Ok(())
    }
}

impl ConnectivityProbe {
    /// Bounds (so a hostile server cannot make an appliance flood), and every
    /// target a distinct other site at a distinct usable address.
    pub fn validate(&self, own_site: Uuid, own_address: Ipv4Addr) -> Result<(), ConfigError> {
        if !PROBE_COUNTS.contains(&self.count) {
            return Err(ConfigError::ProbeCount(self.count));
        }
        if !PROBE_INTERVALS_MS.contains(&self.interval_ms) {
            return Err(ConfigError::ProbeInterval(self.interval_ms));
        }
        if self.targets.is_empty() || self.targets.len() > MAX_PROBE_TARGETS {
            return Err(ConfigError::ProbeTargets(self.targets.len()));
        }
        let mut peers = BTreeSet::new();
        let mut addresses = BTreeSet::new();
        for t in &self.targets {
            if t.peer_site == own_site || !peers.insert(t.peer_site) {
                return Err(ConfigError::ProbePeer(t.peer_site));
            }
            let a = t.address;
            if a.is_unspecified()
                || a.is_broadcast()
                || a.is_multicast()
                || a.is_loopback()
                || a == own_address
                || !addresses.insert(a)
            {
                return Err(ConfigError::ProbeAddress(a));
            }
        }
        Ok(())
    }

    /// Echoes sent, across all targets.
    pub fn echoes(&self) -> usize {
        self.targets.len() * self.count as usize
    }
}

/// What one appliance measured towards one peer site.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub peer_site: Uuid,
    pub sent: u16,
    pub received: u16,
    /// Round-trip times of the replies, in microseconds; absent when none came back.
    #[serde(default)]
    pub rtt_min_us: Option<u32>,
    #[serde(default)]
    pub rtt_avg_us: Option<u32>,
    #[serde(default)]
    pub rtt_max_us: Option<u32>,
}

/// An appliance's answer to a [`ConnectivityProbe`], posted once it ran.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReport {
    pub probe_id: Uuid,
    pub results: Vec<ProbeResult>,
}

/// Why a probe report was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReportError {
    #[error("the report is for probe {got}, not {expected}")]
    WrongProbe { expected: Uuid, got: Uuid },
    #[error("{0} results exceed the probe's targets")]
    TooMany(usize),
    #[error("peer {0} is not a target of this appliance's probe, or is reported twice")]
    UnknownPeer(Uuid),
    #[error("peer {peer}: {sent} echoes sent, but the probe asked for {count}")]
    Sent { peer: Uuid, sent: u16, count: u16 },
    #[error("peer {peer}: {received} replies to {sent} echoes")]
    Received {
        peer: Uuid,
        sent: u16,
        received: u16,
    },
    #[error("peer {0}: round-trip times must be given exactly when replies came back, with min <= avg <= max <= {PROBE_ECHO_TIMEOUT_MS} ms")]
    Rtt(Uuid),
}

impl ProbeReport {
    /// Checks the report against the probe it answers: only its targets,
    /// each at most once, with `count` echoes sent and consistent numbers.
    pub fn validate(&self, probe: &ConnectivityProbe) -> Result<(), ReportError> {
        if self.probe_id != probe.id {
            return Err(ReportError::WrongProbe {
                expected: probe.id,
                got: self.probe_id,
            });
        }
        if self.results.len() > probe.targets.len() {
            return Err(ReportError::TooMany(self.results.len()));
        }
        let mut seen = BTreeSet::new();
        for r in &self.results {
            let peer = r.peer_site;
            if !probe.targets.iter().any(|t| t.peer_site == peer) || !seen.insert(peer) {
                return Err(ReportError::UnknownPeer(peer));
            }
            if r.sent != probe.count {
                return Err(ReportError::Sent {
                    peer,
                    sent: r.sent,
                    count: probe.count,
                });
            }
            if r.received > r.sent {
                return Err(ReportError::Received {
                    peer,
                    sent: r.sent,
                    received: r.received,
                });
            }
            let rtts = [r.rtt_min_us, r.rtt_avg_us, r.rtt_max_us];
            let consistent = match rtts {
                [None, None, None] => r.received == 0,
                [Some(min), Some(avg), Some(max)] => {
                    r.received > 0
                        && min <= avg
                        && avg <= max
                        && max <= PROBE_ECHO_TIMEOUT_MS * 1000
                }
                _ => false,
            };
            if !consistent {
                return Err(ReportError::Rtt(peer));
            }
        }
        Ok(())
    }
}

/// How one tunnel looks from this appliance, read from the kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelStatus {
    pub peer_site: Uuid,
    pub state: TunnelState,
    /// The epoch this appliance sends with on the tunnel.
    #[serde(default)]
    pub out_epoch: u32,
    pub out_bytes: u64,
    pub out_packets: u64,
    pub in_bytes: u64,
    pub in_packets: u64,
    /// Replay-window drops plus integrity failures on inbound SAs.
    pub in_errors: u64,
    /// The outbound SA the kernel has for the tunnel (protocol 3): the
    /// server keeps it in the peers' configs until the sender has moved on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_spi: Option<u32>,
    /// The tunnel's inbound SAs the kernel has (protocol 3): a sender moves
    /// to a new generation only once every live receiver lists it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_spis: Option<Vec<u32>>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TunnelState {
    /// Programmed, nothing received yet.
    #[default]
    Pending,
    /// Traffic arrived from the peer.
    Up,
    /// Up, with a second key epoch in play: new inbound SAs are installed
    /// next to the old ones until every sender has moved to the new epoch.
    Rekeying,
    /// The kernel lacks this tunnel's SAs or policies.
    Down,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HaRole {
    Active,
    Passive,
}

/// Sent periodically by every appliance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub agent_version: String,
    /// The config version the kernel now matches (None before the first).
    pub applied_version: Option<u64>,
    /// Why the latest config was not applied, if it was refused.
    #[serde(default)]
    pub config_error: Option<String>,
    pub ha_role: HaRole,
    /// The key epochs whose inbound SAs the applied config installed: the
    /// server moves peers' outbound SAs to an epoch only once every live
    /// appliance of the receiving site lists it.
    #[serde(default)]
    pub epochs: Vec<u32>,
    pub tunnels: Vec<TunnelStatus>,
    /// Why it has `ha_role`, and since when (absent from agents before
    /// failover existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha: Option<HaStatus>,
    /// What the agent's periodic check of its kernel found changed behind
    /// its back and put back (absent before the first repair, and from
    /// agents before the check existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repairs: Option<Repairs>,
}

/// Drift the agent repaired since it started: SAs, policies or routes of
/// the applied config that someone deleted or changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repairs {
    /// Repairs since the agent started (at least 1).
    pub count: u64,
    /// Kernel objects the last repair put back or replaced (0: the kernel
    /// had lost SAs, so the agent moved to a fresh SA generation instead).
    pub last_changes: u32,
    /// How long ago the last repair was, by the agent's clock.
    pub last_ago_ms: u64,
}

#[cfg(test)]
mod tests;
