//! The whole system on one machine: a network provisioned in moto, its
//! appliances as namespaces in a User-Mode Linux guest running the real
//! agent with their launch templates' tokens, registering with the real
//! server over a tap, decrypting the epoch key with KMS (moto) and carrying
//! encrypted traffic between the VPC hosts.

use crate::appliances::tokens;
use crate::networks::{appliances, place, World};
use crate::uml::run_in_guest_on;
use crate::uml_lab::{self as lab, start_agent_run, topology};
use serde_json::Value;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Duration;

const LAB_ADDRESS: &str = "100.64.0.1";

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A namespace with the tap the guest attaches to; deleted on drop.
struct LabNetns(String);

impl LabNetns {
    fn new() -> Self {
        let name = format!("vpcmesh-lab-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        ip(&[
            "-n", &name, "tuntap", "add", "mode", "tap", "name", "tap0", "vnet_hdr",
        ]);
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{LAB_ADDRESS}/24"),
            "dev",
            "tap0",
        ]);
        ip(&["-n", &name, "link", "set", "tap0", "up"]);
        // The appliances' WAN (198.51.100.0/24) sits behind the guest.
        ip(&[
            "-n",
            &name,
            "route",
            "add",
            "198.51.100.0/24",
            "via",
            "100.64.0.2",
            "dev",
            "tap0",
            "onlink",
        ]);
        LabNetns(name)
    }

    /// A TCP listener on the lab address, created inside the namespace.
    fn listen(&self) -> tokio::net::TcpListener {
        let path = format!("/run/netns/{}", self.0);
        let listener = std::thread::spawn(move || {
            let ns = File::open(&path).expect("the lab namespace");
            // SAFETY: a valid namespace fd; only this thread moves.
            assert_eq!(
                unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            std::net::TcpListener::bind((LAB_ADDRESS, 0)).expect("bind in the lab namespace")
        })
        .join()
        .expect("listener thread");
        listener.set_nonblocking(true).expect("nonblocking");
        tokio::net::TcpListener::from_std(listener).expect("tokio listener")
    }
}

impl Drop for LabNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Forwards connections from the lab namespace to `target` on loopback.
async fn proxy(listener: tokio::net::TcpListener, target: String) {
    while let Ok((mut inbound, _)) = listener.accept().await {
        let target = target.clone();
        tokio::spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

fn site_by_vpc<'a>(net: &'a Value, vpc: &str) -> &'a Value {
    net["sites"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["vpc_id"] == vpc))
        .expect("the site of the VPC")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_register_with_the_server_decrypt_with_kms_and_carry_esp() {
    let mut w = World::new().await;
    let placed = place(
        &w,
        &[
            ("us-east-1", "10.1.0.0/16", true),
            ("eu-west-1", "10.2.0.0/16", true),
        ],
    )
    .await;
    let (id, net, _) = w.full_mesh("lab", &placed, "us-east-1").await;
    w.run(&id, "apply", "ready").await;
    let dir = crate::uml::shared_dir("lab");

    // moto hands out Elastic IPs in 127/8, which cannot cross a wire: the lab
    // gives each site's Elastic IP a WAN address, as AWS's edge would route it.
    for (i, p) in placed.iter().enumerate() {
        let lab_index = i as u8 + 1;
        let site = site_by_vpc(&net, &p.vpc.id);
        let site_id = site["id"].as_str().expect("site id");
        sqlx::query("UPDATE sites SET outputs = jsonb_set(outputs, '{PublicIp}', to_jsonb($2::text)) WHERE id = $1::uuid")
            .bind(site_id)
            .bind(lab::wan(lab_index).to_string())
            .execute(&w.app.state.pool)
            .await
            .expect("lab address");
        let token = tokens(&w, p.region).await[&'a'].clone();
        let instance = appliances(&w.customer, p.region, site_id).await[0].clone();
        let boot = serde_json::json!({
            "server_url": "http://unused.invalid", "network_id": id, "site_id": site_id,
            "member": "a", "bootstrap_token": token,
        });
        std::fs::write(
            dir.join(format!("s{lab_index}.agent.json")),
            boot.to_string(),
        )
        .expect("agent.json");
        std::fs::write(
            dir.join(format!("s{lab_index}.instance")),
            format!("{} {}", instance.0, instance.1),
        )
        .expect("instance");
    }

    let netns = LabNetns::new();
    let server = netns.listen();
    let server_port = server.local_addr().expect("addr").port();
    let router = server::http::router(w.app.state.clone());
    tokio::spawn(async move { axum::serve(server, router).await });
    let kms = netns.listen();
    let kms_port = kms.local_addr().expect("addr").port();
    let moto_target = crate::moto::moto()
        .await
        .url
        .trim_start_matches("http://")
        .to_string();
    tokio::spawn(proxy(kms, moto_target));

    let (key, secret, token) = w.customer.credentials();
    let mut script = topology(&[1, 2]);
    script += &format!(
        r#"ip link set vec0 netns wan
ip -n wan addr add 100.64.0.2/24 dev vec0; ip -n wan link set vec0 up
ip -n wan addr add 198.51.100.254/24 dev br0
ip netns exec wan sysctl -qw net.ipv4.ip_forward=1
ip -n s1 route add default via 198.51.100.254; ip -n s2 route add default via 198.51.100.254
export AWS_ACCESS_KEY_ID={key} AWS_SECRET_ACCESS_KEY={secret} AWS_SESSION_TOKEN={token}
"#,
        token = token.unwrap_or_default()
    );
    for i in [1u8, 2] {
        let instance =
            std::fs::read_to_string(dir.join(format!("s{i}.instance"))).expect("instance");
        let (instance_id, az) = instance.split_once(' ').expect("id and AZ");
        script += &start_agent_run(
            i,
            &format!(
                "--server-url http://{LAB_ADDRESS}:{server_port} --instance-id {instance_id} --availability-zone {az} --private-ip {} --aws-endpoint-url http://{LAB_ADDRESS}:{kms_port} --status-every-secs 1 --long-poll-secs 5",
                lab::wan(i)
            ),
        );
    }
    script += "n=0; until ip netns exec h1 ping -c 1 -W 1 10.2.0.10 > /dev/null 2>&1; do n=$((n+1)); [ $n -gt 60 ] && echo 'the tunnel never came up' && break; sleep 0.5; done\n";
    script += "ip netns exec wan dumpcap -q -i br0 -f 'not host 100.64.0.2 and not net 100.64.0.0/24' -w wan.pcap > dumpcap.log 2>&1 &\nCAP=$!\nsleep 2\n";
    script += "ip netns exec h1 ping -c 4 -i 0.2 -W 2 10.2.0.10 > ping-1-2.txt 2>&1; echo \"rc=$?\" >> ping-1-2.txt\n";
    script += "ip netns exec h2 ping -c 4 -i 0.2 -W 2 10.1.0.10 > ping-2-1.txt 2>&1; echo \"rc=$?\" >> ping-2-1.txt\n";
    script += "sleep 2.5\nkill -INT $CAP; wait $CAP\nip -n s1 xfrm state > s1.xfrm.txt\n";
    let guest_dir = dir.clone();
    let ns_name = netns.0.clone();
    let run = tokio::task::spawn_blocking(move || {
        run_in_guest_on(
            &guest_dir,
            &script,
            Duration::from_secs(240),
            Some(&ns_name),
        )
    })
    .await
    .expect("guest thread");

    for (a, b) in [(1, 2), (2, 1)] {
        let text = run.file(&format!("ping-{a}-{b}.txt"));
        assert!(
            text.contains("4 received") && text.contains("rc=0"),
            "ping {a}->{b}:\n{text}\nguest:\n{}\nagent 1:\n{}\nagent 2:\n{}",
            run.log,
            run.file("s1.agent.log"),
            run.file("s2.agent.log")
        );
    }
    // Only ESP in UDP 4500 (NAT-T is on by default) between the sites.
    let out = Command::new("tshark")
        .arg("-r")
        .arg(dir.join("wan.pcap"))
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
        .expect("tshark");
    let fields = String::from_utf8_lossy(&out.stdout).to_string();
    let packets: Vec<&str> = fields.lines().collect();
    assert!(packets.len() >= 16, "{packets:?}");
    assert!(
        packets.iter().all(|p| p.starts_with("17\t4500")),
        "{packets:?}"
    );
    let xfrm = run.file("s1.xfrm.txt");
    assert!(
        xfrm.contains("aead rfc4106(gcm(aes))") && xfrm.contains("espinudp"),
        "{xfrm}"
    );

    // The server heard from both: registered, applied its current config, tunnel up.
    let rows: Vec<(String, Option<i64>, Value)> = sqlx::query_as(
        "SELECT a.instance_id, a.applied_version, a.tunnels FROM appliances a
           JOIN sites s ON s.id = a.site_id WHERE s.network_id = $1::uuid AND a.retired_at IS NULL",
    )
    .bind(&id)
    .fetch_all(&w.app.state.pool)
    .await
    .expect("appliances");
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (instance, applied, tunnels) in rows {
        assert!(
            applied.is_some(),
            "{instance} never reported an applied config"
        );
        assert_eq!(tunnels[0]["state"], "up", "{instance}: {tunnels}");
        assert!(
            tunnels[0]["in_packets"].as_u64().unwrap_or(0) >= 8,
            "{instance}: {tunnels}"
        );
    }
    let log = run.file("s1.agent.log");
    assert!(
        !log.contains("vma_") && !log.contains("vmb_"),
        "secrets in the agent log:\n{log}"
    );
}
