//! An instance's boots in the lab, as EC2, cloud-init and systemd would do
//! them. At its first boot its own user data runs as root in a private
//! mount namespace (overlays over /etc, /usr/local and /var/lib, so nothing
//! reaches the host's), and downloads and installs the agent itself. The
//! overlays' upper directories are the instance's disk: a reboot keeps
//! them, and starts the units the user data enabled (cloud-init runs user
//! data once per instance). What EC2 provides around the instance has lab
//! stand-ins, and only these: IMDS at 169.254.169.254, the control plane at
//! the URL in the user data and the AWS endpoints, listened for inside the
//! instance's namespace by the guest and carried to the host (see
//! [`forwarding`]), and a `systemctl` that starts the installed units (the
//! guest runs no systemd).
//!
//! Each boot writes `phases` in the instance's folder (`NAME EPOCH-SECONDS`
//! per line): when it began, when the user data began, when a unit started.

use crate::forward::Mapping;
use std::net::Ipv4Addr;
use std::path::Path;

/// Where an instance reaches what is outside the lab, on the host.
#[derive(Clone, Debug)]
pub struct StandIns {
    pub host: Ipv4Addr,
    /// The host port of this instance's IMDS emulator.
    pub imds: u16,
    /// The port the user data's server URL names on loopback, and the host
    /// port that leads to the control plane.
    pub server: (u16, u16),
    /// The port the agent's AWS endpoint uses on loopback, and the host
    /// port that leads to the AWS emulator.
    pub aws: (u16, u16),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserDataError {
    #[error("the user data names no server URL (not a vpcmesh appliance's)")]
    NoServerUrl,
    #[error(
        "the user data's server URL {0} is not http on loopback: the lab cannot stand in for it"
    )]
    NotLoopback(String),
}

/// The loopback port of the control plane the user data names.
pub fn server_port(user_data: &str) -> Result<u16, UserDataError> {
    let url = user_data
        .lines()
        .find_map(|l| l.trim().strip_prefix("readonly server_url='"))
        .and_then(|rest| rest.split('\'').next())
        .ok_or(UserDataError::NoServerUrl)?;
    let rest = url
        .strip_prefix("http://127.0.0.1:")
        .or_else(|| url.strip_prefix("http://localhost:"))
        .ok_or_else(|| UserDataError::NotLoopback(url.to_string()))?;
    rest.trim_end_matches('/')
        .parse()
        .map_err(|_| UserDataError::NotLoopback(url.to_string()))
}

/// Which boot of an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Boot {
    /// cloud-init runs the user data.
    First,
    /// systemd starts the enabled units; the user data does not run.
    Again,
}

impl Boot {
    fn arg(self) -> &'static str {
        match self {
            Boot::First => "first",
            Boot::Again => "again",
        }
    }
}

/// Where the lab keeps an instance's disk and run state in the guest.
fn run_dir(id: &str) -> String {
    format!("/run/lab/{id}")
}

/// The part of the instance's up script that boots it the first time
/// (after its network exists); runs in the guest's root namespace.
/// Idempotent: a second run does not boot it twice. Cheap: the step forks
/// once, everything else happens in the background.
pub fn boot_script(id: &str, dir: &Path, s: &StandIns) -> String {
    format!(
        "if [ ! -e /run/lab/{id}.booted ]; then\n: > {d}/console.log\n: > {d}/phases\n{start}: > /run/lab/{id}.booted\nfi\n",
        d = dir.display(),
        start = start(id, dir, s, Boot::First),
    )
}

/// Powers the instance off, as a reboot does: every process in its
/// namespace is killed, and the namespace (its kernel network state: XFRM
/// states and policies, routes, addresses, sysctls) is deleted. Its disk
/// (the overlays' upper directories) stays. The runner then makes the
/// namespace again with the instance's up script and runs
/// [`reboot_script`].
pub fn power_off_script(id: &str) -> String {
    let run = run_dir(id);
    format!(
        r#"[ -e /run/netns/{id} ] || {{ echo "lab: {id} has no namespace: it is not running" >&2; exit 1; }}
if [ -f {run}.boot.pid ]; then kill -9 "$(cat {run}.boot.pid)" 2>/dev/null || true; fi
for p in $(ip netns pids {id}); do kill -9 $p 2>/dev/null || true; done
n=0
while [ -n "$(ip netns pids {id})" ]; do
  n=$((n+1)); if [ $n -gt 200 ]; then echo "lab: processes of {id} outlived its power-off: $(ip netns pids {id})" >&2; exit 1; fi
  sleep 0.05
done
rm -f {run}/units/*.pid
# Deleting one end of a veth deletes its peer at once (the namespace itself
# goes away asynchronously): the up script can make them again right away.
ip -n {id} link del eth0 2>/dev/null || true
ip netns del {id}
"#
    )
}

/// Boots a powered-off instance again (its namespace made again by the
/// runner, which then has the guest listen for EC2's stand-ins in it): the
/// disk is mounted, and the `systemctl` stand-in starts the enabled units
/// as systemd does at boot.
pub fn reboot_script(id: &str, dir: &Path, s: &StandIns) -> String {
    let run = run_dir(id);
    format!(
        "[ -e {run}.booted ] || {{ echo \"lab: {id} never booted\" >&2; exit 1; }}\n{}",
        start(id, dir, s, Boot::Again)
    )
}

/// What the guest binds inside the instance's namespace for it (see
/// [`crate::guest::Forward`]); its boot waits on [`ready_fifo`] for them.
pub fn forwarding(id: &str, s: &StandIns) -> crate::guest::Forward {
    let at = |port: u16| std::net::SocketAddr::from((s.host, port));
    let local = |ip: [u8; 4], port: u16| std::net::SocketAddr::from((ip, port));
    crate::guest::Forward {
        netns: id.to_string(),
        mappings: vec![
            Mapping {
                listen: local([169, 254, 169, 254], 80),
                target: at(s.imds),
            },
            Mapping {
                listen: local([127, 0, 0, 1], s.server.0),
                target: at(s.server.1),
            },
            Mapping {
                listen: local([127, 0, 0, 1], s.aws.0),
                target: at(s.aws.1),
            },
        ],
        ready: Some(ready_fifo(id).into()),
    }
}

/// A FIFO in the guest that the guest writes to once an instance's
/// stand-ins listen: the boot blocks reading it (a polling loop would spawn
/// a process per try).
pub fn ready_fifo(id: &str) -> String {
    format!("/run/lab/{id}.ready")
}

/// Starts its boot in the background (the next step need not wait for a
/// boot, and the step forks only once), once EC2's stand-ins listen.
fn start(id: &str, dir: &Path, s: &StandIns, boot: Boot) -> String {
    let d = dir.display();
    let run = run_dir(id);
    // What the instance enabled is on its own disk: the upper directory of
    // its /etc (the lower one is the host's, with the host's units).
    let shim = systemctl(
        dir,
        &run,
        "/etc/systemd/system",
        &format!("{run}/etc/upper/systemd/system"),
        s.aws.0,
    );
    let fifo = ready_fifo(id);
    format!(
        r#"[ -p {fifo} ] || mkfifo {fifo}
(
echo "boot-{mode} $(date +%s.%N)" >> {d}/phases
mkdir -p {run}
cat > {run}/boot.sh <<'BOOT'
# bash: its builtins stand in for processes (each costs tens of
# milliseconds in the guest, and six instances boot at once).
set -eu
d=$1 r=$2 boot=$3
mkdir -p "$r/etc/upper" "$r/etc/work" "$r/usr-local/upper" "$r/usr-local/work" \
  "$r/var-lib/upper" "$r/var-lib/work" "$r/bin" "$r/units"
# The instance's disk over the host's, and its console: one mount(8).
{{
  for layer in etc:/etc usr-local:/usr/local var-lib:/var/lib; do
    name=${{layer%%:*}} target=${{layer#*:}}
    printf 'overlay %s overlay lowerdir=%s,upperdir=%s,workdir=%s 0 0\n' \
      "$target" "$target" "${{r// /\\040}}/$name/upper" "${{r// /\\040}}/$name/work"
  done
  printf '%s /dev/console none bind 0 0\n' "${{d// /\\040}}/console.log"
}} > "$r/fstab"
mount -a -T "$r/fstab"
cat > "$r/bin/systemctl" <<'SHIM'
{shim}SHIM
chmod 0755 "$r/bin/systemctl"
case $boot in
  first)
    echo "lab: cloud-init runs the user data of {id}"
    echo "user-data $EPOCHREALTIME" >> "$d/phases"
    PATH="$r/bin:$PATH" bash "$d/user-data"
    ;;
  again)
    echo "lab: {id} booted again; cloud-init ran its user data at the first boot only, systemd starts the enabled units"
    PATH="$r/bin:$PATH" systemctl lab-boot
    ;;
esac
BOOT
read -r _ < {fifo}
exec ip netns exec {id} setsid unshare --mount --propagation private bash {run}/boot.sh {d} {run} {mode}
) >> {d}/cloud-init-output.log 2>&1 < /dev/null &
echo $! > {run}.boot.pid
"#,
        mode = boot.arg(),
    )
}

/// The lab's `systemctl`, for units under `units`:
/// - `enable [--now] UNIT`: links the unit into its `WantedBy=` targets
///   (as systemd does, on the instance's disk), and with `--now` starts it;
/// - `start UNIT`: runs its ExecStart as systemd would for `Restart=always`
///   (again after `RestartSec`), with its state directory made; a unit
///   that runs already is left alone;
/// - `lab-boot`: what systemd does at boot, starts every unit enabled in
///   `enabled` (where the links of `enable` land, as the instance's disk
///   sees them);
/// - `daemon-reload` has nothing to do; `is-system-running` says `running`
///   (the lab powers instances off with SIGKILL, never by a shutdown).
///   Anything else is refused.
fn systemctl(dir: &Path, run: &str, units: &str, enabled: &str, aws_port: u16) -> String {
    format!(
        r#"#!/bin/bash
# The lab's stand-in for systemd (the guest runs none). Builtins where it
# can: each process costs tens of milliseconds in the guest.
set -eu
units={units}
enabled={enabled}
run={run}
phases={phases}
# The unit file's ExecStart=, RestartSec=, StateDirectory= and WantedBy=.
read_unit() {{
  file=$units/$1.service
  [ -f "$file" ] || {{ echo "lab systemctl: no unit $file" >&2; exit 1; }}
  cmd= delay= state= wanted=
  while IFS= read -r line || [ -n "$line" ]; do
    case $line in
      ExecStart=*) cmd=${{line#ExecStart=}} ;;
      RestartSec=*) delay=${{line#RestartSec=}} ;;
      StateDirectory=*) state=${{line#StateDirectory=}} ;;
      WantedBy=*) wanted="$wanted ${{line#WantedBy=}}" ;;
    esac
  done < "$file"
}}
start() {{
  unit=${{1%.service}}
  read_unit "$unit"
  pidf=$run/units/$unit.pid
  if [ -f "$pidf" ] && kill -0 "$(< "$pidf")" 2>/dev/null; then
    echo "lab systemd: $unit is active already"
    return 0
  fi
  [ -z "$state" ] || install -d -m 0700 "/var/lib/$state"
  [ -d "$run/units" ] || mkdir -p "$run/units"
  echo "unit-$unit $EPOCHREALTIME" >> "$phases"
  (
    umask 077
    while :; do
      VPCMESH_AWS_ENDPOINT_URL=http://127.0.0.1:{aws_port} RUST_LOG=info $cmd || true
      echo "lab systemd: $unit exited; starting it again in ${{delay:-1}} s"
      sleep "${{delay:-1}}"
    done
  ) >> {log} 2>&1 < /dev/null &
  echo $! > "$pidf"
  echo "lab systemd: started $unit"
}}
enable() {{
  unit=${{1%.service}}
  read_unit "$unit"
  for target in $wanted; do
    [ -d "$units/$target.wants" ] || mkdir -p "$units/$target.wants"
    ln -sf "$file" "$units/$target.wants/$unit.service"
  done
}}
verb=${{1:-}}
[ $# -gt 0 ] && shift
now=
names=
for a in "$@"; do
  case "$a" in
    --now) now=1 ;;
    --no-block|--quiet|-q) ;;
    -*) echo "lab systemctl: option $a is not emulated" >&2; exit 1 ;;
    *) names="$names $a" ;;
  esac
done
case "$verb" in
  daemon-reload) ;;
  # The lab powers instances off with SIGKILL, never through a shutdown.
  is-system-running) echo running ;;
  enable)
    [ -n "$names" ] || {{ echo "lab systemctl: enable what?" >&2; exit 1; }}
    for u in $names; do enable "$u"; [ -z "$now" ] || start "$u"; done
    ;;
  start)
    [ -n "$names" ] || {{ echo "lab systemctl: start what?" >&2; exit 1; }}
    for u in $names; do start "$u"; done
    ;;
  lab-boot)
    for link in "$enabled"/*.wants/*.service; do
      [ -e "$link" ] || continue
      start "${{link##*/}}"
    done
    ;;
  *) echo "lab systemctl: '$verb' is not emulated" >&2; exit 1 ;;
esac
"#,
        phases = dir.join("phases").display(),
        log = dir.join("agent.log").display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::{Duration, Instant};

    fn stand_ins() -> StandIns {
        StandIns {
            host: Ipv4Addr::new(100, 64, 0, 1),
            imds: 4100,
            server: (3000, 4001),
            aws: (5000, 4002),
        }
    }

    #[test]
    fn the_server_port_comes_from_the_user_data() {
        let ud =
            "#!/bin/bash\nreadonly server_url='http://127.0.0.1:3000'\nreadonly agent_url='x'\n";
        assert_eq!(server_port(ud), Ok(3000));
        assert_eq!(server_port("echo hi"), Err(UserDataError::NoServerUrl));
        assert_eq!(
            server_port("readonly server_url='https://vpcmesh.example.com'"),
            Err(UserDataError::NotLoopback(
                "https://vpcmesh.example.com".into()
            ))
        );
    }

    #[test]
    fn a_boot_runs_once_and_waits_for_its_stand_ins() {
        let b = boot_script("i-1", Path::new("/lab/i-1"), &stand_ins());
        assert!(b.starts_with("if [ ! -e /run/lab/i-1.booted ]"));
        assert!(b.find("read -r _ < /run/lab/i-1.ready").unwrap() < b.find("unshare").unwrap());
        assert!(b.contains("VPCMESH_AWS_ENDPOINT_URL=http://127.0.0.1:5000"));
        assert!(b.contains("boot.sh /lab/i-1 /run/lab/i-1 first"));
        let f = forwarding("i-1", &stand_ins());
        let pairs: Vec<String> = f
            .mappings
            .iter()
            .map(|m| format!("{}={}", m.listen, m.target))
            .collect();
        assert_eq!(
            pairs,
            [
                "169.254.169.254:80=100.64.0.1:4100",
                "127.0.0.1:3000=100.64.0.1:4001",
                "127.0.0.1:5000=100.64.0.1:4002"
            ]
        );
        assert_eq!(f.ready.as_deref(), Some(Path::new("/run/lab/i-1.ready")));
    }

    #[test]
    fn a_reboot_keeps_the_disk_runs_no_user_data_and_starts_the_enabled_units() {
        let off = power_off_script("i-1");
        // Every process goes before the namespace, and the disk stays.
        let kill = off.find("ip netns pids i-1); do kill -9").expect("kills");
        assert!(kill < off.find("ip netns del i-1").expect("deletes"));
        assert!(!off.contains("rm -rf"), "{off}");
        let again = reboot_script("i-1", Path::new("/lab/i-1"), &stand_ins());
        assert!(again.starts_with("[ -e /run/lab/i-1.booted ] ||"));
        assert!(again.contains("boot.sh /lab/i-1 /run/lab/i-1 again"));
        assert!(again.contains("systemctl lab-boot"));
        // The same disk as the first boot's.
        assert!(again.contains(r#""${r// /\\040}/$name/upper""#), "{again}");
    }

    /// The `systemctl` stand-in in a scratch folder, with a unit whose
    /// ExecStart records each start.
    struct Scratch {
        root: std::path::PathBuf,
    }

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let root = std::env::temp_dir().join(format!("lab-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(root.join("units")).expect("scratch");
            let exec = root.join("exec.sh");
            std::fs::write(
                &exec,
                format!(
                    "echo $$ >> {}\nexec sleep 30\n",
                    root.join("started").display()
                ),
            )
            .expect("ExecStart");
            std::fs::write(
                root.join("units/demo.service"),
                format!(
                    "[Service]\nExecStart=/bin/sh {}\nRestart=always\n\n[Install]\nWantedBy=multi-user.target\n",
                    exec.display()
                ),
            )
            .expect("unit");
            let units = root.join("units").display().to_string();
            let shim = systemctl(
                &root,
                &root.join("run").display().to_string(),
                &units,
                &units,
                5000,
            );
            std::fs::write(root.join("systemctl"), shim).expect("shim");
            Scratch { root }
        }

        fn systemctl(&self, args: &[&str]) -> std::process::Output {
            Command::new("bash")
                .arg(self.root.join("systemctl"))
                .args(args)
                .output()
                .expect("sh runs")
        }

        /// The pids the unit's ExecStart recorded, once there are `n`.
        fn starts(&self, n: usize) -> Vec<i32> {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let text = std::fs::read_to_string(self.root.join("started")).unwrap_or_default();
                let pids: Vec<i32> = text.lines().filter_map(|l| l.parse().ok()).collect();
                if pids.len() >= n || Instant::now() > deadline {
                    return pids;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            // The unit's loop and its ExecStart.
            let loop_pid = std::fs::read_to_string(self.root.join("run/units/demo.pid"));
            let text = std::fs::read_to_string(self.root.join("started")).unwrap_or_default();
            for pid in loop_pid
                .iter()
                .flat_map(|p| p.lines())
                .chain(text.lines())
                .filter_map(|p| p.trim().parse::<i32>().ok())
            {
                // SAFETY: kill(2) on processes this test started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    #[test]
    fn enable_links_the_unit_into_its_target_and_a_boot_starts_it_once() {
        let s = Scratch::new("systemctl");
        let out = s.systemctl(&["daemon-reload"]);
        assert!(out.status.success(), "{out:?}");
        let out = s.systemctl(&["enable", "--no-block", "demo"]);
        assert!(out.status.success(), "{out:?}");
        let link = s.root.join("units/multi-user.target.wants/demo.service");
        assert_eq!(
            std::fs::read_link(&link).expect("linked"),
            s.root.join("units/demo.service")
        );
        assert!(s.starts(0).is_empty(), "enable without --now started it");
        let out = s.systemctl(&["lab-boot"]);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(s.starts(1).len(), 1);
        // Active already: a second start leaves it alone.
        let out = s.systemctl(&["start", "demo.service"]);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("active already"),
            "{out:?}"
        );
        let phases = std::fs::read_to_string(s.root.join("phases")).expect("phases");
        assert_eq!(phases.lines().count(), 1, "{phases}");
        assert!(phases.starts_with("unit-demo "), "{phases}");
    }

    #[test]
    fn systemctl_refuses_what_it_does_not_emulate() {
        let s = Scratch::new("systemctl-refuses");
        for args in [
            &["stop", "demo"][..],
            &["enable", "--user", "demo"],
            &["enable", "nothing"],
            &["enable"],
        ] {
            let out = s.systemctl(args);
            assert!(!out.status.success(), "{args:?}: {out:?}");
        }
    }
}
