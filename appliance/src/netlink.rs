//! A small synchronous netlink transport shared by the XFRM and route
//! handles: requests are pipelined (many per `send`, acknowledged one by one)
//! and dumps are collected until `NLMSG_DONE` (and read again when the
//! kernel says a change interrupted them). The socket belongs to the network
//! namespace of the thread that opened it.

use netlink_packet_core::{
    NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
    NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_sys::{Socket, SocketAddr};
use std::collections::HashMap;
use std::fmt::Debug;
use std::io;

/// Requests in flight per `send`: small enough that their acks fit the
/// receive buffer, large enough to amortise the syscalls.
const PIPELINE: usize = 128;
const RECV_BUFFER: usize = 4 << 20;
/// Reads of a dump that changes interrupted before it is given up.
const DUMP_TRIES: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink socket: {0}")]
    Io(#[from] io::Error),
    #[error("the kernel refused {what}: {source}")]
    Refused { what: String, source: io::Error },
    #[error("the kernel sent a message this agent cannot read: {0}")]
    Decode(String),
    /// The kernel's answer was lost (the socket failed while acks were due):
    /// the request may well have been applied, so the caller reads the
    /// kernel back instead of counting it as refused.
    #[error("the kernel's answer to {what} was lost ({reason})")]
    Unconfirmed { what: String, reason: String },
    #[error("{what} kept changing while it was read ({DUMP_TRIES} reads interrupted)")]
    Inconsistent { what: String },
}

impl NetlinkError {
    /// The errno the kernel answered with, if it answered with one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Refused { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

pub struct NetlinkSocket {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl NetlinkSocket {
    pub fn open(protocol: isize) -> Result<Self, NetlinkError> {
        let mut socket = Socket::new(protocol)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // Acks carry only the request's header, not the whole request.
        socket.set_cap_ack(true)?;
        socket.set_ext_ack(true)?;
        // Best effort: a larger buffer lets big dumps and pipelines through.
        let _ = socket.set_rx_buf_sz(RECV_BUFFER);
        Ok(Self {
            socket,
            seq: 0,
            buf: vec![0; 256 * 1024],
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    /// Sends every request with an ack and returns one result per request,
    /// in order. A refused request does not stop the others.
    pub fn execute<M>(&mut self, requests: Vec<(M, u16, String)>) -> Vec<Result<(), NetlinkError>>
    where
        M: NetlinkSerializable + NetlinkDeserializable + Debug,
    {
        let mut results = Vec::with_capacity(requests.len());
        let mut requests = requests.into_iter().peekable();
        while requests.peek().is_some() {
            let chunk: Vec<(M, u16, String)> = requests.by_ref().take(PIPELINE).collect();
            results.extend(self.execute_chunk(chunk));
        }
        results
    }

    fn execute_chunk<M>(&mut self, chunk: Vec<(M, u16, String)>) -> Vec<Result<(), NetlinkError>>
    where
        M: NetlinkSerializable + NetlinkDeserializable + Debug,
    {
        let mut out = Vec::new();
        let mut pending: HashMap<u32, usize> = HashMap::new();
        let mut whats = Vec::with_capacity(chunk.len());
        for (i, (msg, flags, what)) in chunk.into_iter().enumerate() {
            let seq = self.next_seq();
            let mut header = NetlinkHeader::default();
            header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
            header.sequence_number = seq;
            let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
            packet.finalize();
            let start = out.len();
            out.resize(start + packet.buffer_len(), 0);
            packet.serialize(&mut out[start..]);
            pending.insert(seq, i);
            whats.push(what);
        }
        let mut results: Vec<Option<Result<(), NetlinkError>>> =
            (0..whats.len()).map(|_| None).collect();
        if let Err(e) = self.socket.send(&out, 0) {
            let text = e.to_string();
            return (0..whats.len())
                .map(|_| Err(NetlinkError::Io(io::Error::other(text.clone()))))
                .collect();
        }
        while !pending.is_empty() {
            let messages = match self.receive::<M>() {
                Ok(m) => m,
                Err(e) => {
                    // The requests went out; only their answers are lost.
                    let reason = e.to_string();
                    for (_, i) in pending.drain() {
                        results[i] = Some(Err(NetlinkError::Unconfirmed {
                            what: whats[i].clone(),
                            reason: reason.clone(),
                        }));
                    }
                    break;
                }
            };
            for msg in messages {
                let Some(i) = pending.remove(&msg.header.sequence_number) else {
                    continue;
                };
                results[i] = Some(match msg.payload {
                    NetlinkPayload::Error(e) => match e.code {
                        None => Ok(()),
                        Some(code) => Err(NetlinkError::Refused {
                            what: whats[i].clone(),
                            source: io::Error::from_raw_os_error(-code.get()),
                        }),
                    },
                    other => Err(NetlinkError::Decode(format!(
                        "expected an ack, got {other:?}"
                    ))),
                });
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(NetlinkError::Decode("no ack".into()))))
            .collect()
    }

    /// Dumps every object of a kind: a consistent snapshot, read again
    /// when a change interrupted the dump (`NLM_F_DUMP_INTR`).
    pub fn dump<M>(&mut self, request: M, what: &str) -> Result<Vec<M>, NetlinkError>
    where
        M: NetlinkSerializable + NetlinkDeserializable + Debug + Clone,
    {
        for _ in 0..DUMP_TRIES {
            match self.dump_once(request.clone(), what)? {
                Dumped::Whole(items) => return Ok(items),
                Dumped::Interrupted => {
                    tracing::debug!(what, "a dump was interrupted by a change; reading it again")
                }
            }
        }
        Err(NetlinkError::Inconsistent {
            what: what.to_string(),
        })
    }

    fn dump_once<M>(&mut self, request: M, what: &str) -> Result<Dumped<M>, NetlinkError>
    where
        M: NetlinkSerializable + NetlinkDeserializable + Debug,
    {
        let seq = self.next_seq();
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(request));
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket.send(&out, 0)?;
        let mut dump = Dump::new(seq, what);
        loop {
            for msg in self.receive::<M>()? {
                if let Some(done) = dump.take(msg)? {
                    return Ok(done);
                }
            }
        }
    }

    fn receive<M>(&mut self) -> Result<Vec<NetlinkMessage<M>>, NetlinkError>
    where
        M: NetlinkDeserializable + Debug,
    {
        let n = loop {
            match self.socket.recv(&mut &mut self.buf[..], libc::MSG_TRUNC) {
                Ok(n) if n > self.buf.len() => {
                    // The kernel sizes dump datagrams to at most 32 KiB, far
                    // below this buffer; a longer one means a kernel change.
                    return Err(NetlinkError::Decode(format!(
                        "a {n}-byte datagram did not fit the {}-byte buffer",
                        self.buf.len()
                    )));
                }
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        };
        let mut messages = Vec::new();
        let mut offset = 0;
        while offset < n {
            let bytes = &self.buf[offset..n];
            let msg = NetlinkMessage::<M>::deserialize(bytes)
                .map_err(|e| NetlinkError::Decode(e.to_string()))?;
            let len = msg.header.length as usize;
            if len == 0 {
                break;
            }
            offset += (len + 3) & !3;
            messages.push(msg);
        }
        Ok(messages)
    }
}

/// What one read of a dump gave.
#[derive(Debug, PartialEq)]
enum Dumped<M> {
    Whole(Vec<M>),
    /// A change interrupted it: its objects are no snapshot.
    Interrupted,
}

/// One read of a dump, message by message, to its `NLMSG_DONE`.
struct Dump<'a, M> {
    seq: u32,
    what: &'a str,
    items: Vec<M>,
    interrupted: bool,
}

impl<'a, M: Debug> Dump<'a, M> {
    fn new(seq: u32, what: &'a str) -> Self {
        Dump {
            seq,
            what,
            items: Vec::new(),
            interrupted: false,
        }
    }

    /// Takes one message; the dump's outcome once it is done. An
    /// interrupted dump is still read to its end (its rest would otherwise
    /// be taken for the next answer).
    fn take(&mut self, msg: NetlinkMessage<M>) -> Result<Option<Dumped<M>>, NetlinkError> {
        if msg.header.sequence_number != self.seq {
            return Ok(None);
        }
        self.interrupted |= msg.header.flags & NLM_F_DUMP_INTR != 0;
        match msg.payload {
            NetlinkPayload::InnerMessage(m) => self.items.push(m),
            NetlinkPayload::Done(_) if self.interrupted => return Ok(Some(Dumped::Interrupted)),
            NetlinkPayload::Done(_) => {
                return Ok(Some(Dumped::Whole(std::mem::take(&mut self.items))))
            }
            NetlinkPayload::Error(e) => {
                if let Some(code) = e.code {
                    return Err(NetlinkError::Refused {
                        what: self.what.to_string(),
                        source: io::Error::from_raw_os_error(-code.get()),
                    });
                }
            }
            _ => {}
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::DoneMessage;
    use netlink_packet_route::RouteNetlinkMessage;

    fn message(
        seq: u32,
        flags: u16,
        payload: NetlinkPayload<RouteNetlinkMessage>,
    ) -> NetlinkMessage<RouteNetlinkMessage> {
        let mut header = NetlinkHeader::default();
        header.sequence_number = seq;
        header.flags = flags;
        NetlinkMessage::new(header, payload)
    }

    fn route() -> NetlinkPayload<RouteNetlinkMessage> {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(Default::default()))
    }

    fn done() -> NetlinkPayload<RouteNetlinkMessage> {
        NetlinkPayload::Done(DoneMessage::default())
    }

    #[test]
    fn a_whole_dump_gives_its_objects_and_ignores_other_answers() {
        let mut d = Dump::new(7, "routes");
        assert_eq!(d.take(message(7, 0, route())).expect("taken"), None);
        assert_eq!(
            d.take(message(6, 0, route())).expect("another answer"),
            None
        );
        assert_eq!(d.take(message(7, 0, route())).expect("taken"), None);
        match d.take(message(7, 0, done())).expect("done") {
            Some(Dumped::Whole(items)) => assert_eq!(items.len(), 2),
            other => panic!("not a whole dump: {other:?}"),
        }
    }

    #[test]
    fn a_dump_a_change_interrupted_is_read_to_its_end_and_given_up() {
        let mut d = Dump::new(3, "routes");
        assert_eq!(d.take(message(3, 0, route())).expect("taken"), None);
        assert_eq!(
            d.take(message(3, NLM_F_DUMP_INTR, route())).expect("taken"),
            None
        );
        assert_eq!(
            d.take(message(3, 0, route())).expect("the rest is read"),
            None
        );
        assert_eq!(
            d.take(message(3, NLM_F_DUMP_INTR, done())).expect("done"),
            Some(Dumped::Interrupted)
        );
        let mut d = Dump::new(4, "routes");
        assert_eq!(
            d.take(message(4, NLM_F_DUMP_INTR, done())).expect("done"),
            Some(Dumped::Interrupted),
            "flagged on its last message only"
        );
    }
}
