//! The connectivity probe against the host kernel: two network namespaces
//! joined by a veth pair, the probe's raw socket bound to an inside address
//! on its own interface (as an appliance's private address is), pinging the
//! other side. Needs root; fails loudly without it.

mod support;

use appliance::probe::ping;
use appliance::protocol::{ConnectivityProbe, ProbeResult, ProbeTarget};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use support::Netns;
use uuid::Uuid;

const INSIDE: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// On the link, but nothing answers there.
const SILENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 99);
/// Nowhere: neither namespace has a route to it.
const UNROUTED: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// "Appliance" and "peer" namespaces on a veth pair. The appliance's
/// inside address sits on an interface of its own; the peer routes it
/// back over the link, so a reply only arrives if the echo really left
/// from the inside address (the raw socket bound there receives nothing
/// else).
fn two_sites() -> (Netns, Netns) {
    let appliance = Netns::new("probe-a");
    let peer = Netns::new("probe-b");
    appliance.ip(&[
        "link", "add", "wan", "type", "veth", "peer", "name", "wan-b", "netns", &peer.name,
    ]);
    appliance.ip(&["addr", "add", "10.77.0.1/24", "dev", "wan"]);
    appliance.ip(&["link", "set", "wan", "up"]);
    // (The host kernel has no dummy links: a veth pair of its own.)
    appliance.ip(&[
        "link",
        "add",
        "inside",
        "type",
        "veth",
        "peer",
        "name",
        "inside-peer",
    ]);
    appliance.ip(&["addr", "add", &format!("{INSIDE}/32"), "dev", "inside"]);
    appliance.ip(&["link", "set", "inside", "up"]);
    appliance.ip(&["link", "set", "inside-peer", "up"]);
    peer.ip(&["addr", "add", &format!("{PEER}/24"), "dev", "wan-b"]);
    peer.ip(&["link", "set", "wan-b", "up"]);
    peer.ip(&["route", "add", &format!("{INSIDE}/32"), "via", "10.77.0.1"]);
    (appliance, peer)
}

fn probe(count: u16, interval_ms: u32, targets: &[Ipv4Addr]) -> ConnectivityProbe {
    ConnectivityProbe {
        id: Uuid::new_v4(),
        count,
        interval_ms,
        targets: targets
            .iter()
            .enumerate()
            .map(|(i, a)| ProbeTarget {
                peer_site: Uuid::from_u128(100 + i as u128),
                address: *a,
            })
            .collect(),
    }
}

/// Runs the probe inside `ns`, as the agent would there.
fn ping_in(ns: &Netns, source: Ipv4Addr, p: ConnectivityProbe) -> (Vec<ProbeResult>, Duration) {
    ns.run(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let started = Instant::now();
        let results = rt.block_on(ping(source, &p)).expect("the probe runs");
        (results, started.elapsed())
    })
}

#[test]
fn echoes_from_the_inside_address_all_come_back_with_their_round_trip_times() {
    let (appliance, _peer) = two_sites();
    let p = probe(5, 100, &[PEER]);
    let (results, took) = ping_in(&appliance, INSIDE, p.clone());
    eprintln!("5 echoes over a veth: {results:?} in {took:?}");
    let r = results[0];
    assert_eq!(
        (r.peer_site, r.sent, r.received),
        (p.targets[0].peer_site, 5, 5)
    );
    let (min, avg, max) = (
        r.rtt_min_us.expect("min"),
        r.rtt_avg_us.expect("avg"),
        r.rtt_max_us.expect("max"),
    );
    assert!(0 < min && min <= avg && avg <= max, "{r:?}");
    assert!(
        max < 100_000,
        "a veth answers in far less than 100 ms: {r:?}"
    );
    // All answered: the probe ends with the last reply, not at its timeout.
    assert!(took < Duration::from_millis(900), "took {took:?}");
    assert_eq!(
        appliance_protocol_report(&p, results).validate(&p),
        Ok(()),
        "the server accepts what the probe measured"
    );
}

#[test]
fn targets_with_nothing_behind_them_are_unreachable_and_do_not_hold_up_the_others() {
    let (appliance, _peer) = two_sites();
    let p = probe(3, 100, &[SILENT, PEER, UNROUTED]);
    let (results, took) = ping_in(&appliance, INSIDE, p.clone());
    eprintln!("silent, live and unrouted targets: {results:?} in {took:?}");
    let by_peer = |i: usize| {
        *results
            .iter()
            .find(|r| r.peer_site == p.targets[i].peer_site)
            .expect("every target has a result")
    };
    for silent in [by_peer(0), by_peer(2)] {
        assert_eq!((silent.sent, silent.received), (3, 0), "{silent:?}");
        assert_eq!(
            (silent.rtt_min_us, silent.rtt_avg_us, silent.rtt_max_us),
            (None, None, None)
        );
    }
    let live = by_peer(1);
    assert_eq!((live.sent, live.received), (3, 3), "{live:?}");
    // Echoes concurrently to every target: the last round plus one
    // timeout (1 s), not one timeout per lost echo.
    assert!(
        took >= Duration::from_millis(1200) && took < Duration::from_millis(2500),
        "took {took:?}"
    );
}

#[test]
fn a_probe_bound_to_an_address_the_appliance_lacks_says_so() {
    let (appliance, _peer) = two_sites();
    let err = appliance.run(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(ping(Ipv4Addr::new(10, 99, 0, 1), &probe(1, 100, &[PEER])))
            .expect_err("nothing holds 10.99.0.1")
    });
    assert!(err.to_string().contains("10.99.0.1"), "{err}");
}

fn appliance_protocol_report(
    p: &ConnectivityProbe,
    results: Vec<ProbeResult>,
) -> appliance::protocol::ProbeReport {
    appliance::protocol::ProbeReport {
        probe_id: p.id,
        results,
    }
}
