//! `vpcmesh-lab bench`: measures a running lab (the one `./run.sh` starts
//! with its 3-region HA demo): how long its start took (from `lab.json`),
//! the guest's memory, and iperf3 throughput through one tunnel next to the
//! same WAN and NAT path without IPsec, in the same run. Not a test: it
//! prints numbers (see `./lab.sh bench`).

use crate::guest::Output;
use crate::timeline::{after, Timeline};
use serde::Deserialize;
use std::future::Future;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("the guest: {0}")]
    Guest(String),
    #[error("{what}: {output}")]
    Step { what: String, output: String },
    #[error("{0}")]
    Lab(String),
}

/// What `lab.json` says that the bench needs.
#[derive(Deserialize)]
pub struct LabState {
    pub hosts: Vec<crate::model::Host>,
    #[serde(default)]
    pub timeline: Option<TimelineState>,
}

/// The timeline as `lab.json` holds it.
#[derive(Deserialize, Default)]
pub struct TimelineState {
    pub started: f64,
    pub guest_booted: Option<f64>,
    pub first_ping: Option<f64>,
    #[serde(default)]
    pub pings: std::collections::BTreeMap<String, f64>,
}

impl From<&Timeline> for TimelineState {
    fn from(t: &Timeline) -> Self {
        TimelineState {
            started: t.started,
            guest_booted: t.guest_booted,
            first_ping: t.first_ping,
            pings: t.pings.clone(),
        }
    }
}

/// Runs the bench through `exec` (a script in the guest, as `./lab.sh exec`).
pub async fn run<F, Fut>(state: &LabState, seconds: u32, exec: F) -> Result<(), BenchError>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<Output, BenchError>>,
{
    if let Some(t) = &state.timeline {
        println!("lab start (seconds after the lab started):");
        println!(
            "  guest booted:                  {}",
            secs(after(t.started, t.guest_booted))
        );
        println!(
            "  first answer through a tunnel: {}",
            secs(after(t.started, t.first_ping))
        );
        let last = t.pings.values().copied().reduce(f64::max);
        println!(
            "  every pair of {} answered:      {}",
            t.pings.len(),
            secs(after(t.started, last))
        );
    }
    let mem = step(
        &exec,
        "guest memory",
        "free -m | awk '/^Mem:/ {print $3, $2}'; df -m /run | awk 'NR==2 {print $3}'; pgrep -c -f 'vpcmesh-agent[ ]run' || true"
            .into(),
    )
    .await?;
    let n: Vec<&str> = mem.split_whitespace().collect();
    if let [used, total, tmpfs, agents] = n[..] {
        println!(
            "guest memory: {used} MiB used of {total} MiB, plus {tmpfs} MiB in tmpfs (/run: the instances' disks), with {agents} agents running"
        );
    }

    // Two primary test hosts in different regions whose VPCs have an
    // active appliance each (the ones their Elastic IPs are NATed to).
    let primary: Vec<&crate::model::Host> = state
        .hosts
        .iter()
        .filter(|h| !h.name.contains('-'))
        .collect();
    let mut found = None;
    'pairs: for a in &primary {
        for b in primary.iter().filter(|b| b.region != a.region) {
            if let Ok(path) = step(&exec, "the appliances on the path", appliances(a, b)).await {
                let words: Vec<String> = path.split_whitespace().map(str::to_string).collect();
                if let [near, far, eip] = &words[..] {
                    found = Some((*a, *b, near.clone(), far.clone(), eip.clone()));
                    break 'pairs;
                }
            }
        }
    }
    let (a, b, near, far, far_eip) = found.ok_or_else(|| {
        BenchError::Lab("no two VPCs in different regions with an active appliance each".into())
    })?;
    let (near, far, far_eip) = (near.as_str(), far.as_str(), far_eip.as_str());
    let tunnel = iperf(&exec, &b.name, &a.name, &b.address.to_string(), seconds).await?;
    let plain = iperf(&exec, far, near, far_eip, seconds).await?;
    println!(
        "throughput, iperf3 TCP for {seconds} s each, in the same run:\n  through the tunnel ({} {} -> {} {}): {:.0} Mbit/s\n  the same WAN and NAT path without IPsec (appliance {near} -> {far} at {far_eip}): {:.0} Mbit/s\n  ratio: {:.1}%",
        a.name,
        a.region,
        b.name,
        b.region,
        tunnel / 1e6,
        plain / 1e6,
        100.0 * tunnel / plain.max(1.0)
    );
    Ok(())
}

fn secs(s: Option<f64>) -> String {
    s.map_or("-".into(), |s| format!("{s:.1} s"))
}

async fn step<F, Fut>(exec: &F, what: &str, script: String) -> Result<String, BenchError>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<Output, BenchError>>,
{
    let out = exec(script).await?;
    if out.ok() {
        Ok(out.stdout)
    } else {
        Err(BenchError::Step {
            what: what.into(),
            output: format!("{}{}", out.stdout, out.stderr),
        })
    }
}

/// Shell that prints the near appliance, the far one and the far one's
/// Elastic IP: in each host's VPC router, the instance its Elastic IP is
/// NATed to (the active member).
fn appliances(a: &crate::model::Host, b: &crate::model::Host) -> String {
    format!(
        r#"vpc_of() {{ gw=$(ip -n "$1" route show default | awk '{{print $3}}'); for v in $(ip netns list | cut -d' ' -f1 | grep '^vpc'); do if ip -n "$v" -4 -o addr | grep -q " $gw/"; then echo "$v"; return; fi; done; }}
nat_of() {{ tc -n "$1" filter show dev wan0 ingress | awk '{{for (i = 2; i < NF; i++) if ($(i-1) == "nat" && $i == "ingress") {{ sub("/32", "", $(i+1)); print $(i+1), $(i+2); exit }}}}'; }}
instance_at() {{ for n in $(ip netns list | cut -d' ' -f1 | grep '^i-'); do if ip -n "$n" -4 -o addr show dev eth0 | grep -q " $1/"; then echo "$n"; return; fi; done; }}
set -- $(nat_of "$(vpc_of {a})")
near=$(instance_at "$2")
set -- $(nat_of "$(vpc_of {b})")
far=$(instance_at "$2")
[ -n "$near" ] && [ -n "$far" ] || exit 1
echo "$near $far $1"
"#,
        a = a.name,
        b = b.name,
    )
}

/// iperf3 from `client`'s namespace to `address` (a server started in
/// `server`'s); bits per second received.
async fn iperf<F, Fut>(
    exec: &F,
    server: &str,
    client: &str,
    address: &str,
    seconds: u32,
) -> Result<f64, BenchError>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<Output, BenchError>>,
{
    let json = step(
        exec,
        &format!("iperf3 {client} -> {address}"),
        format!(
            "pid=/run/lab/bench-iperf-{server}.pid\nrm -f $pid\n\
             ip netns exec {server} iperf3 -s -1 -D -p 5299 --pidfile $pid || exit 1\n\
             n=0; until [ -s $pid ]; do n=$((n+1)); if [ $n -gt 100 ]; then echo \"no iperf3 server in {server}\"; exit 1; fi; sleep 0.1; done\n\
             ip netns exec {client} iperf3 -c {address} -p 5299 -t {seconds} -J"
        ),
    )
    .await?;
    let v: serde_json::Value = serde_json::from_str(&json)
        .map_err(|e| BenchError::Lab(format!("iperf3's answer: {e}")))?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or_else(|| BenchError::Lab(format!("iperf3 measured nothing: {json}")))
}

/// A generous timeout for one bench step.
pub fn timeout(seconds: u32) -> Duration {
    Duration::from_secs(u64::from(seconds) + 60)
}
