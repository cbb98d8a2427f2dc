//! Real ESP between appliances programmed by the agent, in a User-Mode Linux
//! guest (the host kernel has no ESP). Proven by ping between VPC hosts, by
//! the SA counters the agent reports, and by a capture of the WAN.

mod support;

use appliance::protocol::{StatusReport, TunnelState};
use std::time::Duration;
use support::lab::{self, await_applied, start_agent, topology};
use support::uml::{run_in_guest, shared_dir, GuestRun};

const GUEST_TIMEOUT: Duration = Duration::from_secs(180);

fn status(run: &GuestRun, i: u8) -> StatusReport {
    serde_json::from_str(&run.file(&format!("s{i}.status")))
        .unwrap_or_else(|e| panic!("site {i} status: {e}\nguest log:\n{}", run.log))
}

fn capture(run: &GuestRun, name: &str) -> Vec<(String, String, String)> {
    lab::wan_packets(&run.dir.join(name))
}

fn ping_script(from: u8, to: u8) -> String {
    format!(
        "ip netns exec h{from} ping -c 4 -i 0.2 -W 2 {} > ping-{from}-{to}.txt 2>&1; echo \"rc=$?\" >> ping-{from}-{to}.txt\n",
        lab::host(to)
    )
}

fn assert_ping(run: &GuestRun, from: u8, to: u8) {
    let text = run.file(&format!("ping-{from}-{to}.txt"));
    assert!(
        text.contains("4 packets transmitted, 4 received") && text.contains("rc=0"),
        "ping {from}->{to}:\n{text}\nguest log:\n{}",
        run.log
    );
}

fn two_sites(nat_traversal: bool) -> GuestRun {
    let dir = shared_dir(if nat_traversal { "esp2-natt" } else { "esp2" });
    lab::write_key(&dir);
    for i in [1, 2] {
        lab::write_config(&dir, i, &lab::mesh_config(i, &[1, 2], nat_traversal, 1));
    }
    let mut script = topology(&[1, 2]);
    script += &start_agent(1);
    script += &start_agent(2);
    script += &await_applied(1, 1);
    script += &await_applied(2, 1);
    script +=
        "ip netns exec wan dumpcap -q -i br0 -w wan.pcap > dumpcap.log 2>&1 &\nCAP=$!\nsleep 2\n";
    script += &ping_script(1, 2);
    script += &ping_script(2, 1);
    script += "sleep 1.5\nkill -INT $CAP; wait $CAP\nip -n s1 -s xfrm state > s1.xfrm.txt\n";
    run_in_guest(&dir, &script, GUEST_TIMEOUT)
}

fn assert_encrypted_tunnel(run: &GuestRun, expect_udp_4500: bool) {
    assert_ping(run, 1, 2);
    assert_ping(run, 2, 1);
    for i in [1, 2] {
        let s = status(run, i);
        assert_eq!(s.applied_version, Some(1), "site {i}: {s:?}");
        let t = &s.tunnels[0];
        assert_eq!(t.state, TunnelState::Up, "site {i}: {t:?}");
        assert!(
            t.out_packets >= 8 && t.in_packets >= 8,
            "site {i} counters: {t:?}"
        );
        assert!(
            t.out_bytes > 0 && t.in_bytes > 0 && t.in_errors == 0,
            "site {i}: {t:?}"
        );
    }
    let packets = capture(run, "wan.pcap");
    assert!(
        packets.len() >= 16,
        "captured {} packets: {packets:?}",
        packets.len()
    );
    for (proto, port, icmp) in &packets {
        assert!(
            icmp.is_empty(),
            "inner ICMP visible on the WAN: {packets:?}"
        );
        if expect_udp_4500 {
            assert_eq!(
                (proto.as_str(), port.as_str()),
                ("17", "4500"),
                "{packets:?}"
            );
        } else {
            assert_eq!(proto, "50", "only ESP on the WAN: {packets:?}");
        }
    }
    let xfrm = run.file("s1.xfrm.txt");
    assert!(
        xfrm.contains("aead rfc4106(gcm(aes))") && xfrm.contains("replay-window 32"),
        "{xfrm}"
    );
}

#[test]
fn two_appliances_carry_ping_as_esp_only() {
    let run = two_sites(false);
    assert_encrypted_tunnel(&run, false);
}

#[test]
fn with_nat_traversal_the_wan_carries_only_udp_4500() {
    let run = two_sites(true);
    assert_encrypted_tunnel(&run, true);
    assert!(run
        .file("s1.xfrm.txt")
        .contains("encap type espinudp sport 4500 dport 4500"));
}

#[test]
fn in_a_three_site_mesh_moving_one_peer_touches_only_its_tunnel() {
    let dir = shared_dir("mesh3");
    lab::write_key(&dir);
    let sites = [1, 2, 3];
    for i in sites {
        lab::write_config(&dir, i, &lab::mesh_config(i, &sites, false, 1));
    }
    // Version 2: site 3's public address moves to .33 (a replaced instance).
    let moved = |i: u8| {
        if i == 3 {
            std::net::Ipv4Addr::new(198, 51, 100, 33)
        } else {
            lab::wan(i)
        }
    };
    for i in sites {
        let c = lab::mesh_config_with(i, &sites, false, 2, &moved);
        std::fs::write(
            dir.join(format!("s{i}.v2.json")),
            serde_json::to_vec(&c).expect("json"),
        )
        .expect("write v2");
    }
    let mut script = topology(&sites);
    for i in sites {
        script += &start_agent(i);
    }
    for i in sites {
        script += &await_applied(i, 1);
    }
    for (a, b) in [(1, 2), (1, 3), (2, 3)] {
        script += &ping_script(a, b);
    }
    script += "ip -n s1 xfrm state > s1.before.txt\n";
    script += "ip -n s1 xfrm monitor SA policy > s1.monitor.txt 2>&1 &\nMON=$!\nsleep 0.5\n";
    // Deleting a primary address takes its secondaries along: delete first.
    script +=
        "ip -n s3 addr del 198.51.100.3/24 dev wan0\nip -n s3 addr add 198.51.100.33/24 dev wan0\n";
    for i in sites {
        script += &format!("mv s{i}.v2.json s{i}.json\n");
    }
    for i in sites {
        script += &await_applied(i, 2);
    }
    script += "sleep 0.5\nkill $MON\n";
    for (a, b) in [(1, 2), (3, 1), (3, 2)] {
        script += &ping_script(a, b).replace(&format!("ping-{a}-{b}"), &format!("ping2-{a}-{b}"));
    }
    script += "ip -n s1 xfrm state > s1.after.txt\n";
    let run = run_in_guest(&dir, &script, GUEST_TIMEOUT);

    for (a, b) in [(1, 2), (1, 3), (2, 3)] {
        assert_ping(&run, a, b);
    }
    for (a, b) in [(1, 2), (3, 1), (3, 2)] {
        let text = run.file(&format!("ping2-{a}-{b}.txt"));
        assert!(
            text.contains("4 received") && text.contains("rc=0"),
            "{a}->{b} after the move:\n{text}"
        );
    }
    // Every change the kernel announced on site 1 concerns the moved peer.
    let monitor = run.file("s1.monitor.txt");
    let events: Vec<&str> = monitor
        .lines()
        .filter(|l| l.starts_with("src ") || l.starts_with("Deleted") || l.starts_with("Updated"))
        .collect();
    assert!(!events.is_empty(), "no XFRM events on site 1:\n{monitor}");
    assert!(monitor.contains("198.51.100.33"), "{monitor}");
    assert!(
        !monitor.contains("198.51.100.2 "),
        "the tunnel to site 2 was touched:\n{monitor}"
    );
    // The tunnel to site 2 keeps its SAs, counters and add time.
    let block = |text: &str| -> String {
        text.split("src ")
            .find(|b| b.starts_with("198.51.100.1 dst 198.51.100.2"))
            .unwrap_or("")
            .to_string()
    };
    let before = run.file("s1.before.txt");
    let after = run.file("s1.after.txt");
    assert!(!block(&before).is_empty());
    assert!(after.contains(
        &block(&before)
            .lines()
            .take(3)
            .collect::<Vec<_>>()
            .join("\n")
    ));
    let log = run.file("s1.agent.log");
    assert!(
        log.contains("version=2 added=3 replaced=3 deleted=3"),
        "{log}"
    );
}

#[test]
fn restarting_the_agent_under_continuous_ping_loses_nothing_and_changes_nothing() {
    let dir = shared_dir("restart");
    let mut script = lab::two_sites_under_ping(&dir, false);
    script += "ip -n s1 xfrm monitor SA policy > s1.monitor.txt 2>&1 &\nMON=$!\n";
    script += "for round in 1 2 3; do kill $(cat s1.pid); sleep 0.1; rm -f s1.status\n";
    script += &start_agent(1);
    script += &await_applied(1, 1);
    script += "done\nwait $PING; echo \"rc=$?\" >> ping-restart.txt\nkill $MON\n";
    let run = run_in_guest(&dir, &script, GUEST_TIMEOUT);
    let ping = run.file("ping-restart.txt");
    assert!(
        ping.contains("100 packets transmitted, 100 received, 0% packet loss"),
        "{ping}\n{}",
        run.log
    );
    let log = run.file("s1.agent.log");
    assert!(
        log.contains("added=0 replaced=0 deleted=0"),
        "the restarted agent changed the kernel:\n{log}"
    );
    let monitor = run.file("s1.monitor.txt");
    assert!(
        monitor.trim().is_empty(),
        "the kernel saw changes during restarts:\n{monitor}"
    );
}

#[test]
fn a_hostile_config_is_refused_whole_and_the_kernel_keeps_the_last_good_state() {
    let dir = shared_dir("hostile");
    lab::write_key(&dir);
    for i in [1, 2] {
        lab::write_config(&dir, i, &lab::mesh_config(i, &[1, 2], false, 1));
    }
    // Version 2 for site 1: a new tunnel that reuses an inbound SPI.
    let mut bad = lab::mesh_config(1, &[1, 2, 3], false, 2);
    bad.tunnels[1].inbound[0].spi = bad.tunnels[0].inbound[0].spi;
    std::fs::write(
        dir.join("s1.bad.json"),
        serde_json::to_vec(&bad).expect("json"),
    )
    .expect("write");
    // ...and one that is not even a config.
    std::fs::write(
        dir.join("s1.junk.json"),
        b"{\"protocol\": 1, \"tunnels\": [",
    )
    .expect("write");
    let mut script = topology(&[1, 2]);
    script += &start_agent(1);
    script += &start_agent(2);
    script += &await_applied(1, 1);
    script += &await_applied(2, 1);
    script += "ip -n s1 xfrm state > s1.before.txt; ip -n s1 xfrm policy > s1.pol-before.txt\n";
    script += "cp s1.bad.json s1.json; sleep 1.5; cp s1.status s1.bad.status\n";
    script += "cp s1.junk.json s1.json; sleep 1.5; cp s1.status s1.junk.status\n";
    script += "ip -n s1 xfrm state > s1.after.txt; ip -n s1 xfrm policy > s1.pol-after.txt\n";
    script += &ping_script(1, 2);
    let run = run_in_guest(&dir, &script, GUEST_TIMEOUT);
    let bad: StatusReport = serde_json::from_str(&run.file("s1.bad.status")).expect("status");
    assert_eq!(bad.applied_version, Some(1));
    assert!(
        bad.config_error
            .as_deref()
            .unwrap_or("")
            .contains("is used twice"),
        "{bad:?}"
    );
    let junk: StatusReport = serde_json::from_str(&run.file("s1.junk.status")).expect("status");
    assert_eq!(junk.applied_version, Some(1));
    assert!(
        junk.config_error
            .as_deref()
            .unwrap_or("")
            .contains("parsing the config"),
        "{junk:?}"
    );
    let strip = |t: String| {
        t.lines()
            .filter(|l| !l.contains("add ") && !l.contains("bytes"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        strip(run.file("s1.before.txt")),
        strip(run.file("s1.after.txt"))
    );
    assert_eq!(run.file("s1.pol-before.txt"), run.file("s1.pol-after.txt"));
    assert_ping(&run, 1, 2);
}

#[test]
fn with_nat_traversal_a_make_before_break_restart_loses_nothing() {
    let dir = shared_dir("restart-natt");
    let mut script = lab::two_sites_under_ping(&dir, true);
    // The new agent binds UDP 4500 next to the old one, then the old stops.
    // Make before break: the old agent stops only once the new one is ready
    // (it has bound UDP 4500 and checked the kernel: one more "applied").
    script +=
        "for round in 1 2 3; do OLD=$(cat s1.pid); C=$(grep -c 'config applied' s1.agent.log)\n";
    script += &start_agent(1);
    script += "n=0; until [ $(grep -c 'config applied' s1.agent.log) -gt $C ]; do n=$((n+1)); [ $n -gt 200 ] && break; sleep 0.05; done\n";
    script += "kill $OLD; sleep 0.3; done\nwait $PING; echo \"rc=$?\" >> ping-restart.txt\n";
    script += "ip netns exec s1 cat /proc/net/snmp > s1.snmp.txt\n";
    let run = run_in_guest(&dir, &script, GUEST_TIMEOUT);
    let ping = run.file("ping-restart.txt");
    assert!(
        ping.contains("100 packets transmitted, 100 received, 0% packet loss"),
        "{ping}\n{}",
        run.log
    );
    let log = run.file("s1.agent.log");
    assert_eq!(
        log.matches("added=0 replaced=0 deleted=0").count(),
        3,
        "{log}"
    );
    assert!(!log.contains("UDP 4500"), "{log}");
    // No ESP-in-UDP packet ever found port 4500 closed.
    let snmp = run.file("s1.snmp.txt");
    let udp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Udp:")).collect();
    assert_eq!(udp.len(), 2, "{snmp}");
    assert_eq!(
        udp[1].split_whitespace().nth(2),
        Some("0"),
        "UDP NoPorts: {snmp}"
    );
}
