//! The lab runner (e2e/lab) as `./run.sh` runs it, under the tests: it
//! mirrors moto into a User-Mode Linux guest while the test provisions
//! networks through the real API. Instances boot from their own user data,
//! download the agent from this server and register; the VPC routers follow
//! moto's route tables; Elastic IPs are NATed at the VPC's edge; Transit
//! Gateways route leaves. Every topology carries packets here.

use crate::moto::moto;
use crate::networks::{Placed, World};

mod failover;
mod frozen;
mod lifecycle;
mod topologies;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use vpcmesh_lab::guest::Output;
use vpcmesh_lab::model::Host;
use vpcmesh_lab::stall::RunningClock;
use vpcmesh_lab::{Lab, LabConfig};

/// How long a fresh network may take from Provision to its first ping: each
/// instance downloads and starts the agent inside the one-vCPU guest, and
/// lab tests run side by side (a deadline, not a wait).
pub const FIRST_PING: Duration = Duration::from_secs(180);

/// What a failure says when the User-Mode Linux guest itself froze.
pub const GUEST_FROZE: &str = "the User-Mode Linux guest froze";
/// A guest log silent this long (it beats every 5 s) is a frozen guest.
const GUEST_SILENT: Duration = Duration::from_secs(30);

/// Runs a live-lab test; once more, in a new guest with a new world, when
/// the first try failed because the User-Mode Linux guest froze (its
/// heartbeat stopped and its network went quiet while the host ran: a
/// fault of the emulator, not of the product, seen in about one full test
/// run in three on this machine, in any lab test at any phase). Any
/// other failure, and a second freeze, fail the test. A retry is said on
/// stderr and in `target/tmp/live-lab-retries.log`, which `./test.sh` prints.
pub async fn live_test<F, Fut>(name: &str, test: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let log = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("live-lab-retries.log");
    live_test_logged(name, test, &log).await;
}

/// [`live_test`], noting a retry in `log`.
pub async fn live_test_logged<F, Fut>(name: &str, test: F, log: &std::path::Path)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use futures::FutureExt;
    let first = std::panic::AssertUnwindSafe(test()).catch_unwind().await;
    let Err(panic) = first else {
        return;
    };
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or_default();
    if !message.contains(GUEST_FROZE) {
        std::panic::resume_unwind(panic);
    }
    let line = format!("{name}: {GUEST_FROZE} on the first try; ran it again in a new guest\n");
    eprint!("{line}");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        use std::io::Write;
        let _ = f.write_all(line.as_bytes());
    }
    test().await;
}

/// A lab following the test's moto account, with this test's server as
/// its control plane.
pub struct LiveLab {
    running: Option<Lab>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for LiveLab {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// `VPCMESH_LAB_BIN`, else the `vpcmesh-lab` built beside this test binary.
fn lab_bin() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("VPCMESH_LAB_BIN") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let path = exe
        .parent()
        .and_then(std::path::Path::parent)
        .map(|debug| debug.join("vpcmesh-lab"))
        .expect("target/debug");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p vpcmesh-lab` (./test.sh does)",
        path.display()
    );
    path
}

impl LiveLab {
    pub async fn start(w: &World, name: &str, regions: &[&str]) -> LiveLab {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "the lab needs root (namespaces, a tap); run ./test.sh as root"
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let control_plane = listener.local_addr().expect("address");
        let router = server::http::router(w.app.state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        let moto_url = moto().await.url.clone();
        let aws: SocketAddr = moto_url
            .trim_start_matches("http://")
            .parse()
            .expect("moto listens on an address");
        let (key, secret, token) = w.customer.credentials();
        let creds = aws_credential_types::Credentials::new(key, secret, token, None, "test");
        let sdk = appliance::aws::sdk_config("us-east-1", Some(&moto_url), Some(creds)).await;
        let dir = crate::uml::shared_dir(&format!("live-{name}"));
        let lab = Lab::start(
            LabConfig {
                dir,
                netns: format!("vl{}-{name}", std::process::id()),
                uml: std::env::var("VPCMESH_UML").unwrap_or_else(|_| "linux.uml".into()),
                mem_mb: 1024,
                lab_bin: lab_bin(),
                aws_endpoint: aws,
                control_plane,
                regions: regions.iter().map(|r| r.to_string()).collect(),
                discover_regions: false,
                poll: Duration::from_millis(300),
                poll_booting: Duration::from_millis(250),
                demo_traffic: false,
            },
            vec![sdk],
        )
        .await
        .expect("the lab starts");
        eprintln!("lab {name}: guest booted in {:?}", lab.boot_took);
        LiveLab {
            running: Some(lab),
            server,
        }
    }

    pub fn lab(&self) -> &Lab {
        self.running.as_ref().expect("the lab runs until stopped")
    }

    pub async fn sh(&self, script: &str) -> Output {
        match self.lab().exec(script, Duration::from_secs(120)).await {
            Ok(out) => out,
            Err(e) => {
                let silent = self.lab().guest_silent_for();
                let froze = if silent.is_some_and(|s| s > GUEST_SILENT) {
                    format!(
                        "{GUEST_FROZE}: its log (a heartbeat every 5 s) has been silent for {silent:?}\n{}\n",
                        self.lab().guest_host_view().await
                    )
                } else {
                    String::new()
                };
                panic!(
                    "the guest runs the script: {e}\n{froze}{}",
                    self.host_logs()
                )
            }
        }
    }

    /// The tail of `path`'s last `n` lines (nothing if it is not there).
    fn tail(path: &std::path::Path, n: usize) -> String {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(n).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// What the lab's files say, read on this side (so they come even
    /// when the guest no longer answers): the guest's kernel console and
    /// command log, and every instance's logs.
    fn host_logs(&self) -> String {
        let dir = &self.lab().dir;
        let mut s = format!(
            "lab error: {:?}\n--- guest console.log\n{}\n--- guest.log\n{}\n--- the wire, from the host\n{}\n",
            self.lab().last_error(),
            Self::tail(&dir.join("console.log"), 30),
            Self::tail(&dir.join("guest.log"), 30),
            self.lab().wire_report(),
        );
        for (id, dir) in self.lab().instances() {
            for f in [
                "phases",
                "console.log",
                "cloud-init-output.log",
                "agent.log",
                "forward.log",
            ] {
                s += &format!("--- {id} {f}\n{}\n", Self::tail(&dir.join(f), 15));
            }
        }
        s
    }

    /// The test host of `vpc` (its primary CIDR), once the lab has it.
    pub async fn host(&self, vpc: &str) -> Host {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(h) = self.lab().hosts().into_iter().find(|h| h.vpc_id == vpc) {
                return h;
            }
            assert!(
                Instant::now() < deadline,
                "no test host for {vpc}: {:?}",
                self.lab().last_error()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Pings `to` from `from` once a second until one answers.
    /// The test hosts of `placed`, in order, once every pair `(from, to)`
    /// of them in `pairs` pings (each within `FIRST_PING`).
    pub async fn hosts_reaching(&self, placed: &[Placed], pairs: &[(usize, usize)]) -> Vec<Host> {
        let mut hosts = Vec::new();
        for p in placed {
            hosts.push(self.host(&p.vpc.id).await);
        }
        for &(a, b) in pairs {
            self.until_ping(&hosts[a], &hosts[b], FIRST_PING).await;
        }
        hosts
    }

    /// `within` counts the time the host ran ([`RunningClock`]): a paused
    /// machine stops the guest too.
    pub async fn until_ping(&self, from: &Host, to: &Host, within: Duration) -> Duration {
        let started = RunningClock::start();
        loop {
            let out = self
                .sh(&format!(
                    "ip netns exec {} ping -c 1 -W 1 {}",
                    from.name, to.address
                ))
                .await;
            if out.ok() {
                return started.elapsed();
            }
            if started.elapsed() > within {
                panic!(
                    "{} ({}) never reached {} ({}) within {within:?}\n{}",
                    from.name,
                    from.region,
                    to.name,
                    to.region,
                    self.logs().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last lines of every instance's console and agent log, and the
    /// runner's last error.
    pub async fn logs(&self) -> String {
        let diag = self
            .sh(r#"for n in $(ip netns list | cut -d' ' -f1); do echo "=== $n"; ip -n $n -br addr; ip -n $n rule | grep -v 'from all lookup'; ip -n $n route show table all | grep -v 'table local\|^local\|broadcast\|fe80\|ff00\|::'; ip -n $n xfrm policy | grep -c 'dir' ; ip -n $n -s xfrm state | grep -E 'src|spi|lifetime current' -A0 | head -30; tc -n $n -s filter show dev wan0 ingress 2>/dev/null | grep -E 'nat|Sent'; tc -n $n -s filter show dev wan0 egress 2>/dev/null | grep -E 'nat|Sent'; done"#)
            .await;
        format!("guest:\n{}\n{}", diag.stdout, self.host_logs())
    }

    /// Starts a capture of everything on the WAN into `name` (in the lab
    /// folder), and returns once dumpcap has written its file's header.
    pub async fn capture(&self, name: &str) {
        let out = self
            .sh(&format!(
                "ip netns exec wan dumpcap -q -i br0 -w {name} > {name}.log 2>&1 &\necho $! > {name}.pid\n\
                 n=0; until [ -s {name} ]; do n=$((n+1)); if [ $n -gt 100 ]; then cat {name}.log; exit 1; fi; sleep 0.1; done"
            ))
            .await;
        assert!(out.ok(), "{out:?}");
    }

    /// Stops the capture `name`; (IP protocol, UDP port, ICMP type) per packet.
    pub async fn captured(&self, name: &str) -> Vec<(String, String, String)> {
        let out = self
            .sh(&format!(
                "kill -INT $(cat {name}.pid); while kill -0 $(cat {name}.pid) 2>/dev/null; do sleep 0.1; done"
            ))
            .await;
        assert!(out.ok(), "{out:?}");
        crate::uml_lab::wan_packets(&self.lab().dir.join(name))
    }

    pub async fn stop(mut self) {
        self.server.abort();
        if let Some(lab) = self.running.take() {
            lab.stop().await;
        }
    }
}

/// Creates a network of `placed` (the sites in `roles`, no HA pairs, the
/// key in the first site's region) and provisions it; returns its id and
/// when Provision was confirmed.
pub async fn provision(
    w: &mut World,
    name: &str,
    topology: &str,
    placed: &[Placed],
    roles: &[&str],
) -> (String, Instant) {
    provision_with(w, name, topology, placed, roles, false).await
}

/// `provision`, with an HA pair at every site when `ha`.
pub async fn provision_with(
    w: &mut World,
    name: &str,
    topology: &str,
    placed: &[Placed],
    roles: &[&str],
    ha: bool,
) -> (String, Instant) {
    let key = w.customer.kms_key(placed[0].region).await;
    let sites: Vec<Value> = placed
        .iter()
        .zip(roles)
        .map(|(p, role)| w.site(p.region, &p.vpc, role))
        .collect();
    let net = w
        .create(json!({"name": name, "topology": topology, "sites": sites,
                       "options": {"kms_key_arn": key, "ha": ha}}))
        .await;
    let id = net["id"].as_str().expect("id").to_string();
    let provisioned = Instant::now();
    w.run(&id, "apply", "ready").await;
    (id, provisioned)
}

/// Runs `ip ARGS` on the host; panics with its error output.
pub(crate) fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .expect("ip runs");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Forwards connections from `listener` (say, in a lab namespace) to
/// `target` on loopback.
pub(crate) async fn proxy(listener: tokio::net::TcpListener, target: String) {
    vpcmesh_lab::forward::serve(listener, move || {
        tokio::net::TcpStream::connect(target.clone())
    })
    .await
}

/// Packets by (IP protocol, UDP port, ICMP type), counted, for messages.
pub fn packet_kinds(
    packets: &[(String, String, String)],
) -> BTreeMap<&(String, String, String), usize> {
    let mut kinds = BTreeMap::new();
    for p in packets {
        *kinds.entry(p).or_insert(0) += 1;
    }
    kinds
}

pub fn assert_only_esp_in_udp(packets: &[(String, String, String)], at_least: usize) {
    assert!(packets.len() >= at_least, "{:?}", packet_kinds(packets));
    assert!(
        packets.iter().all(
            |(proto, port, icmp)| (proto.as_str(), port.as_str(), icmp.as_str())
                == ("17", "4500", "")
        ),
        "something other than ESP in UDP 4500 crossed the WAN: {:?}",
        packet_kinds(packets)
    );
}
