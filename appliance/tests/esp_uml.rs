//! Real ESP between appliances programmed by the agent, in a User-Mode Linux
//! guest (the host kernel has no ESP). Proven by ping between VPC hosts, by
//! the SA counters the agent reports, and by a capture of the WAN.

mod support;

use appliance::protocol::{StatusReport, TunnelState};
use std::process::Command;
use std::time::Duration;
use support::lab::{self, await_applied, start_agent, topology};
use support::uml::{run_in_guest, shared_dir, GuestRun};

const GUEST_TIMEOUT: Duration = Duration::from_secs(180);

fn status(run: &GuestRun, i: u8) -> StatusReport {
    serde_json::from_str(&run.file(&format!("s{i}.status")))
        .unwrap_or_else(|e| panic!("site {i} status: {e}\nguest log:\n{}", run.log))
}

/// (IP protocol, UDP destination port, ICMP type) of every IP packet.
fn capture(run: &GuestRun, name: &str) -> Vec<(String, String, String)> {
    let out = Command::new("tshark")
        .args(["-r"])
        .arg(run.dir.join(name))
        .args(["-Y", "ip", "-T", "fields", "-e", "ip.proto", "-e", "udp.dstport", "-e", "icmp.type"])
        .output()
        .expect("tshark runs");
    assert!(out.status.success(), "tshark: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let get = |i: usize| f.get(i).unwrap_or(&"").to_string();
            (get(0), get(1), get(2))
        })
        .collect()
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
    script += "ip netns exec wan dumpcap -q -i br0 -w wan.pcap > dumpcap.log 2>&1 &\nCAP=$!\nsleep 2\n";
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
        assert!(t.out_packets >= 8 && t.in_packets >= 8, "site {i} counters: {t:?}");
        assert!(t.out_bytes > 0 && t.in_bytes > 0 && t.in_errors == 0, "site {i}: {t:?}");
    }
    let packets = capture(run, "wan.pcap");
    assert!(packets.len() >= 16, "captured {} packets: {packets:?}", packets.len());
    for (proto, port, icmp) in &packets {
        assert!(icmp.is_empty(), "inner ICMP visible on the WAN: {packets:?}");
        if expect_udp_4500 {
            assert_eq!((proto.as_str(), port.as_str()), ("17", "4500"), "{packets:?}");
        } else {
            assert_eq!(proto, "50", "only ESP on the WAN: {packets:?}");
        }
    }
    let xfrm = run.file("s1.xfrm.txt");
    assert!(xfrm.contains("aead rfc4106(gcm(aes))") && xfrm.contains("replay-window 32"), "{xfrm}");
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
    assert!(run.file("s1.xfrm.txt").contains("encap type espinudp sport 4500 dport 4500"));
}
