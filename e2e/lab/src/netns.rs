//! The host side of the lab's wire: a network namespace of its own with the
//! tap the guest attaches to (the host's root namespace never sees a lab
//! address), and sockets opened inside it.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;

/// The host end of the tap.
pub const HOST: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
/// The guest end (its `vec0`).
pub const GUEST: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("ip {args}: {stderr}")]
    Ip { args: String, stderr: String },
    #[error("cannot run ip: {0}")]
    Spawn(std::io::Error),
    #[error("namespace {ns}: {error}")]
    Enter { ns: String, error: std::io::Error },
}

pub fn ip(args: &[&str]) -> Result<(), NetnsError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(NetnsError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetnsError::Ip {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// The lab's namespace on the host; deleted on drop.
pub struct LabNetns {
    pub name: String,
}

impl LabNetns {
    pub fn create(name: &str) -> Result<Self, NetnsError> {
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(std::process::Stdio::null())
            .status();
        ip(&["netns", "add", name])?;
        let ns = LabNetns {
            name: name.to_string(),
        };
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        ip(&[
            "-n", name, "tuntap", "add", "mode", "tap", "name", "tap0", "vnet_hdr",
        ])?;
        ip(&[
            "-n",
            name,
            "addr",
            "add",
            &format!("{HOST}/24"),
            "dev",
            "tap0",
        ])?;
        ip(&["-n", name, "link", "set", "tap0", "up"])?;
        Ok(ns)
    }

    /// A listener on the host end of the tap, inside the namespace.
    pub fn listen(&self, port: u16) -> Result<tokio::net::TcpListener, NetnsError> {
        let l = in_netns(&self.name, move || {
            std::net::TcpListener::bind((HOST, port))
        })?
        .and_then(|l| l.set_nonblocking(true).map(|_| l))
        .and_then(tokio::net::TcpListener::from_std)
        .map_err(|error| NetnsError::Enter {
            ns: self.name.clone(),
            error,
        })?;
        Ok(l)
    }

    /// A connection from inside the namespace (to the guest).
    pub async fn connect(&self, to: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
        connect_in(&self.name, to).await
    }
}

impl Drop for LabNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub async fn connect_in(ns: &str, to: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let ns = ns.to_string();
    let stream = tokio::task::spawn_blocking(move || {
        in_netns(&ns, move || {
            std::net::TcpStream::connect_timeout(&to, std::time::Duration::from_secs(2))
        })
        .map_err(|e| std::io::Error::other(e.to_string()))?
    })
    .await
    .map_err(std::io::Error::other)??;
    stream.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(stream)
}

/// Runs `f` on a thread that has entered the network namespace `name`, so
/// that the sockets it opens belong to that namespace.
pub fn in_netns<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetnsError> {
    use std::os::fd::AsRawFd;
    let path = format!("/run/netns/{name}");
    let ns = name.to_string();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).map_err(|error| NetnsError::Enter {
            ns: ns.clone(),
            error,
        })?;
        // SAFETY: a valid namespace descriptor; only this thread moves.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(NetnsError::Enter {
                ns,
                error: std::io::Error::last_os_error(),
            });
        }
        Ok(f())
    })
    .join()
    .map_err(|_| NetnsError::Enter {
        ns: name.to_string(),
        error: std::io::Error::other("the namespace thread panicked"),
    })?
}
