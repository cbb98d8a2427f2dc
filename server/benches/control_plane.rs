//! Control-plane load: N simulated appliances speaking the real wire
//! protocol (config long-polls, a status report every 10 s with a tunnel per
//! peer) against a real `vpcmesh-server` process and a real Postgres, and the
//! same load against a bare axum long-poll server with a static body, so
//! vpcmesh's overhead reads as a ratio.
//!
//!     cargo bench -p server --bench control_plane -- [--appliances 1000,5000,10000] [--sites 2,64]
//!
//! Appliances are seeded straight into Postgres (registration needs EC2 to
//! vouch for each instance; it is measured by the API tests, not here). The
//! change measured is a CIDR added to one site of every network, in one
//! statement: every appliance is affected.

use app::api::{NetworkOptions, TopologyKind};
use axum::{
    extract::{Query, State},
    http::StatusCode,
    response::IntoResponse,
    routing::{get, post},
    Router,
};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use server::aws::discovery::{SubnetFact, VpcFacts};
use server::db::{Durability, PrivateCluster};
use server::networks::store::{self as networks, NewNetwork, NewSite};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use uuid::Uuid;

const STATUS_EVERY: Duration = Duration::from_secs(10);
const POLL_WAIT_SECS: u64 = 25;
const STEADY: Duration = Duration::from_secs(20);

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// One simulated appliance.
#[derive(Clone)]
struct Sim {
    credential: String,
    peers: Vec<Uuid>,
}

/// What the simulated appliances saw.
#[derive(Default)]
struct Seen {
    /// Per appliance: the last config version and when it arrived.
    configs: Mutex<Vec<Option<(u64, Instant)>>>,
    errors: AtomicU64,
    status_ok: AtomicU64,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--reference-server") {
        let port: u16 = args.get(i + 1).and_then(|p| p.parse().ok()).unwrap_or(0);
        return reference_server(port);
    }
    let list = |flag: &str, default: &[usize]| -> Vec<usize> {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map(|v| v.split(',').filter_map(|n| n.parse().ok()).collect())
            .unwrap_or_else(|| default.to_vec())
    };
    let counts = list("--appliances", &[1000, 5000, 10000]);
    let sites = list("--sites", &[2, 64]);
    raise_file_limit();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(counts, sites))
}

async fn run(counts: Vec<usize>, sites: Vec<usize>) -> anyhow::Result<()> {
    let dir = std::path::PathBuf::from(format!("/tmp/vpcmesh-bench-pg-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // As root the cluster runs as `postgres`, which must reach it.
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let cluster = PrivateCluster::start(&dir.join("pg"), Durability::Ephemeral).await?;
    println!(
        "{:<10} {:>6} {:<9} {:>5} {:>6} {:>7} {:>7} {:>9} {:>9} {:>9} {:>10}",
        "server",
        "N",
        "sites",
        "held",
        "errors",
        "cpu %",
        "rss MB",
        "p50 ms",
        "p99 ms",
        "max ms",
        "status/s"
    );
    for &n in &counts {
        for &s in &sites {
            let s = s.clamp(2, 64);
            let db = cluster.ensure_database(&format!("bench_{n}_{s}")).await?;
            let pool = server::db::connect(&db, 4).await?;
            server::db::migrate(&pool).await?;
            let sims = seed(&pool, n, s).await?;
            let port = free_port()?;
            let mut child = Command::new(env!("CARGO_BIN_EXE_vpcmesh-server"))
                .args([
                    "--database-url",
                    &db,
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                ])
                .args(["--appliance-requests-per-min", "100000"])
                .args(["--db-pool-size", "32", "--log-format", "json"])
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            let vpcmesh = measure(port, &child, &sims, || {
                let pool = pool.clone();
                async move {
                    sqlx::query(
                        "UPDATE sites SET cidrs = cidrs || '10.255.0.0/24'::cidr
                          WHERE id IN (SELECT DISTINCT ON (network_id) id FROM sites
                                        ORDER BY network_id, id)",
                    )
                    .execute(&pool)
                    .await
                    .map(|_| ())
                    .map_err(anyhow::Error::from)
                }
            })
            .await;
            stop(&mut child);
            print_row("vpcmesh", n, s, &vpcmesh?);

            let port = free_port()?;
            let mut child = Command::new(std::env::current_exe()?)
                .args(["--reference-server", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            let bare = measure(port, &child, &sims, || async move {
                let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
                let req = hyper::Request::post(format!("http://127.0.0.1:{port}/change"))
                    .body(Full::new(Bytes::new()))?;
                client.request(req).await?;
                Ok(())
            })
            .await;
            stop(&mut child);
            print_row("bare axum", n, s, &bare?);
            pool.close().await;
        }
    }
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

struct Figures {
    held: usize,
    errors: u64,
    cpu_percent: f64,
    rss_mb: f64,
    change_ms: (f64, f64, f64),
    status_per_sec: f64,
}

fn print_row(name: &str, n: usize, sites: usize, f: &Figures) {
    println!(
        "{:<10} {:>6} {:<9} {:>5} {:>6} {:>7.1} {:>7.1} {:>9.1} {:>9.1} {:>9.1} {:>10.1}",
        name,
        n,
        format!("{sites}/net"),
        f.held,
        f.errors,
        f.cpu_percent,
        f.rss_mb,
        f.change_ms.0,
        f.change_ms.1,
        f.change_ms.2,
        f.status_per_sec
    );
}

/// Networks of `sites` sites, two appliances each, until `n` appliances.
async fn seed(pool: &PgPool, n: usize, sites: usize) -> anyhow::Result<Vec<Sim>> {
    let org = Uuid::new_v4();
    sqlx::query("INSERT INTO organizations (id, name, external_id) VALUES ($1, 'Bench', $2)")
        .bind(org)
        .bind(Uuid::new_v4().to_string())
        .execute(pool)
        .await?;
    let user = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO users (id, org_id, email, name, role, password_hash)
         VALUES ($1, $2, 'bench@bench.test', 'Bench', 'admin', 'unused')",
    )
    .bind(user)
    .bind(org)
    .execute(pool)
    .await?;
    // One account per site index: a full mesh has one site per account and region.
    let mut accounts = Vec::new();
    for i in 0..sites {
        let account = Uuid::new_v4();
        let number = format!("{:012}", 100_000_000_000u64 + i as u64);
        sqlx::query(
            "INSERT INTO aws_accounts (id, org_id, account_id, role_arn, label, verified_at)
             VALUES ($1, $2, $3, $4, 'bench', now())",
        )
        .bind(account)
        .bind(org)
        .bind(&number)
        .bind(format!("arn:aws:iam::{number}:role/vpcmesh"))
        .execute(pool)
        .await?;
        accounts.push(account);
    }
    let kms = "arn:aws:kms:us-east-1:123456789012:key/bench";
    let options = NetworkOptions {
        instance_types: vec!["c6gn.medium".into()],
        ha: true,
        spot: false,
        nat_t: true,
        kms_key_arn: kms.into(),
    };
    let mut sims = Vec::with_capacity(n);
    let mut net_index = 0usize;
    while sims.len() < n {
        let net = Uuid::new_v4();
        networks::insert(
            pool,
            NewNetwork {
                id: net,
                org_id: org,
                name: &format!("bench-{net_index}"),
                topology: TopologyKind::FullMesh,
                options: &options,
                created_by: user,
            },
        )
        .await?;
        let mut tx = pool.begin().await?;
        let site_ids: Vec<Uuid> = (0..sites).map(|_| Uuid::new_v4()).collect();
        let mut rows = Vec::new();
        for (i, site) in site_ids.iter().enumerate() {
            let cidr = format!(
                "10.{}.{}.0/24",
                (net_index * 64 + i) / 256 % 250,
                (net_index * 64 + i) % 256
            );
            let facts = VpcFacts {
                cidrs: vec![cidr.parse()?],
                subnets: vec![
                    SubnetFact {
                        id: format!("subnet-a{i}"),
                        az: "us-east-1a".into(),
                        cidr: cidr.clone(),
                    },
                    SubnetFact {
                        id: format!("subnet-b{i}"),
                        az: "us-east-1b".into(),
                        cidr: cidr.clone(),
                    },
                ],
                route_tables: vec![format!("rtb-{i}")],
            };
            networks::insert_site(
                &mut *tx,
                NewSite {
                    id: *site,
                    network_id: net,
                    account_ref: accounts[i],
                    region: "us-east-1",
                    vpc_id: &format!("vpc-{net_index}x{i}"),
                    name: &format!("site {i}"),
                    leaf_of: None,
                    is_hub: false,
                    facts: &facts,
                },
            )
            .await?;
            let mut outputs = serde_json::Map::new();
            outputs.insert(
                "PublicIp".into(),
                format!(
                    "198.18.{}.{}",
                    (net_index * 64 + i) / 250 % 250,
                    (net_index * 64 + i) % 250 + 1
                )
                .into(),
            );
            networks::merge_outputs(&mut *tx, *site, &outputs).await?;
            for member in ["a", "b"] {
                let credential = format!("vma_bench_{}", Uuid::new_v4().simple());
                rows.push((*site, member, credential));
            }
        }
        // One network key: the simulated appliances decrypt nothing.
        server::networks::data_keys::insert_epoch(
            &mut tx,
            net,
            1,
            kms,
            &server::networks::data_keys::EpochMaterial::Network(vec![7u8; 184]),
        )
        .await?;
        sqlx::query("UPDATE networks SET status = 'ready' WHERE id = $1")
            .bind(net)
            .execute(&mut *tx)
            .await?;
        for (k, (site, member, credential)) in rows.iter().enumerate() {
            sqlx::query(
                "INSERT INTO appliances (id, site_id, member, instance_id, availability_zone,
                                         private_ip, credential_hash, agent_version, generation)
                 VALUES ($1, $2, $3, $4, 'us-east-1a', $5::inet, $6, '0.1.0', 1)",
            )
            .bind(Uuid::new_v4())
            .bind(site)
            .bind(member)
            .bind(format!("i-bench{net_index}x{k}"))
            .bind(format!(
                "10.{}.{}.{}",
                k / 250 % 250,
                net_index % 250,
                k % 250 + 4
            ))
            .bind(Sha256::digest(credential.as_bytes()).to_vec())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        for (site, _, credential) in rows {
            if sims.len() < n {
                sims.push(Sim {
                    credential,
                    peers: site_ids.iter().copied().filter(|s| *s != site).collect(),
                });
            }
        }
        net_index += 1;
    }
    Ok(sims)
}

/// Drives the load against the server on `port` (process `child`), makes
/// the change, and reads the figures.
async fn measure<F, Fut>(
    port: u16,
    child: &Child,
    sims: &[Sim],
    change: F,
) -> anyhow::Result<Figures>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base).await?;
    let polls: HttpClient = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build_http();
    // Status reports share a small set of connections.
    let reports: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build_http();
    let seen = Arc::new(Seen {
        configs: Mutex::new(vec![None; sims.len()]),
        ..Default::default()
    });
    let mut tasks = Vec::new();
    for (i, sim) in sims.iter().enumerate() {
        tasks.push(tokio::spawn(poll_loop(
            polls.clone(),
            base.clone(),
            sim.clone(),
            i,
            seen.clone(),
        )));
        tasks.push(tokio::spawn(status_loop(
            reports.clone(),
            base.clone(),
            sim.clone(),
            i,
            sims.len(),
            seen.clone(),
        )));
    }
    // Every appliance holds a config.
    let deadline = Instant::now() + Duration::from_secs(180);
    let held = loop {
        let held = seen
            .configs
            .lock()
            .map(|c| c.iter().flatten().count())
            .unwrap_or(0);
        if held == sims.len() || Instant::now() > deadline {
            break held;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Steady state: status reports and waiting polls.
    let pid = child.id();
    let (cpu0, ok0, t0) = (
        cpu_ticks(pid),
        seen.status_ok.load(Ordering::Relaxed),
        Instant::now(),
    );
    tokio::time::sleep(STEADY).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu_percent = (cpu_ticks(pid) - cpu0) as f64 / ticks_per_sec() / elapsed * 100.0;
    let status_per_sec = (seen.status_ok.load(Ordering::Relaxed) - ok0) as f64 / elapsed;
    // The change, and when each appliance had it.
    let before: Vec<Option<u64>> = seen
        .configs
        .lock()
        .map(|c| c.iter().map(|v| v.map(|(v, _)| v)).collect())
        .unwrap_or_default();
    let changed_at = Instant::now();
    change().await?;
    let deadline = changed_at + Duration::from_secs(60);
    let times = loop {
        let times: Vec<f64> = seen
            .configs
            .lock()
            .map(|c| {
                c.iter()
                    .zip(&before)
                    .filter_map(|(now, old)| match (now, old) {
                        (Some((v, at)), Some(old)) if v != old && *at >= changed_at => {
                            Some(at.duration_since(changed_at).as_secs_f64() * 1000.0)
                        }
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        if times.len() == held || Instant::now() > deadline {
            break times;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let rss_mb = rss_kb(pid) as f64 / 1024.0;
    for t in tasks {
        t.abort();
    }
    let missing = held.saturating_sub(times.len()) as u64;
    let mut sorted = times;
    sorted.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        sorted
            .get(((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(f64::NAN)
    };
    Ok(Figures {
        held,
        errors: seen.errors.load(Ordering::Relaxed) + missing,
        cpu_percent,
        rss_mb,
        change_ms: (
            pct(0.5),
            pct(0.99),
            sorted.last().copied().unwrap_or(f64::NAN),
        ),
        status_per_sec,
    })
}

async fn poll_loop(client: HttpClient, base: String, sim: Sim, i: usize, seen: Arc<Seen>) {
    let mut after: Option<u64> = None;
    loop {
        let query = match after {
            Some(v) => format!("?protocol=3&after={v}&wait={POLL_WAIT_SECS}"),
            None => "?protocol=3".to_string(),
        };
        let req = hyper::Request::get(format!("{base}/api/appliance/v1/config{query}"))
            .header("authorization", format!("Bearer {}", sim.credential))
            .body(Full::new(Bytes::new()));
        let Ok(req) = req else { return };
        match client.request(req).await {
            Ok(res) if res.status() == StatusCode::OK => {
                let body = res.into_body().collect().await.map(|b| b.to_bytes());
                let version = body
                    .ok()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                    .and_then(|v| v["version"].as_u64());
                match version {
                    Some(v) => {
                        after = Some(v);
                        if let Ok(mut c) = seen.configs.lock() {
                            c[i] = Some((v, Instant::now()));
                        }
                    }
                    None => {
                        seen.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Ok(res) if res.status() == StatusCode::NO_CONTENT => {}
            Ok(res) => {
                if seen.errors.fetch_add(1, Ordering::Relaxed) == 0 {
                    let status = res.status();
                    let body = res.into_body().collect().await.map(|b| b.to_bytes());
                    eprintln!("first config error: {status} {body:?}");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(_) => {
                seen.errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn status_loop(
    client: HttpClient,
    base: String,
    sim: Sim,
    i: usize,
    n: usize,
    seen: Arc<Seen>,
) {
    // Spread over the interval, as real appliances are.
    tokio::time::sleep(STATUS_EVERY.mul_f64(i as f64 / n as f64)).await;
    let mut tick = tokio::time::interval(STATUS_EVERY);
    let mut sent = 0u64;
    loop {
        tick.tick().await;
        sent += 1;
        let applied = seen.configs.lock().ok().and_then(|c| c[i].map(|(v, _)| v));
        let tunnels: Vec<serde_json::Value> = sim
            .peers
            .iter()
            .map(|p| {
                serde_json::json!({"peer_site": p, "state": "up", "out_epoch": 1,
                    "out_bytes": 1200 * sent, "out_packets": 10 * sent,
                    "in_bytes": 1200 * sent, "in_packets": 10 * sent, "in_errors": 0})
            })
            .collect();
        let body = serde_json::json!({"agent_version": "0.1.0", "applied_version": applied,
            "ha_role": if i.is_multiple_of(2) { "active" } else { "passive" }, "epochs": [1], "tunnels": tunnels});
        let req = hyper::Request::post(format!("{base}/api/appliance/v1/status"))
            .header("authorization", format!("Bearer {}", sim.credential))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())));
        let Ok(req) = req else { return };
        match client.request(req).await {
            Ok(res) if res.status().is_success() => {
                seen.status_ok.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                seen.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

async fn wait_ready(base: &str) -> anyhow::Result<()> {
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let req = hyper::Request::get(format!("{base}/readyz")).body(Full::new(Bytes::new()))?;
        if let Ok(res) = client.request(req).await {
            if res.status().is_success() {
                return Ok(());
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "{base} never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The reference: a long-poll server with a static body, nothing else.
fn reference_server(port: u16) -> anyhow::Result<()> {
    #[derive(serde::Deserialize)]
    struct Q {
        after: Option<u64>,
        wait: Option<u64>,
    }
    async fn config(
        State(v): State<watch::Sender<u64>>,
        Query(q): Query<Q>,
    ) -> axum::response::Response {
        let mut rx = v.subscribe();
        let wait = Duration::from_secs(q.wait.unwrap_or(30).min(30));
        let answer = |version: u64| {
            let body = format!(
                "{{\"version\":{version},\"tunnels\":[],\"padding\":\"{}\"}}",
                "x".repeat(2048)
            );
            ([("content-type", "application/json")], body).into_response()
        };
        let now = *rx.borrow_and_update();
        if Some(now) != q.after {
            return answer(now);
        }
        match tokio::time::timeout(wait, rx.changed()).await {
            Ok(Ok(())) => answer(*rx.borrow()),
            _ => StatusCode::NO_CONTENT.into_response(),
        }
    }
    async fn change(State(v): State<watch::Sender<u64>>) -> StatusCode {
        v.send_modify(|v| *v += 1);
        StatusCode::NO_CONTENT
    }
    let (tx, _) = watch::channel(1u64);
    let app = Router::new()
        .route("/api/appliance/v1/config", get(config))
        .route(
            "/api/appliance/v1/status",
            post(|| async { StatusCode::NO_CONTENT }),
        )
        .route("/readyz", get(|| async { "ready" }))
        .route("/change", post(change))
        .with_state(tx);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
            axum::serve(listener, app).await?;
            Ok(())
        })
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn raise_file_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct given.
    unsafe {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_string();
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}
