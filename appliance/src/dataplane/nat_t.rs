//! The ESP-in-UDP socket: the kernel decapsulates UDP 4500 only on a socket
//! marked `UDP_ENCAP_ESPINUDP`, so the agent opens and holds one while any
//! tunnel uses NAT-T.

use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;

const UDP_ENCAP: libc::c_int = 100;
const UDP_ENCAP_ESPINUDP: libc::c_int = 2;
pub const NAT_T_PORT: u16 = 4500;

pub struct NatTSocket {
    _socket: UdpSocket,
}

impl NatTSocket {
    pub fn open() -> std::io::Result<Self> {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, NAT_T_PORT))?;
        let value: libc::c_int = UDP_ENCAP_ESPINUDP;
        // SAFETY: a valid socket fd and a c_int option value of the right size.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_UDP,
                UDP_ENCAP,
                &value as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self { _socket: socket })
    }
}
