//! One appliance's desired config, compiled from the network's stored state.
//! The version is derived from the content, so any change anywhere (a peer's
//! address, a rotated key, a new site) yields a new version.

use super::probe;
use super::rotation::{self, LIVE_WITHIN};
use super::store::{self, ApplianceRow, MemberSas};
use super::ApplianceError;
use crate::failover::config::{Pairs, Recipient, Timing};
use crate::networks::{
    model,
    store::{self as networks, NetworkRow, SiteRow},
};
use crate::topology::SitePlan;
use base64::Engine;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use std::collections::BTreeMap;
use uuid::Uuid;
use vpcmesh_protocol::{
    spi_epoch_parity, spi_for, DesiredConfig, EpochKey, InboundSa, KeyScope, Member, OutboundSa,
    Tunnel, TunnelKey, GENERATIONS_PROTOCOL_VERSION, PREVIOUS_PROTOCOL_VERSION, PROTOCOL_VERSION,
    SPI_BASE_MASK,
};

/// The protocols this server renders configs in: its own and the previous
/// one (agents of the last release keep working during an upgrade).
pub fn served_protocol(asked: Option<u16>) -> Result<u16, ApplianceError> {
    match asked.unwrap_or(PREVIOUS_PROTOCOL_VERSION) {
        p @ PREVIOUS_PROTOCOL_VERSION..=PROTOCOL_VERSION => Ok(p),
        other => Err(ApplianceError::InvalidInput {
            field: "protocol",
            message: format!(
                "protocol {other} is not served; this server speaks {PREVIOUS_PROTOCOL_VERSION} to {PROTOCOL_VERSION}"
            ),
        }),
    }
}

/// The SA generations of a network's members and what their kernels hold.
struct Generations(BTreeMap<(Uuid, Member), MemberSas>);

impl Generations {
    fn of(&self, site: Uuid, member: Member) -> u32 {
        self.0.get(&(site, member)).map_or(0, |m| m.generation)
    }

    /// A flow's generation: its sender's plus the receiving site's two
    /// members'. Any of the three kernels starting over makes it new.
    fn flow(&self, from: (Uuid, Member), to: Uuid) -> u32 {
        self.of(from.0, from.1) + self.of(to, Member::A) + self.of(to, Member::B)
    }

    /// A live appliance of `site` runs an agent of the previous protocol.
    fn speaks_previous(&self, site: Uuid) -> bool {
        Member::BOTH
            .into_iter()
            .filter_map(|m| self.0.get(&(site, m)))
            .any(|m| m.speaks_previous)
    }

    fn reporting(&self, site: Uuid, member: Member) -> Option<&MemberSas> {
        self.0.get(&(site, member)).filter(|m| m.reporting)
    }

    /// Do all reporting appliances of `site` hold inbound SA `spi` on their
    /// tunnel to `from_site`? (Agents of protocol 2 do not say: they count
    /// as holding it, as before generations.)
    fn site_holds(&self, site: Uuid, from_site: Uuid, spi: u32) -> bool {
        Member::BOTH
            .into_iter()
            .filter_map(|m| self.reporting(site, m))
            .all(|r| {
                !r.reports_spis
                    || r.held
                        .get(&from_site)
                        .is_some_and(|(_, ins)| ins.contains(&spi))
            })
    }

    /// The outbound SA a reporting member still holds towards `peer` from
    /// an earlier generation of the flow with `base` in the epoch of
    /// parity `parity` (not `current`).
    fn still_sending(
        &self,
        (site, member): (Uuid, Member),
        peer: Uuid,
        base: u32,
        parity: u32,
        current: u32,
    ) -> Option<u32> {
        let held = self.reporting(site, member)?.held.get(&peer)?.0?;
        (held != current
            && held & SPI_BASE_MASK == base & SPI_BASE_MASK
            && spi_epoch_parity(held) == parity)
            .then_some(held)
    }
}

/// What every appliance config of a network is cut from: read and
/// compiled once (see `snapshots`), shared by all its appliances' polls.
pub struct NetworkSnapshot {
    net: NetworkRow,
    sites: Vec<SiteRow>,
    plans: BTreeMap<Uuid, SitePlan>,
    epochs: rotation::InPlay,
    /// During a rotation: which sites accept the new epoch.
    peer_accepts_new: Option<BTreeMap<Uuid, bool>>,
    gens: Generations,
    /// The sites' HA pairs.
    pairs: Pairs,
    /// The connectivity check in progress.
    check: Option<probe::Running>,
}

impl NetworkSnapshot {
    pub async fn load(pool: &PgPool, network_id: Uuid) -> Result<Self, ApplianceError> {
        let net = networks::find_any(pool, network_id)
            .await?
            .ok_or(ApplianceError::SiteGone)?;
        let sites = networks::sites(pool, net.id).await?;
        let plans = model::compile(&net, &sites).map_err(|e| {
            tracing::error!(network_id = %net.id, error = %e, "a stored network no longer compiles");
            ApplianceError::Internal
        })?;
        let epochs = rotation::in_play(pool, net.id)
            .await?
            .ok_or(ApplianceError::Internal)?;
        // During a rotation a tunnel sends with the new epoch once every live
        // appliance of the peer site accepts it (see `rotation`).
        let peer_accepts_new = match &epochs.retiring {
            None => None,
            Some(_) => Some(rotation::sites_accepting(pool, net.id, epochs.active.epoch).await?),
        };
        let gens = Generations(
            store::member_sas(pool, net.id, LIVE_WITHIN)
                .await?
                .into_iter()
                .map(|m| ((m.site_id, m.member), m))
                .collect(),
        );
        // What the sites' HA pairs and a running check add to the configs:
        // read here once, not by every poll.
        let pairs = Pairs::load(pool, net.id).await?;
        let check = probe::running(pool, net.id).await?;
        Ok(NetworkSnapshot {
            net,
            sites,
            plans,
            epochs,
            peer_accepts_new,
            gens,
            pairs,
            check,
        })
    }
}

/// One appliance's config, cut from its network's snapshot.
pub fn desired_config(
    snapshot: &NetworkSnapshot,
    appliance: &ApplianceRow,
    protocol: u16,
    timing: Timing,
) -> Result<DesiredConfig, ApplianceError> {
    let NetworkSnapshot {
        net,
        sites,
        plans,
        epochs,
        peer_accepts_new,
        gens,
        pairs,
        check,
    } = snapshot;
    let plan = plans
        .get(&appliance.site_id)
        .ok_or(ApplianceError::SiteGone)?;
    if protocol < PROTOCOL_VERSION && epochs.all().any(|e| e.per_tunnel) {
        return Err(ApplianceError::AgentOutdated(protocol));
    }
    let me = (appliance.site_id, appliance.member);
    let member = appliance.member.index();
    let tunnels = plan
        .tunnels
        .iter()
        .filter_map(|t| {
            // A peer without an address yet (still provisioning) joins in a
            // later version.
            let peer = sites.iter().find(|s| s.id == t.peer)?;
            let peer_address = peer.output("PublicIp")?.parse().ok()?;
            let out_epoch = match (&epochs.retiring, peer_accepts_new) {
                (Some(old), Some(ready)) if !ready.get(&t.peer).copied().unwrap_or(true) => {
                    old.epoch
                }
                _ => epochs.active.epoch,
            } as u32;
            // A new generation is sent with once every reporting appliance
            // of the peer holds it; until then the old SA, if this
            // appliance still has it, carries the traffic.
            let base = t.out_spis[member];
            let spi = spi_for(base, out_epoch, gens.flow(me, t.peer));
            let out = match gens.still_sending(me, t.peer, base, out_epoch & 1, spi) {
                Some(old) if !gens.site_holds(t.peer, appliance.site_id, spi) => OutboundSa {
                    epoch: out_epoch,
                    spi: old,
                    carried: true,
                },
                _ => OutboundSa {
                    epoch: out_epoch,
                    spi,
                    carried: false,
                },
            };
            let mut inbound = Vec::new();
            for e in epochs.all().map(|e| e.epoch as u32) {
                for m in Member::BOTH {
                    let base = t.in_spis[m.index()];
                    let spi = spi_for(base, e, gens.flow((t.peer, m), appliance.site_id));
                    inbound.push(InboundSa {
                        epoch: e,
                        member: m,
                        spi,
                        carried: false,
                    });
                    // What the peer member still sends with, kept until it
                    // moves (protocol 2 agents know nothing of generations).
                    if protocol >= GENERATIONS_PROTOCOL_VERSION {
                        if let Some(old) =
                            gens.still_sending((t.peer, m), appliance.site_id, base, e & 1, spi)
                        {
                            inbound.push(InboundSa {
                                epoch: e,
                                member: m,
                                spi: old,
                                carried: true,
                            });
                        }
                    }
                }
            }
            // Both ends of an SA must agree on ESN: with an agent of
            // protocol 2 at either end, the tunnel keeps that agent's shape.
            let legacy_sa = [appliance.site_id, t.peer]
                .into_iter()
                .any(|site| gens.speaks_previous(site));
            // This tunnel's own key of every epoch kept per tunnel.
            let keys = epochs
                .all()
                .filter(|e| e.per_tunnel)
                .map(|e| {
                    let scope = KeyScope::pair(appliance.site_id, t.peer);
                    scoped_key(e, scope).map(|ciphertext| TunnelKey {
                        epoch: e.epoch as u32,
                        ciphertext,
                    })
                })
                .collect::<Result<Vec<_>, _>>();
            Some(keys.map(|keys| Tunnel {
                peer_site: t.peer,
                peer_address,
                reqid: t.reqid,
                out,
                inbound,
                local_cidrs: t.local_cidrs.clone(),
                remote_cidrs: t.remote_cidrs.clone(),
                legacy_sa,
                keys,
            }))
        })
        .collect::<Result<Vec<Tunnel>, ApplianceError>>()?;
    // A connectivity check of the network in progress (agents of the
    // previous protocol cannot run one; a site without tunnels has no peer).
    let probe = if protocol >= GENERATIONS_PROTOCOL_VERSION && !tunnels.is_empty() {
        probe::for_config(check.as_ref(), appliance)
    } else {
        None
    };
    // The site's HA pair (agents of the previous protocol know nothing of it
    // and keep member A active).
    let ha = if protocol >= GENERATIONS_PROTOCOL_VERSION {
        let to = Recipient {
            appliance_id: appliance.id,
            site_id: appliance.site_id,
            member: appliance.member,
            private_ip: appliance.private_ip,
        };
        pairs.for_member(to, timing)
    } else {
        None
    };
    let mut config = DesiredConfig {
        protocol,
        version: 0,
        network_id: net.id,
        site_id: appliance.site_id,
        member: appliance.member,
        generation: gens.of(appliance.site_id, appliance.member),
        local_address: appliance.private_ip,
        nat_traversal: net.options.nat_t,
        keys: epochs
            .all()
            .map(|e| {
                let ciphertext = match (&e.ciphertext, e.per_tunnel) {
                    (_, true) => scoped_key(e, KeyScope::Site(appliance.site_id))?,
                    (Some(c), false) => base64::engine::general_purpose::STANDARD.encode(c),
                    (None, false) => return Err(ApplianceError::Internal),
                };
                Ok(EpochKey {
                    epoch: e.epoch as u32,
                    region: e
                        .kms_key_arn
                        .split(':')
                        .nth(3)
                        .unwrap_or_default()
                        .to_string(),
                    kms_key_arn: e.kms_key_arn.clone(),
                    ciphertext,
                    per_tunnel: e.per_tunnel,
                })
            })
            .collect::<Result<Vec<_>, ApplianceError>>()?,
        tunnels,
        probe,
        ha,
    };
    config.version = content_version(&config);
    Ok(config)
}

/// The base64 ciphertext of `epoch`'s key for `scope`. Every site with
/// tunnels and every tunnel got one when the epoch was made; a missing one
/// is a server fault, never papered over with another key.
fn scoped_key(epoch: &rotation::EpochRow, scope: KeyScope) -> Result<String, ApplianceError> {
    match epoch.scoped.get(&scope) {
        Some(c) => Ok(base64::engine::general_purpose::STANDARD.encode(c)),
        None => {
            tracing::error!(
                epoch = epoch.epoch,
                ?scope,
                "an epoch kept per tunnel lacks a key"
            );
            Err(ApplianceError::Internal)
        }
    }
}

/// A positive 63-bit digest of the config (it is stored as a bigint).
fn content_version(config: &DesiredConfig) -> u64 {
    let bytes = serde_json::to_vec(config).expect("a DesiredConfig always serializes");
    let d = Sha256::digest(&bytes);
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]) >> 1
}
