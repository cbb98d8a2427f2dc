//! sd_notify(3) for the agent's `Type=notify` unit, without libsystemd: one
//! datagram to `$NOTIFY_SOCKET` per state change.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;

/// Sends `state` (newline-separated `KEY=value` lines) to systemd; `Ok(false)`
/// when the agent does not run under a notify unit.
pub fn notify(state: &str) -> io::Result<bool> {
    notify_via(std::env::var_os("NOTIFY_SOCKET").as_deref(), state)
}

/// Tells systemd the agent is up (the unit's start job completes).
pub fn ready() -> io::Result<bool> {
    notify("READY=1")
}

/// A one-line status for `systemctl status`.
pub fn status(text: &str) -> io::Result<bool> {
    notify(&status_line(text))
}

fn status_line(text: &str) -> String {
    // A newline would start another KEY=value assignment.
    format!("STATUS={}", text.replace(['\n', '\r'], " "))
}

fn notify_via(socket: Option<&OsStr>, state: &str) -> io::Result<bool> {
    match socket {
        Some(socket) if !socket.is_empty() => {
            send(socket, state)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

fn send(socket: &OsStr, state: &str) -> io::Result<()> {
    let addr = socket_addr(socket)?;
    let sent = UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr)?;
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("NOTIFY_SOCKET took {sent} of {} bytes", state.len()),
        ));
    }
    Ok(())
}

/// `/run/systemd/notify` is a path; `@name` is an abstract socket.
fn socket_addr(socket: &OsStr) -> io::Result<SocketAddr> {
    match socket.as_bytes() {
        [b'@', name @ ..] => SocketAddr::from_abstract_name(name),
        [b'/', ..] => SocketAddr::from_pathname(Path::new(socket)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("NOTIFY_SOCKET={socket:?} is neither an absolute path nor an abstract socket (@name)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A fresh folder of this test process (no tempfile crate here).
    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("vpcmesh-notify-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temp folder");
        dir
    }

    fn receive(listener: &UnixDatagram) -> String {
        listener
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("a read timeout");
        let mut buf = [0u8; 512];
        let n = listener.recv(&mut buf).expect("a datagram");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn readiness_reaches_a_path_socket() {
        let dir = temp_dir("path");
        let path = dir.join("notify");
        let listener = UnixDatagram::bind(&path).expect("bind");
        assert!(notify_via(Some(path.as_os_str()), "READY=1").expect("sent"));
        assert_eq!(receive(&listener), "READY=1");
        assert!(
            notify_via(Some(path.as_os_str()), &status_line("applied v3\nREADY=0")).expect("sent")
        );
        assert_eq!(receive(&listener), "STATUS=applied v3 READY=0");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn readiness_reaches_an_abstract_socket() {
        let name = format!("vpcmesh-notify-test-{}", std::process::id());
        let listener = UnixDatagram::bind_addr(
            &SocketAddr::from_abstract_name(name.as_bytes()).expect("an abstract name"),
        )
        .expect("bind");
        let socket = format!("@{name}");
        assert!(notify_via(Some(OsStr::new(&socket)), "READY=1").expect("sent"));
        assert_eq!(receive(&listener), "READY=1");
    }

    #[test]
    fn without_a_notify_socket_nothing_is_sent() {
        assert!(!notify_via(None, "READY=1").expect("no socket is no error"));
        assert!(!notify_via(Some(OsStr::new("")), "READY=1").expect("no socket is no error"));
    }

    #[test]
    fn a_missing_or_relative_socket_is_an_error() {
        let dir = temp_dir("missing");
        assert!(notify_via(Some(dir.join("absent").as_os_str()), "READY=1").is_err());
        let relative = notify_via(Some(OsStr::new("notify")), "READY=1").expect_err("refused");
        assert_eq!(relative.kind(), io::ErrorKind::InvalidInput);
        let _ = std::fs::remove_dir_all(dir);
    }
}
