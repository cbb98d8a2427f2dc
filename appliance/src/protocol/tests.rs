use super::*;

pub(crate) fn sample_config(tunnels: usize) -> DesiredConfig {
    DesiredConfig {
        protocol: PROTOCOL_VERSION,
        version: 7,
        network_id: Uuid::from_u128(1),
        site_id: Uuid::from_u128(2),
        member: Member::A,
        local_address: Ipv4Addr::new(198, 51, 100, 1),
        nat_traversal: false,
        key: EpochKey {
            epoch: 1,
            kms_key_arn: "arn:aws:kms:us-east-1:111122223333:key/k".into(),
            region: "us-east-1".into(),
            ciphertext: "Y2lwaGVy".into(),
        },
        tunnels: (0..tunnels as u32)
            .map(|i| Tunnel {
                peer_site: Uuid::from_u128(100 + i as u128),
                peer_address: Ipv4Addr::from(0xC633_6400 + 2 + i),
                reqid: 1 + i,
                out_spi: 0x1000 + i,
                in_spis: [0x2000 + 2 * i, 0x2001 + 2 * i],
                local_cidrs: vec!["10.0.0.0/16".parse().expect("literal")],
                remote_cidrs: vec![Ipv4Net::new(Ipv4Addr::from(0x0A01_0000 + (i << 16)), 16)
                    .expect("prefix 16 is valid")],
            })
            .collect(),
    }
}

#[test]
fn a_well_formed_config_passes() {
    assert_eq!(sample_config(3).validate(), Ok(()));
}

#[test]
fn config_round_trips_through_json() {
    let c = sample_config(2);
    let json = serde_json::to_string(&c).expect("serializes");
    assert!(json.contains("\"member\":\"a\""));
    let back: DesiredConfig = serde_json::from_str(&json).expect("parses");
    assert_eq!(back, c);
}

#[test]
fn hostile_configs_are_refused_as_a_whole() {
    let mut c = sample_config(2);
    c.protocol = 9;
    assert_eq!(c.validate(), Err(ConfigError::Protocol(9)));

    let c = sample_config(MAX_TUNNELS + 1);
    assert_eq!(
        c.validate(),
        Err(ConfigError::TooManyTunnels(MAX_TUNNELS + 1))
    );

    let mut c = sample_config(2);
    c.tunnels[1].in_spis[0] = c.tunnels[0].in_spis[1];
    assert!(matches!(
        c.validate(),
        Err(ConfigError::DuplicateSpi { .. })
    ));

    let mut c = sample_config(2);
    c.tunnels[1].out_spi = 7;
    assert_eq!(c.validate(), Err(ConfigError::ReservedSpi { spi: 7 }));

    let mut c = sample_config(2);
    c.tunnels[1].remote_cidrs = vec!["10.1.128.0/17".parse().expect("literal")];
    assert!(matches!(
        c.validate(),
        Err(ConfigError::OverlappingRemote { .. })
    ));

    let mut c = sample_config(1);
    c.tunnels[0].local_cidrs = vec!["10.0.0.1/16".parse().expect("literal")];
    assert!(matches!(
        c.validate(),
        Err(ConfigError::NonCanonicalCidr { .. })
    ));

    let mut c = sample_config(1);
    c.tunnels[0].remote_cidrs.clear();
    assert!(matches!(c.validate(), Err(ConfigError::EmptySelector(_))));

    let mut c = sample_config(1);
    c.tunnels[0].remote_cidrs = (0..=MAX_CIDRS_PER_SELECTOR as u32)
        .map(|i| Ipv4Net::new(Ipv4Addr::from(0x0B00_0000 + (i << 8)), 24).expect("valid"))
        .collect();
    assert!(matches!(
        c.validate(),
        Err(ConfigError::TooManyCidrs { .. })
    ));

    let mut c = sample_config(2);
    c.tunnels[1].reqid = c.tunnels[0].reqid;
    assert!(matches!(c.validate(), Err(ConfigError::BadReqid { .. })));
    c.tunnels[1].reqid = 1 << 30;
    assert!(matches!(c.validate(), Err(ConfigError::BadReqid { .. })));

    let mut c = sample_config(2);
    c.tunnels[1].peer_site = c.tunnels[0].peer_site;
    assert!(matches!(c.validate(), Err(ConfigError::DuplicatePeer(_))));

    let mut c = sample_config(1);
    c.tunnels[0].peer_address = Ipv4Addr::UNSPECIFIED;
    assert!(matches!(c.validate(), Err(ConfigError::BadPeerAddress(_))));

    let mut c = sample_config(1);
    c.key.ciphertext.clear();
    assert_eq!(c.validate(), Err(ConfigError::EmptyKey));
}

#[test]
fn unknown_json_fields_and_bad_cidrs_fail_to_parse() {
    let mut v = serde_json::to_value(sample_config(1)).expect("serializes");
    v["tunnels"][0]["remote_cidrs"][0] = "10.1.0.0/33".into();
    assert!(serde_json::from_value::<DesiredConfig>(v).is_err());
}
