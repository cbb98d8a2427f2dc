//! The ESP-in-UDP socket: the kernel decapsulates UDP 4500 only on a socket
//! marked `UDP_ENCAP_ESPINUDP`, so the agent opens and holds one. It is
//! opened with `SO_REUSEPORT`: a new agent binds next to the old one before
//! the old one stops, so a restart or upgrade leaves no moment without a
//! socket (ESP-in-UDP arriving then would be dropped). Between a stop and
//! the next start there is no agent at all: `vpcmesh-agent hold-nat-t`, in
//! a unit of its own (`vpcmesh-nat-t.service`, which the agent's restarts do
//! not touch), holds one more socket in the same group for that moment.

use std::io;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, FromRawFd};

const UDP_ENCAP: libc::c_int = 100;
const UDP_ENCAP_ESPINUDP: libc::c_int = 2;
pub const NAT_T_PORT: u16 = 4500;

pub struct NatTSocket {
    _socket: UdpSocket,
}

fn set(
    fd: libc::c_int,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: a valid socket fd and a c_int option value of the right size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &value as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl NatTSocket {
    pub fn open() -> io::Result<Self> {
        // SAFETY: socket(2) with constant arguments.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh socket nobody else owns; UdpSocket closes it.
        let socket = unsafe { UdpSocket::from_raw_fd(fd) };
        set(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
        set(fd, libc::IPPROTO_UDP, UDP_ENCAP, UDP_ENCAP_ESPINUDP)?;
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: NAT_T_PORT.to_be(),
            sin_addr: libc::in_addr { s_addr: 0 },
            sin_zero: [0; 8],
        };
        // SAFETY: a valid sockaddr_in of the size given.
        let rc = unsafe {
            libc::bind(
                socket.as_raw_fd(),
                &addr as *const libc::sockaddr_in as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { _socket: socket })
    }
}

/// `vpcmesh-agent hold-nat-t`: opens the socket (again every second until
/// it can) and holds it until the process is stopped. It needs no
/// capability: binding 4500 and marking the socket take none.
pub fn hold() -> anyhow::Result<()> {
    let _socket = loop {
        match NatTSocket::open() {
            Ok(s) => break s,
            Err(e) => {
                tracing::warn!(error = %e, port = NAT_T_PORT, "cannot open the ESP-in-UDP socket; trying again in 1 s");
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
    };
    tracing::info!(
        port = NAT_T_PORT,
        "holding the ESP-in-UDP socket while the agent restarts"
    );
    loop {
        std::thread::park();
    }
}
