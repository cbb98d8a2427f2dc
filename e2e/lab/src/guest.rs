//! The User-Mode Linux guest: booted from the host's own filesystem inside
//! the lab's namespace, it runs `vpcmesh-lab guest`, which executes shell
//! scripts the host sends over the tap (one JSON line each way) in the
//! guest's kernel, where ESP exists.

use crate::forward::Mapping;
use crate::netns::{LabNetns, GUEST};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

pub const PORT: u16 = 7000;
/// The kernel modules the lab needs (Debian's UML kernel has them as modules).
const MODULES: &str = "veth bridge overlay xfrm_user esp4 gcm ctr ghash-generic seqiv aes_ti sch_ingress cls_u32 cls_matchall act_nat act_gact";
/// The throwaway key of the SA that builds the ESP cipher at boot (16
/// bytes of AES key and 4 of salt, as the agent's): it never sees a packet.
const WARM_KEY: &str = "000102030405060708090a0b0c0d0e0f10111213";
const MAX_REQUEST: usize = 4 << 20;
/// How long a command may wait for the guest to accept its connection.
const CONNECT_WITHIN: Duration = Duration::from_secs(30);

#[derive(Serialize, Deserialize, Debug)]
pub struct Request {
    pub script: String,
    pub timeout_secs: u64,
    /// Instead of a script: forwarding inside an instance's namespace.
    #[serde(default)]
    pub forward: Option<Forward>,
}

impl Request {
    /// `script` (sh) in the guest's root namespace, given `timeout` (at
    /// least a second).
    pub fn script(script: &str, timeout: Duration) -> Self {
        Request {
            script: script.to_string(),
            timeout_secs: timeout.as_secs().max(1),
            forward: None,
        }
    }
}

/// What EC2 gives an instance over the network, stood in for by the guest
/// itself (no process of its own per instance): listeners bound inside the
/// instance's namespace, each spliced to a target the guest reaches (the
/// host end of the tap). Replaces the namespace's earlier forwarding; no
/// mappings ends it (the instance is gone).
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Forward {
    pub netns: String,
    pub mappings: Vec<Mapping>,
    /// Written once every listener is bound (a FIFO the boot waits on).
    pub ready: Option<PathBuf>,
}

/// The forwarding tasks of each instance namespace.
type Forwards = Arc<Mutex<HashMap<String, Vec<tokio::task::JoinHandle<()>>>>>;

/// The commands running now: number, when it began, its first words.
type InFlight = Arc<Mutex<BTreeMap<u64, (Instant, String)>>>;

/// How often the guest says it is alive, and how loaded, in its log.
const HEARTBEAT: Duration = Duration::from_secs(5);

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Output {
    pub rc: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn ok(&self) -> bool {
        self.rc == 0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("User-Mode Linux ({uml}) cannot start: {error}; ./run.sh and ./test.sh install it (Debian package user-mode-linux)")]
    NoUml { uml: String, error: std::io::Error },
    #[error("the guest did not answer within {0:?}; its console is in {1}")]
    Boot(Duration, String),
    #[error("the guest's command channel: {0}")]
    Channel(std::io::Error),
    #[error("the guest did not answer within {0:?} (its own limit, plus 5 s) to: {1}")]
    NoAnswer(Duration, String),
    #[error("the guest answered something that is not an output: {0}")]
    Answer(String),
    #[error("{0}")]
    Setup(String),
}

/// The `guest` command, inside the guest: serves scripts until powered off.
pub async fn serve(listen: SocketAddr, dir: PathBuf) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    std::fs::create_dir_all("/run/lab/exec")?;
    tracing::info!(%listen, "lab guest: ready for commands");
    let forwards = Forwards::default();
    let in_flight = InFlight::default();
    tokio::spawn(heartbeat(in_flight.clone()));
    let mut n: u64 = 0;
    loop {
        let (stream, _) = listener.accept().await?;
        n += 1;
        let (dir, forwards, in_flight) = (dir.clone(), forwards.clone(), in_flight.clone());
        tokio::spawn(async move {
            if let Err(e) = handle(stream, n, &dir, &forwards, &in_flight).await {
                tracing::warn!(error = %e, "lab guest: a command failed to run");
            }
        });
    }
}

/// Every [`HEARTBEAT`], one line in the guest's log (read on the host even
/// when the guest no longer answers): the commands in flight and the
/// oldest of them, free memory, the tmpfs that holds the instances' disks,
/// the load, and what its `vec0` carried and dropped. A guest that froze
/// shows as a log that stops; one whose wire stalled, as counters that do.
async fn heartbeat(in_flight: InFlight) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    loop {
        tick.tick().await;
        // Off the runtime: reading /proc must never hold up a command.
        let in_flight = in_flight.clone();
        let _ = tokio::task::spawn_blocking(move || say_alive(&in_flight)).await;
    }
}

fn say_alive(in_flight: &InFlight) {
    let (running, oldest) = match in_flight.lock() {
        Ok(all) => (
            all.len(),
            all.values()
                .min_by_key(|(began, _)| *began)
                .map(|(began, what)| format!("{:.0?} {what}", began.elapsed())),
        ),
        Err(_) => (0, None),
    };
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let stat = |name: &str| {
        read(&format!("/sys/class/net/vec0/statistics/{name}"))
            .trim()
            .to_string()
    };
    let available_mb = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb / 1024);
    tracing::info!(
        running,
        oldest = oldest.as_deref().unwrap_or("-"),
        available_mb,
        run_used_mb = run_used_mb(),
        load = %read("/proc/loadavg").trim(),
        rx = %stat("rx_packets"),
        rx_dropped = %stat("rx_dropped"),
        tx = %stat("tx_packets"),
        tx_dropped = %stat("tx_dropped"),
        blocked = %blocked(),
        "lab guest: alive"
    );
}

/// A command in [`InFlight`] while it lives.
struct Running<'a> {
    all: &'a InFlight,
    n: u64,
}

impl<'a> Running<'a> {
    fn new(all: &'a InFlight, n: u64, script: &str) -> Self {
        if let Ok(mut all) = all.lock() {
            all.insert(n, (Instant::now(), script.chars().take(80).collect()));
        }
        Running { all, n }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if let Ok(mut all) = self.all.lock() {
            all.remove(&self.n);
        }
    }
}

/// Processes in uninterruptible sleep (state D), as `pid:comm@wchan`,
/// the first few: what a command stuck in the kernel waits on.
fn blocked() -> String {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // `pid (comm) S ...`: the state follows the last parenthesis.
        let Some((head, tail)) = stat.rsplit_once(')') else {
            continue;
        };
        if tail.trim_start().starts_with('D') {
            let comm = head.split_once('(').map(|(_, c)| c).unwrap_or("?");
            let wchan = std::fs::read_to_string(entry.path().join("wchan")).unwrap_or_default();
            found.push(format!("{pid}:{comm}@{wchan}"));
            if found.len() == 6 {
                break;
            }
        }
    }
    if found.is_empty() {
        "-".to_string()
    } else {
        found.join(",")
    }
}

/// What /run (tmpfs: the instances' disks) holds, in MiB.
fn run_used_mb() -> Option<u64> {
    let path = std::ffi::CString::new("/run").ok()?;
    // SAFETY: statvfs fills the struct it is given; the path is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_blocks - st.f_bfree) * st.f_frsize / (1 << 20))
}

async fn handle(
    stream: tokio::net::TcpStream,
    n: u64,
    dir: &Path,
    forwards: &Forwards,
    in_flight: &InFlight,
) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(MAX_REQUEST as u64);
    reader.read_line(&mut line).await?;
    let req: Request = serde_json::from_str(&line)?;
    // Until its answer is written: a command whose answer cannot leave
    // shows in the heartbeat as still running.
    let _running;
    let out = match req.forward {
        Some(f) => match forward_in(&f, forwards) {
            Ok(()) => Output {
                rc: 0,
                stdout: String::new(),
                stderr: String::new(),
            },
            Err(e) => failed(format!("lab guest: forwarding in {}: {e}", f.netns)),
        },
        None => {
            let started = std::time::Instant::now();
            _running = Running::new(in_flight, n, &req.script);
            let out = run_script(&req.script, n, dir, Duration::from_secs(req.timeout_secs)).await;
            // A command that outlives the host's patience shows here (and
            // whether the guest ran it at all).
            if started.elapsed() > Duration::from_secs(10) {
                tracing::warn!(n, took = ?started.elapsed(), rc = out.rc, script = %req.script.chars().take(120).collect::<String>(), "lab guest: a slow command");
            }
            out
        }
    };
    let mut text = serde_json::to_string(&out)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    write.shutdown().await?;
    Ok(())
}

use tokio::io::AsyncReadExt;

/// Binds `f`'s listeners in its namespace (dropping the earlier ones) and
/// says so in its ready file.
fn forward_in(f: &Forward, forwards: &Forwards) -> Result<(), String> {
    let mut all = forwards
        .lock()
        .map_err(|_| "the forwarding table is poisoned")?;
    for task in all.remove(&f.netns).unwrap_or_default() {
        task.abort();
    }
    if f.mappings.is_empty() {
        tracing::info!(netns = %f.netns, "lab guest: forwarding ended");
        return Ok(());
    }
    let mut tasks: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    for m in &f.mappings {
        let listen = m.listen;
        let bound = crate::netns::in_netns(&f.netns, move || std::net::TcpListener::bind(listen))
            .map_err(|e| e.to_string())?
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(tokio::net::TcpListener::from_std)
            .map_err(|e| format!("bind {listen}: {e}"));
        let listener = match bound {
            Ok(l) => l,
            Err(e) => {
                for t in tasks {
                    t.abort();
                }
                return Err(e);
            }
        };
        let target = m.target;
        tasks.push(tokio::spawn(crate::forward::serve(listener, move || {
            tokio::net::TcpStream::connect(target)
        })));
    }
    all.insert(f.netns.clone(), tasks);
    if let Some(ready) = f.ready.clone() {
        // A FIFO the boot reads: opening it waits for that reader, so on a
        // thread of its own.
        let netns = f.netns.clone();
        std::thread::spawn(move || {
            if let Err(e) = std::fs::write(&ready, b"ready\n") {
                tracing::warn!(%netns, error = %e, "lab guest: {}", ready.display());
            }
        });
    }
    Ok(())
}

/// Output goes to files, not pipes: a script may leave background
/// processes behind (agents, pings) that hold on to its descriptors.
async fn run_script(script: &str, n: u64, dir: &Path, timeout: Duration) -> Output {
    let base = PathBuf::from(format!("/run/lab/exec/{n}"));
    let (out_path, err_path) = (base.with_extension("out"), base.with_extension("err"));
    let files =
        std::fs::File::create(&out_path).and_then(|o| Ok((o, std::fs::File::create(&err_path)?)));
    let (out, err) = match files {
        Ok(f) => f,
        Err(e) => return failed(format!("lab guest: {e}")),
    };
    let child = tokio::process::Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return failed(format!("lab guest: sh: {e}")),
    };
    let rc = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => status.code().unwrap_or(-1),
        Ok(Err(e)) => return failed(format!("lab guest: wait: {e}")),
        Err(_) => {
            let _ = child.kill().await;
            124
        }
    };
    let read = |p: &Path| {
        let text = std::fs::read(p).unwrap_or_default();
        let _ = std::fs::remove_file(p);
        String::from_utf8_lossy(&text).into_owned()
    };
    Output {
        rc,
        stdout: read(&out_path),
        stderr: read(&err_path),
    }
}

fn failed(message: String) -> Output {
    Output {
        rc: -1,
        stdout: String::new(),
        stderr: message,
    }
}

/// A running guest, driven from the host.
pub struct Guest {
    child: std::sync::Mutex<Option<std::process::Child>>,
    netns: String,
    pub dir: PathBuf,
}

pub struct BootOptions<'a> {
    pub uml: &'a str,
    pub mem_mb: u32,
    pub lab_bin: &'a Path,
    pub dir: &'a Path,
    pub within: Duration,
}

impl Guest {
    /// Boots the guest with its `vec0` on the tap of `netns` and waits
    /// until it takes commands.
    pub async fn boot(netns: &LabNetns, o: BootOptions<'_>) -> Result<Guest, GuestError> {
        let dir = o.dir;
        let init = dir.join("init.sh");
        let script = format!(
            r#"#!/bin/sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs tmpfs /run
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /run/netns /run/lab
for m in {MODULES}; do modprobe $m || echo "lab guest: modprobe $m failed"; done
# The kernel builds (and self-tests) the ESP cipher when the first SA needs
# it: once per boot, milliseconds on real hardware, but over a second in
# this guest, and every agent's first reconcile would wait on it. Built
# here, while the guest boots beside the provisioning, with one SA in a
# namespace of its own that goes again at once.
ip netns add lab-warm && ip -n lab-warm xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x100 reqid 1 mode tunnel aead 'rfc4106(gcm(aes))' 0x{WARM_KEY} 128 || echo "lab guest: the ESP cipher could not be built ahead"
ip netns del lab-warm 2>/dev/null
ip link set lo up
ip addr add {GUEST}/24 dev vec0
ip link set vec0 up
sysctl -qw net.ipv4.ip_forward=1
cd {dir}
{bin} guest --listen {GUEST}:{PORT} --dir {dir} >> {dir}/guest.log 2>&1
poweroff -f
"#,
            dir = dir.display(),
            bin = o.lab_bin.display(),
        );
        std::fs::write(&init, script)
            .map_err(|e| GuestError::Setup(format!("{}: {e}", init.display())))?;
        set_executable(&init).map_err(|e| GuestError::Setup(format!("{}: {e}", init.display())))?;
        let console = std::fs::File::create(dir.join("console.log"))
            .map_err(|e| GuestError::Setup(format!("console log: {e}")))?;
        let child = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &netns.name,
                o.uml,
                "vec0:transport=tap,ifname=tap0",
            ])
            .args([
                &format!("mem={}M", o.mem_mb),
                "root=/dev/root",
                "rootfstype=hostfs",
                "rootflags=/",
                "rw",
                &format!("init={}", init.display()),
                "con=null",
                "con0=fd:0,fd:1",
            ])
            .stdin(Stdio::null())
            .stdout(console)
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|error| GuestError::NoUml {
                uml: o.uml.to_string(),
                error,
            })?;
        let guest = Guest {
            child: std::sync::Mutex::new(Some(child)),
            netns: netns.name.clone(),
            dir: dir.to_path_buf(),
        };
        let started = Instant::now();
        loop {
            let probe = Request::script("true", Duration::from_secs(5));
            // Booting: one quick try per round, the loop below waits.
            if guest.send_within(&probe, Duration::ZERO).await.is_ok() {
                tracing::info!(took = ?started.elapsed(), "lab guest booted");
                return Ok(guest);
            }
            let exited = guest
                .child
                .lock()
                .ok()
                .and_then(|mut c| c.as_mut().and_then(|c| c.try_wait().ok().flatten()));
            if exited.is_some() || started.elapsed() > o.within {
                guest.kill();
                return Err(GuestError::Boot(
                    o.within,
                    dir.join("console.log").display().to_string(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Runs `script` (sh) in the guest's root namespace, in the lab folder.
    pub async fn exec(&self, script: &str, timeout: Duration) -> Result<Output, GuestError> {
        self.send(&Request::script(script, timeout)).await
    }

    /// Makes the guest forward `f` inside its namespace (see [`Forward`]).
    pub async fn forward(&self, f: Forward) -> Result<(), GuestError> {
        let what = f.netns.clone();
        let out = self
            .send(&Request {
                script: String::new(),
                timeout_secs: 10,
                forward: Some(f),
            })
            .await?;
        if out.ok() {
            Ok(())
        } else {
            Err(GuestError::Setup(format!("{what}: {}", out.stderr)))
        }
    }

    async fn send(&self, request: &Request) -> Result<Output, GuestError> {
        self.send_within(request, CONNECT_WITHIN).await
    }

    /// Sends `request`, connecting for up to `connect_within`: a loaded
    /// guest (one CPU, busy starting an instance's processes) can leave a
    /// SYN unanswered for seconds, and a connect that timed out is tried
    /// again until then.
    async fn send_within(
        &self,
        request: &Request,
        connect_within: Duration,
    ) -> Result<Output, GuestError> {
        let timeout = Duration::from_secs(request.timeout_secs);
        let clock = crate::stall::RunningClock::start();
        let mut tries = 0;
        let mut stream = loop {
            tries += 1;
            match crate::netns::connect_in(&self.netns, SocketAddr::from((GUEST, PORT))).await {
                Ok(s) => break s,
                Err(e)
                    if e.kind() == std::io::ErrorKind::TimedOut
                        && clock.elapsed() < connect_within => {}
                Err(e) => return Err(GuestError::Channel(e)),
            }
        };
        if tries > 1 {
            tracing::warn!(tries, took = ?clock.elapsed(), "lab guest: slow to accept a command");
        }
        let mut req =
            serde_json::to_string(request).map_err(|e| GuestError::Answer(e.to_string()))?;
        req.push('\n');
        stream
            .write_all(req.as_bytes())
            .await
            .map_err(GuestError::Channel)?;
        let mut line = String::new();
        let mut reader = BufReader::new(stream);
        let patience = timeout + Duration::from_secs(5);
        let read = reader.read_line(&mut line);
        tokio::pin!(read);
        // Host stalls (a paused machine stops the guest too) move the
        // deadline: the guest gets `patience` of time the host ran.
        let read = loop {
            match tokio::time::timeout_at(clock.deadline(patience), &mut read).await {
                Ok(read) => break read,
                Err(_) if clock.elapsed() < patience => {
                    tracing::warn!(stalled = ?clock.stalled(), "lab guest: the host stalled while a command ran; waiting that much longer");
                }
                Err(_) => {
                    let what = match &request.forward {
                        Some(f) => format!("forward in {}", f.netns),
                        None => request.script.chars().take(160).collect(),
                    };
                    return Err(GuestError::NoAnswer(patience, what));
                }
            }
        };
        read.map_err(GuestError::Channel)?;
        serde_json::from_str(&line)
            .map_err(|_| GuestError::Answer(line.chars().take(200).collect()))
    }

    /// The host process of the guest's kernel, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child
            .lock()
            .ok()
            .and_then(|c| c.as_ref().map(|c| c.id()))
    }

    /// How long the guest's log has been silent: it writes a heartbeat
    /// every [`HEARTBEAT`], so much longer means the guest (its kernel or
    /// its command server) froze. `None` when the log cannot be read.
    pub fn silent_for(&self) -> Option<Duration> {
        let modified = std::fs::metadata(self.dir.join("guest.log"))
            .and_then(|m| m.modified())
            .ok()?;
        std::time::SystemTime::now().duration_since(modified).ok()
    }

    /// What the host says about the User-Mode Linux kernel's own process:
    /// its state, the host system call it sits in and its host kernel
    /// stack, and the CPU it burnt over half a second (a guest kernel
    /// that spins shows ~50 ticks; one blocked on the host, none).
    pub async fn host_view(&self) -> String {
        let Some(pid) = self
            .child
            .lock()
            .ok()
            .and_then(|c| c.as_ref().map(|c| c.id()))
        else {
            return "the guest's process is gone\n".to_string();
        };
        let proc = |what: &str| {
            std::fs::read_to_string(format!("/proc/{pid}/{what}"))
                .unwrap_or_else(|e| format!("({e})"))
        };
        // utime + stime: fields 14 and 15, after the parenthesised name.
        let ticks = |stat: &str| -> Option<u64> {
            let (_, tail) = stat.rsplit_once(')')?;
            let f: Vec<&str> = tail.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        };
        let before = proc("stat");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = proc("stat");
        let burnt = match (ticks(&before), ticks(&after)) {
            (Some(b), Some(a)) => format!("{} ticks in 0.5 s", a.saturating_sub(b)),
            _ => "unknown".to_string(),
        };
        format!(
            "User-Mode Linux kernel process {pid}: cpu {burnt}; stat {}; wchan {}; syscall {}; host stack:\n{}",
            after.trim(),
            proc("wchan").trim(),
            proc("syscall").trim(),
            proc("stack").trim()
        )
    }

    /// Powers the guest off (and kills it if it does not go within 10 s).
    pub async fn shutdown(&self) {
        let poweroff = Request::script("poweroff -f", Duration::from_secs(2));
        let _ = self.send_within(&poweroff, Duration::from_secs(2)).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let done = self
                .child
                .lock()
                .ok()
                .map(|mut c| match c.as_mut() {
                    Some(child) => child.try_wait().ok().flatten().is_some(),
                    None => true,
                })
                .unwrap_or(true);
            if done {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.kill();
    }

    fn kill(&self) {
        if let Ok(mut c) = self.child.lock() {
            if let Some(mut child) = c.take() {
                // The whole process group: UML runs a host process per thread.
                // SAFETY: kill(2) on a process group this lab started.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                let _ = child.wait();
            }
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.kill();
    }
}

use std::os::unix::process::CommandExt;

fn set_executable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut p = std::fs::metadata(path)?.permissions();
    p.set_mode(0o755);
    std::fs::set_permissions(path, p)
}
