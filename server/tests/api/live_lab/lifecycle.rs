//! A provisioned network living on in the lab runner: a CIDR added to one
//! of its VPCs, an appliance rebooted.

use super::live_test;
use super::{assert_only_esp_in_udp, provision, LiveLab, FIRST_PING};
use crate::appliances::running_instances;
use crate::networks::{place, World};
use std::time::{Duration, Instant};
use vpcmesh_lab::model::Host;

/// The SPIs of every SA in `ip xfrm state` output (with `-s` or without).
fn spis(text: &str) -> Vec<u32> {
    text.split("spi 0x")
        .skip(1)
        .filter_map(|s| {
            // `ip -s` writes the decimal after the hex: `0x8002(32770)`.
            let hex: String = s.chars().take_while(char::is_ascii_hexdigit).collect();
            u32::from_str_radix(&hex, 16).ok()
        })
        .collect()
}

/// When each SA was installed (`add` times in `ip -s xfrm state` output).
fn install_times(text: &str) -> Vec<String> {
    let mut times: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("add "))
        .map(|rest| rest.split(" use ").next().unwrap_or(rest).to_string())
        .collect();
    times.sort();
    times
}

/// Replay drops over every SA in `ip -s xfrm state` output.
fn replays(text: &str) -> u64 {
    text.split(" replay ")
        .skip(1)
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// (transmitted, received) from a ping's summary.
fn ping_summary(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.contains("packets transmitted"))?;
    let mut n = line
        .split(',')
        .filter_map(|part| part.split_whitespace().next()?.parse::<u64>().ok());
    Some((n.next()?, n.next()?))
}

/// The sequence numbers a ping saw answered.
fn answered(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| {
            l.split("icmp_seq=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

impl LiveLab {
    /// Starts `ping` from `from` to `to` in the background every
    /// `interval` seconds, its output in `name`.txt (in the lab folder).
    async fn start_ping(&self, name: &str, from: &Host, to: &Host, interval: &str) {
        let out = self
            .sh(&format!(
                "ip netns exec {} ping -i {interval} -W 1 {} > {name}.txt 2>&1 &\necho $! > {name}.pid",
                from.name, to.address
            ))
            .await;
        assert!(out.ok(), "{out:?}");
    }

    /// Stops the background ping `name` (its summary is printed on SIGINT);
    /// returns its output.
    async fn stop_ping(&self, name: &str) -> String {
        let out = self
            .sh(&format!(
                "kill -INT $(cat {name}.pid); while kill -0 $(cat {name}.pid) 2>/dev/null; do sleep 0.05; done; cat {name}.txt"
            ))
            .await;
        assert!(out.ok(), "{out:?}");
        out.stdout
    }

    /// Polls `what` (a shell test) in the guest every 100 ms until it holds.
    async fn until(&self, what: &str, script: &str, within: Duration) -> Duration {
        let started = Instant::now();
        loop {
            if self.sh(script).await.ok() {
                return started.elapsed();
            }
            if started.elapsed() > within {
                panic!("{what}: not within {within:?}\n{}", self.logs().await);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cidr_added_to_a_vpc_reaches_the_far_side_and_touches_no_sa() {
    live_test(
        "a_cidr_added_to_a_vpc_reaches_the_far_side_and_touches_no_sa",
        a_cidr_added_to_a_vpc_reaches_the_far_side_and_touches_no_sa_once,
    )
    .await;
}

async fn a_cidr_added_to_a_vpc_reaches_the_far_side_and_touches_no_sa_once() {
    let mut w = World::new().await;
    let placed = place(
        &w,
        &[
            ("us-east-1", "10.81.0.0/16", true),
            ("eu-west-1", "10.82.0.0/16", true),
        ],
    )
    .await;
    let lab = LiveLab::start(&w, "cidr", &["us-east-1", "eu-west-1"]).await;
    let (id, _) = provision(
        &mut w,
        "cidr added",
        "full_mesh",
        &placed,
        &["edge", "edge"],
    )
    .await;
    let (east, west) = (
        lab.host(&placed[0].vpc.id).await,
        lab.host(&placed[1].vpc.id).await,
    );
    lab.until_ping(&east, &west, FIRST_PING).await;

    // The customer adds 10.83.0.0/16 to the western VPC; the lab gives it
    // a test host (on a segment of its own, routed by the main table).
    let added = "10.83.0.0/16";
    w.customer
        .ec2("eu-west-1")
        .associate_vpc_cidr_block()
        .vpc_id(&placed[1].vpc.id)
        .cidr_block(added)
        .send()
        .await
        .expect("AssociateVpcCidrBlock");
    let deadline = Instant::now() + Duration::from_secs(30);
    let far = loop {
        let hosts = lab.lab().hosts();
        if let Some(h) = hosts.iter().find(|h| h.cidr.to_string() == added) {
            break h.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no test host on {added}: {hosts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Not part of the network yet: nothing carries it.
    let before = lab
        .sh(&format!(
            "ip netns exec {} ping -c 2 -i 0.2 -W 1 {}",
            east.name, far.address
        ))
        .await;
    assert!(
        !before.ok(),
        "{added} answered before it was added: {before:?}"
    );

    let east_appliance = running_instances(&w.customer, "us-east-1", Some('a'))
        .await
        .into_iter()
        .next()
        .expect("east's appliance");
    let ns = &east_appliance.id;
    let sas_before = lab.sh(&format!("ip -n {ns} -s xfrm state")).await.stdout;
    assert!(!spis(&sas_before).is_empty(), "{sas_before}");
    lab.start_ping("cidr-steady", &east, &west, "0.1").await;

    // The site learns the CIDR (no API rediscovers a provisioned site's
    // CIDRs: the row changes as the old hand-built lab changed it), and
    // every config of the network changes with it (a trigger wakes the
    // agents' long polls).
    let changed_at = Instant::now();
    let updated = sqlx::query(
        "UPDATE sites SET cidrs = cidrs || $2::cidr WHERE network_id = $1::uuid AND vpc_id = $3",
    )
    .bind(&id)
    .bind(added)
    .bind(&placed[1].vpc.id)
    .execute(&w.app.state.pool)
    .await
    .expect("the western site gains the CIDR");
    assert_eq!(updated.rows_affected(), 1);
    // The eastern VPC's route to the new CIDR points at its appliance, as
    // provisioning points every remote CIDR (a provisioned network's
    // routes are not applied again, so the route is put where apply puts
    // it: in every route table of the VPC).
    let ec2 = w.customer.ec2("us-east-1");
    let tables = ec2
        .describe_route_tables()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("vpc-id")
                .values(&placed[0].vpc.id)
                .build(),
        )
        .send()
        .await
        .expect("DescribeRouteTables");
    for t in tables.route_tables() {
        ec2.create_route()
            .route_table_id(t.route_table_id().expect("a table id"))
            .destination_cidr_block(added)
            .network_interface_id(&east_appliance.interface_id)
            .send()
            .await
            .expect("CreateRoute");
    }

    let took = lab.until_ping(&east, &far, Duration::from_secs(60)).await;
    eprintln!(
        "cidr added: {added} answered {:?} after the site changed (the first try {took:?} in)",
        changed_at.elapsed()
    );
    lab.capture("cidr.pcap").await;
    for (from, to) in [(&east, &far), (&far, &east)] {
        let ping = lab
            .sh(&format!(
                "ip netns exec {} ping -c 5 -i 0.2 -W 1 {}",
                from.name, to.address
            ))
            .await;
        assert!(
            ping.stdout.contains("5 received"),
            "{} -> {}: {ping:?}",
            from.address,
            to.address
        );
    }
    assert_only_esp_in_udp(&lab.captured("cidr.pcap").await, 20);

    // The tunnel already up did not notice: no ping of the steady 10/s
    // stream was lost, and no SA was touched; policies for the new CIDR
    // were added.
    let steady = lab.stop_ping("cidr-steady").await;
    let (sent, received) = ping_summary(&steady).expect("a ping summary");
    assert!(
        sent >= 20 && received + 1 >= sent,
        "the existing tunnel lost packets while the CIDR was added:\n{steady}"
    );
    let policies = lab.sh(&format!("ip -n {ns} xfrm policy")).await.stdout;
    assert!(
        policies.contains(&format!("dst {added}")) && policies.contains(&format!("src {added}")),
        "no policies for {added}:\n{policies}"
    );
    // The same SAs, none installed again (their install times unchanged).
    let sas_after = lab.sh(&format!("ip -n {ns} -s xfrm state")).await.stdout;
    let (mut b, mut a) = (spis(&sas_before), spis(&sas_after));
    b.sort_unstable();
    a.sort_unstable();
    assert_eq!(b, a, "the SAs changed:\n{sas_before}\n{sas_after}");
    assert_eq!(
        install_times(&sas_before),
        install_times(&sas_after),
        "an SA was installed again:\n{sas_before}\n{sas_after}"
    );

    // Drift: someone deletes the tunnel policy that sends to the new CIDR
    // behind the agent's back. Its block policy drops what it carried (no
    // cleartext), and the agent's periodic check puts it back by itself,
    // touching no SA, and says so in its status.
    let deleted = lab
        .sh(&format!(
            "idx=$(ip -n {ns} -s xfrm policy list dir out dst {added} | awk '/ index /{{for(i=1;i<NF;i++) if($i==\"index\") x=$(i+1)}} /tmpl/{{print x; exit}}'); \
             [ -n \"$idx\" ] && ip -n {ns} xfrm policy delete dir out index $idx && echo $idx"
        ))
        .await;
    assert!(
        deleted.ok(),
        "the tunnel policy to {added} was not deleted: {deleted:?}"
    );
    let deleted_at = Instant::now();
    let dropped = lab
        .sh(&format!(
            "ip netns exec {} ping -c 2 -i 0.2 -W 1 {}",
            east.name, far.address
        ))
        .await;
    assert!(
        !dropped.ok(),
        "traffic to {added} flowed without its tunnel policy: {dropped:?}"
    );
    let repaired_in = lab.until_ping(&east, &far, drift_repaired_within()).await;
    eprintln!(
        "drift: the deleted policy was put back and carried traffic {:?} after it was deleted (a ping {repaired_in:?} in)",
        deleted_at.elapsed()
    );
    let sas_repaired = lab.sh(&format!("ip -n {ns} -s xfrm state")).await.stdout;
    assert_eq!(
        install_times(&sas_after),
        install_times(&sas_repaired),
        "the repair touched an SA:\n{sas_after}\n{sas_repaired}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let repaired = loop {
        let net = w.admin.get(&format!("/api/v1/networks/{id}")).await.json();
        let row = net["appliances"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["instance_id"] == east_appliance.id.as_str())
            .cloned();
        if let Some(r) = row
            .as_ref()
            .map(|a| a["repaired"].clone())
            .filter(|r| !r.is_null())
        {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "the console never showed the repair: {row:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(repaired["count"], 1, "{repaired}");
    assert_eq!(
        repaired["changes"], 1,
        "one policy was put back: {repaired}"
    );
    lab.stop().await;
}

/// How long the agent may take to notice and repair drift: its check's
/// period, a long poll that was already waiting, and the kernel's work.
fn drift_repaired_within() -> Duration {
    appliance::sync::DRIFT_CHECK_EVERY + Duration::from_secs(15)
}

/// Pings per second from site 2 to site 1 and to site 3 around the reboot.
const REBOOT_RATE: &str = "0.02";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebooted_appliance_comes_back_by_itself_on_fresh_sas_and_its_peers_keep_working() {
    live_test(
        "a_rebooted_appliance_comes_back_by_itself_on_fresh_sas_and_its_peers_keep_working",
        a_rebooted_appliance_comes_back_by_itself_on_fresh_sas_and_its_peers_keep_working_once,
    )
    .await;
}

async fn a_rebooted_appliance_comes_back_by_itself_on_fresh_sas_and_its_peers_keep_working_once() {
    let mut w = World::new().await;
    let regions = ["us-east-1", "eu-west-1", "ap-southeast-2"];
    let placed = place(
        &w,
        &[
            (regions[0], "10.91.0.0/16", true),
            (regions[1], "10.92.0.0/16", true),
            (regions[2], "10.93.0.0/16", true),
        ],
    )
    .await;
    let lab = LiveLab::start(&w, "reboot", &regions).await;
    let (id, _) = provision(
        &mut w,
        "rebooted",
        "full_mesh",
        &placed,
        &["edge", "edge", "edge"],
    )
    .await;
    let hosts = lab.hosts_reaching(&placed, &[(1, 0), (1, 2), (0, 2)]).await;
    let mut appliances = Vec::new();
    for r in regions {
        appliances.push(
            running_instances(&w.customer, r, Some('a'))
                .await
                .into_iter()
                .next()
                .expect("an appliance")
                .id,
        );
    }
    let rebooted = appliances[0].clone();
    let dir = lab.lab().instances()[&rebooted].clone();
    let row = |pool: &sqlx::PgPool, instance: String| {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (String, bool)>(
                "SELECT id::text, retired_at IS NULL FROM appliances WHERE instance_id = $1",
            )
            .bind(instance)
            .fetch_all(&pool)
            .await
            .expect("appliances")
        }
    };
    let registered = row(&w.app.state.pool, rebooted.clone()).await;
    assert_eq!(registered.len(), 1, "{registered:?}");
    let own_before = lab.sh(&format!("ip -n {rebooted} xfrm state")).await.stdout;
    let mut peers_before = Vec::new();
    for p in &appliances[1..] {
        peers_before.push(lab.sh(&format!("ip -n {p} -s xfrm state")).await.stdout);
    }

    // Site 2 pings site 1 (the rebooted) and site 3 (a peer) at 50/s.
    lab.start_ping("reboot-2-1", &hosts[1], &hosts[0], REBOOT_RATE)
        .await;
    lab.start_ping("reboot-2-3", &hosts[1], &hosts[2], REBOOT_RATE)
        .await;
    lab.until(
        "the pings run",
        "[ $(grep -c icmp_seq reboot-2-1.txt) -ge 25 ]",
        Duration::from_secs(10),
    )
    .await;
    lab.capture("reboot.pcap").await;
    let rebooted_at = Instant::now();
    lab.lab()
        .reboot(&rebooted)
        .await
        .expect("the reboot starts");
    // The kernel starts empty: none of its SAs survived.
    let right_after = lab.sh(&format!("ip -n {rebooted} xfrm state")).await.stdout;
    assert!(
        spis(&right_after)
            .iter()
            .all(|s| !spis(&own_before).contains(s)),
        "an SA survived the reboot:\n{right_after}"
    );
    let back = lab
        .until_ping(&hosts[1], &hosts[0], Duration::from_secs(90))
        .await;
    // A few more seconds of both streams after it is back.
    lab.until(
        "the pings run on after the reboot",
        &format!(
            "[ $(grep -c icmp_seq reboot-2-3.txt) -ge {} ]",
            (rebooted_at.elapsed().as_secs() + 3) * 50
        ),
        Duration::from_secs(30),
    )
    .await;
    let to_rebooted = lab.stop_ping("reboot-2-1").await;
    let to_peer = lab.stop_ping("reboot-2-3").await;
    let packets = lab.captured("reboot.pcap").await;
    eprintln!("reboot: site 1 answers again {back:?} after the reboot started");

    // Traffic resumed by itself: the last 50 pings were all answered.
    let (sent, received) = ping_summary(&to_rebooted).expect("a summary");
    let seen = answered(&to_rebooted);
    eprintln!(
        "reboot: {} of {sent} pings to the rebooted site lost, an outage of about {} ms",
        sent - received,
        (sent - received) * 20
    );
    assert!(
        (sent.saturating_sub(50)..sent.saturating_sub(1)).all(|seq| seen.contains(&seq)),
        "traffic did not resume after the reboot:\n{to_rebooted}\n{}",
        lab.logs().await
    );
    // The peers kept working: none of site 2's pings to site 3 was lost
    // (the last may be in flight when the ping stops).
    let (sent3, received3) = ping_summary(&to_peer).expect("a summary");
    assert!(
        sent3 >= 250 && received3 + 1 >= sent3,
        "site 2 lost pings to site 3 while site 1 rebooted:\n{to_peer}"
    );
    // Only ESP in UDP 4500 crossed the WAN, and the rebooted site's ICMP
    // errors about it while nothing listened on its port 4500 (tshark
    // reads the quoted UDP header too): nothing in clear, it forwards
    // nothing before its policies are in.
    assert!(
        packets.iter().all(|(proto, port, icmp)| {
            matches!(
                (proto.as_str(), port.as_str(), icmp.as_str()),
                ("17", "4500", "") | ("1,17", "4500", "3")
            )
        }),
        "something in clear crossed the WAN: {:?}",
        super::packet_kinds(&packets)
    );
    assert!(packets.iter().filter(|(p, _, _)| p == "17").count() >= 200);

    // Fresh SAs: none of site 1's SPIs existed before the reboot, and the
    // peers dropped nothing as a replay.
    let own_after = lab.sh(&format!("ip -n {rebooted} xfrm state")).await.stdout;
    let (before, after) = (spis(&own_before), spis(&own_after));
    assert!(!after.is_empty(), "{own_after}");
    assert!(
        after.iter().all(|s| !before.contains(s)),
        "an SA came back with its old SPI (and key): before {before:x?}, after {after:x?}"
    );
    for (p, b) in appliances[1..].iter().zip(&peers_before) {
        let a = lab.sh(&format!("ip -n {p} -s xfrm state")).await.stdout;
        assert!(b.contains(" replay ") && a.contains(" replay "), "{b}\n{a}");
        assert_eq!(replays(&a), replays(b), "{p} dropped replays:\n{b}\n{a}");
    }

    // The disk survived and the user data did not run again: the agent
    // was installed once, its unit started at the boot, and it kept its
    // registration (the same row, not retired).
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
    let (console, phases) = (read("console.log"), read("phases"));
    assert_eq!(
        console
            .matches("installed /usr/local/bin/vpcmesh-agent")
            .count(),
        1,
        "{console}"
    );
    assert_eq!(phases.matches("user-data ").count(), 1, "{phases}");
    assert_eq!(phases.matches("boot-again ").count(), 1, "{phases}");
    assert_eq!(phases.matches("unit-vpcmesh-agent ").count(), 2, "{phases}");
    assert_eq!(
        row(&w.app.state.pool, rebooted.clone()).await,
        registered,
        "the rebooted instance registered again"
    );
    let live: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM appliances a JOIN sites s ON s.id = a.site_id
          WHERE s.network_id = $1::uuid AND a.retired_at IS NULL",
    )
    .bind(&id)
    .fetch_one(&w.app.state.pool)
    .await
    .expect("appliances");
    assert_eq!(live, 3);
    lab.stop().await;
}
