//! The whole system on one machine: a network provisioned in moto, its
//! appliances as namespaces in a User-Mode Linux guest running the real
//! agent with their launch templates' tokens, registering with the real
//! server over a tap, decrypting the epoch key with KMS (moto) and carrying
//! encrypted traffic between the VPC hosts.

use crate::appliances::{add_private_ip, instance, tokens};
use crate::networks::{place, World};
use crate::uml::run_in_guest_on;
use crate::uml_lab::{self as lab, start_agent_run, topology};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

const LAB_ADDRESS: &str = "100.64.0.1";

pub(crate) fn ip(args: &[&str]) {
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
        let listener = lab::in_netns(&self.0, || {
            std::net::TcpListener::bind((LAB_ADDRESS, 0)).expect("bind in the lab namespace")
        });
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
pub(crate) async fn proxy(listener: tokio::net::TcpListener, target: String) {
    while let Ok((mut inbound, _)) = listener.accept().await {
        let target = target.clone();
        tokio::spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

/// Shell: 4 pings from site `from`'s VPC host to `to`, into `name`.txt.
fn ping(from: u8, to: &str, name: &str) -> String {
    format!("ip netns exec h{from} ping -c 4 -i 0.2 -W 2 {to} > {name}.txt 2>&1; echo \"rc=$?\" >> {name}.txt\n")
}

fn site_by_vpc<'a>(net: &'a Value, vpc: &str) -> &'a Value {
    net["sites"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["vpc_id"] == vpc))
        .expect("the site of the VPC")
}

/// Pings per pair during the rotation, at 50 per second.
const ROTATION_PINGS: u64 = 1500;
/// Pings across site 1's reboot, at 50 per second.
const REBOOT_PINGS: u64 = 750;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_register_with_the_server_decrypt_with_kms_and_carry_esp() {
    let mut w = World::new().await;
    let placed = place(
        &w,
        &[
            ("us-east-1", "10.1.0.0/16", true),
            ("eu-west-1", "10.2.0.0/16", true),
            ("ap-southeast-2", "10.3.0.0/16", true),
        ],
    )
    .await;
    let (id, net, _) = w.full_mesh("lab", &placed, "us-east-1").await;
    w.run(&id, "apply", "ready").await;
    let dir = crate::uml::shared_dir("lab");

    // moto hands out Elastic IPs in 127/8, which cannot cross a wire: the lab
    // gives each site's Elastic IP a WAN address, as AWS's edge would route it.
    let mut site_ids = Vec::new();
    for (i, p) in placed.iter().enumerate() {
        let lab_index = i as u8 + 1;
        let site = site_by_vpc(&net, &p.vpc.id);
        let site_id = site["id"].as_str().expect("site id");
        site_ids.push(site_id.to_string());
        sqlx::query("UPDATE sites SET outputs = jsonb_set(outputs, '{PublicIp}', to_jsonb($2::text)) WHERE id = $1::uuid")
            .bind(site_id)
            .bind(lab::wan(lab_index).to_string())
            .execute(&w.app.state.pool)
            .await
            .expect("lab address");
        let token = tokens(&w, p.region).await[&'a'].clone();
        let member_a = instance(&w, p.region, 'a').await;
        // The lab's appliance holds its WAN address itself (no 1:1 NAT yet):
        // EC2 must know it as the instance's, or registration is refused.
        add_private_ip(&w, p.region, &member_a.id, &lab::wan(lab_index).to_string()).await;
        let instance = (member_a.id, member_a.az);
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
    let sites = [1u8, 2, 3];
    let mut script = topology(&sites);
    script += &format!(
        r#"ip link set vec0 netns wan
ip -n wan addr add 100.64.0.2/24 dev vec0; ip -n wan link set vec0 up
ip -n wan addr add 198.51.100.254/24 dev br0
ip netns exec wan sysctl -qw net.ipv4.ip_forward=1
for s in s1 s2 s3; do ip -n $s route add default via 198.51.100.254; done
export AWS_ACCESS_KEY_ID={key} AWS_SECRET_ACCESS_KEY={secret} AWS_SESSION_TOKEN={token}
"#,
        token = token.unwrap_or_default()
    );
    let agent_args = |i: u8| {
        let instance =
            std::fs::read_to_string(dir.join(format!("s{i}.instance"))).expect("instance");
        let (instance_id, az) = instance.split_once(' ').expect("id and AZ");
        format!(
            "--server-url http://{LAB_ADDRESS}:{server_port} --allow-insecure-http --instance-id {instance_id} --availability-zone {az} --private-ip {} --aws-endpoint-url http://{LAB_ADDRESS}:{kms_port} --status-every-secs 1 --long-poll-secs 2",
            lab::wan(i)
        )
    };
    for i in sites {
        script += &start_agent_run(i, &agent_args(i));
    }
    for (a, b) in [(1, 2), (1, 3), (2, 3)] {
        script += &format!("n=0; until ip netns exec h{a} ping -c 1 -W 1 10.{b}.0.10 > /dev/null 2>&1; do n=$((n+1)); [ $n -gt 60 ] && echo 'tunnel {a}-{b} never came up' && break; sleep 0.5; done\n");
    }
    script += "ip netns exec wan dumpcap -q -i br0 -f 'not net 100.64.0.0/24' -w wan.pcap > dumpcap.log 2>&1 &\nCAP=$!\nsleep 2\n";
    for (a, b) in [(1, 2), (2, 1), (1, 3), (3, 2)] {
        script += &ping(a, &format!("10.{b}.0.10"), &format!("ping-{a}-{b}"));
    }
    script += "sleep 2.5\nkill -INT $CAP; wait $CAP\nip -n s1 xfrm state > s1.xfrm.txt\n";
    // Phase 2: the customer adds 10.33.0.0/16 to VPC 3; the server's config
    // change reaches the agents, which touch only the tunnels to site 3.
    script += "ip -n s3 addr add 10.33.0.1/16 dev lan0; ip -n h3 addr add 10.33.0.10/16 dev eth0\n";
    script += "ip -n s1 xfrm monitor SA policy > s1.monitor.txt 2>&1 &\nMON=$!\nsleep 0.5\ntouch phase1.done\n";
    script += "n=0; until [ -f go2 ]; do n=$((n+1)); [ $n -gt 600 ] && break; sleep 0.2; done\n";
    script += "n=0; until ip netns exec h1 ping -c 1 -W 1 10.33.0.10 > /dev/null 2>&1; do n=$((n+1)); [ $n -gt 60 ] && echo 'the new CIDR never became reachable' && break; sleep 0.5; done\n";
    script += "sleep 1; kill $MON\n";
    script += &ping(1, "10.33.0.10", "ping-1-33");
    // Phase 3: the key is rotated under two 50/s pings (1,500 each, 30 s):
    // make-before-break loses none of them.
    script += "ip -n s1 xfrm monitor SA policy > s1.rotate.monitor.txt 2>&1 &\nMON=$!\n";
    for (a, b) in [(1, 2), (2, 3)] {
        script += &format!("ip netns exec h{a} ping -q -c {ROTATION_PINGS} -i 0.02 -W 2 10.{b}.0.10 > rotate-{a}-{b}.txt 2>&1 &\nP{a}=$!\n");
    }
    script += "sleep 1; touch phase2.done\nwait $P1 $P2\nkill $MON\nip -n s1 xfrm state > s1.xfrm.rotated.txt\n";
    script += "n=0; until [ -f go3 ]; do n=$((n+1)); [ $n -gt 300 ] && break; sleep 0.2; done\n";
    // Phase 4: site 1 reboots under a 50/s ping from site 2: its kernel
    // loses every SA, policy and route, its agent starts again. It must not
    // install its old SAs again (sequence numbers from 1 under the same key):
    // it gets a fresh generation, and the peers switch to it.
    script += "ip -n s1 xfrm state > s1.xfrm.before-reboot.txt\n";
    script += "for s in s2 s3; do ip -n $s -s xfrm state > $s.xfrm.before-reboot.txt; done\n";
    script += &format!("ip netns exec h2 ping -c {REBOOT_PINGS} -i 0.02 -W 1 10.1.0.10 > reboot-2-1.txt 2>&1 &\nP=$!\nsleep 3\n");
    script += "kill $(cat s1.pid); while kill -0 $(cat s1.pid) 2>/dev/null; do sleep 0.05; done\n";
    script +=
        "ip -n s1 xfrm state flush; ip -n s1 xfrm policy flush; ip -n s1 route flush proto 250\n";
    script += &start_agent_run(1, &agent_args(1));
    script += "wait $P\nip -n s1 xfrm state > s1.xfrm.after-reboot.txt\n";
    script += "for s in s2 s3; do ip -n $s -s xfrm state > $s.xfrm.after-reboot.txt; done\n";
    // Phase 5: the control plane disappears; forwarding goes on (fail static).
    script += "ip -n wan link set vec0 down\nsleep 9\n";
    script += &ping(1, "10.2.0.10", "ping-static");
    let guest_dir = dir.clone();
    let ns_name = netns.0.clone();
    let guest = tokio::task::spawn_blocking(move || {
        run_in_guest_on(
            &guest_dir,
            &script,
            Duration::from_secs(420),
            Some(&ns_name),
        )
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    while !dir.join("phase1.done").exists()
        && std::time::Instant::now() < deadline
        && !guest.is_finished()
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sqlx::query("UPDATE sites SET cidrs = cidrs || '10.33.0.0/16'::cidr WHERE id = $1::uuid")
        .bind(&site_ids[2])
        .execute(&w.app.state.pool)
        .await
        .expect("a new CIDR for VPC 3");
    std::fs::write(dir.join("go2"), "").expect("go2");

    // Rotate once the pings run; watch the appliances report rekeying, then
    // every one accept and send with epoch 2 only, and epoch 1 retire.
    while !dir.join("phase2.done").exists()
        && std::time::Instant::now() < deadline
        && !guest.is_finished()
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rotated_at = std::time::Instant::now();
    let r = w
        .admin
        .json(
            axum::http::Method::POST,
            &format!("/api/v1/networks/{id}/keys/rotate"),
            None,
        )
        .await;
    assert_eq!(r.status, axum::http::StatusCode::OK, "{}", r.text());
    let mut saw_rekeying = false;
    let rotation_took = loop {
        let rows: Vec<(Vec<i32>, Value)> = sqlx::query_as(
            "SELECT a.epochs, a.tunnels FROM appliances a JOIN sites s ON s.id = a.site_id
              WHERE s.network_id = $1::uuid AND a.retired_at IS NULL",
        )
        .bind(&id)
        .fetch_all(&w.app.state.pool)
        .await
        .expect("appliances");
        saw_rekeying |= rows
            .iter()
            .any(|(_, t)| t.to_string().contains("\"rekeying\""));
        let old: String = sqlx::query_scalar(
            "SELECT state FROM key_epochs WHERE network_id = $1::uuid AND epoch = 1",
        )
        .bind(&id)
        .fetch_one(&w.app.state.pool)
        .await
        .expect("epoch 1");
        let done = old == "retired"
            && rows.iter().all(|(e, t)| {
                e == &[2]
                    && t.as_array().is_some_and(|t| {
                        // The 1-3 tunnel carries nothing now: pending is fine.
                        t.iter().all(|t| {
                            t["out_epoch"] == 2 && (t["state"] == "up" || t["state"] == "pending")
                        })
                    })
            });
        if done {
            break rotated_at.elapsed();
        }
        if rotated_at.elapsed() > Duration::from_secs(90) || guest.is_finished() {
            panic!("the rotation did not finish: epoch 1 is {old}; appliances {rows:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("rotation: epoch 1 retired and all appliances on epoch 2 after {rotation_took:?}");
    std::fs::write(dir.join("go3"), "").expect("go3");
    let run = guest.await.expect("guest thread");

    let logs = || {
        format!(
            "guest:\n{}\nagent 1:\n{}\nagent 3:\n{}",
            run.log,
            run.file("s1.agent.log"),
            run.file("s3.agent.log")
        )
    };
    for name in [
        "ping-1-2",
        "ping-2-1",
        "ping-1-3",
        "ping-3-2",
        "ping-1-33",
        "ping-static",
    ] {
        let text = run.file(&format!("{name}.txt"));
        assert!(
            text.contains("4 received") && text.contains("rc=0"),
            "{name}:\n{text}\n{}",
            logs()
        );
    }
    // Only ESP in UDP 4500 (NAT-T is on by default) between the sites.
    let packets = lab::wan_packets(&dir.join("wan.pcap"));
    assert!(packets.len() >= 16, "{packets:?}");
    assert!(
        packets.iter().all(
            |(proto, port, icmp)| (proto.as_str(), port.as_str(), icmp.as_str())
                == ("17", "4500", "")
        ),
        "{packets:?}"
    );
    let xfrm = run.file("s1.xfrm.txt");
    assert!(
        xfrm.contains("aead rfc4106(gcm(aes))") && xfrm.contains("espinudp"),
        "{xfrm}"
    );

    // The server heard from all three: registered, applied its current
    // config, and (as last reported, after the rotation) the pinged tunnels
    // 1-2 and 2-3 up on both ends with their traffic counted; 1-3, idle
    // since its SAs were re-keyed, pending.
    let mut up = 0;
    let rows: Vec<(String, Option<i64>, Value)> = sqlx::query_as(
        "SELECT a.instance_id, a.applied_version, a.tunnels FROM appliances a
           JOIN sites s ON s.id = a.site_id WHERE s.network_id = $1::uuid AND a.retired_at IS NULL",
    )
    .bind(&id)
    .fetch_all(&w.app.state.pool)
    .await
    .expect("appliances");
    assert_eq!(rows.len(), 3, "{rows:?}");
    for (instance, applied, tunnels) in rows {
        assert!(
            applied.is_some(),
            "{instance} never reported an applied config"
        );
        let tunnels = tunnels.as_array().cloned().unwrap_or_default();
        assert_eq!(tunnels.len(), 2, "{instance}: {tunnels:?}");
        for t in tunnels {
            assert_eq!(t["out_epoch"], 2, "{instance}: {t}");
            match t["state"].as_str() {
                Some("up") => {
                    up += 1;
                    assert!(
                        t["in_packets"].as_u64().unwrap_or(0) >= 4,
                        "{instance}: {t}"
                    );
                }
                Some("pending") => {}
                _ => panic!("{instance}: {t}"),
            }
        }
    }
    assert_eq!(up, 4, "tunnels up after the rotation");
    // The CIDR change touched only site 1's tunnel to site 3: 3 policies
    // and a route added, nothing replaced or removed, no SA touched.
    let log = run.file("s1.agent.log");
    assert!(log.contains("added=4 replaced=0 deleted=0"), "{log}");
    let monitor = run.file("s1.monitor.txt");
    assert!(monitor.contains("10.33.0.0/16"), "{monitor}");
    assert!(
        !monitor.contains("proto esp spi"),
        "an SA was touched:\n{monitor}"
    );
    assert!(
        !monitor.contains("10.2.0.0/16"),
        "the tunnel to site 2 was touched:\n{monitor}"
    );
    // The rotation: the console could see it, it finished while the pings
    // ran, and not one of their packets was lost.
    assert!(saw_rekeying, "no appliance ever reported rekeying");
    assert!(
        rotation_took < Duration::from_secs(ROTATION_PINGS / 50 - 5),
        "the rotation took {rotation_took:?}, longer than the pings ran"
    );
    for name in ["rotate-1-2", "rotate-2-3"] {
        let text = run.file(&format!("{name}.txt"));
        assert!(
            text.contains(&format!(
                "{ROTATION_PINGS} packets transmitted, {ROTATION_PINGS} received"
            )),
            "{name} lost packets during the rotation:\n{text}\n{}",
            logs()
        );
    }
    // Site 1 accepted both epochs, then only the new one; no policy changed.
    assert!(
        log.contains("epochs=[2, 1]") && log.contains("epochs=[2]"),
        "{log}"
    );
    let monitor = run.file("s1.rotate.monitor.txt");
    assert!(monitor.contains("proto esp spi"), "{monitor}");
    assert!(
        !monitor.contains("priority"),
        "a policy was touched:\n{monitor}"
    );
    // Before: epoch 1's SPIs (odd: top bit set); after: only epoch 2's.
    let spis = |text: &str| -> Vec<u32> {
        text.split("spi 0x")
            .skip(1)
            .filter_map(|s| u32::from_str_radix(s.split_whitespace().next()?, 16).ok())
            .collect()
    };
    let (before, after) = (spis(&xfrm), spis(&run.file("s1.xfrm.rotated.txt")));
    assert_eq!((before.len(), after.len()), (6, 6), "{xfrm}");
    assert!(before.iter().all(|s| s >> 31 == 1), "{before:x?}");
    assert!(after.iter().all(|s| s >> 31 == 0), "{after:x?}");

    // The reboot: traffic resumed, on outbound SPIs site 1 never had
    // before, and the peers dropped nothing as a replay.
    let text = run.file("reboot-2-1.txt");
    let answered: Vec<u64> = text
        .lines()
        .filter_map(|l| {
            l.split("icmp_seq=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    let lost = REBOOT_PINGS - answered.len() as u64;
    eprintln!("reboot of site 1 under a 50/s ping: {lost} of {REBOOT_PINGS} lost, an outage of about {} ms", lost * 20);
    assert!(
        (REBOOT_PINGS - 50..=REBOOT_PINGS).all(|seq| answered.contains(&seq)),
        "traffic did not resume after the reboot:\n{text}\n{}",
        logs()
    );
    let (before, after) = (
        spis(&run.file("s1.xfrm.before-reboot.txt")),
        spis(&run.file("s1.xfrm.after-reboot.txt")),
    );
    assert_eq!(after.len(), 6, "{after:x?}");
    assert!(
        after.iter().all(|s| !before.contains(s)),
        "an SA came back with its old SPI (and key): before {before:x?}, after {after:x?}"
    );
    let replays = |text: &str| -> u64 {
        text.split(" replay ")
            .skip(1)
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    };
    for peer in ["s2", "s3"] {
        let (b, a) = (
            run.file(&format!("{peer}.xfrm.before-reboot.txt")),
            run.file(&format!("{peer}.xfrm.after-reboot.txt")),
        );
        assert!(b.contains(" replay ") && a.contains(" replay "), "{b}\n{a}");
        assert_eq!(
            replays(&a),
            replays(&b),
            "{peer} dropped replays:\n{b}\n{a}"
        );
    }
    assert!(log.contains("moved to a fresh one"), "{log}");

    // Fail static: the server went away, the agent said so, traffic flowed.
    assert!(log.contains("keeping the last one"), "{log}");
    for i in sites {
        let log = run.file(&format!("s{i}.agent.log"));
        assert!(
            !log.contains("vma_") && !log.contains("vmb_"),
            "secrets in agent {i}'s log:\n{log}"
        );
    }
}
