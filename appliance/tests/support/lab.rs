//! A small data-plane lab for a UML guest: one namespace per appliance with
//! a WAN leg on a shared bridge and a LAN leg to a "VPC host" namespace
//! behind it. Site `i` has WAN address 198.51.100.i, VPC 10.i.0.0/16, its
//! appliance at 10.i.0.1 and a host at 10.i.0.10.

use appliance::protocol::{
    DesiredConfig, EpochKey, InboundSa, Member, OutboundSa, Tunnel, PROTOCOL_VERSION,
};
use std::fmt::Write;
use std::net::Ipv4Addr;
use std::path::Path;
use uuid::Uuid;

pub const DATA_KEY_B64: &str = "dnBjbWVzaC1sYWItZGF0YS1rZXktMzItYnl0ZXMhIQ==";

pub fn wan(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, i)
}

pub fn host(i: u8) -> String {
    format!("10.{i}.0.10")
}

fn site_id(i: u8) -> Uuid {
    Uuid::from_u128(0x517e_0000 + i as u128)
}

fn spi(from: u8, member: Member, to: u8) -> u32 {
    0x1000 + (from as u32) * 256 + (to as u32) * 16 + member.index() as u32
}

fn reqid(a: u8, b: u8) -> u32 {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    100 + lo as u32 * 16 + hi as u32
}

/// The config of site `i`'s member A in a full mesh of `sites`.
pub fn mesh_config(i: u8, sites: &[u8], nat_traversal: bool, version: u64) -> DesiredConfig {
    mesh_config_with(i, sites, nat_traversal, version, &wan)
}

/// As [`mesh_config`], with the sites' WAN addresses from `wan_of`.
pub fn mesh_config_with(
    i: u8,
    sites: &[u8],
    nat_traversal: bool,
    version: u64,
    wan_of: &dyn Fn(u8) -> Ipv4Addr,
) -> DesiredConfig {
    DesiredConfig {
        protocol: PROTOCOL_VERSION,
        generation: 1,
        version,
        network_id: Uuid::from_u128(0x4e7),
        site_id: site_id(i),
        member: Member::A,
        local_address: wan_of(i),
        nat_traversal,
        keys: vec![EpochKey {
            epoch: 1,
            kms_key_arn: "arn:aws:kms:us-east-1:111122223333:key/lab".into(),
            region: "us-east-1".into(),
            ciphertext: "bGFi".into(),
            per_tunnel: false,
        }],
        tunnels: sites
            .iter()
            .filter(|j| **j != i)
            .map(|&j| Tunnel {
                peer_site: site_id(j),
                peer_address: wan_of(j),
                reqid: reqid(i, j),
                out: OutboundSa {
                    epoch: 1,
                    spi: spi(i, Member::A, j),
                    carried: false,
                },
                inbound: InboundSa::pair(1, [spi(j, Member::A, i), spi(j, Member::B, i)]).to_vec(),
                local_cidrs: vec![format!("10.{i}.0.0/16").parse().expect("literal")],
                remote_cidrs: vec![format!("10.{j}.0.0/16").parse().expect("literal")],
                legacy_sa: false,
                keys: Vec::new(),
            })
            .collect(),
        probe: None,
        ha: None,
    }
}

pub fn write_config(dir: &Path, i: u8, config: &DesiredConfig) {
    std::fs::write(
        dir.join(format!("s{i}.json")),
        serde_json::to_vec_pretty(config).expect("serializes"),
    )
    .expect("write config");
}

/// Shell that builds the WAN bridge and every site's namespaces.
pub fn topology(sites: &[u8]) -> String {
    let mut s = String::from(
        "set -e\nip netns add wan\nip -n wan link add br0 type bridge\nip -n wan link set br0 up\n",
    );
    for i in sites {
        let _ = write!(
            s,
            r#"ip netns add s{i}; ip netns add h{i}
ip -n s{i} link set lo up; ip -n h{i} link set lo up
ip link add wan0 netns s{i} type veth peer name s{i} netns wan
ip -n wan link set s{i} master br0 up
ip -n s{i} addr add 198.51.100.{i}/24 dev wan0; ip -n s{i} link set wan0 up
ip link add lan0 netns s{i} type veth peer name eth0 netns h{i}
ip -n s{i} addr add 10.{i}.0.1/16 dev lan0; ip -n s{i} link set lan0 up
ip -n h{i} addr add 10.{i}.0.10/16 dev eth0; ip -n h{i} link set eth0 up
ip -n h{i} route add default via 10.{i}.0.1
"#
        );
    }
    s.push_str("set +e\n");
    s
}

/// The agent binary: cargo names it for this package's tests; other
/// packages' tests find it in the same target folder (`cargo test
/// --workspace` builds it).
pub fn agent_bin() -> String {
    if let Some(path) = option_env!("CARGO_BIN_EXE_vpcmesh-agent") {
        return path.to_string();
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|debug| debug.join("vpcmesh-agent"))
        .expect("target/debug");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p appliance` (./test.sh does)",
        path.display()
    );
    path.display().to_string()
}

/// Shell that starts the agent in site `i`'s namespace, following its file.
pub fn start_agent(i: u8) -> String {
    format!(
        "ip netns exec s{i} {agent} local --config s{i}.json --data-key key --status s{i}.status >> s{i}.agent.log 2>&1 &\necho $! > s{i}.pid\n",
        agent = agent_bin()
    )
}

/// Shell that starts the agent in site `i`'s namespace against a server.
pub fn start_agent_run(i: u8, args: &str) -> String {
    format!(
        "ip netns exec s{i} {agent} run --agent-config s{i}.agent.json --state-dir s{i}.state {args} >> s{i}.agent.log 2>&1 &\necho $! > s{i}.pid\n",
        agent = agent_bin()
    )
}

/// Shell that waits until site `i`'s agent reports `version` applied.
pub fn await_applied(i: u8, version: u64) -> String {
    format!(
        "n=0; until grep -q '\"applied_version\": {version}' s{i}.status 2>/dev/null; do n=$((n+1)); [ $n -gt 100 ] && echo 'agent s{i} never applied {version}' && break; sleep 0.1; done\n"
    )
}

pub fn write_key(dir: &Path) {
    std::fs::write(dir.join("key"), DATA_KEY_B64).expect("write key");
}

/// (IP protocol, UDP destination port, ICMP type) of every IP packet in a
/// capture, read by tshark.
pub fn wan_packets(pcap: &Path) -> Vec<(String, String, String)> {
    let out = std::process::Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args([
            "-Y",
            "ip",
            "-T",
            "fields",
            "-e",
            "ip.proto",
            "-e",
            "udp.dstport",
            "-e",
            "icmp.type",
        ])
        .output()
        .expect("tshark runs");
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let get = |i: usize| f.get(i).unwrap_or(&"").to_string();
            (get(0), get(1), get(2))
        })
        .collect()
}

/// Configs for sites 1 and 2 and the shell that starts both agents, waits
/// until both applied version 1, and starts a 100 × 20 ms ping from host 1
/// to host 2 in the background (`$PING`).
pub fn two_sites_under_ping(dir: &Path, nat_traversal: bool) -> String {
    write_key(dir);
    for i in [1, 2] {
        write_config(dir, i, &mesh_config(i, &[1, 2], nat_traversal, 1));
    }
    let mut script = topology(&[1, 2]);
    script += &start_agent(1);
    script += &start_agent(2);
    script += &await_applied(1, 1);
    script += &await_applied(2, 1);
    script += "ip netns exec h1 ping -c 100 -i 0.02 -W 1 10.2.0.10 > ping-restart.txt 2>&1 &\nPING=$!\nsleep 0.5\n";
    script
}

/// Runs `f` on a thread that has entered the network namespace `name` (made
/// with `ip netns add`), so that sockets it opens belong to that namespace.
pub fn in_netns<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    use std::os::fd::AsRawFd;
    let path = format!("/run/netns/{name}");
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: a valid namespace fd; only this thread moves.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("the namespace thread panicked")
}
