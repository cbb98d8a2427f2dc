//! Routes for remote CIDRs, programmed over rtnetlink in the main table. The
//! agent marks its routes with its own protocol number and touches no others.

use crate::netlink::{NetlinkError, NetlinkSocket};
use crate::xfrm::Change;
use ipnet::Ipv4Net;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::{
    address::{AddressAttribute, AddressMessage},
    route::{
        RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
        RouteType,
    },
    AddressFamily, RouteNetlinkMessage,
};
use std::net::{IpAddr, Ipv4Addr};

/// `proto 250` in `ip route`: how vpcmesh recognises its own routes.
pub const ROUTE_PROTOCOL: u8 = 250;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub dst: Ipv4Net,
    /// The interface the tunnel's outer packets leave by.
    pub oif: u32,
    /// The source for traffic the appliance itself sends into the tunnel.
    pub prefsrc: Option<Ipv4Addr>,
}

pub struct Routes {
    socket: NetlinkSocket,
}

impl Routes {
    pub fn open() -> Result<Self, NetlinkError> {
        Ok(Self {
            socket: NetlinkSocket::open(netlink_sys::protocols::NETLINK_ROUTE)?,
        })
    }

    /// The vpcmesh routes in the main table.
    pub fn list(&mut self) -> Result<Vec<Route>, NetlinkError> {
        let mut request = RouteMessage::default();
        request.header.address_family = AddressFamily::Inet;
        let replies = self
            .socket
            .dump(RouteNetlinkMessage::GetRoute(request), "the route dump")?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => observe(r),
                _ => None,
            })
            .collect())
    }

    pub fn apply(&mut self, changes: &[Change<Ipv4Net, Route>]) -> Vec<Result<(), NetlinkError>> {
        let requests = changes
            .iter()
            .map(|c| match c {
                Change::Add(r) => (
                    RouteNetlinkMessage::NewRoute(message(r.dst, Some(r))),
                    NLM_F_CREATE | NLM_F_EXCL,
                    format!("adding the route to {}", r.dst),
                ),
                Change::Replace(r) => (
                    RouteNetlinkMessage::NewRoute(message(r.dst, Some(r))),
                    NLM_F_CREATE | NLM_F_REPLACE,
                    format!("replacing the route to {}", r.dst),
                ),
                Change::Delete(dst) => (
                    RouteNetlinkMessage::DelRoute(message(*dst, None)),
                    0,
                    format!("deleting the route to {dst}"),
                ),
            })
            .collect();
        self.socket.execute(requests)
    }

    /// Every IPv4 address in the namespace with its interface index.
    pub fn addresses(&mut self) -> Result<Vec<(u32, Ipv4Addr)>, NetlinkError> {
        let mut request = AddressMessage::default();
        request.header.family = AddressFamily::Inet;
        let replies = self
            .socket
            .dump(RouteNetlinkMessage::GetAddress(request), "the address dump")?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => Some(a),
                _ => None,
            })
            .flat_map(|a| {
                let index = a.header.index;
                a.attributes.into_iter().filter_map(move |attr| match attr {
                    AddressAttribute::Local(IpAddr::V4(ip)) => Some((index, ip)),
                    _ => None,
                })
            })
            .collect())
    }

    /// The index of the interface that holds `address`, if any does.
    pub fn interface_with(&mut self, address: Ipv4Addr) -> Result<Option<u32>, NetlinkError> {
        Ok(self
            .addresses()?
            .into_iter()
            .find_map(|(index, ip)| (ip == address).then_some(index)))
    }
}

fn message(dst: Ipv4Net, route: Option<&Route>) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header = RouteHeader {
        address_family: AddressFamily::Inet,
        destination_prefix_length: dst.prefix_len(),
        table: RouteHeader::RT_TABLE_MAIN,
        protocol: RouteProtocol::Other(ROUTE_PROTOCOL),
        scope: RouteScope::Link,
        kind: RouteType::Unicast,
        ..Default::default()
    };
    msg.attributes
        .push(RouteAttribute::Destination(RouteAddress::Inet(
            dst.network(),
        )));
    if let Some(r) = route {
        msg.attributes.push(RouteAttribute::Oif(r.oif));
        if let Some(src) = r.prefsrc {
            msg.attributes
                .push(RouteAttribute::PrefSource(RouteAddress::Inet(src)));
        }
    }
    msg
}

fn observe(msg: RouteMessage) -> Option<Route> {
    let h = &msg.header;
    if h.protocol != RouteProtocol::Other(ROUTE_PROTOCOL) || h.address_family != AddressFamily::Inet
    {
        return None;
    }
    let mut dst = Ipv4Addr::UNSPECIFIED;
    let mut oif = 0;
    let mut prefsrc = None;
    let mut table = u32::from(h.table);
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = *ip,
            RouteAttribute::Oif(i) => oif = *i,
            RouteAttribute::PrefSource(RouteAddress::Inet(ip)) => prefsrc = Some(*ip),
            RouteAttribute::Table(t) => table = *t,
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    Some(Route {
        dst: Ipv4Net::new(dst, h.destination_prefix_length).ok()?,
        oif,
        prefsrc,
    })
}
