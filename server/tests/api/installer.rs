//! A stock Amazon Linux 2023 instance installs the agent by itself: the
//! agent binary fits the distribution's glibc; the server serves it at the
//! release's URL; every appliance stack pins its digest; and the real
//! user-data script, taken from the rendered template as CloudFormation
//! fills it, runs as root in a private mount namespace against a real
//! server on loopback, installing only the pinned bytes.

use crate::{
    moto::Customer,
    networks::{place, World},
    support::*,
};
use axum::http::StatusCode;
use serde_json::{json, Value};
use server::{
    appliances::agent_binary::{download_path, AgentRelease, VERSION},
    provisioning::templates::{appliance_stack, ApplianceSpec, LAUNCH_TEMPLATES},
    AppState,
};
use sha2::{Digest, Sha256};
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

/// The newest glibc of Amazon Linux 2023.
const AL2023_GLIBC: (u32, u32) = (2, 34);
const TOKEN_A: &str = "vmb_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const TOKEN_B: &str = "vmb_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const NETWORK_ID: &str = "5f0c1f4e-8d4b-4f7e-9a53-0c2f5b8a9e11";
const SITE_ID: &str = "0b6f3c2a-77d4-4a8e-b1c9-3e5d2f1a4b60";

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

// ---------------------------------------------------------------- the binary

/// `symbol@GLIBC_x.y[.z]` references of an ELF file's dynamic symbols.
fn glibc_references(elf: &Path) -> Vec<((u32, u32, u32), String)> {
    let out = std::process::Command::new("readelf")
        .args(["--dyn-syms", "--wide"])
        .arg(elf)
        .output()
        .expect("readelf runs (binutils, from build-essential)");
    assert!(
        out.status.success(),
        "readelf {}: {}",
        elf.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut refs = Vec::new();
    for word in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        let Some((symbol, version)) = word.split_once("@GLIBC_") else {
            continue;
        };
        let parts: Vec<u32> = version.split('.').map_while(|p| p.parse().ok()).collect();
        if let [major, minor, ref rest @ ..] = parts[..] {
            let patch = rest.first().copied().unwrap_or(0);
            refs.push((
                (major, minor, patch),
                symbol.trim_end_matches('@').to_string(),
            ));
        }
    }
    refs
}

#[test]
fn the_agent_binary_needs_no_glibc_newer_than_amazon_linux_2023s() {
    require_agent_release();
    let refs = glibc_references(&agent_binary_path());
    assert!(
        !refs.is_empty(),
        "no GLIBC_ symbol versions read from {}",
        agent_binary_path().display()
    );
    let (highest, symbol) = refs.iter().max().expect("references").clone();
    println!(
        "vpcmesh-agent needs glibc {}.{}.{} (highest: {symbol})",
        highest.0, highest.1, highest.2
    );
    let too_new: Vec<String> = refs
        .iter()
        .filter(|((major, minor, _), _)| (*major, *minor) > AL2023_GLIBC)
        .map(|(v, s)| format!("{s}@GLIBC_{}.{}.{}", v.0, v.1, v.2))
        .collect();
    assert!(
        too_new.is_empty(),
        "Amazon Linux 2023 has glibc 2.34; the agent needs newer for: {too_new:?}"
    );
}

// ------------------------------------------------------------------ serving

#[tokio::test]
async fn the_server_serves_the_agent_at_its_release_url_with_its_digest() {
    let agent = require_agent_release();
    let app = TestApp::start().await;
    let mut c = app.client();
    let r = c.get(&download_path()).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        r.header("content-type").unwrap_or("")
    );
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(
        r.header("etag"),
        Some(format!("\"{}\"", agent.sha256()).as_str())
    );
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.body.len(), agent.len());
    assert_eq!(sha256_hex(&r.body), agent.sha256());
    let on_disk = std::fs::read(agent_binary_path()).expect("read the built agent");
    assert_eq!(sha256_hex(&on_disk), agent.sha256());
    // No session was needed, and none was made.
    assert!(r.header("set-cookie").is_none());

    // Compressed for a client that takes gzip (the user data's curl):
    // fewer bytes, the same binary once decoded.
    let req = c
        .request(axum::http::Method::GET, &download_path())
        .header("accept-encoding", "deflate, gzip")
        .body(axum::body::Body::empty())
        .expect("request");
    let r = c.send(req).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.header("vary"), Some("accept-encoding"));
    assert!(
        r.body.len() < agent.len() / 2,
        "{} of {}",
        r.body.len(),
        agent.len()
    );
    let mut decoded = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&r.body[..]), &mut decoded)
        .expect("a gzip stream");
    assert_eq!(sha256_hex(&decoded), agent.sha256());

    let r = c
        .get("/api/appliance/v1/agent/0.0.0-other/vpcmesh-agent")
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error_code(), "unknown_agent_version");
    let message = r.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains(VERSION) && message.contains("0.0.0-other"),
        "{message}"
    );
}

#[tokio::test]
async fn a_server_without_an_agent_binary_says_which_flag_to_set() {
    let app = TestApp::start().await;
    let router = server::http::router(app.state.clone().with_agent(None));
    let res = tower::ServiceExt::oneshot(
        router,
        axum::http::Request::get(download_path())
            .body(axum::body::Body::empty())
            .expect("request"),
    )
    .await
    .expect("router answers");
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = http_body_util::BodyExt::collect(res.into_body())
        .await
        .expect("body")
        .to_bytes();
    let body: Value = serde_json::from_slice(&body).expect("JSON error");
    assert_eq!(body["error"]["code"], "agent_unavailable");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("--agent-binary"), "{message}");
}

#[test]
fn a_file_that_is_not_an_executable_is_refused_as_agent_binary() {
    let text = std::env::temp_dir().join(format!("not-an-agent-{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&text, "#!/bin/sh\necho hello\n").expect("write a script");
    let err = AgentRelease::locate(Some(&text)).unwrap_err();
    let _ = std::fs::remove_file(&text);
    assert!(err.to_string().contains("not a Linux executable"), "{err}");
    let err = AgentRelease::locate(Some(Path::new("/nonexistent/vpcmesh-agent"))).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/vpcmesh-agent"),
        "{err}"
    );
}

// ------------------------------------------------------------ stacks in moto

/// The site's appliance stack in moto: its template and parameters, as
/// CloudFormation holds them.
async fn appliance_stack_in_moto(customer: &Customer, region: &str) -> Stack {
    let cfn = customer.cloudformation(region);
    let stacks = cfn.describe_stacks().send().await.expect("DescribeStacks");
    let stack = stacks
        .stacks()
        .iter()
        .find(|s| {
            s.parameters()
                .iter()
                .any(|p| p.parameter_key() == Some("AgentSha256"))
        })
        .expect("an appliance stack in the region");
    let params: BTreeMap<String, String> = stack
        .parameters()
        .iter()
        .filter_map(|p| {
            Some((
                p.parameter_key()?.to_string(),
                p.parameter_value()?.to_string(),
            ))
        })
        .collect();
    let body = cfn
        .get_template()
        .stack_name(stack.stack_name().unwrap_or_default())
        .send()
        .await
        .expect("GetTemplate");
    let template = serde_json::from_str(body.template_body().unwrap_or_default())
        .expect("the stack's template is the JSON the server rendered");
    Stack { template, params }
}

#[tokio::test]
async fn every_provisioned_stack_pins_the_agent_the_server_serves() {
    let mut w = World::new().await;
    let placed = place(
        &w,
        &[
            ("us-east-1", "10.60.0.0/16", true),
            ("eu-west-1", "10.61.0.0/16", true),
        ],
    )
    .await;
    let (id, _, _) = w.full_mesh("pinned", &placed, "us-east-1").await;
    w.run(&id, "apply", "ready").await;
    let mut c = w.app.client();
    let served = c.get(&download_path()).await;
    assert_eq!(served.status, StatusCode::OK);
    let served = sha256_hex(&served.body);
    for p in &placed {
        let stack = appliance_stack_in_moto(&w.customer, p.region).await;
        assert_eq!(
            stack.params["AgentUrl"],
            format!("{ORIGIN}{}", download_path())
        );
        assert_eq!(stack.params["AgentSha256"], served, "{}", p.region);
        for lt in LAUNCH_TEMPLATES {
            let script = stack.user_data(lt);
            assert!(
                script.contains(&format!("readonly agent_sha256='{served}'")),
                "{} {lt}: the user data does not pin {served}",
                p.region
            );
        }
    }
}

#[tokio::test]
async fn a_server_without_an_agent_binary_fails_provisioning_instead_of_launching() {
    let mut w = World::with_app(TestApp::on_moto_without_agent().await).await;
    let placed = place(
        &w,
        &[
            ("us-east-1", "10.62.0.0/16", true),
            ("eu-west-1", "10.63.0.0/16", true),
        ],
    )
    .await;
    let (id, _, _) = w.full_mesh("no agent", &placed, "us-east-1").await;
    w.start(&id, "apply").await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let net = loop {
        let net = w.admin_get(&format!("/api/v1/networks/{id}")).await;
        if net["status"] == "failed" {
            break net;
        }
        assert!(Instant::now() < deadline, "the network never failed: {net}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let job = w
        .admin_get(&format!("/api/v1/networks/{id}/job"))
        .await
        .to_string();
    assert!(job.contains("--agent-binary"), "job: {job}\nnetwork: {net}");
    for p in &placed {
        let cfn = w.customer.cloudformation(p.region);
        let stacks = cfn.describe_stacks().send().await.expect("DescribeStacks");
        assert!(
            !stacks.stacks().iter().any(|s| s
                .parameters()
                .iter()
                .any(|p| p.parameter_key() == Some("AgentSha256"))),
            "{}: an appliance stack was created without an agent to install",
            p.region
        );
    }
    assert_eq!(
        w.app
            .count("SELECT count(*) FROM site_bootstrap_tokens")
            .await,
        0,
        "tokens were minted for stacks never created"
    );
}

// --------------------------------------------------------- the real script

/// A rendered appliance stack and the parameters it was created with.
struct Stack {
    template: Value,
    params: BTreeMap<String, String>,
}

impl Stack {
    /// As the server renders it for a site on a server reached at `origin`.
    fn rendered(agent: &AgentRelease, origin: &str) -> Stack {
        let spec = ApplianceSpec {
            peer_addresses: vec!["198.51.100.7".into()],
            vpc_cidrs: vec!["10.1.0.0/16".into()],
            ha: true,
            nat_t: true,
            spot_types: None,
            leaves: vec![],
            remote_cidrs: vec![],
        };
        let template: Value =
            serde_json::from_str(&appliance_stack(&spec).expect("renders")).expect("JSON");
        let mut params: BTreeMap<String, String> = [
            ("NetworkId", NETWORK_ID),
            ("SiteId", SITE_ID),
            ("ServerUrl", origin),
            ("BootstrapTokenA", TOKEN_A),
            ("BootstrapTokenB", TOKEN_B),
            ("AllocationId", "eipalloc-0123456789abcdef0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in agent.stack_parameters(origin) {
            params.insert(k.to_string(), v);
        }
        for name in params.keys() {
            assert!(
                template["Parameters"].get(name).is_some(),
                "CreateStack would refuse the undeclared parameter {name}"
            );
        }
        Stack { template, params }
    }

    /// The user data an instance of `launch_template` gets, as
    /// CloudFormation makes it: `Fn::Sub [script, values]` with the
    /// template's own values first, then the stack's parameters.
    fn user_data(&self, launch_template: &str) -> String {
        let sub = &self.template["Resources"][launch_template]["Properties"]["LaunchTemplateData"]
            ["UserData"]["Fn::Base64"]["Fn::Sub"];
        let script = sub[0].as_str().expect("Fn::Sub [string, values]");
        let values = sub[1].as_object().expect("Fn::Sub values");
        let resolve = |name: &str| -> String {
            let reference = match values.get(name) {
                Some(Value::String(literal)) => return literal.clone(),
                Some(v) => v["Ref"].as_str().expect("a value is a string or a Ref"),
                None => name,
            };
            self.params.get(reference).cloned().unwrap_or_else(|| {
                panic!("Fn::Sub cannot resolve ${{{name}}}: no such value or parameter")
            })
        };
        let mut out = String::new();
        let mut rest = script;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find('}').expect("a placeholder is closed");
            match after[..end].strip_prefix('!') {
                Some(literal) => out.push_str(&format!("${{{literal}}}")),
                None => out.push_str(&resolve(&after[..end])),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }
}

/// The real router on a loopback port (the server an instance reaches).
async fn serve(state: AppState, listener: tokio::net::TcpListener) {
    let app = server::http::router(state);
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
}

async fn loopback_listener() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let origin = format!("http://{}", listener.local_addr().expect("address"));
    (listener, origin)
}

/// Mounts the instance's view of the filesystem and runs the user data in
/// it: overlays over /etc, /usr/local and /var/lib (the host's stay as they
/// are; what the script writes lands in `<dir>/<layer>/upper`), the console
/// is a file, and `systemctl` and `sysctl` are fakes that record their
/// arguments. With `verify`, systemd-analyze then checks the installed unit
/// in the same view.
const BOOT: &str = r#"set -euo pipefail
d=$1
for layer in etc:/etc usr-local:/usr/local var-lib:/var/lib; do
  name=${layer%%:*} target=${layer#*:}
  mkdir -p "$d/$name/upper" "$d/$name/work"
  mount -t overlay overlay -o "lowerdir=$target,upperdir=$d/$name/upper,workdir=$d/$name/work" "$target"
done
: >"$d/console.log"
mount --bind "$d/console.log" /dev/console
PATH="$d/fakebin:$PATH" bash "$d/user-data"
if [ "${2:-}" = verify ]; then
  rc=0
  systemd-analyze verify /etc/systemd/system/vpcmesh-agent.service /etc/systemd/system/vpcmesh-nat-t.service >"$d/verify.log" 2>&1 || rc=$?
  echo "$rc" >"$d/verify.rc"
  systemd-analyze security --offline=yes /etc/systemd/system/vpcmesh-agent.service >"$d/security.log" 2>&1 || true
fi
"#;

/// One instance's first boot: the user-data script running as root in its
/// own mount namespace.
struct Instance {
    dir: PathBuf,
    child: tokio::process::Child,
}

impl Instance {
    fn boot(user_data: &str, verify: bool) -> Instance {
        for tool in ["unshare", "curl", "sha256sum", "systemd-analyze"] {
            let found = std::process::Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            assert!(
                found,
                "{tool} is missing (util-linux, curl, coreutils, systemd)"
            );
        }
        let dir = std::env::temp_dir().join(format!(
            "vpcmesh-instance-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(dir.join("fakebin")).expect("instance dir");
        std::fs::write(dir.join("user-data"), user_data).expect("user data");
        std::fs::write(dir.join("boot.sh"), BOOT).expect("boot script");
        for fake in ["systemctl", "sysctl"] {
            let path = dir.join("fakebin").join(fake);
            let calls = dir.join(format!("{fake}.calls"));
            std::fs::write(
                &path,
                format!("#!/bin/sh\necho \"$*\" >>'{}'\n", calls.display()),
            )
            .expect("fake tool");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .expect("chmod fake tool");
        }
        let out = std::fs::File::create(dir.join("stderr.log")).expect("log");
        let child = tokio::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "bash"])
            .arg(dir.join("boot.sh"))
            .arg(&dir)
            .arg(if verify { "verify" } else { "" })
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("unshare starts");
        Instance { dir, child }
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    fn console(&self) -> String {
        self.read("console.log")
    }

    fn calls(&self, tool: &str) -> Vec<String> {
        self.read(&format!("{tool}.calls"))
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Where a file the script wrote on the instance is, e.g.
    /// `/usr/local/bin/vpcmesh-agent`.
    fn file(&self, path: &str) -> PathBuf {
        for (layer, mount) in [
            ("usr-local", "/usr/local/"),
            ("var-lib", "/var/lib/"),
            ("etc", "/etc/"),
        ] {
            if let Some(rest) = path.strip_prefix(mount) {
                return self.dir.join(layer).join("upper").join(rest);
            }
        }
        panic!("{path} is outside the instance's writable layers");
    }

    fn mode(&self, path: &str) -> u32 {
        std::fs::metadata(self.file(path))
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .permissions()
            .mode()
            & 0o7777
    }

    async fn wait_for(&self, what: &str, within: Duration, done: impl Fn(&Instance) -> bool) {
        let deadline = Instant::now() + within;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "{what}: not within {within:?}\nconsole:\n{}\nstderr:\n{}",
                self.console(),
                self.read("stderr.log")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The script's exit, successful, within `within`.
    async fn finished(&mut self, within: Duration) {
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the user data did not finish within {within:?}\nconsole:\n{}\nstderr:\n{}",
                    self.console(),
                    self.read("stderr.log")
                )
            })
            .expect("wait for the user data");
        assert!(
            status.success(),
            "the user data failed ({status})\nconsole:\n{}\nstderr:\n{}",
            self.console(),
            self.read("stderr.log")
        );
    }

    /// Ends the script and everything it started (its process group).
    async fn kill(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
        let _ = self.child.wait().await;
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if let Some(pid) = self.child.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", "--", &format!("-{pid}")])
                    .status();
            }
        }
        // The namespace (and its mounts) went with its last process.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_instance_installs_exactly_the_pinned_agent_and_starts_it() {
    let agent = require_agent_release();
    let app = TestApp::start().await;
    let (listener, origin) = loopback_listener().await;
    serve(app.state.clone(), listener).await;
    let stack = Stack::rendered(&agent, &origin);
    let mut instance = Instance::boot(&stack.user_data("LaunchTemplateA"), true);
    instance.finished(Duration::from_secs(60)).await;

    let installed = std::fs::read(instance.file("/usr/local/bin/vpcmesh-agent"))
        .expect("the agent is installed");
    assert_eq!(sha256_hex(&installed), agent.sha256());
    assert_eq!(instance.mode("/usr/local/bin/vpcmesh-agent"), 0o755);
    let leftovers: Vec<_> = std::fs::read_dir(instance.file("/usr/local/bin/"))
        .expect("bin")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "vpcmesh-agent")
        .collect();
    assert!(
        leftovers.is_empty(),
        "left behind in /usr/local/bin: {leftovers:?}"
    );

    assert_eq!(instance.mode("/etc/vpcmesh"), 0o700);
    assert_eq!(instance.mode("/etc/vpcmesh/agent.json"), 0o600);
    let boot: Value = serde_json::from_str(
        &std::fs::read_to_string(instance.file("/etc/vpcmesh/agent.json")).expect("agent.json"),
    )
    .expect("agent.json is JSON");
    assert_eq!(
        boot,
        json!({"server_url": origin, "network_id": NETWORK_ID, "site_id": SITE_ID, "member": "a",
               "allocation_id": "eipalloc-0123456789abcdef0", "bootstrap_token": TOKEN_A})
    );

    let unit = std::fs::read_to_string(instance.file("/etc/systemd/system/vpcmesh-agent.service"))
        .expect("the unit is installed");
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "ExecStart=/usr/local/bin/vpcmesh-agent run",
        "Restart=always",
        "StateDirectory=vpcmesh",
        "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_NETLINK",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "MemoryDenyWriteExecute=yes",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "the unit lacks {line}:\n{unit}"
        );
    }
    assert!(
        !unit.contains("ProtectKernelTunables"),
        "the agent writes ip_forward"
    );
    assert_eq!(
        instance.read("verify.rc").trim(),
        "0",
        "systemd-analyze verify:\n{}",
        instance.read("verify.log")
    );
    let verify = instance.read("verify.log");
    assert!(
        !verify.contains("vpcmesh-agent.service") && !verify.contains("vpcmesh-nat-t.service"),
        "systemd-analyze verify:\n{verify}"
    );
    let nat_t = std::fs::read_to_string(instance.file("/etc/systemd/system/vpcmesh-nat-t.service"))
        .expect("the ESP-in-UDP unit is installed");
    for line in [
        "ExecStart=/usr/local/bin/vpcmesh-agent hold-nat-t",
        "Restart=always",
        "CapabilityBoundingSet=",
        "RestrictAddressFamilies=AF_UNIX AF_INET",
        "ProtectKernelTunables=yes",
        "WantedBy=multi-user.target",
    ] {
        assert!(
            nat_t.lines().any(|l| l == line),
            "the ESP-in-UDP unit lacks {line}:\n{nat_t}"
        );
    }
    println!(
        "systemd-analyze security --offline:\n{}",
        instance.read("security.log").lines().last().unwrap_or("")
    );

    // Forwarding is the agent's to turn on, once its policies are in; a
    // rebooted instance must not forward before that.
    assert!(instance.calls("sysctl").is_empty());
    assert!(!instance.file("/etc/sysctl.d/90-vpcmesh.conf").exists());
    assert_eq!(
        instance.calls("systemctl"),
        [
            "daemon-reload",
            "enable --now --no-block vpcmesh-nat-t vpcmesh-agent"
        ]
    );
    let console = instance.console();
    assert!(
        console.contains(&format!(
            "vpcmesh-install: installed /usr/local/bin/vpcmesh-agent (sha256 {})",
            agent.sha256()
        )),
        "{console}"
    );
    for log in [console, instance.read("stderr.log")] {
        assert!(
            !log.contains(TOKEN_A),
            "the bootstrap token was logged:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_agent_is_refused_retried_and_never_installed_or_started() {
    let agent = require_agent_release();
    let app = TestApp::start().await;
    let (listener, origin) = loopback_listener().await;
    // The server hands out other bytes than the stack pins.
    let mut tampered = std::fs::read(agent_binary_path()).expect("read the agent");
    let last = tampered.len() - 1;
    tampered[last] ^= 0xff;
    let tampered = AgentRelease::from_bytes(tampered);
    serve(
        app.state.clone().with_agent(Some(tampered.clone())),
        listener,
    )
    .await;
    let stack = Stack::rendered(&agent, &origin);
    let mut instance = Instance::boot(&stack.user_data("LaunchTemplateB"), false);

    let mismatch = format!(
        "vpcmesh-install: digest mismatch for {origin}{}: expected sha256 {}, got {}",
        download_path(),
        agent.sha256(),
        tampered.sha256()
    );
    // Two refusals: it was refused, and it tried again.
    instance
        .wait_for("two refused downloads", Duration::from_secs(30), |i| {
            i.console().matches(&mismatch).count() >= 2
        })
        .await;
    assert!(
        instance.child.try_wait().expect("status").is_none(),
        "the script gave up"
    );
    instance.kill().await;

    assert!(
        !instance.file("/usr/local/bin/vpcmesh-agent").exists(),
        "a tampered agent was installed"
    );
    let bin = instance.file("/usr/local/bin/");
    let left: Vec<_> = std::fs::read_dir(&bin)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    // At most the download in flight when it was killed.
    assert!(left.len() <= 1, "{left:?}");
    assert!(!instance
        .file("/etc/systemd/system/vpcmesh-agent.service")
        .exists());
    assert!(
        instance.calls("systemctl").is_empty(),
        "systemctl ran: {:?}",
        instance.calls("systemctl")
    );
    assert!(instance.calls("sysctl").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_whose_server_is_down_retries_until_it_is_up_then_installs() {
    let agent = require_agent_release();
    let app = TestApp::start().await;
    // A port nothing listens on yet.
    let (listener, origin) = loopback_listener().await;
    let address = listener.local_addr().expect("address");
    drop(listener);
    let stack = Stack::rendered(&agent, &origin);
    let mut instance = Instance::boot(&stack.user_data("LaunchTemplateA"), false);
    let failed = format!(
        "vpcmesh-install: download of {origin}{} failed",
        download_path()
    );
    instance
        .wait_for("a failed download", Duration::from_secs(30), |i| {
            i.console().contains(&failed)
        })
        .await;
    assert!(!instance.file("/usr/local/bin/vpcmesh-agent").exists());
    assert!(instance.calls("systemctl").is_empty());

    let listener = tokio::net::TcpListener::bind(address)
        .await
        .expect("the server's port again");
    serve(app.state.clone(), listener).await;
    instance.finished(Duration::from_secs(30)).await;
    let installed =
        std::fs::read(instance.file("/usr/local/bin/vpcmesh-agent")).expect("installed");
    assert_eq!(sha256_hex(&installed), agent.sha256());
    assert_eq!(
        instance.calls("systemctl"),
        [
            "daemon-reload",
            "enable --now --no-block vpcmesh-nat-t vpcmesh-agent"
        ]
    );
    assert!(
        instance.console().contains("trying again in 1 s"),
        "{}",
        instance.console()
    );
}

#[test]
fn the_user_data_script_is_valid_bash() {
    let out = std::process::Command::new("bash")
        .args(["-n", "-c", server::provisioning::templates::USER_DATA])
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
