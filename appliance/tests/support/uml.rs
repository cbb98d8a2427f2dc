//! User-Mode Linux guests for ESP (the host kernel has none). A guest boots
//! from the host's own filesystem, runs one shell script as root in its own
//! kernel and powers off; files in the shared folder carry results back.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MODULES: &str = "veth bridge xfrm_user esp4 gcm ctr ghash-generic seqiv aes_ti";

pub struct GuestRun {
    pub dir: PathBuf,
    pub log: String,
    pub rc: Option<i32>,
}

impl GuestRun {
    pub fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }
}

/// A fresh folder, visible to the guest at the same path.
pub fn shared_dir(name: &str) -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("uml-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the shared folder");
    dir
}

/// Boots a guest that runs `script` (sh, `set -e` not implied) in `dir`.
/// Panics when User-Mode Linux is missing: these tests never pass silently.
pub fn run_in_guest(dir: &Path, script: &str, timeout: Duration) -> GuestRun {
    run_in_guest_on(dir, script, timeout, None)
}

/// As [`run_in_guest`], with the guest's `vec0` on the tap `tap0` of the
/// host namespace `netns` (which the caller made).
pub fn run_in_guest_on(
    dir: &Path,
    script: &str,
    timeout: Duration,
    netns: Option<&str>,
) -> GuestRun {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "UML lab tests need root (namespaces, taps); run ./test.sh as root"
    );
    let uml = std::env::var("VPCMESH_UML").unwrap_or_else(|_| "linux.uml".into());
    let init = dir.join("init.sh");
    std::fs::write(
        &init,
        format!(
            r#"#!/bin/sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs tmpfs /run
mount -t devtmpfs devtmpfs /dev 2>/dev/null
for m in {MODULES}; do modprobe $m || echo "modprobe $m failed"; done
cd {dir}
sh ./script.sh > {dir}/guest.log 2>&1
echo $? > {dir}/rc
poweroff -f
"#,
            dir = dir.display()
        ),
    )
    .expect("write init.sh");
    std::fs::write(dir.join("script.sh"), script).expect("write script.sh");
    set_executable(&init);
    let started = Instant::now();
    let mut command = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, &uml, "vec0:transport=tap,ifname=tap0"]);
            c
        }
        None => Command::new(&uml),
    };
    let mut child = command
        .args([
            "mem=768M",
            "root=/dev/root",
            "rootfstype=hostfs",
            "rootflags=/",
            "rw",
            &format!("init={}", init.display()),
            "con=null",
            "con0=fd:0,fd:1",
        ])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("console.log")).expect("console log"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start User-Mode Linux ({uml}): {e}; ./test.sh installs it")
        });
    loop {
        if child.try_wait().expect("wait for the guest").is_some() {
            break;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the UML guest ran over {timeout:?}; its log:\n{}",
                std::fs::read_to_string(dir.join("guest.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::fs::read_to_string(dir.join("guest.log")).unwrap_or_default();
    let rc = std::fs::read_to_string(dir.join("rc"))
        .ok()
        .and_then(|s| s.trim().parse().ok());
    GuestRun {
        dir: dir.to_path_buf(),
        log,
        rc,
    }
}

fn set_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut p = std::fs::metadata(path).expect("stat").permissions();
    p.set_mode(0o755);
    std::fs::set_permissions(path, p).expect("chmod");
}
