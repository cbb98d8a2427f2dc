//! One appliance's desired config, compiled from the network's stored state.
//! The version is derived from the content, so any change anywhere (a peer's
//! address, a rotated key, a new site) yields a new version.

use super::rotation;
use super::{store::ApplianceRow, ApplianceError};
use crate::networks::{model, store as networks};
use appliance::protocol::{
    spi_for_epoch, DesiredConfig, EpochKey, InboundSa, OutboundSa, Tunnel, PROTOCOL_VERSION,
};
use base64::Engine;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

pub async fn desired_config(
    pool: &PgPool,
    appliance: &ApplianceRow,
) -> Result<DesiredConfig, ApplianceError> {
    let net = networks::find_any(pool, appliance.network_id)
        .await?
        .ok_or(ApplianceError::SiteGone)?;
    let sites = networks::sites(pool, net.id).await?;
    let plans = model::compile(&net, &sites).map_err(|e| {
        tracing::error!(network_id = %net.id, error = %e, "a stored network no longer compiles");
        ApplianceError::Internal
    })?;
    let plan = plans
        .get(&appliance.site_id)
        .ok_or(ApplianceError::SiteGone)?;
    let epochs = rotation::in_play(pool, net.id)
        .await?
        .ok_or(ApplianceError::Internal)?;
    // During a rotation a tunnel sends with the new epoch once every live
    // appliance of the peer site accepts it (see `rotation`).
    let peer_accepts_new = match &epochs.retiring {
        None => None,
        Some(_) => Some(rotation::sites_accepting(pool, net.id, epochs.active.epoch).await?),
    };
    let member = appliance.member.index();
    let tunnels = plan
        .tunnels
        .iter()
        .filter_map(|t| {
            // A peer without an address yet (still provisioning) joins in a
            // later version.
            let peer = sites.iter().find(|s| s.id == t.peer)?;
            let peer_address = peer.output("PublicIp")?.parse().ok()?;
            let out_epoch = match (&epochs.retiring, &peer_accepts_new) {
                (Some(old), Some(ready)) if !ready.get(&t.peer).copied().unwrap_or(true) => {
                    old.epoch
                }
                _ => epochs.active.epoch,
            } as u32;
            Some(Tunnel {
                peer_site: t.peer,
                peer_address,
                reqid: t.reqid,
                out: OutboundSa {
                    epoch: out_epoch,
                    spi: spi_for_epoch(t.out_spis[member], out_epoch),
                },
                inbound: epochs
                    .all()
                    .flat_map(|e| {
                        let e = e.epoch as u32;
                        InboundSa::pair(e, t.in_spis.map(|spi| spi_for_epoch(spi, e)))
                    })
                    .collect(),
                local_cidrs: t.local_cidrs.clone(),
                remote_cidrs: t.remote_cidrs.clone(),
            })
        })
        .collect();
    let mut config = DesiredConfig {
        protocol: PROTOCOL_VERSION,
        version: 0,
        network_id: net.id,
        site_id: appliance.site_id,
        member: appliance.member,
        local_address: appliance.private_ip,
        nat_traversal: net.options.nat_t,
        keys: epochs
            .all()
            .map(|e| EpochKey {
                epoch: e.epoch as u32,
                region: e
                    .kms_key_arn
                    .split(':')
                    .nth(3)
                    .unwrap_or_default()
                    .to_string(),
                kms_key_arn: e.kms_key_arn.clone(),
                ciphertext: base64::engine::general_purpose::STANDARD.encode(&e.ciphertext),
            })
            .collect(),
        tunnels,
    };
    config.version = content_version(&config);
    Ok(config)
}

/// A positive 63-bit digest of the config (it is stored as a bigint).
fn content_version(config: &DesiredConfig) -> u64 {
    let bytes = serde_json::to_vec(config).expect("a DesiredConfig always serializes");
    let d = Sha256::digest(&bytes);
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]) >> 1
}
