//! The kernel's IPsec state (SAs) and policies, programmed over XFRM
//! netlink. Shaped like rtnetlink's handles: `xfrm.state().list()`,
//! `xfrm.policy().apply(changes)`. Only IPv4 tunnel-mode ESP with
//! `rfc4106(gcm(aes))` is spoken: that is all vpcmesh programs.

mod policy;
mod state;

pub use policy::{
    Block, Direction, Policy, PolicyHandle, PolicyId, BLOCK_PRIORITY, POLICY_PRIORITY,
};
pub use state::{ObservedSa, Sa, SaCounters, SaHandle, SaId, SaKey, AEAD_KEY_LEN};

use crate::netlink::{NetlinkError, NetlinkSocket};

/// One change to kernel objects of type `T` keyed by `K`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change<K, T> {
    Add(T),
    Replace(T),
    Delete(K),
}

pub struct Xfrm {
    socket: NetlinkSocket,
}

impl Xfrm {
    /// Opens an XFRM socket in the calling thread's network namespace.
    pub fn open() -> Result<Self, NetlinkError> {
        Ok(Self {
            socket: NetlinkSocket::open(netlink_sys::protocols::NETLINK_XFRM)?,
        })
    }

    pub fn state(&mut self) -> SaHandle<'_> {
        SaHandle(&mut self.socket)
    }

    pub fn policy(&mut self) -> PolicyHandle<'_> {
        PolicyHandle(&mut self.socket)
    }
}

/// Byte form of an IPv4 address in XFRM's 16-byte address field.
fn xfrm_address(ip: std::net::Ipv4Addr) -> netlink_packet_xfrm::Address {
    netlink_packet_xfrm::Address::from_ipv4(&ip)
}
