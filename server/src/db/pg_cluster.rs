//! A private PostgreSQL cluster in a folder of ours: `initdb` once, then a
//! `postgres` on a free loopback port, stopped when this handle drops or when
//! the process that started it dies (a watchdog reads our end of a pipe).
//!
//! As root (CI), Postgres refuses to run; the cluster then runs as the
//! `postgres` system user that Debian's package creates.

use rand::{distr::Alphanumeric, Rng};
use sqlx::{postgres::PgPoolOptions, Connection, Executor, PgConnection};
use std::{
    fs,
    io::Write,
    net::TcpListener,
    os::unix::fs::{chown, PermissionsExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

const SUPERUSER: &str = "vpcmesh";
const WATCHDOG: &str = r#""$@" & pg=$!
trap 'kill -INT $pg 2>/dev/null; wait $pg; exit 0' TERM INT
while read -r _; do :; done
kill -INT $pg 2>/dev/null
wait $pg"#;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "PostgreSQL server binaries not found (looked for {0}); install the postgresql package"
    )]
    BinariesMissing(String),
    #[error("running as root needs the 'postgres' system user (from the postgresql package)")]
    NoPostgresUser,
    #[error("{what} in {dir}: {source}")]
    Io {
        what: &'static str,
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("initdb failed for {dir}: {output}")]
    Initdb { dir: PathBuf, output: String },
    #[error("postgres did not become ready within {secs}s; its log ({log}) ends with:\n{tail}")]
    NotReady {
        secs: u64,
        log: PathBuf,
        tail: String,
    },
    #[error("the postgres user cannot reach {0}: a parent folder is not traversable by others (chmod o+x it, or keep the cluster under /tmp)")]
    Unreachable(PathBuf),
    #[error("database name '{0}' must be lowercase letters, digits and underscores")]
    BadDatabaseName(String),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// How the cluster trades durability for speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync on: a local install whose data should survive a crash.
    Durable,
    /// fsync off: throwaway clusters for tests.
    Ephemeral,
}

pub struct PrivateCluster {
    dir: PathBuf,
    port: u16,
    password: String,
    watchdog: Option<Child>,
}

impl PrivateCluster {
    /// Starts (initialising on first use) the cluster kept in `dir`.
    pub async fn start(dir: &Path, durability: Durability) -> Result<Self, ClusterError> {
        let bin = find_bin_dir()?;
        let run_as = RunAs::detect()?;
        let io = |what: &'static str| {
            let dir = dir.to_path_buf();
            move |source| ClusterError::Io { what, dir, source }
        };
        fs::create_dir_all(dir).map_err(io("create the cluster folder"))?;
        let dir = dir
            .canonicalize()
            .map_err(io("resolve the cluster folder"))?;
        run_as.check_reachable(&dir)?;
        let data = dir.join("data");
        let password_file = dir.join("password");
        let log = dir.join("postgres.log");

        if !data.join("PG_VERSION").exists() {
            let password: String = rand::rng()
                .sample_iter(&Alphanumeric)
                .take(32)
                .map(char::from)
                .collect();
            write_private(&password_file, &password).map_err(io("write the password file"))?;
            run_as
                .own(&dir)
                .map_err(io("hand the cluster folder to postgres"))?;
            run_as
                .own(&password_file)
                .map_err(io("hand the password file to postgres"))?;
            let output = run_as
                .command(&bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    SUPERUSER,
                    "--auth=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ])
                .arg(format!("--pwfile={}", password_file.display()))
                .output()
                .map_err(io("run initdb"))?;
            if !output.status.success() {
                return Err(ClusterError::Initdb {
                    dir: dir.clone(),
                    output: String::from_utf8_lossy(&output.stderr).into_owned(),
                });
            }
        }
        let password = fs::read_to_string(&password_file)
            .map_err(io("read the password file"))?
            .trim()
            .to_string();

        let port = free_port().map_err(io("find a free port"))?;
        let logfile = fs::File::create(&log).map_err(io("create the log file"))?;
        run_as.own(&log).map_err(io("hand the log to postgres"))?;
        let mut postgres = run_as.command(&bin.join("postgres"));
        postgres
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .arg("-k")
            .arg(&dir);
        if durability == Durability::Ephemeral {
            postgres.args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]);
        }
        let mut watchdog = Command::new("bash");
        watchdog
            .args(["-c", WATCHDOG, "pg-watchdog"])
            .arg(postgres.get_program())
            .args(postgres.get_args())
            .stdin(Stdio::piped())
            .stdout(logfile.try_clone().map_err(io("open the log file"))?)
            .stderr(logfile);
        let child = watchdog.spawn().map_err(io("start postgres"))?;
        let cluster = PrivateCluster {
            dir,
            port,
            password,
            watchdog: Some(child),
        };
        cluster.wait_ready(Duration::from_secs(60), &log).await?;
        tracing::info!(port, dir = %cluster.dir.display(), "private postgres ready");
        Ok(cluster)
    }

    async fn wait_ready(&self, limit: Duration, log: &Path) -> Result<(), ClusterError> {
        let started = Instant::now();
        loop {
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(2))
                .connect(&self.url("postgres"))
                .await;
            if let Ok(pool) = pool {
                pool.close().await;
                return Ok(());
            }
            if started.elapsed() > limit {
                let text = fs::read_to_string(log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                return Err(ClusterError::NotReady {
                    secs: limit.as_secs(),
                    log: log.to_path_buf(),
                    tail: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Connection URL for `database` in this cluster.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates `name` unless it exists; returns its URL.
    pub async fn ensure_database(&self, name: &str) -> Result<String, ClusterError> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(ClusterError::BadDatabaseName(name.to_string()));
        }
        let mut conn = PgConnection::connect(&self.url("postgres")).await?;
        let exists: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind(name)
            .fetch_optional(&mut conn)
            .await?;
        if exists.is_none() {
            conn.execute(format!("CREATE DATABASE \"{name}\"").as_str())
                .await?;
        }
        conn.close().await?;
        Ok(self.url(name))
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        if let Some(mut child) = self.watchdog.take() {
            // Closing the pipe tells the watchdog to stop postgres (fast shutdown).
            drop(child.stdin.take());
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
        }
    }
}

fn find_bin_dir() -> Result<PathBuf, ClusterError> {
    if let Ok(dir) = std::env::var("VPCMESH_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        ClusterError::BinariesMissing(format!(
            "{}/*/bin/postgres or $VPCMESH_PG_BIN",
            root.display()
        ))
    })
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    let mut f = fs::File::create(path)?;
    f.set_permissions(fs::Permissions::from_mode(0o600))?;
    f.write_all(content.as_bytes())
}

/// Who the Postgres processes run as: ourselves, or `postgres` when we are root.
enum RunAs {
    Me,
    Postgres { uid: u32, gid: u32 },
}

impl RunAs {
    fn detect() -> Result<Self, ClusterError> {
        let me = Command::new("id").arg("-u").output().ok();
        let is_root = me
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        if !is_root {
            return Ok(RunAs::Me);
        }
        let passwd = fs::read_to_string("/etc/passwd").map_err(|_| ClusterError::NoPostgresUser)?;
        passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.first() == Some(&"postgres") && f.len() > 3)
            .and_then(|f| {
                Some(RunAs::Postgres {
                    uid: f[2].parse().ok()?,
                    gid: f[3].parse().ok()?,
                })
            })
            .ok_or(ClusterError::NoPostgresUser)
    }

    fn command(&self, program: &Path) -> Command {
        match self {
            RunAs::Me => Command::new(program),
            RunAs::Postgres { .. } => {
                let mut c = Command::new("setpriv");
                c.args([
                    "--reuid=postgres",
                    "--regid=postgres",
                    "--init-groups",
                    "--",
                ])
                .arg(program);
                c
            }
        }
    }

    /// As root, every parent of `dir` must let the postgres user pass.
    fn check_reachable(&self, dir: &Path) -> Result<(), ClusterError> {
        if let RunAs::Postgres { .. } = self {
            for parent in dir.ancestors().skip(1) {
                let mode = fs::metadata(parent)
                    .map(|m| m.permissions().mode())
                    .unwrap_or(0);
                if mode & 0o001 == 0 {
                    return Err(ClusterError::Unreachable(dir.to_path_buf()));
                }
            }
        }
        Ok(())
    }

    fn own(&self, path: &Path) -> std::io::Result<()> {
        match self {
            RunAs::Me => Ok(()),
            RunAs::Postgres { uid, gid } => {
                chown(path, Some(*uid), Some(*gid))?;
                // The cluster folder must be reachable by postgres through its parents.
                if path.is_dir() {
                    fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
                }
                Ok(())
            }
        }
    }
}
