use super::*;
use crate::fixtures::{rotating, sample_config};

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
    c.tunnels[1].inbound[0].spi = c.tunnels[0].inbound[1].spi;
    assert!(matches!(
        c.validate(),
        Err(ConfigError::DuplicateSpi { .. })
    ));

    let mut c = sample_config(2);
    c.tunnels[1].out.spi = 7;
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
    c.keys[0].ciphertext.clear();
    assert_eq!(c.validate(), Err(ConfigError::EmptyKey(1)));
}

#[test]
fn epochs_in_play_are_checked() {
    let mut c = sample_config(1);
    c.keys.clear();
    assert_eq!(c.validate(), Err(ConfigError::EpochCount(0)));

    let mut c = sample_config(1);
    c.keys.push(c.keys[0].clone());
    assert_eq!(c.validate(), Err(ConfigError::DuplicateEpoch(1)));

    let mut c = sample_config(1);
    for epoch in [2, 3] {
        let mut k = c.keys[0].clone();
        k.epoch = epoch;
        c.keys.push(k);
    }
    assert_eq!(c.validate(), Err(ConfigError::EpochCount(3)));

    // Sending with, or accepting, an epoch the config holds no key for.
    let mut c = sample_config(1);
    c.tunnels[0].out.epoch = 2;
    assert!(matches!(
        c.validate(),
        Err(ConfigError::UnknownEpoch { epoch: 2, .. })
    ));
    let mut c = sample_config(1);
    c.tunnels[0].inbound[1].epoch = 2;
    assert!(matches!(
        c.validate(),
        Err(ConfigError::UnknownEpoch { epoch: 2, .. })
    ));

    // The same (epoch, member) twice, or nothing accepted at all.
    let mut c = sample_config(1);
    c.tunnels[0].inbound[1].member = Member::A;
    assert!(matches!(c.validate(), Err(ConfigError::BadInbound(_))));
    let mut c = sample_config(1);
    c.tunnels[0].inbound.clear();
    assert!(matches!(c.validate(), Err(ConfigError::BadInbound(_))));
}

#[test]
fn a_rotation_in_progress_is_a_valid_config() {
    for out in [1, 2] {
        let c = rotating(sample_config(3), out);
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.epochs(), vec![2, 1]);
    }
}

#[test]
fn the_two_epochs_in_play_never_share_an_spi() {
    for base in [0x100, 0x1234, 0xffff] {
        for generation in [0, 1, MAX_MEMBER_GENERATION * 3] {
            assert_ne!(spi_for(base, 1, generation), spi_for(base, 2, generation));
            assert_eq!(spi_for(base, 1, generation), spi_for(base, 3, generation));
            assert!(spi_for(base, 2, generation) >= 0x100);
            assert_eq!(spi_generation(spi_for(base, 2, generation)), generation);
            assert_eq!(spi_epoch_parity(spi_for(base, 3, generation)), 1);
        }
    }
}

#[test]
fn every_flow_generation_has_its_own_spi() {
    // The sum of three member generations at their maximum still fits, so
    // no two generations of one flow share an SPI (and so a key).
    let base = 0x4321;
    let spis: BTreeSet<u32> = (0..=MAX_MEMBER_GENERATION * 3)
        .map(|g| spi_for(base, 1, g))
        .collect();
    assert_eq!(spis.len() as u32, MAX_MEMBER_GENERATION * 3 + 1);
}

#[test]
fn a_peer_switching_generations_is_accepted_once_per_member_and_epoch() {
    let mut c = sample_config(1);
    let mut carried = c.tunnels[0].inbound[0];
    carried.spi ^= 1 << 16;
    carried.carried = true;
    c.tunnels[0].inbound.push(carried);
    assert_eq!(c.validate(), Ok(()));
    c.tunnels[0].inbound.push(InboundSa {
        spi: carried.spi ^ (1 << 17),
        ..carried
    });
    assert!(matches!(c.validate(), Err(ConfigError::BadInbound(_))));
}

#[test]
fn a_config_for_another_appliance_is_refused() {
    let c = sample_config(1);
    assert_eq!(c.check_owner(c.network_id, c.site_id, Member::A), Ok(()));
    for (n, s, m) in [
        (Uuid::from_u128(9), c.site_id, Member::A),
        (c.network_id, Uuid::from_u128(9), Member::A),
        (c.network_id, c.site_id, Member::B),
    ] {
        assert!(matches!(
            c.check_owner(n, s, m),
            Err(ConfigError::NotOurs { .. })
        ));
    }
}

#[test]
fn protocol_2_shapes_still_parse() {
    // What a protocol-2 server or agent sends: no generations, no carried
    // flags, no SPIs in the status.
    let mut v = serde_json::to_value(sample_config(1)).expect("serializes");
    v.as_object_mut().expect("object").remove("generation");
    v["protocol"] = 2.into();
    let c: DesiredConfig = serde_json::from_value(v).expect("parses");
    assert_eq!((c.generation, c.tunnels[0].out.carried), (0, false));
    let s: TunnelStatus = serde_json::from_str(
        r#"{"peer_site":"00000000-0000-0000-0000-000000000001","state":"up","out_bytes":1,
            "out_packets":1,"in_bytes":1,"in_packets":1,"in_errors":0}"#,
    )
    .expect("a protocol-2 tunnel status");
    assert_eq!((s.out_spi, s.inbound_spis), (None, None));
    let r: RegisterResponse = serde_json::from_str(
        r#"{"appliance_id":"00000000-0000-0000-0000-000000000001","credential":"vma_x",
            "network_id":"00000000-0000-0000-0000-000000000002",
            "site_id":"00000000-0000-0000-0000-000000000003","member":"a"}"#,
    )
    .expect("a protocol-2 registration answer");
    assert_eq!(r.generation, 0);
}

#[test]
fn unknown_json_fields_and_bad_cidrs_fail_to_parse() {
    let mut v = serde_json::to_value(sample_config(1)).expect("serializes");
    v["tunnels"][0]["remote_cidrs"][0] = "10.1.0.0/33".into();
    assert!(serde_json::from_value::<DesiredConfig>(v).is_err());
}

fn with_probe(targets: usize) -> DesiredConfig {
    let mut c = sample_config(targets);
    c.probe = Some(ConnectivityProbe {
        id: Uuid::from_u128(0x9b0e),
        count: 5,
        interval_ms: 200,
        targets: c
            .tunnels
            .iter()
            .enumerate()
            .map(|(i, t)| ProbeTarget {
                peer_site: t.peer_site,
                address: Ipv4Addr::new(10, 1 + i as u8, 0, 10),
            })
            .collect(),
    });
    c
}

fn probe_of(c: &DesiredConfig) -> &ConnectivityProbe {
    c.probe.as_ref().expect("the config carries a probe")
}

#[test]
fn a_config_with_a_probe_passes_and_round_trips() {
    let c = with_probe(3);
    assert_eq!(c.validate(), Ok(()));
    assert_eq!(probe_of(&c).echoes(), 15);
    let back: DesiredConfig =
        serde_json::from_str(&serde_json::to_string(&c).expect("serializes")).expect("parses");
    assert_eq!(back, c);
    // Without a probe the field is absent, so configs without a check look
    // exactly as before (and hash to the same version).
    let json = serde_json::to_string(&sample_config(1)).expect("serializes");
    assert!(!json.contains("probe"), "{json}");
}

#[test]
fn hostile_probes_refuse_the_whole_config() {
    let refused = |f: &dyn Fn(&mut ConnectivityProbe)| {
        let mut c = with_probe(2);
        f(c.probe.as_mut().expect("probe"));
        c.validate()
    };
    assert_eq!(refused(&|p| p.count = 0), Err(ConfigError::ProbeCount(0)));
    assert_eq!(refused(&|p| p.count = 21), Err(ConfigError::ProbeCount(21)));
    assert_eq!(
        refused(&|p| p.interval_ms = 99),
        Err(ConfigError::ProbeInterval(99))
    );
    assert_eq!(
        refused(&|p| p.interval_ms = 1001),
        Err(ConfigError::ProbeInterval(1001))
    );
    assert_eq!(
        refused(&|p| p.targets.clear()),
        Err(ConfigError::ProbeTargets(0))
    );
    assert_eq!(
        refused(&|p| {
            let t = p.targets[0];
            p.targets = vec![t; MAX_PROBE_TARGETS + 1];
        }),
        Err(ConfigError::ProbeTargets(MAX_PROBE_TARGETS + 1))
    );
    // The same peer twice, or the appliance's own site.
    let c = with_probe(2);
    let first = probe_of(&c).targets[0].peer_site;
    assert_eq!(
        refused(&|p| p.targets[1].peer_site = p.targets[0].peer_site),
        Err(ConfigError::ProbePeer(first))
    );
    assert_eq!(
        refused(&|p| p.targets[0].peer_site = Uuid::from_u128(2)),
        Err(ConfigError::ProbePeer(Uuid::from_u128(2)))
    );
    // Addresses that are not one unicast host each.
    for bad in [
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        Ipv4Addr::new(224, 0, 0, 1),
        Ipv4Addr::LOCALHOST,
        Ipv4Addr::new(198, 51, 100, 1),
    ] {
        assert_eq!(
            refused(&|p| p.targets[1].address = bad),
            Err(ConfigError::ProbeAddress(bad)),
            "{bad}"
        );
    }
    let twice = probe_of(&c).targets[0].address;
    assert_eq!(
        refused(&|p| p.targets[1].address = p.targets[0].address),
        Err(ConfigError::ProbeAddress(twice))
    );
}

fn report_for(p: &ConnectivityProbe) -> ProbeReport {
    ProbeReport {
        probe_id: p.id,
        results: p
            .targets
            .iter()
            .map(|t| ProbeResult {
                peer_site: t.peer_site,
                sent: p.count,
                received: p.count - 1,
                rtt_min_us: Some(800),
                rtt_avg_us: Some(1200),
                rtt_max_us: Some(2500),
            })
            .collect(),
    }
}

#[test]
fn a_consistent_report_passes_and_a_partial_one_too() {
    let c = with_probe(3);
    let p = probe_of(&c);
    assert_eq!(report_for(p).validate(p), Ok(()));
    let mut r = report_for(p);
    r.results.truncate(1);
    r.results[0] = ProbeResult {
        received: 0,
        rtt_min_us: None,
        rtt_avg_us: None,
        rtt_max_us: None,
        ..r.results[0]
    };
    assert_eq!(r.validate(p), Ok(()));
}

#[test]
fn hostile_reports_are_refused() {
    let c = with_probe(2);
    let p = probe_of(&c);
    let peer = p.targets[0].peer_site;
    let refused = |f: &dyn Fn(&mut ProbeReport)| {
        let mut r = report_for(p);
        f(&mut r);
        r.validate(p)
    };
    assert!(matches!(
        refused(&|r| r.probe_id = Uuid::from_u128(7)),
        Err(ReportError::WrongProbe { .. })
    ));
    assert_eq!(
        refused(&|r| r.results[0].peer_site = Uuid::from_u128(77)),
        Err(ReportError::UnknownPeer(Uuid::from_u128(77)))
    );
    assert_eq!(
        refused(&|r| r.results[1].peer_site = r.results[0].peer_site),
        Err(ReportError::UnknownPeer(peer))
    );
    assert_eq!(
        refused(&|r| r.results.push(r.results[0])),
        Err(ReportError::TooMany(3))
    );
    assert_eq!(
        refused(&|r| r.results[0].sent = 4),
        Err(ReportError::Sent {
            peer,
            sent: 4,
            count: 5
        })
    );
    assert_eq!(
        refused(&|r| r.results[0].received = 6),
        Err(ReportError::Received {
            peer,
            sent: 5,
            received: 6
        })
    );
    // Times without replies, replies without times, disordered or
    // beyond the echo timeout.
    for f in [
        &(|r: &mut ProbeReport| r.results[0].received = 0) as &dyn Fn(&mut ProbeReport),
        &|r| r.results[0].rtt_avg_us = None,
        &|r| {
            r.results[0].rtt_min_us = None;
            r.results[0].rtt_avg_us = None;
            r.results[0].rtt_max_us = None;
        },
        &|r| r.results[0].rtt_min_us = Some(1300),
        &|r| r.results[0].rtt_max_us = Some(1000),
        &|r| r.results[0].rtt_max_us = Some(PROBE_ECHO_TIMEOUT_MS * 1000 + 1),
    ] {
        assert_eq!(refused(f), Err(ReportError::Rtt(peer)));
    }
}

/// `sample_config` with epoch 1 kept per tunnel: the site's own key and one
/// key on every tunnel.
fn per_tunnel_config(tunnels: usize) -> DesiredConfig {
    let mut c = sample_config(tunnels);
    c.keys[0].per_tunnel = true;
    for t in &mut c.tunnels {
        t.keys = vec![TunnelKey {
            epoch: 1,
            ciphertext: "cGFpcg==".into(),
        }];
    }
    c
}

#[test]
fn keys_per_tunnel_need_exactly_one_key_on_every_tunnel() {
    assert_eq!(per_tunnel_config(3).validate(), Ok(()));
    let peer = Uuid::from_u128(101);
    // A tunnel without its key, with two, with an empty one, or with a key
    // of an epoch not in play is refused as a whole.
    let mut c = per_tunnel_config(3);
    c.tunnels[1].keys.clear();
    assert_eq!(c.validate(), Err(ConfigError::TunnelKey { peer, epoch: 1 }));
    let mut c = per_tunnel_config(3);
    let again = c.tunnels[1].keys[0].clone();
    c.tunnels[1].keys.push(again);
    assert_eq!(c.validate(), Err(ConfigError::TunnelKey { peer, epoch: 1 }));
    let mut c = per_tunnel_config(3);
    c.tunnels[1].keys[0].ciphertext.clear();
    assert_eq!(c.validate(), Err(ConfigError::TunnelKey { peer, epoch: 1 }));
    let mut c = per_tunnel_config(3);
    c.tunnels[1].keys.push(TunnelKey {
        epoch: 2,
        ciphertext: "eA==".into(),
    });
    assert_eq!(c.validate(), Err(ConfigError::TunnelKey { peer, epoch: 2 }));
    // A network-wide epoch takes no tunnel keys.
    let mut c = sample_config(3);
    c.tunnels[1].keys = per_tunnel_config(3).tunnels[1].keys.clone();
    assert_eq!(c.validate(), Err(ConfigError::TunnelKey { peer, epoch: 1 }));
}

#[test]
fn both_ends_of_a_tunnel_name_its_key_alike_and_no_one_else_does() {
    let (a, b, c) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
    let n = Uuid::from_u128(9);
    let context = |scope| encryption_context(&n, 4, scope);
    assert_eq!(context(KeyScope::pair(a, b)), context(KeyScope::pair(b, a)));
    assert_ne!(context(KeyScope::pair(a, b)), context(KeyScope::pair(a, c)));
    assert_ne!(context(KeyScope::Site(a)), context(KeyScope::pair(a, b)));
    let sites = |scope: KeyScope| scope.sites().unwrap_or_default();
    assert_eq!(sites(KeyScope::pair(b, a)), format!("{a}/{b}"));
    assert_eq!(sites(KeyScope::Site(a)), format!("{a}/{a}"));
    // What the instance role of site b matches: "{b}/*" or "*/{b}".
    for scope in [
        KeyScope::pair(a, b),
        KeyScope::pair(b, c),
        KeyScope::Site(b),
    ] {
        let s = sites(scope);
        assert!(
            s.starts_with(&format!("{b}/")) || s.ends_with(&format!("/{b}")),
            "{s}"
        );
    }
    let s = sites(KeyScope::pair(a, c));
    assert!(!s.starts_with(&format!("{b}/")) && !s.ends_with(&format!("/{b}")));
    // Network keys keep the context they always had.
    assert_eq!(
        context(KeyScope::Network),
        vec![
            ("vpcmesh:network", n.to_string()),
            ("vpcmesh:epoch", "4".to_string())
        ]
    );
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// A well-formed config with some of its numbers, addresses and keys
    /// changed to anything at all.
    fn any_config() -> impl Strategy<Value = DesiredConfig> {
        (
            1usize..5,
            proptest::collection::vec((0usize..12, any::<u32>()), 0..6),
            any::<bool>(),
            proptest::option::of(0usize..4),
        )
            .prop_map(|(tunnels, edits, per_tunnel, drop_key)| {
                let mut c = if per_tunnel {
                    per_tunnel_config(tunnels)
                } else {
                    sample_config(tunnels)
                };
                for (what, n) in edits {
                    let t = n as usize % c.tunnels.len();
                    let tunnel = &mut c.tunnels[t];
                    match what {
                        0 => tunnel.out.spi = n,
                        1 => tunnel.out.epoch = n % 4,
                        2 => tunnel.reqid = n,
                        3 => tunnel.peer_address = Ipv4Addr::from(n),
                        4 => tunnel.inbound[0].spi = n,
                        5 => tunnel.inbound[1].epoch = n % 4,
                        6 => {
                            tunnel.remote_cidrs[0] = Ipv4Net::new(Ipv4Addr::from(n), (n % 33) as u8)
                                .expect("prefix <= 32")
                        }
                        7 => tunnel.peer_site = c.site_id,
                        8 => c.keys[0].epoch = n % 4,
                        9 => c.keys[0].per_tunnel = n % 2 == 0,
                        10 => tunnel.keys.clear(),
                        _ => c.local_address = Ipv4Addr::from(n),
                    }
                }
                if let Some(t) = drop_key {
                    if let Some(tunnel) = c.tunnels.get_mut(t) {
                        tunnel.keys.truncate(0);
                    }
                }
                c
            })
    }

    proptest! {
        /// Whatever a server sends: the agent validates it without a panic,
        /// and a refusal says what it refuses (a tunnel, an SPI, an epoch).
        #[test]
        fn every_config_is_accepted_or_refused_with_a_reason(c in any_config()) {
            match c.validate() {
                Ok(()) => {
                    // An accepted config gives every tunnel key it needs.
                    for (k, scope, ciphertext) in c.key_blobs() {
                        prop_assert!(!ciphertext.is_empty());
                        if k.per_tunnel {
                            prop_assert!(scope != KeyScope::Network);
                        }
                    }
                }
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
            // Any JSON the server could send parses or is refused, too.
            let json = serde_json::to_string(&c).expect("serializes");
            let back: DesiredConfig = serde_json::from_str(&json).expect("round trip");
            prop_assert_eq!(back, c);
        }
    }
}
