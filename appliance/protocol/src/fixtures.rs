//! Configs for tests of the protocol's users (feature `fixtures`).

use crate::*;

/// A valid config with `tunnels` tunnels.
pub fn sample_config(tunnels: usize) -> DesiredConfig {
    DesiredConfig {
        protocol: PROTOCOL_VERSION,
        version: 7,
        network_id: Uuid::from_u128(1),
        site_id: Uuid::from_u128(2),
        member: Member::A,
        generation: 1,
        local_address: Ipv4Addr::new(198, 51, 100, 1),
        nat_traversal: false,
        keys: vec![EpochKey {
            epoch: 1,
            kms_key_arn: "arn:aws:kms:us-east-1:111122223333:key/k".into(),
            region: "us-east-1".into(),
            ciphertext: "Y2lwaGVy".into(),
            per_tunnel: false,
        }],
        tunnels: (0..tunnels as u32)
            .map(|i| Tunnel {
                peer_site: Uuid::from_u128(100 + i as u128),
                peer_address: Ipv4Addr::from(0xC633_6400 + 2 + i),
                reqid: 1 + i,
                out: OutboundSa {
                    epoch: 1,
                    spi: 0x1000 + i,
                    carried: false,
                },
                inbound: InboundSa::pair(1, [0x2000 + 2 * i, 0x2001 + 2 * i]).to_vec(),
                local_cidrs: vec!["10.0.0.0/16".parse().expect("literal")],
                remote_cidrs: vec![Ipv4Net::new(Ipv4Addr::from(0x0A01_0000 + (i << 16)), 16)
                    .expect("prefix 16 is valid")],
                legacy_sa: false,
                keys: Vec::new(),
            })
            .collect(),
        probe: None,
        ha: None,
    }
}

/// A rotation in progress: two epochs, both accepted, sending on either.
pub fn rotating(mut c: DesiredConfig, out_epoch: u32) -> DesiredConfig {
    let mut next = c.keys[0].clone();
    next.epoch = 2;
    next.ciphertext = "bmV4dA==".into();
    c.keys.insert(0, next);
    for t in &mut c.tunnels {
        let old: Vec<InboundSa> = t.inbound.clone();
        for i in old {
            t.inbound.push(InboundSa {
                epoch: 2,
                // The fixtures' epoch-1 SPIs ignore the parity convention:
                // flip the top bit, as spi_for does between epochs.
                spi: i.spi ^ (1 << 31),
                ..i
            });
        }
        if out_epoch == 2 {
            t.out = OutboundSa {
                epoch: 2,
                spi: t.out.spi ^ (1 << 31),
                carried: false,
            };
        }
    }
    c
}
