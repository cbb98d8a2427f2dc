//! ICMP echo packets (RFC 792) with the Internet checksum (RFC 1071): what
//! the probe sends on its raw socket, and the replies it reads back (a raw
//! IPv4 socket hands them over with their IP header).

use std::net::Ipv4Addr;

pub const ECHO_REPLY: u8 = 0;
pub const ECHO_REQUEST: u8 = 8;
const ICMP_HEADER: usize = 8;
const IPPROTO_ICMP: u8 = 1;

/// The Internet checksum: the ones' complement of the ones' complement sum
/// of the data as big-endian 16-bit words (an odd last byte padded with 0).
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An echo request with `ident`, `seq` and `payload`, checksum filled in.
pub fn echo_request(ident: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(ICMP_HEADER + payload.len());
    p.extend_from_slice(&[ECHO_REQUEST, 0, 0, 0]);
    p.extend_from_slice(&ident.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(payload);
    let sum = checksum(&p);
    p[2..4].copy_from_slice(&sum.to_be_bytes());
    p
}

/// An echo reply read from a raw socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EchoReply<'a> {
    /// The IP source: who answered.
    pub source: Ipv4Addr,
    pub ident: u16,
    pub seq: u16,
    pub payload: &'a [u8],
}

/// Parses an IPv4 packet carrying an ICMP echo reply; anything else (other
/// ICMP types, a bad checksum, a truncated or fragmented packet) is `None`.
pub fn parse_echo_reply(packet: &[u8]) -> Option<EchoReply<'_>> {
    let first = *packet.first()?;
    let header_len = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || header_len < 20 || packet.len() < header_len + ICMP_HEADER {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    // A later fragment, or more fragments to come: not a whole reply.
    let fragment = u16::from_be_bytes([packet[6], packet[7]]);
    if packet[9] != IPPROTO_ICMP || fragment & 0x3fff != 0 || total < header_len + ICMP_HEADER {
        return None;
    }
    // Linux hands raw sockets the whole datagram; trust the shorter length.
    let icmp = packet.get(header_len..total.min(packet.len()))?;
    if icmp[0] != ECHO_REPLY || icmp[1] != 0 || checksum(icmp) != 0 {
        return None;
    }
    Some(EchoReply {
        source: Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]),
        ident: u16::from_be_bytes([icmp[4], icmp[5]]),
        seq: u16::from_be_bytes([icmp[6], icmp[7]]),
        payload: &icmp[ICMP_HEADER..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 header from `source` to 10.0.0.1 around `icmp`.
    fn ipv4(source: Ipv4Addr, icmp: &[u8]) -> Vec<u8> {
        let total = (20 + icmp.len()) as u16;
        let mut h = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, IPPROTO_ICMP, 0, 0];
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&source.octets());
        h.extend_from_slice(&[10, 0, 0, 1]);
        let sum = checksum(&h);
        h[10..12].copy_from_slice(&sum.to_be_bytes());
        h.extend_from_slice(icmp);
        h
    }

    /// The reply a host sends to `request`: type 0, checksum adjusted.
    fn reply_to(request: &[u8]) -> Vec<u8> {
        let mut r = request.to_vec();
        r[0] = ECHO_REPLY;
        r[2..4].copy_from_slice(&[0, 0]);
        let sum = checksum(&r);
        r[2..4].copy_from_slice(&sum.to_be_bytes());
        r
    }

    #[test]
    fn the_checksum_matches_rfc_1071s_example_and_verifies_to_zero() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&data), !0xddf2);
        // An odd length pads the last byte on the right.
        assert_eq!(checksum(&[0x01]), !0x0100);
        assert_eq!(checksum(&[]), 0xffff);
        let p = echo_request(0xbeef, 7, b"vpcmesh!");
        assert_eq!(checksum(&p), 0, "a packet with its checksum sums to zero");
    }

    #[test]
    fn an_echo_request_is_laid_out_as_rfc_792_says() {
        let p = echo_request(0x1234, 0x0102, b"abc");
        assert_eq!(&p[..2], &[ECHO_REQUEST, 0]);
        assert_eq!(&p[4..8], &[0x12, 0x34, 0x01, 0x02]);
        assert_eq!(&p[8..], b"abc");
        // The same bytes `ping -p` would checksum: checked by hand once.
        let known = echo_request(0, 0, &[]);
        assert_eq!(known, vec![8, 0, 0xf7, 0xff, 0, 0, 0, 0]);
    }

    #[test]
    fn a_reply_parses_back_to_its_request() {
        let source = Ipv4Addr::new(10, 2, 0, 10);
        let request = echo_request(0xabcd, 19, b"payload-123");
        let packet = ipv4(source, &reply_to(&request));
        assert_eq!(
            parse_echo_reply(&packet),
            Some(EchoReply {
                source,
                ident: 0xabcd,
                seq: 19,
                payload: b"payload-123",
            })
        );
        // Trailing bytes past the IP total length are ignored.
        let mut padded = packet.clone();
        padded.extend_from_slice(&[0; 6]);
        assert_eq!(parse_echo_reply(&padded).map(|r| r.seq), Some(19));
    }

    #[test]
    fn anything_but_an_intact_echo_reply_is_ignored() {
        let source = Ipv4Addr::new(10, 2, 0, 10);
        let reply = reply_to(&echo_request(1, 2, b"xyz"));
        let good = ipv4(source, &reply);
        assert!(parse_echo_reply(&good).is_some());
        // Our own request looped back, a corrupted byte, a cut packet.
        assert_eq!(
            parse_echo_reply(&ipv4(source, &echo_request(1, 2, b"xyz"))),
            None
        );
        let mut corrupt = good.clone();
        *corrupt.last_mut().expect("payload") ^= 0x40;
        assert_eq!(parse_echo_reply(&corrupt), None);
        assert_eq!(parse_echo_reply(&good[..good.len() - 1]), None);
        assert_eq!(parse_echo_reply(&good[..24]), None);
        assert_eq!(parse_echo_reply(&[]), None);
        // Not IPv4, not ICMP, a fragment.
        let mut v6 = good.clone();
        v6[0] = 0x65;
        assert_eq!(parse_echo_reply(&v6), None);
        let mut udp = good.clone();
        udp[9] = 17;
        assert_eq!(parse_echo_reply(&udp), None);
        let mut fragment = good.clone();
        fragment[6] = 0x20; // more fragments
        assert_eq!(parse_echo_reply(&fragment), None);
        // An IP header with options is skipped by its length.
        let mut with_options = good[..20].to_vec();
        with_options[0] = 0x46;
        with_options.extend_from_slice(&[1, 1, 1, 0]);
        with_options.extend_from_slice(&reply);
        let total = with_options.len() as u16;
        with_options[2..4].copy_from_slice(&total.to_be_bytes());
        assert_eq!(parse_echo_reply(&with_options).map(|r| r.ident), Some(1));
    }
}
