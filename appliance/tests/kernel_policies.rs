//! Policy and route reconcile against the host kernel (which has XFRM
//! policies and routes but no ESP), in a namespace the test creates; every
//! outcome is read back independently with iproute2.

mod support;

use appliance::dataplane::{desired_state, DataKey, Kernel, KernelState, Underlay};
use appliance::protocol::{
    DesiredConfig, EpochKey, InboundSa, Member, OutboundSa, Tunnel, PROTOCOL_VERSION,
};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::Command;
use support::Netns;
use uuid::Uuid;

const LOCAL: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

fn config(peers: u32) -> DesiredConfig {
    DesiredConfig {
        protocol: PROTOCOL_VERSION,
        generation: 1,
        version: 1,
        network_id: Uuid::from_u128(1),
        site_id: Uuid::from_u128(2),
        member: Member::A,
        local_address: LOCAL,
        nat_traversal: false,
        keys: vec![EpochKey {
            epoch: 1,
            kms_key_arn: "arn".into(),
            region: "us-east-1".into(),
            ciphertext: "x".into(),
            per_tunnel: false,
        }],
        tunnels: (0..peers)
            .map(|i| Tunnel {
                peer_site: Uuid::from_u128(10 + i as u128),
                peer_address: Ipv4Addr::new(198, 51, 100, 10 + i as u8),
                reqid: 100 + i,
                out: OutboundSa {
                    epoch: 1,
                    spi: 0x1000 + i,
                    carried: false,
                },
                inbound: InboundSa::pair(1, [0x2000 + 2 * i, 0x2001 + 2 * i]).to_vec(),
                local_cidrs: vec!["10.0.0.0/16".parse().expect("literal")],
                remote_cidrs: vec![
                    format!("10.{}.0.0/16", 10 + i).parse().expect("literal"),
                    format!("172.{}.0.0/16", 16 + i).parse().expect("literal"),
                ],
                legacy_sa: false,
                keys: Vec::new(),
            })
            .collect(),
        probe: None,
        ha: None,
    }
}

/// A namespace with an "uplink" holding the local address.
fn appliance_ns() -> (Netns, u32) {
    let ns = Netns::new("pol");
    ns.ip(&[
        "link",
        "add",
        "uplink",
        "type",
        "veth",
        "peer",
        "name",
        "uplink-peer",
    ]);
    ns.ip(&["link", "set", "uplink-peer", "up"]);
    ns.ip(&["addr", "add", "198.51.100.1/24", "dev", "uplink"]);
    ns.ip(&["link", "set", "uplink", "up"]);
    let oif = ns.run(|| {
        Kernel::open()
            .expect("netlink")
            .routes
            .interface_with(LOCAL)
            .expect("address dump")
            .expect("the uplink holds the local address")
    });
    (ns, oif)
}

/// The desired policies and routes (the host kernel cannot hold ESP SAs).
fn policies_and_routes(c: &DesiredConfig, oif: u32) -> KernelState {
    let mut s = desired_state(
        c,
        &[(1, DataKey::new(vec![1; 32]))].into_iter().collect(),
        Underlay { oif, prefsrc: None },
    )
    .expect("epoch 1 has a key");
    s.sas.clear();
    s
}

/// `ip xfrm policy` as a set of "dir src dst tmpl-src tmpl-dst reqid" lines.
fn policies_by_iproute(ns: &Netns) -> BTreeSet<String> {
    let text = ns.ip(&["xfrm", "policy", "list"]);
    let mut out = BTreeSet::new();
    let mut current = String::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["src", s, "dst", d, ..] => current = format!("{s} {d}"),
            ["dir", dir, "priority", prio, ..] => {
                current = format!("{dir} {current} prio={prio}");
            }
            ["tmpl", "src", ts, "dst", td] => current = format!("{current} {ts}>{td}"),
            ["proto", "esp", "reqid", r, "mode", "tunnel"] => {
                out.insert(format!("{current} reqid={r}"));
            }
            _ => {}
        }
    }
    out
}

fn expected_policies(c: &DesiredConfig) -> BTreeSet<String> {
    let prio = appliance::xfrm::POLICY_PRIORITY;
    let mut out = BTreeSet::new();
    for t in &c.tunnels {
        for l in &t.local_cidrs {
            for r in &t.remote_cidrs {
                let (p, loc) = (t.peer_address, c.local_address);
                out.insert(format!(
                    "out {l} {r} prio={prio} {loc}>{p} reqid={}",
                    t.reqid
                ));
                out.insert(format!(
                    "in {r} {l} prio={prio} {p}>{loc} reqid={}",
                    t.reqid
                ));
                out.insert(format!(
                    "fwd {r} {l} prio={prio} {p}>{loc} reqid={}",
                    t.reqid
                ));
            }
        }
    }
    out
}

fn routes_by_iproute(ns: &Netns) -> BTreeSet<String> {
    ns.ip(&["route", "show", "proto", "250"])
        .lines()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .collect()
}

fn expected_routes(c: &DesiredConfig) -> BTreeSet<String> {
    c.tunnels
        .iter()
        .flat_map(|t| t.remote_cidrs.iter().map(|r| format!("{r} dev uplink")))
        .collect()
}

#[test]
fn policies_and_routes_reach_the_kernel_and_read_back_with_iproute() {
    let (ns, oif) = appliance_ns();
    let c = config(3);
    let want = policies_and_routes(&c, oif);
    let report = ns.run(move || {
        Kernel::open()
            .expect("netlink")
            .reconcile(&want)
            .expect("reconcile")
    });
    // Per tunnel and remote CIDR: 3 policies, 3 blocks and a route.
    assert_eq!(report.added, 3 * 2 * (3 + 3 + 1));
    assert_eq!(policies_by_iproute(&ns), expected_policies(&c));
    assert_eq!(routes_by_iproute(&ns), expected_routes(&c));
    let forwarding = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "cat",
            "/proc/sys/net/ipv4/ip_forward",
        ])
        .output()
        .expect("ip netns exec");
    assert_eq!(
        String::from_utf8_lossy(&forwarding.stdout).trim(),
        "1",
        "the agent turns forwarding on"
    );
}

#[test]
fn a_second_reconcile_of_the_same_config_changes_nothing() {
    let (ns, oif) = appliance_ns();
    let c = config(2);
    let want = policies_and_routes(&c, oif);
    let again = want.clone();
    ns.run(move || {
        Kernel::open()
            .expect("netlink")
            .reconcile(&want)
            .expect("first")
    });
    let before = (policies_by_iproute(&ns), routes_by_iproute(&ns));
    let report = ns.run(move || {
        Kernel::open()
            .expect("netlink")
            .reconcile(&again)
            .expect("second")
    });
    assert_eq!(report, Default::default(), "nothing to do the second time");
    assert_eq!((policies_by_iproute(&ns), routes_by_iproute(&ns)), before);
}

#[test]
fn changing_one_peer_touches_only_its_policies_and_foreign_state_survives() {
    let (ns, oif) = appliance_ns();
    // Someone else's policy and route in the same namespace.
    ns.ip(&[
        "xfrm",
        "policy",
        "add",
        "src",
        "192.168.1.0/24",
        "dst",
        "192.168.2.0/24",
        "dir",
        "out",
        "tmpl",
        "src",
        "198.51.100.1",
        "dst",
        "198.51.100.99",
        "proto",
        "esp",
        "mode",
        "tunnel",
    ]);
    ns.ip(&["route", "add", "192.168.2.0/24", "dev", "uplink"]);
    let before = config(3);
    let want = policies_and_routes(&before, oif);
    ns.run(move || {
        Kernel::open()
            .expect("netlink")
            .reconcile(&want)
            .expect("first")
    });

    let mut after = before.clone();
    after.tunnels[1].peer_address = Ipv4Addr::new(198, 51, 100, 77);
    after.tunnels.remove(2);
    let want = policies_and_routes(&after, oif);
    let report = ns.run(move || {
        Kernel::open()
            .expect("netlink")
            .reconcile(&want)
            .expect("second")
    });
    // Peer 1: its 6 policies replaced (its blocks stay: same CIDRs); peer
    // 2: 6 policies, 6 blocks and 2 routes gone.
    assert_eq!(report.replaced, 6);
    assert_eq!(report.deleted, 6 + 6 + 2);
    assert_eq!(report.added, 0);
    assert_eq!(policies_by_iproute(&ns).len(), 12 + 1);
    assert!(policies_by_iproute(&ns).is_superset(&expected_policies(&after)));
    assert!(ns
        .ip(&["xfrm", "policy", "list"])
        .contains("192.168.2.0/24"));
    assert!(ns.ip(&["route"]).contains("192.168.2.0/24 dev uplink"));
    assert_eq!(routes_by_iproute(&ns), expected_routes(&after));
}

#[test]
fn policies_changed_behind_the_agents_back_are_put_back() {
    let (ns, oif) = appliance_ns();
    let c = config(1);
    let want = policies_and_routes(&c, oif);
    let again = want.clone();
    ns.run(move || {
        Kernel::open()
            .expect("netlink")
            .reconcile(&want)
            .expect("first")
    });
    let prio = appliance::xfrm::POLICY_PRIORITY.to_string();
    delete_first_out_policy(&ns);
    ns.ip(&[
        "xfrm",
        "policy",
        "update",
        "src",
        "10.10.0.0/16",
        "dst",
        "10.0.0.0/16",
        "dir",
        "in",
        "priority",
        &prio,
        "tmpl",
        "src",
        "203.0.113.1",
        "dst",
        "198.51.100.1",
        "proto",
        "esp",
        "mode",
        "tunnel",
        "reqid",
        "100",
    ]);
    ns.ip(&["route", "del", "172.16.0.0/16", "proto", "250"]);
    let report = ns.run(move || {
        Kernel::open()
            .expect("netlink")
            .reconcile(&again)
            .expect("repair")
    });
    assert_eq!((report.added, report.replaced), (2, 1));
    assert_eq!(policies_by_iproute(&ns), expected_policies(&c));
    assert_eq!(routes_by_iproute(&ns), expected_routes(&c));
}

/// Deletes the out policy 10.0.0.0/16 -> 10.10.0.0/16 (tunnel 0's first
/// remote CIDR) behind the agent's back.
fn delete_first_out_policy(ns: &Netns) {
    ns.ip(&[
        "xfrm",
        "policy",
        "delete",
        "src",
        "10.0.0.0/16",
        "dst",
        "10.10.0.0/16",
        "dir",
        "out",
    ]);
}

/// `ip xfrm policy` blocks as "dir src dst" (action block, our priority).
fn blocks_by_iproute(ns: &Netns) -> BTreeSet<String> {
    let text = ns.ip(&["xfrm", "policy", "list"]);
    let prio = appliance::xfrm::BLOCK_PRIORITY;
    let mut out = BTreeSet::new();
    let mut selector = String::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["src", s, "dst", d, ..] => selector = format!("{s} {d}"),
            ["dir", dir, "action", "block", "priority", p, ..] if *p == prio.to_string() => {
                out.insert(format!("{dir} {selector}"));
            }
            _ => {}
        }
    }
    out
}

#[test]
fn traffic_for_a_remote_cidr_that_no_tunnel_policy_takes_is_dropped_not_sent_in_clear() {
    let (ns, oif) = appliance_ns();
    let c = config(1);
    let want = policies_and_routes(&c, oif);
    ns.run(move || {
        Kernel::open()
            .expect("netlink")
            .reconcile(&want)
            .expect("reconcile")
    });
    let blocks = blocks_by_iproute(&ns);
    let expected: BTreeSet<String> = c.tunnels[0]
        .remote_cidrs
        .iter()
        .flat_map(|r| {
            [
                format!("out 0.0.0.0/0 {r}"),
                format!("in {r} 0.0.0.0/0"),
                format!("fwd {r} 0.0.0.0/0"),
            ]
        })
        .collect();
    assert_eq!(blocks, expected, "{}", ns.ip(&["xfrm", "policy", "list"]));

    // The tunnel's policy for one remote CIDR is gone (being replaced,
    // refused by the kernel): a packet to it from inside the local CIDR
    // finds the block policy, and sending fails with EPERM. Other traffic
    // leaves as before.
    delete_first_out_policy(&ns);
    ns.ip(&["addr", "add", "10.0.0.1/32", "dev", "uplink"]);
    let (to_remote, elsewhere) = ns.run(|| {
        let socket = std::net::UdpSocket::bind("10.0.0.1:0").expect("bind");
        (
            socket.send_to(b"secret", "10.10.0.5:9"),
            socket.send_to(b"public", "198.51.100.77:9"),
        )
    });
    let refused = to_remote.expect_err("a packet for a remote CIDR left without a policy");
    assert_eq!(refused.raw_os_error(), Some(libc::EPERM), "{refused}");
    elsewhere.expect("traffic outside the remote CIDRs leaves");
}
