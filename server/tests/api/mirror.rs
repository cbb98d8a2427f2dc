//! A mirror of what moto holds, on the host kernel: for every running
//! vpcmesh instance, a network namespace that runs the real agent binary with
//! that instance's own launch-template user data (its bootstrap file) and its
//! own instance facts, served by an IMDSv2 emulator inside the namespace.
//! The server, the emulator and moto are reached on the namespace's own
//! loopback. Instances that moto terminates lose their namespace; new ones
//! (Auto Scaling replacements) get one, with no help from the test.
//!
//! The host kernel has no ESP, so these agents register, take their site's
//! address and program policies, but carry no traffic: the lab in the UML
//! guest does that.

use crate::appliances::{running_instances, Instance};
use crate::live_lab::ip;
use crate::moto::Customer;
use crate::networks::World;
use crate::uml_lab::{agent_bin, in_netns};
use appliance::imds::emulator::{EmulatedInstance, ImdsEmulator};
use base64::Engine;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// One mirrored instance.
struct Mirrored {
    netns: String,
    agent: Child,
    dir: PathBuf,
    started: Instant,
    _imds: ImdsEmulator,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Mirrored {
    fn drop(&mut self) {
        let _ = self.agent.kill();
        let _ = self.agent.wait();
        for t in &self.tasks {
            t.abort();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

type Instances = Arc<Mutex<BTreeMap<String, Mirrored>>>;

pub struct Mirror {
    instances: Instances,
    task: JoinHandle<()>,
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.task.abort();
        if let Ok(mut i) = self.instances.lock() {
            i.clear();
        }
    }
}

/// The bootstrap file the member's launch template writes: the JSON object
/// the user data puts into `/etc/vpcmesh/agent.json`.
async fn bootstrap_file(customer: &Customer, region: &str, seen: &Instance) -> Option<Value> {
    let ec2 = customer.ec2(region);
    let lts = ec2.describe_launch_templates().send().await.ok()?;
    for lt in lts.launch_templates() {
        let name = lt.launch_template_name().unwrap_or_default();
        if !name.ends_with(&format!("-{}", seen.member)) {
            continue;
        }
        let versions = ec2
            .describe_launch_template_versions()
            .launch_template_id(lt.launch_template_id()?)
            .versions("$Latest")
            .send()
            .await
            .ok()?;
        let data = versions
            .launch_template_versions()
            .first()?
            .launch_template_data()?
            .user_data()?;
        let text = String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(data)
                .ok()?,
        )
        .ok()?;
        if !text.contains(&seen.site) {
            continue;
        }
        // The heredoc that becomes /etc/vpcmesh/agent.json.
        let at = text.find("<<'CONF'\n")?;
        let start = at + text[at..].find('{')?;
        let file: Value = serde_json::Deserializer::from_str(&text[start..])
            .into_iter::<Value>()
            .next()?
            .ok()?;
        return Some(file);
    }
    None
}

fn listen_in(netns: &str) -> tokio::net::TcpListener {
    let l = in_netns(netns, || {
        std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind in the namespace")
    });
    l.set_nonblocking(true).expect("nonblocking");
    tokio::net::TcpListener::from_std(l).expect("tokio listener")
}

/// What the mirror needs of the test's world: moto as the customer sees it,
/// and the server's state to serve the router from.
#[derive(Clone)]
struct Cloud {
    customer: Customer,
    state: server::AppState,
}

async fn start_one(w: &Cloud, region: &str, seen: &Instance, n: usize) -> Option<Mirrored> {
    let Some(boot) = bootstrap_file(&w.customer, region, seen).await else {
        eprintln!("mirror: no bootstrap file for {} in {region} yet", seen.id);
        return None;
    };
    let netns = format!("vm-{}-{n}", std::process::id());
    let _ = Command::new("ip")
        .args(["netns", "del", &netns])
        .stderr(Stdio::null())
        .status();
    ip(&["netns", "add", &netns]);
    ip(&["-n", &netns, "link", "set", "lo", "up"]);
    // The instance's own address on an interface of its own, as on EC2.
    // (A veth pair inside the namespace: this kernel has no dummy links.)
    ip(&[
        "-n", &netns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
    ]);
    ip(&[
        "-n",
        &netns,
        "addr",
        "add",
        &format!("{}/32", seen.private_ip),
        "dev",
        "eth0",
    ]);
    ip(&["-n", &netns, "link", "set", "eth0", "up"]);
    ip(&["-n", &netns, "link", "set", "eth1", "up"]);

    let server = listen_in(&netns);
    let server_port = server.local_addr().ok()?.port();
    let router = server::http::router(w.state.clone());
    let serve = tokio::spawn(async move {
        let _ = axum::serve(server, router).await;
    });
    let aws = listen_in(&netns);
    let aws_port = aws.local_addr().ok()?.port();
    let moto = crate::moto::moto()
        .await
        .url
        .trim_start_matches("http://")
        .to_string();
    let proxy = tokio::spawn(crate::live_lab::proxy(aws, moto));
    let imds_listener = in_netns(&netns, || {
        std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind in the namespace")
    });
    let imds = ImdsEmulator::start_std(
        imds_listener,
        EmulatedInstance {
            instance_id: seen.id.clone(),
            availability_zone: seen.az.clone(),
            region: region.to_string(),
            private_ip: seen.private_ip.clone(),
            mac: seen.mac.clone(),
            interface_id: seen.interface_id.clone(),
            public_ip: None,
            identity: None,
        },
    )
    .ok()?;

    let dir = std::env::temp_dir().join(format!("vpcmesh-mirror-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).ok()?;
    std::fs::write(dir.join("agent.json"), boot.to_string()).ok()?;
    let log = std::fs::File::create(dir.join("agent.log")).ok()?;
    let (key, secret, token) = w.customer.credentials();
    let agent = Command::new("ip")
        .args(["netns", "exec", &netns, &agent_bin(), "run"])
        .arg("--agent-config")
        .arg(dir.join("agent.json"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args([
            "--server-url",
            &format!("http://127.0.0.1:{server_port}"),
            "--imds-url",
            imds.url().as_str(),
            "--aws-endpoint-url",
            &format!("http://127.0.0.1:{aws_port}"),
            "--status-every-secs",
            "1",
            "--long-poll-secs",
            "2",
        ])
        .env("AWS_ACCESS_KEY_ID", key)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_SESSION_TOKEN", token.unwrap_or_default())
        .env("RUST_LOG", "info")
        .stdout(log.try_clone().ok()?)
        .stderr(log)
        .spawn()
        .ok()?;
    Some(Mirrored {
        netns,
        agent,
        dir,
        started: Instant::now(),
        _imds: imds,
        tasks: vec![serve, proxy],
    })
}

impl Mirror {
    /// Follows moto's running instances in `regions` until dropped.
    pub fn start(w: &World, regions: &'static [&'static str]) -> Mirror {
        let instances: Instances = Arc::default();
        let world = Cloud {
            customer: w.customer.clone(),
            state: w.app.state.clone(),
        };
        let i = instances.clone();
        let task = tokio::spawn(async move {
            let mut n = 0;
            loop {
                let mut now = Vec::new();
                for region in regions {
                    for seen in running_instances(&world.customer, region, None).await {
                        now.push((*region, seen));
                    }
                }
                let gone: Vec<String> = i
                    .lock()
                    .map(|held| {
                        held.keys()
                            .filter(|id| !now.iter().any(|(_, s)| &&s.id == id))
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                for id in gone {
                    // Dropping it kills the agent and deletes its namespace.
                    let removed = i.lock().ok().and_then(|mut held| held.remove(&id));
                    drop(removed);
                }
                for (region, seen) in now {
                    let known = i.lock().map(|h| h.contains_key(&seen.id)).unwrap_or(true);
                    if known {
                        continue;
                    }
                    n += 1;
                    if let Some(m) = start_one(&world, region, &seen, n).await {
                        if let Ok(mut held) = i.lock() {
                            held.insert(seen.id.clone(), m);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Mirror { instances, task }
    }

    /// The instances that have an agent now.
    pub fn mirrored(&self) -> Vec<String> {
        self.instances
            .lock()
            .map(|i| i.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The credential an instance's agent stored after registering.
    pub fn credential(&self, instance: &str) -> Option<String> {
        let dir = self.instances.lock().ok()?.get(instance)?.dir.clone();
        let text = std::fs::read(dir.join("state").join("credential.json")).ok()?;
        let v: Value = serde_json::from_slice(&text).ok()?;
        v["credential"].as_str().map(str::to_string)
    }

    /// An instance's agent log so far.
    pub fn agent_log(&self, instance: &str) -> String {
        self.instances
            .lock()
            .ok()
            .and_then(|i| i.get(instance).map(|m| m.dir.join("agent.log")))
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// When the mirror started an instance's agent.
    pub fn started(&self, instance: &str) -> Option<Instant> {
        self.instances.lock().ok()?.get(instance).map(|m| m.started)
    }
}
