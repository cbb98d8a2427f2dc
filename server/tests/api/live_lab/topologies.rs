//! Every topology on the lab runner: transit, mesh with leaves, a replaced
//! instance, a mesh rotating its key and failing static.

use super::live_test;
use super::{assert_only_esp_in_udp, provision, LiveLab, FIRST_PING};
use crate::networks::{place, World};
use std::time::{Duration, Instant};

const TRANSIT: [&str; 3] = ["us-east-1", "eu-west-1", "ap-southeast-2"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transit_spokes_reach_each_other_through_the_hub_and_only_esp_crosses_the_wan() {
    live_test(
        "transit_spokes_reach_each_other_through_the_hub_and_only_esp_crosses_the_wan",
        transit_spokes_reach_each_other_through_the_hub_and_only_esp_crosses_the_wan_once,
    )
    .await;
}

async fn transit_spokes_reach_each_other_through_the_hub_and_only_esp_crosses_the_wan_once() {
    let mut w = World::new().await;
    let placed = place(
        &w,
        &[
            (TRANSIT[0], "10.41.0.0/16", true),
            (TRANSIT[1], "10.42.0.0/16", true),
            (TRANSIT[2], "10.43.0.0/16", true),
        ],
    )
    .await;
    let lab = LiveLab::start(&w, "transit", &TRANSIT).await;
    let (_, provisioned) = provision(
        &mut w,
        "hub and spokes",
        "transit",
        &placed,
        &["hub", "edge", "edge"],
    )
    .await;
    let (spoke1, spoke2) = (
        lab.host(&placed[1].vpc.id).await,
        lab.host(&placed[2].vpc.id).await,
    );
    let took = lab.until_ping(&spoke1, &spoke2, FIRST_PING).await;
    eprintln!(
        "transit: Provision to the first spoke-to-spoke ping: {:?}",
        provisioned.elapsed()
    );
    let _ = took;

    lab.capture("transit.pcap").await;
    let ping = lab
        .sh(&format!(
            "ip netns exec {} ping -c 5 -i 0.2 -W 1 {}",
            spoke1.name, spoke2.address
        ))
        .await;
    assert!(ping.stdout.contains("5 received"), "{ping:?}");
    let trace = lab
        .sh(&format!(
            "ip netns exec {} traceroute -n -q 1 -w 2 {}",
            spoke1.name, spoke2.address
        ))
        .await;
    let packets = lab.captured("transit.pcap").await;
    // Spoke to spoke crosses the WAN twice (spoke -> hub -> spoke).
    assert_only_esp_in_udp(&packets, 20);

    // The path: spoke 1's VPC router, its appliance, the hub's appliance,
    // spoke 2's appliance, spoke 2's VPC router, the host.
    let hub = crate::appliances::running_instances(&w.customer, TRANSIT[0], Some('a')).await;
    let hub_ip = &hub.first().expect("the hub's appliance").private_ip;
    let spoke1_ip = &crate::appliances::running_instances(&w.customer, TRANSIT[1], Some('a'))
        .await
        .first()
        .expect("spoke 1's appliance")
        .private_ip
        .clone();
    assert!(trace.ok(), "{trace:?}");
    let hops: Vec<&str> = trace
        .stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    let at = |ip: &str| hops.iter().position(|h| *h == ip);
    assert!(
        matches!((at(spoke1_ip), at(hub_ip)), (Some(a), Some(b)) if a < b),
        "spoke 1's appliance {spoke1_ip} then the hub {hub_ip} are not on the path: {}",
        trace.stdout
    );
    assert_eq!(
        hops.last().copied(),
        Some(spoke2.address.to_string().as_str()),
        "{}",
        trace.stdout
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leaf_reaches_a_remote_leaf_through_both_edges_and_their_transit_gateways() {
    live_test(
        "a_leaf_reaches_a_remote_leaf_through_both_edges_and_their_transit_gateways",
        a_leaf_reaches_a_remote_leaf_through_both_edges_and_their_transit_gateways_once,
    )
    .await;
}

async fn a_leaf_reaches_a_remote_leaf_through_both_edges_and_their_transit_gateways_once() {
    let mut w = World::new().await;
    let placed = place(
        &w,
        &[
            ("us-east-1", "10.51.0.0/16", true),
            ("us-east-1", "10.52.0.0/16", false),
            ("eu-west-1", "10.53.0.0/16", true),
            ("eu-west-1", "10.54.0.0/16", false),
        ],
    )
    .await;
    let lab = LiveLab::start(&w, "leaves", &["us-east-1", "eu-west-1"]).await;
    provision(
        &mut w,
        "core and leaves",
        "mesh_with_leaves",
        &placed,
        &["edge", "leaf", "edge", "leaf"],
    )
    .await;
    let (leaf1, edge2, leaf2) = (
        lab.host(&placed[1].vpc.id).await,
        lab.host(&placed[2].vpc.id).await,
        lab.host(&placed[3].vpc.id).await,
    );
    lab.until_ping(&leaf1, &leaf2, FIRST_PING).await;
    lab.capture("leaves.pcap").await;
    for (from, to) in [(&leaf1, &leaf2), (&leaf2, &leaf1), (&leaf1, &edge2)] {
        let ping = lab
            .sh(&format!(
                "ip netns exec {} ping -c 3 -i 0.2 -W 1 {}",
                from.name, to.address
            ))
            .await;
        assert!(
            ping.stdout.contains("3 received"),
            "{} -> {}: {ping:?}",
            from.name,
            to.name
        );
    }
    let trace = lab
        .sh(&format!(
            "ip netns exec {} traceroute -n -q 1 -w 2 {}",
            leaf1.name, leaf2.address
        ))
        .await;
    assert_only_esp_in_udp(&lab.captured("leaves.pcap").await, 18);
    let mut edges = Vec::new();
    for region in ["us-east-1", "eu-west-1"] {
        let a = crate::appliances::running_instances(&w.customer, region, Some('a')).await;
        edges.push(a.first().expect("an edge appliance").private_ip.clone());
    }
    for e in &edges {
        assert!(
            trace.stdout.contains(e.as_str()),
            "edge {e} is not on the path:\n{}",
            trace.stdout
        );
    }
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_terminated_instance_leaves_the_lab_and_its_replacement_registers_and_carries_traffic() {
    live_test(
        "a_terminated_instance_leaves_the_lab_and_its_replacement_registers_and_carries_traffic",
        a_terminated_instance_leaves_the_lab_and_its_replacement_registers_and_carries_traffic_once,
    )
    .await;
}

async fn a_terminated_instance_leaves_the_lab_and_its_replacement_registers_and_carries_traffic_once(
) {
    let mut w = World::new().await;
    let placed = place(
        &w,
        &[
            ("us-east-1", "10.61.0.0/16", true),
            ("eu-west-1", "10.62.0.0/16", true),
        ],
    )
    .await;
    let lab = LiveLab::start(&w, "replace", &["us-east-1", "eu-west-1"]).await;
    let (id, _) = provision(&mut w, "replaced", "full_mesh", &placed, &["edge", "edge"]).await;
    let (east, west) = (
        lab.host(&placed[0].vpc.id).await,
        lab.host(&placed[1].vpc.id).await,
    );
    lab.until_ping(&east, &west, FIRST_PING).await;
    let old = crate::appliances::running_instances(&w.customer, "us-east-1", Some('a'))
        .await
        .first()
        .expect("east's appliance")
        .id
        .clone();
    assert!(lab.lab().instances().contains_key(&old));

    // The group replaces it (as after a failed health check).
    let terminated = Instant::now();
    w.customer
        .query(
            "us-east-1",
            "autoscaling",
            &[
                ("Action", "TerminateInstanceInAutoScalingGroup"),
                ("Version", "2011-01-01"),
                ("InstanceId", &old),
                ("ShouldDecrementDesiredCapacity", "false"),
            ],
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let replacement = loop {
        let mirrored = lab.lab().instances();
        let now = crate::appliances::running_instances(&w.customer, "us-east-1", Some('a')).await;
        if let Some(new) = now.iter().find(|i| i.id != old) {
            if !mirrored.contains_key(&old) && mirrored.contains_key(&new.id) {
                break new.id.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "the lab did not swap {old} for its replacement: {mirrored:?}\n{}",
            lab.logs().await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let gone = lab
        .sh(&format!("ip netns list | grep -c '^{old}' || true"))
        .await;
    assert_eq!(gone.stdout.trim(), "0", "{old}'s namespace is still there");
    let resumed = lab.until_ping(&east, &west, FIRST_PING).await;
    eprintln!(
        "replacement: {replacement} mirrored, and traffic back {:?} after the termination",
        terminated.elapsed()
    );
    let _ = resumed;
    let registered: Vec<(String,)> = sqlx::query_as(
        "SELECT a.instance_id FROM appliances a JOIN sites s ON s.id = a.site_id
          WHERE s.network_id = $1::uuid AND a.retired_at IS NULL",
    )
    .bind(&id)
    .fetch_all(&w.app.state.pool)
    .await
    .expect("appliances");
    assert!(
        registered.iter().any(|(i,)| i == &replacement) && !registered.iter().any(|(i,)| i == &old),
        "{registered:?}"
    );
    lab.stop().await;
}

/// Pings per pair during the rotation, at 50 per second.
const ROTATION_PINGS: u64 = 1500;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mesh_rotates_its_key_under_load_without_losing_a_packet_and_fails_static() {
    live_test(
        "a_mesh_rotates_its_key_under_load_without_losing_a_packet_and_fails_static",
        a_mesh_rotates_its_key_under_load_without_losing_a_packet_and_fails_static_once,
    )
    .await;
}

async fn a_mesh_rotates_its_key_under_load_without_losing_a_packet_and_fails_static_once() {
    let mut w = World::new().await;
    let placed = place(
        &w,
        &[
            ("us-east-1", "10.71.0.0/16", true),
            ("eu-west-1", "10.72.0.0/16", true),
            ("ap-southeast-2", "10.73.0.0/16", true),
        ],
    )
    .await;
    let lab = LiveLab::start(&w, "mesh", &TRANSIT).await;
    let (id, _) = provision(
        &mut w,
        "rotated mesh",
        "full_mesh",
        &placed,
        &["edge", "edge", "edge"],
    )
    .await;
    let hosts = lab.hosts_reaching(&placed, &[(0, 1), (0, 2), (1, 2)]).await;

    // Rotation under two 50/s pings: make-before-break loses none.
    let mut script = String::new();
    for (a, b) in [(0, 1), (1, 2)] {
        script += &format!(
            "ip netns exec {} ping -q -c {ROTATION_PINGS} -i 0.02 -W 2 {} > rotate-{a}-{b}.txt 2>&1 &\necho $! >> rotate.pids\n",
            hosts[a].name, hosts[b].address
        );
    }
    script += "sleep 1\n";
    assert!(lab.sh(&script).await.ok());
    let rotated_at = Instant::now();
    let r = w
        .admin
        .json(
            axum::http::Method::POST,
            &format!("/api/v1/networks/{id}/keys/rotate"),
            None,
        )
        .await;
    assert_eq!(r.status, axum::http::StatusCode::OK, "{}", r.text());
    let took = loop {
        let rows: Vec<(Vec<i32>,)> = sqlx::query_as(
            "SELECT a.epochs FROM appliances a JOIN sites s ON s.id = a.site_id
              WHERE s.network_id = $1::uuid AND a.retired_at IS NULL",
        )
        .bind(&id)
        .fetch_all(&w.app.state.pool)
        .await
        .expect("appliances");
        let old: String = sqlx::query_scalar(
            "SELECT state FROM key_epochs WHERE network_id = $1::uuid AND epoch = 1",
        )
        .bind(&id)
        .fetch_one(&w.app.state.pool)
        .await
        .expect("epoch 1");
        if old == "retired" && rows.len() == 3 && rows.iter().all(|(e,)| e == &[2]) {
            break rotated_at.elapsed();
        }
        assert!(
            rotated_at.elapsed() < Duration::from_secs(25),
            "the rotation did not finish while the pings ran: epoch 1 is {old}; {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("mesh: rotation finished after {took:?} under 2 x 50 pings/s");
    let done = lab
        .sh("for p in $(cat rotate.pids); do while kill -0 $p 2>/dev/null; do sleep 0.2; done; done")
        .await;
    assert!(done.ok(), "{done:?}");
    for (a, b) in [(0, 1), (1, 2)] {
        let text = std::fs::read_to_string(lab.lab().dir.join(format!("rotate-{a}-{b}.txt")))
            .unwrap_or_default();
        assert!(
            text.contains(&format!(
                "{ROTATION_PINGS} packets transmitted, {ROTATION_PINGS} received"
            )),
            "{} -> {} lost packets during the rotation:\n{text}",
            hosts[a].name,
            hosts[b].name
        );
    }

    // Fail static: the control plane (and IMDS, and AWS) go away; the
    // tunnels keep forwarding on the last config.
    let cut = lab
        .sh(&format!(
            "ip link set vec0 down; sleep 12; ip netns exec {} ping -c 4 -i 0.2 -W 2 {}; rc=$?; ip link set vec0 up; exit $rc",
            hosts[0].name, hosts[2].address
        ))
        .await;
    assert!(
        cut.ok() && cut.stdout.contains("4 received"),
        "traffic stopped without the control plane: {cut:?}"
    );
    lab.stop().await;
}
