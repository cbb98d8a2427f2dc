//! Test harness: one private Postgres cluster per test binary, a fresh
//! database per test, and a cookie-keeping client for the real router.

use axum::{
    body::Body,
    http::{header, HeaderMap, Method, Request, StatusCode},
    Router,
};
use http_body_util::BodyExt;
use leptos::prelude::LeptosOptions;
use serde_json::Value;
use server::{
    appliances::agent_binary::AgentRelease,
    aws::Aws,
    db::{self, Durability, PrivateCluster},
    http::router,
    identity::{orgs, users},
    AppState, Settings,
};
use sqlx::PgPool;
use std::{os::unix::fs::PermissionsExt, path::PathBuf};
use tokio::sync::OnceCell;
use tower::ServiceExt;
use uuid::Uuid;

pub const ORIGIN: &str = "http://127.0.0.1:3000";
pub const PASSWORD: &str = "correct horse battery staple";

static CLUSTER: OnceCell<PrivateCluster> = OnceCell::const_new();
static AGENT: std::sync::OnceLock<Option<AgentRelease>> = std::sync::OnceLock::new();

/// The agent the test servers hand out, as `./run.sh` serves it: the
/// `agent` profile's build in the shared target folder (optimised and
/// stripped, as a release ships it; `cargo build --profile agent -p
/// appliance --bin vpcmesh-agent`, which ./test.sh runs). Every lab
/// instance downloads, checks and keeps it, so its size is boot time.
pub fn agent_binary_path() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/debug/deps/api-* -> target/agent/vpcmesh-agent
    exe.parent()
        .and_then(std::path::Path::parent)
        .and_then(std::path::Path::parent)
        .map(|target| target.join("agent").join("vpcmesh-agent"))
        .expect("the test binary lives in target/debug/deps")
}

/// The agent the test servers hand out and pin, read once per test binary
/// (it is large); `None` when it was not built.
pub fn agent_release() -> Option<AgentRelease> {
    AGENT
        .get_or_init(|| {
            let path = agent_binary_path();
            path.is_file()
                .then(|| AgentRelease::load(&path).expect("the built vpcmesh-agent reads as ELF"))
        })
        .clone()
}

/// Provisioning tests cannot run without the agent: say so, loudly.
pub fn require_agent_release() -> AgentRelease {
    agent_release().unwrap_or_else(|| {
        panic!(
            "{} is missing: appliance stacks pin and serve it; build it with `cargo build --profile agent -p appliance --bin vpcmesh-agent` (./test.sh does)",
            agent_binary_path().display()
        )
    })
}

async fn cluster() -> &'static PrivateCluster {
    CLUSTER
        .get_or_init(|| async {
            // Under /tmp: as root the cluster runs as `postgres`, which must reach it.
            let dir = PathBuf::from("/tmp/vpcmesh-test-pg");
            std::fs::create_dir_all(&dir).expect("create /tmp/vpcmesh-test-pg");
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
                .expect("chmod test pg dir");
            remove_clusters_of_dead_runs(&dir);
            let dir = dir.join(format!("api-{}", std::process::id()));
            PrivateCluster::start(&dir, Durability::Ephemeral)
                .await
                .expect("private Postgres cluster starts (is the postgresql package installed?)")
        })
        .await
}

/// Earlier runs' cluster folders (named after their process id) whose process is gone.
fn remove_clusters_of_dead_runs(root: &std::path::Path) {
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("api-") else {
            continue;
        };
        if !PathBuf::from(format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

pub struct TestApp {
    pub router: Router,
    pub pool: PgPool,
    /// The test database, for server processes a test starts itself.
    pub db_url: String,
    pub state: AppState,
}

impl TestApp {
    pub async fn start() -> Self {
        Self::with_settings(|_| {}).await
    }

    pub async fn with_settings(change: impl FnOnce(&mut Settings)) -> Self {
        Self::build(change, None, agent_release()).await
    }

    /// An app whose AWS access is `aws` (its own endpoint and credentials).
    pub async fn with_aws(aws: Aws) -> Self {
        Self::with_aws_and_settings(aws, |_| {}).await
    }

    /// `with_aws` with `change` applied to the settings.
    pub async fn with_aws_and_settings(aws: Aws, change: impl FnOnce(&mut Settings)) -> Self {
        Self::build(change, Some(aws), Some(require_agent_release())).await
    }

    async fn build(
        change: impl FnOnce(&mut Settings),
        aws: Option<Aws>,
        agent: Option<AgentRelease>,
    ) -> Self {
        let cluster = cluster().await;
        let name = format!("t_{}", Uuid::new_v4().simple());
        let url = cluster
            .ensure_database(&name)
            .await
            .expect("create test database");
        let pool = db::connect(&url, 16).await.expect("connect test database");
        db::migrate(&pool).await.expect("migrations apply");
        let mut settings = Settings::local(ORIGIN);
        // Rotations finish in seconds, not the production half minute.
        settings.rotation_grace = std::time::Duration::from_secs(2);
        change(&mut settings);
        let options = LeptosOptions::builder()
            .output_name("vpcmesh")
            .site_root("target/site")
            .build();
        // Without a moto endpoint AWS is a closed port: calls fail as "unavailable".
        let aws = aws.unwrap_or_else(|| {
            Aws::local(
                settings
                    .aws_endpoint_url
                    .as_ref()
                    .map_or("http://127.0.0.1:9", |u| u.as_str()),
            )
        });
        let state = AppState::new(pool.clone(), settings, options, aws).with_agent(agent);
        // The provisioning engine runs as in the server (its tasks end with the test).
        let workers = state.settings.engine_workers;
        server::provisioning::engine::spawn(state.clone(), workers);
        let router = router(state.clone());
        TestApp {
            router,
            pool,
            db_url: url,
            state,
        }
    }

    /// An app whose AWS is the shared moto server.
    pub async fn with_moto() -> Self {
        Self::on_moto(4).await
    }

    /// On moto with `workers` provisioning workers in this process (0: jobs
    /// wait for server processes the test starts).
    pub async fn on_moto(workers: usize) -> Self {
        Self::on_moto_with(workers, |_| {}).await
    }

    /// `on_moto` with further settings changed by `change`.
    pub async fn on_moto_with(workers: usize, change: impl FnOnce(&mut Settings)) -> Self {
        let agent = require_agent_release();
        let url: url::Url = crate::moto::moto().await.url.parse().expect("moto url");
        let moto = move |s: &mut Settings| {
            s.aws_endpoint_url = Some(url);
            s.engine_workers = workers;
            change(s);
        };
        Self::build(moto, None, Some(agent)).await
    }

    /// On moto, 4 workers, and no agent binary (as a server started without
    /// `--agent-binary` and none beside it).
    pub async fn on_moto_without_agent() -> Self {
        let url: url::Url = crate::moto::moto().await.url.parse().expect("moto url");
        let moto = move |s: &mut Settings| s.aws_endpoint_url = Some(url);
        Self::build(moto, None, None).await
    }

    /// `with_moto` plus organization "Acme" whose admin is ada@acme.test.
    pub async fn acme_on_moto() -> (Self, Uuid) {
        let app = Self::with_moto().await;
        let org = app.org_with_admin("Acme", "ada@acme.test").await;
        (app, org)
    }

    /// The usual fixture: organization "Acme" whose admin is ada@acme.test.
    pub async fn acme() -> (Self, Uuid) {
        let app = Self::start().await;
        let org = app.org_with_admin("Acme", "ada@acme.test").await;
        (app, org)
    }

    /// An organization with one admin (`PASSWORD`); returns its id.
    pub async fn org_with_admin(&self, org: &str, email: &str) -> Uuid {
        let org = orgs::create(&self.pool, org).await.expect("create org");
        self.add_user(org.id, email, app::api::Role::Admin).await;
        org.id
    }

    pub async fn add_user(&self, org_id: Uuid, email: &str, role: app::api::Role) -> Uuid {
        let hash = server::auth::password::hash(PASSWORD).await.expect("hash");
        users::insert(
            &self.pool,
            users::NewUserRow {
                org_id,
                email,
                name: "Test User",
                role,
                password_hash: &hash,
            },
        )
        .await
        .expect("insert user")
        .expect("email is new")
    }

    pub fn client(&self) -> Client {
        Client {
            router: self.router.clone(),
            cookie: None,
        }
    }

    /// A client already signed in as `email` with `PASSWORD`.
    pub async fn signed_in(&self, email: &str) -> Client {
        let mut c = self.client();
        let r = c.sign_in(email, PASSWORD).await;
        assert_eq!(r.status, StatusCode::OK, "sign-in as {email}: {}", r.text());
        c
    }

    /// Stored console sessions (signed-in or not yet expired).
    pub async fn session_rows(&self) -> i64 {
        self.count("SELECT count(*) FROM tower_sessions.session")
            .await
    }

    pub async fn user_rows(&self) -> i64 {
        self.count("SELECT count(*) FROM users").await
    }

    /// An md5 of every row of every table in the public schema, by table:
    /// requests that must change nothing leave this map as it was.
    pub async fn table_checksums(&self) -> std::collections::BTreeMap<String, String> {
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1",
        )
        .fetch_all(&self.pool)
        .await
        .expect("list tables");
        let mut sums = std::collections::BTreeMap::new();
        for table in tables {
            let sql = format!(
                "SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM \"{table}\" t"
            );
            let sum: String = sqlx::query_scalar(&sql)
                .fetch_one(&self.pool)
                .await
                .unwrap_or_else(|e| panic!("checksum of {table}: {e}"));
            sums.insert(table, sum);
        }
        sums
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .expect("count query")
    }
}

pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends requests as a same-origin browser would, keeping the session cookie.
pub struct Client {
    router: Router,
    pub cookie: Option<String>,
}

impl Client {
    pub fn request(&self, method: Method, path: &str) -> axum::http::request::Builder {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(header::ORIGIN, ORIGIN);
        if let Some(c) = &self.cookie {
            b = b.header(header::COOKIE, c);
        }
        b
    }

    pub async fn send(&mut self, req: Request<Body>) -> Response {
        // A request that never finishes fails here, naming itself, instead of
        // stalling the whole run.
        let what = format!("{} {}", req.method(), req.uri());
        let router = self.router.clone();
        let (parts, body) = tokio::time::timeout(std::time::Duration::from_secs(90), async move {
            let res = router.oneshot(req).await.expect("router answers");
            let (parts, body) = res.into_parts();
            let body = body.collect().await.expect("body").to_bytes().to_vec();
            (parts, body)
        })
        .await
        .unwrap_or_else(|_| panic!("{what} got no complete answer within 90 s"));
        for set in parts.headers.get_all(header::SET_COOKIE) {
            let set = set.to_str().expect("ascii cookie");
            let pair = set.split(';').next().unwrap_or_default().to_string();
            let expired = set.contains("Max-Age=0") || pair.ends_with('=');
            self.cookie = if expired { None } else { Some(pair) };
        }
        Response {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub async fn json(&mut self, method: Method, path: &str, body: Option<Value>) -> Response {
        let b = self
            .request(method, path)
            .header(header::CONTENT_TYPE, "application/json");
        let body = body
            .map(|v| Body::from(v.to_string()))
            .unwrap_or_else(Body::empty);
        self.send(b.body(body).expect("request")).await
    }

    pub async fn get(&mut self, path: &str) -> Response {
        self.send(
            self.request(Method::GET, path)
                .body(Body::empty())
                .expect("request"),
        )
        .await
    }

    /// A page load, with the `Accept` header a browser sends.
    pub async fn page(&mut self, path: &str) -> Response {
        let req = self
            .request(Method::GET, path)
            .header(header::ACCEPT, "text/html,application/xhtml+xml")
            .body(Body::empty())
            .expect("request");
        self.send(req).await
    }

    /// A plain HTML form post, as a browser without JavaScript sends it.
    pub async fn form(&mut self, path: &str, fields: &[(&str, &str)]) -> Response {
        let body = fields
            .iter()
            .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let req = self
            .request(Method::POST, path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "text/html")
            .header(header::REFERER, format!("{ORIGIN}/sign-in"))
            .body(Body::from(body))
            .expect("request");
        self.send(req).await
    }

    /// `PATCH /api/v1/users/{id}` with a new role.
    pub async fn set_role(&mut self, user_id: &str, role: &str) -> Response {
        let path = format!("/api/v1/users/{user_id}");
        self.json(
            Method::PATCH,
            &path,
            Some(serde_json::json!({ "role": role })),
        )
        .await
    }

    /// The sign-in form posted without JavaScript.
    pub async fn form_sign_in(&mut self, email: &str, password: &str, next: &str) -> Response {
        self.form(
            "/api/sign_in",
            &[("email", email), ("password", password), ("next", next)],
        )
        .await
    }

    pub async fn sign_in(&mut self, email: &str, password: &str) -> Response {
        self.json(
            Method::POST,
            "/api/v1/session",
            Some(serde_json::json!({ "email": email, "password": password })),
        )
        .await
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Polls `probe` every 100 ms until it gives a value, or panics with `what`
/// after `within`.
pub async fn eventually<T, F, Fut>(within: std::time::Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not happen within {within:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
