//! HA pairs on the lab runner: two regions, a pair at each site, 100
//! pings a second between their test hosts while the active member dies,
//! is replaced, loses its heartbeat path to its partner, and gets a spot
//! interruption notice. moto (EC2) is read after each: the site's Elastic
//! IP and every route to the remote CIDRs name the new active member.

use super::live_test;
use super::{provision_with, LiveLab};
use crate::appliances::{running_instances, Instance};
use crate::moto::Customer;
use crate::networks::{place, World};
use crate::support::TestApp;
use aws_sdk_ec2::types::Filter;
use serde_json::Value;
use server::Settings;
use std::time::{Duration, Instant};
use vpcmesh_lab::model::Host;
use vpcmesh_protocol::{DEFAULT_DEAD_AFTER, DEFAULT_HEARTBEAT_MS};

const EAST: &str = "us-east-1";
const WEST: &str = "eu-west-1";
const EAST_CIDR: &str = "10.71.0.0/16";
const WEST_CIDR: &str = "10.72.0.0/16";

/// The instance the region's (only) vpcmesh Elastic IP is on (moto names
/// the interface of an association by interface, not the instance).
async fn holder(c: &Customer, region: &str) -> Option<String> {
    let out = c
        .ec2(region)
        .describe_addresses()
        .send()
        .await
        .expect("DescribeAddresses");
    let present = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_string);
    let held: Vec<(Option<String>, Option<String>)> = out
        .addresses()
        .iter()
        .map(|a| (present(a.instance_id()), present(a.network_interface_id())))
        .filter(|(i, e)| i.is_some() || e.is_some())
        .collect();
    assert!(
        held.len() <= 1,
        "more than one address in use in {region}: {held:?}"
    );
    let (instance, eni) = held.into_iter().next()?;
    if instance.is_some() {
        return instance;
    }
    let eni = eni?;
    running_instances(c, region, None)
        .await
        .into_iter()
        .find(|i| i.interface_id == eni)
        .map(|i| i.id)
}

/// What every route of `vpc_id` to `remote` points at (interface ids).
async fn route_targets(c: &Customer, region: &str, vpc_id: &str, remote: &str) -> Vec<String> {
    let out = c
        .ec2(region)
        .describe_route_tables()
        .filters(Filter::builder().name("vpc-id").values(vpc_id).build())
        .send()
        .await
        .expect("DescribeRouteTables");
    out.route_tables()
        .iter()
        .flat_map(|t| t.routes())
        .filter(|r| r.destination_cidr_block() == Some(remote))
        .map(|r| {
            r.network_interface_id()
                .or(r.instance_id())
                .unwrap_or("(none)")
                .to_string()
        })
        .collect()
}

/// The site's pair, as EC2 lists it now.
async fn pair(c: &Customer, region: &str) -> Vec<Instance> {
    let mut all = running_instances(c, region, None).await;
    all.sort_by(|a, b| a.id.cmp(&b.id));
    all
}

/// Polls until `f` gives Some, or fails with `what` and the lab's logs.
async fn until<T, F, Fut>(lab: &LiveLab, within: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("{what}: not within {within:?}\n{}", lab.logs().await);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A background ping at 100/s from `from` to `to`: `count` echoes, or
/// until [`Pings::stop_once_flowing`].
struct Pings {
    name: String,
}

/// What a ping run saw.
#[derive(Debug)]
struct Counted {
    sent: u64,
    received: u64,
    /// The longest run of unanswered echoes between two answered ones.
    longest_gap: u64,
}

impl Counted {
    fn lost(&self) -> u64 {
        self.sent - self.received
    }

    /// The longest outage, in ms of traffic at 100/s.
    fn outage_ms(&self) -> u64 {
        self.longest_gap * 10
    }
}

/// An open-ended run's echoes: ten minutes at most.
const OPEN_ENDED: u32 = 60_000;

impl Pings {
    async fn start(lab: &LiveLab, name: &str, from: &Host, to: &Host, count: u32) -> Pings {
        let out = lab
            .sh(&format!(
                "ip netns exec {} ping -n -i 0.01 -W 1 -c {count} {} > {name}.ping 2>&1 &\necho $! > {name}.pid",
                from.name, to.address
            ))
            .await;
        assert!(out.ok(), "{out:?}");
        let p = Pings {
            name: name.to_string(),
        };
        // Under way: the first hundred answers are in.
        p.answers_grow_by(
            lab,
            0,
            100,
            Duration::from_secs(20),
            "the first 100 echoes answered",
        )
        .await;
        p
    }

    /// Starts a run that lasts until it is stopped.
    async fn open(lab: &LiveLab, name: &str, from: &Host, to: &Host) -> Pings {
        Pings::start(lab, name, from, to, OPEN_ENDED).await
    }

    async fn answered(&self, lab: &LiveLab) -> usize {
        let out = lab
            .sh(&format!("grep -c 'bytes from' {}.ping || true", self.name))
            .await;
        out.stdout.trim().parse().unwrap_or(0)
    }

    /// Waits until `n` more echoes than `from` are answered.
    async fn answers_grow_by(
        &self,
        lab: &LiveLab,
        from: usize,
        n: usize,
        within: Duration,
        what: &str,
    ) {
        until(lab, within, what, || async {
            (self.answered(lab).await >= from + n).then_some(())
        })
        .await;
    }

    /// Waits until traffic flows (100 more echoes answered from now on),
    /// then stops the run and reads it.
    async fn stop_once_flowing(self, lab: &LiveLab, within: Duration) -> Counted {
        let now = self.answered(lab).await;
        self.answers_grow_by(
            lab,
            now,
            100,
            within,
            &format!("{}: traffic flows again", self.name),
        )
        .await;
        let out = lab.sh(&format!("kill -INT $(cat {}.pid)", self.name)).await;
        assert!(out.ok(), "{out:?}");
        self.finish(lab).await
    }

    /// Waits for the run to end and reads its summary and its gaps.
    async fn finish(self, lab: &LiveLab) -> Counted {
        let name = &self.name;
        let out = lab
            .sh(&format!(
                "while kill -0 $(cat {name}.pid) 2>/dev/null; do sleep 0.2; done; tail -3 {name}.ping"
            ))
            .await;
        let line = out
            .stdout
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or_else(|| panic!("no ping summary: {out:?}"));
        let num = |after: &str| -> u64 {
            line.split(", ")
                .find(|p| p.contains(after))
                .and_then(|p| p.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no {after:?} in {line:?}"))
        };
        let seqs = lab
            .sh(&format!(
                "grep 'bytes from' {name}.ping | grep -v DUP | grep -o 'icmp_seq=[0-9]*' | cut -d= -f2"
            ))
            .await;
        let mut answered: Vec<u64> = seqs
            .stdout
            .lines()
            .map(|l| {
                l.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("an icmp_seq that is no number: {l:?}"))
            })
            .collect();
        answered.sort_unstable();
        answered.dedup();
        Counted {
            sent: num("transmitted"),
            received: num("received"),
            longest_gap: longest_gap(&answered),
        }
    }
}

/// The longest run of numbers missing between two of `answered` (sorted).
fn longest_gap(answered: &[u64]) -> u64 {
    answered
        .windows(2)
        .map(|w| w[1] - w[0] - 1)
        .max()
        .unwrap_or(0)
}

#[test]
fn the_longest_gap_is_the_longest_run_missing_between_answers() {
    assert_eq!(longest_gap(&[]), 0);
    assert_eq!(longest_gap(&[7]), 0);
    assert_eq!(longest_gap(&[1, 2, 3]), 0);
    assert_eq!(longest_gap(&[1, 2, 5, 6, 20, 21]), 13);
}

/// The failover the network's JSON lists from `from` to `to`, once the new
/// active has reported it.
async fn failover_recorded(lab: &LiveLab, w: &World, from: &str, to: &str) -> Value {
    let network: String = sqlx::query_scalar("SELECT id::text FROM networks")
        .fetch_one(&w.app.state.pool)
        .await
        .expect("the network");
    until(
        lab,
        Duration::from_secs(30),
        &format!("the failover from {from} to {to} recorded"),
        || async {
            let net = w.admin_get(&format!("/api/v1/networks/{network}")).await;
            net["failovers"].as_array().and_then(|all| {
                all.iter()
                    .find(|f| f["to_instance_id"] == to && f["from_instance_id"] == from)
                    .cloned()
            })
        },
    )
    .await
}

/// Runs `script` in instance `id`'s namespace.
async fn in_instance(lab: &LiveLab, id: &str, script: &str) {
    let out = lab
        .sh(&format!("ip netns exec {id} sh -c '{script}'"))
        .await;
    assert!(out.ok(), "{id}: {script}: {out:?}");
}

/// Waits until `passive`'s agent log says it hears its partner.
async fn armed(lab: &LiveLab, passive: &str) {
    armed_again(lab, passive, 1).await;
}

/// Waits until EC2 shows `region`'s address on `active` and every route of
/// `vpc_id` to `remote` on `active`'s interface; returns how long it took.
async fn settled_on(
    lab: &LiveLab,
    c: &Customer,
    region: &str,
    vpc_id: &str,
    remote: &str,
    active: &Instance,
) -> Duration {
    settled_on_within(
        lab,
        c,
        region,
        vpc_id,
        remote,
        active,
        Duration::from_secs(30),
    )
    .await
}

/// `settled_on`, waiting up to `within`.
async fn settled_on_within(
    lab: &LiveLab,
    c: &Customer,
    region: &str,
    vpc_id: &str,
    remote: &str,
    active: &Instance,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    until(
        lab,
        within,
        &format!("{region}: the address and routes on {}", active.id),
        || async {
            let on = holder(c, region).await;
            let routes = route_targets(c, region, vpc_id, remote).await;
            (on.as_deref() == Some(active.id.as_str())
                && !routes.is_empty()
                && routes
                    .iter()
                    .all(|r| *r == active.interface_id || *r == active.id))
            .then_some(())
        },
    )
    .await;
    started.elapsed()
}

/// How long the split-brain step watches the new holder keep the address.
const SPLIT_WATCH: Duration = Duration::from_secs(5);

/// How long traffic may take to flow again once EC2 shows the site on its
/// new member: the lab's mirror then moves the address and the routes
/// (every 300 ms, slower while lab tests run side by side).
const FLOWING_WITHIN: Duration = Duration::from_secs(30);

/// One kill-the-active trial at the west site.
#[derive(Debug)]
struct Trial {
    pings: Counted,
    /// From the kill until moto showed the address and every route on the
    /// partner.
    moved: Duration,
}

/// A script that kills the agent (`vpcmesh-agent run`, not the ESP-in-UDP
/// holder beside it) of instance `id`, and fails if none ran: the guest's
/// instances share one PID namespace, so only the agent in this instance's
/// network namespace is killed (`[ ]`: the pattern does not match the
/// shell that runs this script).
fn kill_agent(id: &str) -> String {
    format!("k=0; for p in $(pgrep -f \"vpcmesh-agent[ ]run\"); do if [ \"$(ip netns identify $p)\" = {id} ]; then kill -9 $p; k=1; fi; done; [ $k = 1 ]")
}

/// Whether the passive's agent is down (restarting) when the active dies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Passive {
    Running,
    /// Its agent is killed just before; the instance's init starts it
    /// again (`Restart=always`, 2 s later), and it never hears its
    /// partner alive again.
    Restarting,
}

/// Kills `active`'s agent and takes its interface down while `hosts` ping
/// at 100/s; waits until moto shows the site on `passive`.
async fn kill_the_active(
    lab: &LiveLab,
    c: &Customer,
    (east, west): (&Host, &Host),
    west_vpc: &str,
    (active, passive): (&Instance, &Instance),
    passive_then: Passive,
) -> Trial {
    let pings = Pings::open(lab, "kill", east, west).await;
    let killed = Instant::now();
    if passive_then == Passive::Restarting {
        in_instance(lab, &passive.id, &kill_agent(&passive.id)).await;
    }
    in_instance(
        lab,
        &active.id,
        &format!(
            "ip route show default > {}.default-route; ip link set eth0 down; {}",
            active.id,
            kill_agent(&active.id)
        ),
    )
    .await;
    settled_on(lab, c, WEST, west_vpc, EAST_CIDR, passive).await;
    let moved = killed.elapsed();
    let pings = pings.stop_once_flowing(lab, FLOWING_WITHIN).await;
    eprintln!(
        "kill the active: address and routes moved in moto {moved:?} after the kill; traffic stopped for {} ms ({} of {} echoes lost at 100/s)",
        pings.outage_ms(),
        pings.lost(),
        pings.sent,
    );
    Trial { pings, moved }
}

/// Two HA sites, pinging, settled; returns (lab, world, hosts, the west
/// vpc, the east and west (active, passive) pairs).
async fn two_pairs(
    name: &str,
    settings: impl FnOnce(&mut Settings) + Send + 'static,
) -> (
    LiveLab,
    World,
    (Host, Host),
    (String, String),
    [(Instance, Instance); 2],
) {
    let mut w = World::with_app(TestApp::on_moto_with(4, settings).await).await;
    let placed = place(&w, &[(EAST, EAST_CIDR, true), (WEST, WEST_CIDR, true)]).await;
    let lab = LiveLab::start(&w, name, &[EAST, WEST]).await;
    let _ = provision_with(
        &mut w,
        "pairs",
        "full_mesh",
        &placed,
        &["edge", "edge"],
        true,
    )
    .await;
    let (east_vpc, west_vpc) = (placed[0].vpc.id.clone(), placed[1].vpc.id.clone());
    let (east, west) = (lab.host(&east_vpc).await, lab.host(&west_vpc).await);
    lab.until_ping(&east, &west, Duration::from_secs(120)).await;
    let c = &w.customer;
    // Both pairs up: the active holds the address, the passive hears it.
    let mut sides = Vec::new();
    for (region, vpc, remote) in [(EAST, &east_vpc, WEST_CIDR), (WEST, &west_vpc, EAST_CIDR)] {
        let (active, passive) = until(
            &lab,
            Duration::from_secs(60),
            "both members running, one holding the address",
            || async {
                let both = pair(c, region).await;
                let on = holder(c, region).await?;
                let active = both.iter().find(|i| i.id == on)?.clone();
                let passive = both.iter().find(|i| i.id != on)?.clone();
                (both.len() == 2 && lab.lab().instances().contains_key(&passive.id))
                    .then_some((active, passive))
            },
        )
        .await;
        settled_on(&lab, c, region, vpc, remote, &active).await;
        armed(&lab, &passive.id).await;
        sides.push((active, passive));
    }
    let sides = <[(Instance, Instance); 2]>::try_from(sides).expect("two sites");
    (lab, w, (east, west), (east_vpc, west_vpc), sides)
}

/// The failover benchmark (not in ./test.sh): 20 kill-the-active trials,
/// the two west members taking turns; prints the outage and the time to
/// the routes in moto, min / median / max. Run as root:
/// `cargo test -p server --test api -- --ignored --nocapture failover_benchmark`
/// (`VPCMESH_FAILOVER_TRIALS` changes the count).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a benchmark: about 20 minutes"]
async fn failover_benchmark() {
    let trials: usize = std::env::var("VPCMESH_FAILOVER_TRIALS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    // The product's timing unless told otherwise (the benchmark runs alone,
    // so the guest's timers keep time better than under ./test.sh).
    let env = |name: &str| std::env::var(name).ok().and_then(|n| n.parse().ok());
    let heartbeat_ms = env("VPCMESH_FAILOVER_HEARTBEAT_MS").unwrap_or(DEFAULT_HEARTBEAT_MS);
    let dead_after = env("VPCMESH_FAILOVER_DEAD_AFTER").unwrap_or(DEFAULT_DEAD_AFTER);
    let (lab, w, (east, west), (_, west_vpc), [_, (mut active, mut passive)]) =
        two_pairs("failover-bench", move |s| {
            s.ha_heartbeat_ms = heartbeat_ms;
            s.ha_dead_after = dead_after;
        })
        .await;
    let c = &w.customer;
    let mut outages = Vec::new();
    let mut moves = Vec::new();
    for _ in 1..=trials {
        let before = armed_count(&lab, &active.id);
        let t = kill_the_active(
            &lab,
            c,
            (&east, &west),
            &west_vpc,
            (&active, &passive),
            Passive::Running,
        )
        .await;
        outages.push(t.pings.outage_ms());
        moves.push(t.moved.as_millis() as u64);
        // The killed member comes back (its agent restarted by systemd,
        // its interface up) as passive, and hears the new active.
        // As EC2's DHCP would: the interface comes back with its default
        // route (the kernel dropped it with the link), so the member
        // reaches its partner in the other subnet again.
        in_instance(
            &lab,
            &active.id,
            &format!(
                "ip link set eth0 up; ip route replace $(cat {}.default-route)",
                active.id
            ),
        )
        .await;
        armed_again(&lab, &active.id, before + 1).await;
        std::mem::swap(&mut active, &mut passive);
    }
    let stats = |v: &mut Vec<u64>| {
        v.sort_unstable();
        (v[0], v[v.len() / 2], v[v.len() - 1])
    };
    let (o_min, o_med, o_max) = stats(&mut outages);
    let (m_min, m_med, m_max) = stats(&mut moves);
    println!(
        "failover benchmark: {trials} kill-the-active trials, pings at 100/s, heartbeats every {heartbeat_ms} ms, dead after {dead_after}"
    );
    println!("  outage (ms of lost traffic): min {o_min}, median {o_med}, max {o_max}");
    println!(
        "  kill -> address and routes moved in moto (ms): min {m_min}, median {m_med}, max {m_max}"
    );
    println!("  goal: median outage under 1000 ms");
    lab.stop().await;
}

/// How often `id`'s agent log says it was armed.
/// The agent log of instance `id` so far.
fn agent_log(lab: &LiveLab, id: &str) -> String {
    lab.lab()
        .instances()
        .get(id)
        .and_then(|d| std::fs::read_to_string(d.join("agent.log")).ok())
        .unwrap_or_default()
}

/// How many failovers the network lists.
async fn failover_count(w: &World) -> usize {
    let network: String = sqlx::query_scalar("SELECT id::text FROM networks")
        .fetch_one(&w.app.state.pool)
        .await
        .expect("the network");
    let net = w.admin_get(&format!("/api/v1/networks/{network}")).await;
    net["failovers"].as_array().map_or(0, Vec::len)
}

fn armed_count(lab: &LiveLab, id: &str) -> usize {
    agent_log(lab, id).matches("armed:").count()
}

/// Waits until `id`'s agent log says "armed" `n` times or more.
async fn armed_again(lab: &LiveLab, id: &str, n: usize) {
    until(
        lab,
        Duration::from_secs(60),
        &format!("{id} armed again"),
        || async { (armed_count(lab, id) >= n).then_some(()) },
    )
    .await;
}

/// ./test.sh runs lab tests side by side on two cores, where the one-vCPU
/// guest's timers run up to 300 ms late: the pairs here count a partner
/// gone after 1 s (100 ms x 10), so a late timer is not a dead member.
/// The benchmark measures the product's 300 ms.
const TEST_DEAD_AFTER: u32 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ha_pair_fails_over_when_its_active_dies_is_cut_off_or_is_interrupted() {
    live_test(
        "an_ha_pair_fails_over_when_its_active_dies_is_cut_off_or_is_interrupted",
        an_ha_pair_fails_over_when_its_active_dies_is_cut_off_or_is_interrupted_once,
    )
    .await;
}

async fn an_ha_pair_fails_over_when_its_active_dies_is_cut_off_or_is_interrupted_once() {
    let (
        lab,
        w,
        (east, west),
        (east_vpc, west_vpc),
        [(east_active, east_passive), (west_active, west_passive)],
    ) = two_pairs("failover", |s| {
        s.ha_dead_after = TEST_DEAD_AFTER;
        // The backstop (step 5) acts after 25 s of silence, as in production.
        s.failover_after = Duration::from_secs(25);
    })
    .await;
    server::failover::monitor::spawn(w.app.state.clone());
    let c = &w.customer;

    // 1. The west's active dies (its agent is killed and its interface
    //    goes down) while the passive's agent restarts: the restarted
    //    passive never hears its partner alive, yet it was armed moments
    //    before, so it takes over, with the address and routes.
    let kill = kill_the_active(
        &lab,
        c,
        (&east, &west),
        &west_vpc,
        (&west_active, &west_passive),
        Passive::Restarting,
    )
    .await;
    let log = agent_log(&lab, &west_passive.id);
    assert!(
        log.contains("armed before this restart"),
        "the passive restarted armed:\n{log}"
    );
    // The partner decided by itself (no one asked), on its partner's
    // silence, well before the server's backstop would act (25 s). How
    // short the outage is, is the benchmark's to measure: here lab tests
    // share two cores (seen: 1.5 s alone, 9 s under a loaded CI run).
    let f = failover_recorded(&lab, &w, &west_active.id, &west_passive.id).await;
    assert_eq!(f["reason"], "partner_silent", "{f}");
    assert!(f["requested_by"].is_null(), "{f}");
    assert!(kill.pings.outage_ms() < 20_000, "{kill:?}");

    // 2. The dead instance is replaced: the replacement joins as passive,
    //    and traffic stays on the new active.
    w.customer
        .query(
            WEST,
            "autoscaling",
            &[
                ("Action", "TerminateInstanceInAutoScalingGroup"),
                ("Version", "2011-01-01"),
                ("InstanceId", &west_active.id),
                ("ShouldDecrementDesiredCapacity", "false"),
            ],
        )
        .await;
    let replacement = until(
        &lab,
        Duration::from_secs(60),
        "the replacement mirrored",
        || async {
            let now = pair(c, WEST).await;
            let mirrored = lab.lab().instances();
            now.into_iter()
                .find(|i| i.id != west_active.id && i.id != west_passive.id)
                .filter(|i| mirrored.contains_key(&i.id) && !mirrored.contains_key(&west_active.id))
        },
    )
    .await;
    armed(&lab, &replacement.id).await;
    assert_eq!(
        holder(c, WEST).await.as_deref(),
        Some(west_passive.id.as_str())
    );
    let steady = Pings::start(&lab, "steady", &east, &west, 300)
        .await
        .finish(&lab)
        .await;
    assert_eq!(steady.lost(), 0, "traffic on the new active: {steady:?}");

    // 2b. The active's agent restarts (SIGTERM, as `systemctl restart`
    //     sends; init starts it again 2 s later). Its kernel forwards on
    //     and its last beats say so: the partner holds off, nothing moves,
    //     and no packet is lost.
    let failovers_before = failover_count(&w).await;
    let restart = Pings::open(&lab, "restart", &east, &west).await;
    let log_before = agent_log(&lab, &west_passive.id)
        .matches("stopped on SIGTERM")
        .count();
    in_instance(
        &lab,
        &west_passive.id,
        &kill_agent(&west_passive.id).replace("kill -9", "kill -TERM"),
    )
    .await;
    until(
        &lab,
        Duration::from_secs(60),
        "the active's agent stopped on SIGTERM and is back in its role",
        || async {
            let log = agent_log(&lab, &west_passive.id);
            let tail = log.rsplit("stopped on SIGTERM").next().unwrap_or_default();
            (log.matches("stopped on SIGTERM").count() > log_before
                && tail.contains("HA role")
                && tail.contains("role=Active"))
            .then_some(())
        },
    )
    .await;
    let restart = restart.stop_once_flowing(&lab, FLOWING_WITHIN).await;
    eprintln!(
        "the active's agent restarted: {} of {} echoes lost",
        restart.lost(),
        restart.sent
    );
    assert!(
        agent_log(&lab, &replacement.id).contains("the partner's agent restarts"),
        "the passive heard the restart"
    );
    assert_eq!(restart.lost(), 0, "{restart:?}");
    assert_eq!(
        holder(c, WEST).await.as_deref(),
        Some(west_passive.id.as_str()),
        "the address stayed"
    );
    assert_eq!(failover_count(&w).await, failovers_before, "no failover");

    // 3. Split brain: the heartbeat path between the east's members is
    //    cut while both live. The passive takes over once; the old active
    //    yields and does not take the site back while the cut lasts.
    let cut = "tc qdisc add dev eth0 clsact; tc filter add dev eth0 egress protocol ip prio 1 u32 match ip protocol 17 0xff match ip dport 4800 0xffff action drop";
    let pings = Pings::open(&lab, "split", &east, &west).await;
    in_instance(&lab, &east_active.id, cut).await;
    in_instance(&lab, &east_passive.id, cut).await;
    // Watched until the passive has held the address for 5 s (at most 40 s).
    let mut seen = vec![holder(c, EAST).await];
    let mut held_since: Option<Instant> = None;
    let until_done = Instant::now() + Duration::from_secs(40);
    while Instant::now() < until_done && held_since.is_none_or(|t| t.elapsed() < SPLIT_WATCH) {
        let h = holder(c, EAST).await;
        if seen.last() != Some(&h) {
            held_since = (h.as_deref() == Some(east_passive.id.as_str())).then(Instant::now);
            seen.push(h);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        seen,
        vec![Some(east_active.id.clone()), Some(east_passive.id.clone())],
        "the address moved once, and never back"
    );
    settled_on(&lab, c, EAST, &east_vpc, WEST_CIDR, &east_passive).await;
    let split = pings.stop_once_flowing(&lab, FLOWING_WITHIN).await;
    eprintln!(
        "split brain: holders in turn {seen:?}; traffic stopped for {} ms ({} of {} echoes lost)",
        split.outage_ms(),
        split.lost(),
        split.sent
    );
    let f = failover_recorded(&lab, &w, &east_active.id, &east_passive.id).await;
    assert_eq!(f["reason"], "partner_silent", "{f}");
    let after = Pings::start(&lab, "after-split", &east, &west, 300)
        .await
        .finish(&lab)
        .await;
    assert_eq!(
        after.lost(),
        0,
        "traffic on the member that took over: {after:?}"
    );
    // The path heals: the old active hears the new one and is armed again.
    for id in [&east_active.id, &east_passive.id] {
        in_instance(&lab, id, "tc qdisc del dev eth0 clsact").await;
    }
    armed(&lab, &east_active.id).await;

    // 4. A spot interruption notice to the east's (new) active: it hands
    //    the site to its partner before it goes.
    let pings = Pings::open(&lab, "spot", &east, &west).await;
    lab.lab()
        .set_spot_action(
            &east_passive.id,
            Some(appliance::imds::SpotAction {
                action: appliance::imds::SpotActionKind::Terminate,
                time: "2026-12-02T12:00:00Z".into(),
            }),
        )
        .expect("the notice is served");
    let handed = settled_on(&lab, c, EAST, &east_vpc, WEST_CIDR, &east_active).await;
    let spot = pings.stop_once_flowing(&lab, FLOWING_WITHIN).await;
    // Issue 13's goal is no loss at all; the address and the routes still
    // move in two EC2 calls, and traffic from this VPC is lost between them
    // (measured alone: about 0.3-0.4 s). The member going away handed the
    // site over: it was not taken from a silent member.
    eprintln!(
        "spot notice: the partner took over within {handed:?}; traffic stopped for {} ms ({} of {} echoes lost)",
        spot.outage_ms(),
        spot.lost(),
        spot.sent
    );
    let f = failover_recorded(&lab, &w, &east_passive.id, &east_active.id).await;
    assert_eq!(f["reason"], "handed_over", "{f}");

    // 5. The server's backstop: the west's active (the member that took
    //    over in step 1) can no longer reach the control plane, while its
    //    heartbeats still reach its partner (the replacement), so the pair
    //    itself sees nothing wrong. The health monitor sees an active that
    //    stopped reporting beside a partner that reports, and asks the
    //    partner, through its config, to take over; the failover is
    //    recorded for the console.
    let control_port = url::Url::parse(&w.app.state.settings.public_origin)
        .ok()
        .and_then(|u| u.port_or_known_default())
        .expect("the server URL's port");
    let pings = Pings::open(&lab, "backstop", &east, &west).await;
    in_instance(
        &lab,
        &west_passive.id,
        &format!("tc qdisc add dev lo clsact; tc filter add dev lo egress protocol ip prio 1 u32 match ip protocol 6 0xff match ip dport {control_port} 0xffff action drop"),
    )
    .await;
    let moved = settled_on_within(
        &lab,
        c,
        WEST,
        &west_vpc,
        EAST_CIDR,
        &replacement,
        Duration::from_secs(90),
    )
    .await;
    let by_monitor = failover_recorded(&lab, &w, &west_passive.id, &replacement.id).await;
    assert_eq!(
        by_monitor["requested_by"]["kind"], "health_monitor",
        "{by_monitor}"
    );
    let backstop = pings.stop_once_flowing(&lab, FLOWING_WITHIN).await;
    eprintln!(
        "backstop: the active's control channel frozen; on the health monitor's request the partner held the address and routes {moved:?} later; traffic stopped for {} ms ({} of {} echoes lost)",
        backstop.outage_ms(),
        backstop.lost(),
        backstop.sent
    );
    lab.stop().await;
}
