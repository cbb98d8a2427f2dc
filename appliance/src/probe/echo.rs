//! Pings through the tunnels: one raw ICMP socket bound to the appliance's
//! inside address (so the tunnel policies and routes select the path as for
//! the VPC's own traffic), `count` rounds of echoes to every target
//! `interval` apart, replies matched by source, identifier, sequence number
//! and a per-run nonce, each echo given [`PROBE_ECHO_TIMEOUT_MS`].

use super::icmp;
use crate::protocol::{ConnectivityProbe, ProbeResult, PROBE_ECHO_TIMEOUT_MS};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::HashMap;
use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

/// Marks our echoes' payload, followed by the run's nonce.
const MARKER: &[u8; 8] = b"vpcmesh\0";

#[derive(Debug, thiserror::Error)]
pub enum EchoError {
    #[error("opening a raw ICMP socket: {0} (the agent needs CAP_NET_RAW)")]
    Socket(io::Error),
    #[error("binding the probe socket to the inside address {address}: {source}")]
    Bind {
        address: Ipv4Addr,
        source: io::Error,
    },
    #[error("reading echo replies: {0}")]
    Receive(io::Error),
}

/// Pings every target of `probe` from `source` and measures what came back.
/// Echoes that cannot even be sent (no route, refused by a policy) count as
/// sent and lost: the result is what the path did, not an error.
pub async fn ping(
    source: Ipv4Addr,
    probe: &ConnectivityProbe,
) -> Result<Vec<ProbeResult>, EchoError> {
    let socket = open(source)?;
    let count = usize::from(probe.count);
    let interval = Duration::from_millis(u64::from(probe.interval_ms));
    let timeout = Duration::from_millis(u64::from(PROBE_ECHO_TIMEOUT_MS));
    let ident: u16 = rand::random();
    let mut payload = MARKER.to_vec();
    payload.extend_from_slice(&rand::random::<u64>().to_be_bytes());
    let by_address: HashMap<Ipv4Addr, usize> = probe
        .targets
        .iter()
        .enumerate()
        .map(|(i, t)| (t.address, i))
        .collect();
    let n = probe.targets.len();
    let mut sent_at: Vec<Vec<Option<Instant>>> = vec![vec![None; count]; n];
    let mut rtts: Vec<Vec<Option<Duration>>> = vec![vec![None; count]; n];
    let mut answered = 0usize;
    let mut unsendable = 0usize;
    let start = Instant::now();
    let end = start + interval * (probe.count as u32 - 1) + timeout;
    let mut round = 0usize;
    let mut buf = [0u8; 2048];
    loop {
        if round == count && (answered == n * count || Instant::now() >= end) {
            break;
        }
        let wake = if round < count {
            start + interval * round as u32
        } else {
            end
        };
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {
                if round < count {
                    for (i, t) in probe.targets.iter().enumerate() {
                        let packet = icmp::echo_request(ident, round as u16, &payload);
                        sent_at[i][round] = Some(Instant::now());
                        let to = SockAddr::from(SocketAddrV4::new(t.address, 0));
                        if let Err(e) = socket.get_ref().send_to(&packet, &to) {
                            unsendable += 1;
                            tracing::debug!(peer_site = %t.peer_site, address = %t.address, error = %e, "echo not sent");
                        }
                    }
                    round += 1;
                }
            }
            ready = socket.readable() => {
                let mut guard = ready.map_err(EchoError::Receive)?;
                loop {
                    let read = guard.try_io(|s| {
                        let mut s: &Socket = s.get_ref();
                        s.read(&mut buf)
                    });
                    let len = match read {
                        Ok(Ok(len)) => len,
                        Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Ok(Err(e)) => return Err(EchoError::Receive(e)),
                        // Drained: wait for readiness again.
                        Err(_) => break,
                    };
                    let now = Instant::now();
                    let Some(reply) = icmp::parse_echo_reply(&buf[..len]) else {
                        continue;
                    };
                    if reply.ident != ident || reply.payload != payload.as_slice() {
                        continue;
                    }
                    let (Some(&i), seq) = (by_address.get(&reply.source), usize::from(reply.seq)) else {
                        continue;
                    };
                    let Some(Some(at)) = sent_at[i].get(seq).copied() else {
                        continue;
                    };
                    let rtt = now.duration_since(at);
                    if rtts[i][seq].is_none() && rtt <= timeout {
                        rtts[i][seq] = Some(rtt);
                        answered += 1;
                    }
                }
            }
        }
    }
    if unsendable > 0 {
        tracing::info!(
            unsendable,
            "some echoes could not be sent (no route or refused)"
        );
    }
    Ok(probe
        .targets
        .iter()
        .zip(&rtts)
        .map(|(t, r)| {
            let replies: Vec<Duration> = r.iter().flatten().copied().collect();
            summarize(t.peer_site, probe.count, &replies)
        })
        .collect())
}

/// The raw socket: ICMP only, non-blocking, bound to `source`, with the
/// kernel's ICMP filter passing echo replies alone.
fn open(source: Ipv4Addr) -> Result<AsyncFd<Socket>, EchoError> {
    let socket =
        Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).map_err(EchoError::Socket)?;
    socket.set_nonblocking(true).map_err(EchoError::Socket)?;
    if let Err(e) = only_echo_replies(&socket) {
        // Not fatal: every packet is parsed and matched anyway.
        tracing::debug!(error = %e, "ICMP_FILTER not set");
    }
    socket
        .bind(&SockAddr::from(SocketAddrV4::new(source, 0)))
        .map_err(|source_err| EchoError::Bind {
            address: source,
            source: source_err,
        })?;
    // Sends never wait (a full queue loses the echo); only replies are awaited.
    // SAFETY: the AsyncFd owns the socket, whose descriptor stays open and
    // the same until the AsyncFd drops it.
    unsafe { AsyncFd::register_with_interest(socket, tokio::io::Interest::READABLE) }
        .map_err(|e| EchoError::Socket(e.into()))
}

/// `ICMP_FILTER` (raw(7)): a set bit drops that ICMP type before it is
/// queued, so other traffic on the host costs this socket nothing.
fn only_echo_replies(socket: &Socket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    const ICMP_FILTER: libc::c_int = 1;
    let mask: u32 = !(1u32 << icmp::ECHO_REPLY);
    // SAFETY: a valid socket, and a pointer to a u32 of the length given
    // (struct icmp_filter is one u32).
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_RAW,
            ICMP_FILTER,
            (&mask as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One target's result from the round-trip times of the replies that came
/// back in time, in whole microseconds rounded up (so never 0).
pub fn summarize(peer_site: uuid::Uuid, sent: u16, replies: &[Duration]) -> ProbeResult {
    let us = |d: Duration| -> u32 {
        u32::try_from(d.as_nanos().div_ceil(1000))
            .unwrap_or(u32::MAX)
            .max(1)
    };
    let received = replies.len().min(usize::from(sent)) as u16;
    let replies = &replies[..usize::from(received)];
    let total: Duration = replies.iter().sum();
    let (min, avg, max) = if replies.is_empty() {
        (None, None, None)
    } else {
        (
            replies.iter().copied().min().map(us),
            Some(us(total / u32::from(received))),
            replies.iter().copied().max().map(us),
        )
    };
    ProbeResult {
        peer_site,
        sent,
        received,
        rtt_min_us: min,
        rtt_avg_us: avg,
        rtt_max_us: max,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ProbeReport, ProbeTarget};
    use uuid::Uuid;

    #[test]
    fn replies_summarize_to_min_avg_max_in_microseconds() {
        let peer = Uuid::from_u128(5);
        let r = summarize(
            peer,
            5,
            &[
                Duration::from_micros(800),
                Duration::from_nanos(1_200_001),
                Duration::from_micros(3_000),
            ],
        );
        assert_eq!(
            r,
            ProbeResult {
                peer_site: peer,
                sent: 5,
                received: 3,
                rtt_min_us: Some(800),
                rtt_avg_us: Some(1667),
                rtt_max_us: Some(3000),
            }
        );
        // Nothing back: no times at all; a reply faster than 1 µs is 1 µs.
        let none = summarize(peer, 5, &[]);
        assert_eq!(
            (
                none.received,
                none.rtt_min_us,
                none.rtt_avg_us,
                none.rtt_max_us
            ),
            (0, None, None, None)
        );
        let fast = summarize(peer, 1, &[Duration::from_nanos(10)]);
        assert_eq!(fast.rtt_min_us, Some(1));
        // What the agent summarizes, the server's validation accepts.
        let probe = ConnectivityProbe {
            id: Uuid::from_u128(1),
            count: 5,
            interval_ms: 100,
            targets: vec![ProbeTarget {
                peer_site: peer,
                address: Ipv4Addr::new(10, 2, 0, 10),
            }],
        };
        for result in [r, none] {
            let report = ProbeReport {
                probe_id: probe.id,
                results: vec![result],
            };
            assert_eq!(report.validate(&probe), Ok(()));
        }
    }
}
