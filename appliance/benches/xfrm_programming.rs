//! Programming the kernel: the agent's netlink reconcile against iproute2's
//! `ip -batch` with the same objects, in the same run, inside a User-Mode
//! Linux guest (the host kernel has no ESP). Prints objects/s for both, the
//! ratio, and the time of a one-peer change on the largest set.
//!
//! `cargo bench -p appliance --bench xfrm_programming` (as root). Sizes can
//! be set with `VPCMESH_BENCH_TUNNELS=1000,10000`.

use appliance::dataplane::{desired_state, DataKey, EpochKeys, Kernel, KernelState, Underlay};
use appliance::protocol::{
    DesiredConfig, EpochKey, InboundSa, Member, OutboundSa, Tunnel, PROTOCOL_VERSION,
};
use appliance::xfrm::{BLOCK_PRIORITY, POLICY_PRIORITY};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use uuid::Uuid;

// The namespace helper has one owner, the tests' lab support.
#[allow(dead_code)]
#[path = "../tests/support/lab.rs"]
mod lab;

const LOCAL: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

fn main() {
    if std::env::args().any(|a| a == "--guest") {
        guest();
    } else if std::env::args().any(|a| a == "--bench") {
        host();
    } else {
        println!("xfrm_programming: run it with `cargo bench` (it boots a UML guest)");
    }
}

/// Boots a guest that runs this binary with `--guest` and prints its output.
fn host() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "the benchmark needs root");
    // A UML guest maps its memory page by page; tens of thousands of SAs
    // need more mappings than the host's default vm.max_map_count allows.
    const MAP_COUNT: &str = "/proc/sys/vm/max_map_count";
    let maps: u64 = std::fs::read_to_string(MAP_COUNT)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if maps < 1_048_576 {
        std::fs::write(MAP_COUNT, "1048576").expect("raise vm.max_map_count");
        eprintln!("raised vm.max_map_count from {maps} to 1048576 for the UML guest");
    }
    let exe = std::env::current_exe().expect("own path");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-xfrm");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench dir");
    let sizes = std::env::var("VPCMESH_BENCH_TUNNELS").unwrap_or_else(|_| "1000,10000".into());
    let init = dir.join("init.sh");
    std::fs::write(
        &init,
        format!(
            "#!/bin/sh\nexport PATH=/usr/sbin:/usr/bin:/sbin:/bin\nmount -t proc proc /proc\nmount -t sysfs sys /sys\nmount -t tmpfs tmpfs /run\nfor m in veth xfrm_user esp4 gcm ctr ghash-generic seqiv aes_ti; do modprobe $m; done\nVPCMESH_BENCH_TUNNELS={sizes} {exe} --guest > {out} 2>&1\ndmesg | grep -iE 'killed|oom|out of memory' | tail -5 >> {out}\npoweroff -f\n",
            exe = exe.display(),
            out = dir.join("out.txt").display()
        ),
    )
    .expect("init");
    Command::new("chmod")
        .arg("755")
        .arg(&init)
        .status()
        .expect("chmod");
    let uml = std::env::var("VPCMESH_UML").unwrap_or_else(|_| "linux.uml".into());
    let status = Command::new(uml)
        .args([
            "mem=6144M",
            "root=/dev/root",
            "rootfstype=hostfs",
            "rootflags=/",
            "rw",
        ])
        .arg(format!("init={}", init.display()))
        .args(["con=null", "con0=fd:0,fd:1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("User-Mode Linux runs (./test.sh installs it)");
    assert!(status.success(), "the guest failed");
    print!(
        "{}",
        std::fs::read_to_string(dir.join("out.txt")).unwrap_or_default()
    );
}

fn config(tunnels: u32, moved: Option<u32>) -> DesiredConfig {
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
        tunnels: (0..tunnels)
            .map(|i| {
                let peer = if moved == Some(i) {
                    Ipv4Addr::new(198, 19, 255, 254)
                } else {
                    Ipv4Addr::from(0xC612_0000 + i + 1)
                };
                Tunnel {
                    peer_site: Uuid::from_u128(1000 + i as u128),
                    peer_address: peer,
                    reqid: 1 + i,
                    out: OutboundSa {
                        epoch: 1,
                        spi: 0x10_0000 + i,
                        carried: false,
                    },
                    inbound: InboundSa::pair(1, [0x20_0000 + 2 * i, 0x20_0001 + 2 * i]).to_vec(),
                    local_cidrs: vec!["172.16.0.0/16".parse().expect("literal")],
                    remote_cidrs: vec![ipnet::Ipv4Net::new(
                        Ipv4Addr::from(0x0A00_0000 + (i << 8)),
                        24,
                    )
                    .expect("a /24")],
                    legacy_sa: false,
                    keys: Vec::new(),
                }
            })
            .collect(),
        probe: None,
        ha: None,
    }
}

/// The same objects as `ip -batch` lines (a fixed key of the same size).
fn batch(state: &KernelState) -> String {
    let key = "0x".to_string() + &"ab".repeat(36);
    let mut out = String::new();
    for sa in state.sas.values() {
        let _ = writeln!(
            out,
            "xfrm state add src {} dst {} proto esp spi {:#x} reqid {} mode tunnel replay-window 32 aead rfc4106(gcm(aes)) {key} 128",
            sa.src, sa.dst, sa.spi, sa.reqid
        );
    }
    let dir_of = |d: appliance::xfrm::Direction| match d {
        appliance::xfrm::Direction::In => "in",
        appliance::xfrm::Direction::Out => "out",
        appliance::xfrm::Direction::Fwd => "fwd",
    };
    for b in state.blocks.values() {
        let _ = writeln!(
            out,
            "xfrm policy add src {} dst {} dir {} action block priority {BLOCK_PRIORITY}",
            b.id.src,
            b.id.dst,
            dir_of(b.id.dir)
        );
    }
    for p in state.policies.values() {
        let dir = dir_of(p.id.dir);
        let _ = writeln!(
            out,
            "xfrm policy add src {} dst {} dir {dir} priority {POLICY_PRIORITY} tmpl src {} dst {} proto esp reqid {} mode tunnel",
            p.id.src, p.id.dst, p.tmpl_src, p.tmpl_dst, p.reqid
        );
    }
    for r in state.routes.values() {
        let _ = writeln!(out, "route add {} dev uplink proto 250", r.dst);
    }
    out
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{args:?}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn namespace(name: &str) {
    sh(&["ip", "netns", "add", name]);
    sh(&[
        "ip",
        "-n",
        name,
        "link",
        "add",
        "uplink",
        "type",
        "veth",
        "peer",
        "name",
        "uplink-peer",
    ]);
    sh(&[
        "ip",
        "-n",
        name,
        "addr",
        "add",
        "192.0.2.1/24",
        "dev",
        "uplink",
    ]);
    sh(&["ip", "-n", name, "link", "set", "uplink", "up"]);
    sh(&["ip", "-n", name, "link", "set", "uplink-peer", "up"]);
}

fn rate(objects: usize, d: Duration) -> f64 {
    objects as f64 / d.as_secs_f64()
}

fn guest() {
    let sizes: Vec<u32> = std::env::var("VPCMESH_BENCH_TUNNELS")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let key: EpochKeys = [(1, DataKey::new(vec![7; 32]))].into_iter().collect();
    println!("XFRM programming in a UML guest (kernel {}), tunnels = 1 out SA + 2 in SAs + out/in/fwd policies + 1 route", uname());
    println!(
        "{:>8} {:>8} | {:>12} {:>10} | {:>12} {:>10} | {:>6}",
        "tunnels", "objects", "agent ms", "agent obj/s", "ip ms", "ip obj/s", "ratio"
    );
    for n in sizes {
        let agent_ns = format!("bench-agent-{n}");
        let ip_ns = format!("bench-ip-{n}");
        namespace(&agent_ns);
        namespace(&ip_ns);
        let oif = lab::in_netns(&agent_ns, || {
            Kernel::open()
                .expect("netlink")
                .routes
                .interface_with(LOCAL)
                .expect("dump")
                .expect("uplink")
        });
        let underlay = Underlay { oif, prefsrc: None };
        let desired = desired_state(&config(n, None), &key, underlay).expect("epoch 1 has a key");
        let objects = desired.sas.len() + desired.policies.len() + desired.routes.len();

        let file = format!("/run/bench-{n}.batch");
        std::fs::write(&file, batch(&desired)).expect("batch file");
        let started = Instant::now();
        sh(&["ip", "-n", &ip_ns, "-batch", &file]);
        let ip_time = started.elapsed();
        // Free the reference's SAs before the agent programs its own.
        sh(&["ip", "netns", "del", &ip_ns]);

        let want = desired.clone();
        let (agent_time, report) = lab::in_netns(&agent_ns, move || {
            let mut k = Kernel::open().expect("netlink");
            let started = Instant::now();
            let report = k.reconcile(&want).expect("reconcile");
            (started.elapsed(), report)
        });
        assert_eq!(report.added, objects, "every object added");
        println!(
            "{n:>8} {objects:>8} | {:>12.1} {:>10.0} | {:>12.1} {:>10.0} | {:>5.2}x",
            agent_time.as_secs_f64() * 1e3,
            rate(objects, agent_time),
            ip_time.as_secs_f64() * 1e3,
            rate(objects, ip_time),
            ip_time.as_secs_f64() / agent_time.as_secs_f64()
        );

        // One peer moves: read everything back, diff, touch only its objects.
        let moved =
            desired_state(&config(n, Some(n / 2)), &key, underlay).expect("epoch 1 has a key");
        let (change_time, report) = lab::in_netns(&agent_ns, move || {
            let mut k = Kernel::open().expect("netlink");
            let started = Instant::now();
            let report = k.reconcile(&moved).expect("reconcile");
            (started.elapsed(), report)
        });
        let (noop_time, noop) = {
            let again =
                desired_state(&config(n, Some(n / 2)), &key, underlay).expect("epoch 1 has a key");
            lab::in_netns(&agent_ns, move || {
                let mut k = Kernel::open().expect("netlink");
                let started = Instant::now();
                let report = k.reconcile(&again).expect("reconcile");
                (started.elapsed(), report)
            })
        };
        println!(
            "{:>8} one-peer change: {:.1} ms (added {}, replaced {}, deleted {}); unchanged reconcile: {:.1} ms (changes {})",
            "",
            change_time.as_secs_f64() * 1e3,
            report.added,
            report.replaced,
            report.deleted,
            noop_time.as_secs_f64() * 1e3,
            noop.added + noop.replaced + noop.deleted
        );
        sh(&["ip", "netns", "del", &agent_ns]);
    }
}

fn uname() -> String {
    Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
