//! Security associations: ESP tunnel mode, AES-GCM-256, 64-bit extended
//! sequence numbers (ESN) with a 1024-packet anti-replay window, optionally
//! encapsulated in UDP 4500 (NAT-T).
//!
//! Without ESN an SA dies after 2^32 packets (about 13 hours at 1 Gbit/s)
//! and a 32-packet window drops the reordering of fast links. The kernel
//! keeps ESN state in `XFRMA_REPLAY_ESN_VAL` (`struct xfrm_replay_state_esn`,
//! native-endian u32s: bmp_len, oseq, seq, oseq_hi, seq_hi, replay_window,
//! then bmp_len bitmap words); with that attribute the legacy
//! `xfrm_usersa_info.replay_window` must be 0. This is what
//! `ip xfrm state add ... replay-window 1024 flag esn` sends.

use super::{xfrm_address, Change};
use crate::netlink::{NetlinkError, NetlinkSocket};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_xfrm::{
    constants::{
        AF_INET, IPPROTO_ESP, UDP_ENCAP_ESPINUDP, XFRM_INF, XFRM_MODE_TUNNEL, XFRM_STATE_ESN,
    },
    state::{DelGetMessage, GetDumpMessage, ModifyMessage},
    AlgAead, EncapTmpl, Id, LifetimeConfig, Replay, ReplayEsn, UserSaId, UserSaInfo, XfrmAttrs,
    XfrmMessage,
};
use std::fmt;
use std::net::Ipv4Addr;
use zeroize::Zeroizing;

pub const AEAD_ALGORITHM: &str = "rfc4106(gcm(aes))";
/// A 256-bit AES key followed by the 4-byte GCM salt.
pub const AEAD_KEY_LEN: usize = 36;
const ICV_BITS: u32 = 128;
/// Anti-replay window of every SA vpcmesh programs, in packets.
const REPLAY_WINDOW: u32 = 1024;
/// The window's bitmap, in 32-bit words.
const REPLAY_BITMAP_WORDS: u32 = REPLAY_WINDOW / 32;
/// What agents before ESN programmed: no ESN, the legacy 32-bit bitmap.
const LEGACY_REPLAY_WINDOW: u8 = 32;
const NAT_T_PORT: u16 = 4500;

/// SA key material; wiped on drop and never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SaKey(Zeroizing<Vec<u8>>);

impl SaKey {
    pub fn new(bytes: Vec<u8>) -> Self {
        SaKey(Zeroizing::new(bytes))
    }
}

impl fmt::Debug for SaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SaKey([{} bytes redacted])", self.0.len())
    }
}

/// What identifies an SA in the kernel (the protocol is always ESP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SaId {
    pub dst: Ipv4Addr,
    pub spi: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sa {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub spi: u32,
    pub reqid: u32,
    pub key: SaKey,
    pub nat_traversal: bool,
    /// ESN with a 1024-packet window; `false` for the shape agents of
    /// protocol 2 program (no ESN, 32-packet window), which both ends of an
    /// SA must share: the integrity check covers ESN's high half.
    pub esn: bool,
}

impl Sa {
    pub fn id(&self) -> SaId {
        SaId {
            dst: self.dst,
            spi: self.spi,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SaCounters {
    pub bytes: u64,
    pub packets: u64,
    /// Packets dropped as duplicates or as older than the replay window.
    pub replay_drops: u64,
    pub integrity_failures: u64,
    /// The last sequence number sent (outbound SAs): ESN's high half
    /// (`oseq_hi`) and low half (`oseq`) together; 32-bit on legacy SAs.
    pub out_sequence: u64,
    /// The highest sequence number received (inbound SAs): `seq_hi`:`seq`.
    pub in_sequence: u64,
}

/// An SA as the kernel has it. `sa` is `None` when the kernel's SA is not
/// one vpcmesh would have programmed (other algorithm, transport mode,
/// replay window, ...) so that the reconciler replaces it.
///
/// A legacy SA (no ESN, 32-packet window, as agents before ESN programmed
/// it) counts as ours: replacing it would re-add the same SPI with the same
/// key (keys derive from the SPI) and restart its sequence numbers at 1,
/// which reuses AES-GCM nonces. Legacy SAs live on until a new SPI replaces
/// them; every SA this agent adds uses ESN.
#[derive(Clone, Debug)]
pub struct ObservedSa {
    pub id: SaId,
    pub reqid: u32,
    pub sa: Option<Sa>,
    pub counters: SaCounters,
}

pub struct SaHandle<'a>(pub(super) &'a mut NetlinkSocket);

impl SaHandle<'_> {
    /// Every IPv4 ESP SA in the namespace.
    pub fn list(&mut self) -> Result<Vec<ObservedSa>, NetlinkError> {
        let replies = self.0.dump(
            XfrmMessage::GetDumpSa(GetDumpMessage::default()),
            "the SA dump",
        )?;
        Ok(replies.into_iter().filter_map(observe).collect())
    }

    /// Applies changes in order; one result per change.
    pub fn apply(&mut self, changes: &[Change<SaId, Sa>]) -> Vec<Result<(), NetlinkError>> {
        let requests = changes
            .iter()
            .map(|c| match c {
                Change::Add(sa) => (
                    XfrmMessage::AddSa(modify_message(sa)),
                    NLM_F_CREATE | NLM_F_EXCL,
                    format!("adding SA {:#x} to {}", sa.spi, sa.dst),
                ),
                Change::Replace(sa) => (
                    XfrmMessage::UpdateSa(modify_message(sa)),
                    0,
                    format!("updating SA {:#x} to {}", sa.spi, sa.dst),
                ),
                Change::Delete(id) => (
                    XfrmMessage::DeleteSa(delete_message(*id)),
                    0,
                    format!("deleting SA {:#x} to {}", id.spi, id.dst),
                ),
            })
            .collect();
        self.0.execute(requests)
    }
}

fn infinite_lifetime() -> LifetimeConfig {
    LifetimeConfig {
        soft_byte_limit: XFRM_INF,
        hard_byte_limit: XFRM_INF,
        soft_packet_limit: XFRM_INF,
        hard_packet_limit: XFRM_INF,
        ..Default::default()
    }
}

fn modify_message(sa: &Sa) -> ModifyMessage {
    let mut info = UserSaInfo {
        id: Id {
            daddr: xfrm_address(sa.dst),
            spi: sa.spi,
            proto: IPPROTO_ESP,
        },
        saddr: xfrm_address(sa.src),
        lifetime_cfg: infinite_lifetime(),
        reqid: sa.reqid,
        family: AF_INET,
        mode: XFRM_MODE_TUNNEL,
        // The kernel refuses a legacy window next to the ESN attribute.
        replay_window: if sa.esn { 0 } else { LEGACY_REPLAY_WINDOW },
        flags: if sa.esn { XFRM_STATE_ESN } else { 0 },
        ..Default::default()
    };
    info.selector.family = AF_INET;
    let mut alg_name = [0u8; netlink_packet_xfrm::XFRM_ALG_AEAD_NAME_LEN];
    alg_name[..AEAD_ALGORITHM.len()].copy_from_slice(AEAD_ALGORITHM.as_bytes());
    let mut nlas = vec![XfrmAttrs::EncryptionAlgAead(AlgAead {
        alg_name,
        alg_key_len: (sa.key.0.len() * 8) as u32,
        alg_icv_len: ICV_BITS,
        alg_key: sa.key.0.to_vec(),
    })];
    if sa.esn {
        // Outbound SAs need it too: ESN requires the attribute, and oseq_hi
        // lives in it. Header only, as iproute2 sends it: the kernel
        // allocates the bitmap (bmp_len words, zeroed) itself.
        nlas.push(XfrmAttrs::ReplayStateEsn(ReplayEsn {
            bmp_len: REPLAY_BITMAP_WORDS,
            replay_window: REPLAY_WINDOW,
            ..Default::default()
        }));
    }
    if sa.nat_traversal {
        nlas.push(XfrmAttrs::EncapsulationTemplate(EncapTmpl {
            encap_type: UDP_ENCAP_ESPINUDP,
            encap_sport: NAT_T_PORT,
            encap_dport: NAT_T_PORT,
            encap_oa: Default::default(),
        }));
    }
    ModifyMessage {
        user_sa_info: info,
        nlas,
    }
}

fn delete_message(id: SaId) -> DelGetMessage {
    DelGetMessage {
        user_sa_id: UserSaId {
            daddr: xfrm_address(id.dst),
            spi: id.spi,
            family: AF_INET,
            proto: IPPROTO_ESP,
        },
        nlas: vec![],
    }
}

fn observe(reply: XfrmMessage) -> Option<ObservedSa> {
    let XfrmMessage::AddSa(msg) = reply else {
        return None;
    };
    let info = msg.user_sa_info;
    if info.family != AF_INET || info.id.proto != IPPROTO_ESP {
        return None;
    }
    let id = SaId {
        dst: info.id.daddr.to_ipv4(),
        spi: info.id.spi,
    };
    let mut key = None;
    let mut nat_traversal = false;
    let mut integrity_ok = true;
    let mut esn = None;
    let mut legacy = None;
    for nla in msg.nlas {
        match nla {
            XfrmAttrs::EncryptionAlgAead(alg) => {
                let name_len = alg.alg_name.iter().position(|b| *b == 0).unwrap_or(0);
                if &alg.alg_name[..name_len] == AEAD_ALGORITHM.as_bytes()
                    && alg.alg_icv_len == ICV_BITS
                {
                    key = Some(SaKey::new(alg.alg_key));
                }
            }
            XfrmAttrs::EncapsulationTemplate(t) => {
                nat_traversal = t.encap_type == UDP_ENCAP_ESPINUDP
                    && t.encap_sport == NAT_T_PORT
                    && t.encap_dport == NAT_T_PORT;
                integrity_ok &= nat_traversal;
            }
            XfrmAttrs::EncryptionAlg(_) | XfrmAttrs::AuthenticationAlg(_) => integrity_ok = false,
            XfrmAttrs::ReplayStateEsn(r) => esn = Some(r),
            XfrmAttrs::ReplayState(r) => legacy = Some(r),
            _ => {}
        }
    }
    let ours = integrity_ok && info.mode == XFRM_MODE_TUNNEL && replay_is_ours(&info, esn.as_ref());
    let (out_sequence, in_sequence) = sequence_numbers(esn.as_ref(), legacy.as_ref());
    let sa = match key {
        Some(key) if ours => Some(Sa {
            src: info.saddr.to_ipv4(),
            dst: id.dst,
            spi: id.spi,
            reqid: info.reqid,
            key,
            nat_traversal,
            esn: info.flags & XFRM_STATE_ESN != 0,
        }),
        _ => None,
    };
    Some(ObservedSa {
        id,
        reqid: info.reqid,
        sa,
        counters: SaCounters {
            bytes: info.lifetime_cur.bytes,
            packets: info.lifetime_cur.packets,
            replay_drops: info.stats.replay as u64 + info.stats.replay_window as u64,
            integrity_failures: info.stats.integrity_failed as u64,
            out_sequence,
            in_sequence,
        },
    })
}

/// ESN with vpcmesh's window, or the legacy shape older agents programmed
/// (kept, see [`ObservedSa`]). Anything else is replaced.
fn replay_is_ours(info: &UserSaInfo, esn: Option<&ReplayEsn>) -> bool {
    if info.flags & XFRM_STATE_ESN != 0 {
        esn.is_some_and(|r| r.replay_window == REPLAY_WINDOW)
    } else {
        // A window over 32 without ESN (bitmap mode) also comes as the ESN
        // attribute; older agents programmed exactly the 32-bit bitmap.
        esn.is_none() && info.replay_window == LEGACY_REPLAY_WINDOW
    }
}

fn sequence_numbers(esn: Option<&ReplayEsn>, legacy: Option<&Replay>) -> (u64, u64) {
    match (esn, legacy) {
        (Some(r), _) => (
            (u64::from(r.oseq_hi) << 32) | u64::from(r.oseq),
            (u64::from(r.seq_hi) << 32) | u64::from(r.seq),
        ),
        (None, Some(r)) => (u64::from(r.oseq), u64::from(r.seq)),
        (None, None) => (0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::Emitable;
    use netlink_packet_xfrm::Stats;

    fn sample() -> Sa {
        Sa {
            src: Ipv4Addr::new(198, 51, 100, 1),
            dst: Ipv4Addr::new(198, 51, 100, 2),
            spi: 0x1112,
            reqid: 118,
            key: SaKey::new(vec![7; AEAD_KEY_LEN]),
            nat_traversal: false,
            esn: true,
        }
    }

    /// The request's bytes: `xfrm_usersa_info`, then the attributes.
    fn wire(sa: &Sa) -> Vec<u8> {
        let msg = modify_message(sa);
        let mut buf = vec![0; msg.buffer_len()];
        msg.emit(&mut buf);
        buf
    }

    /// The payload of attribute `kind` in a request's bytes.
    fn attribute(buf: &[u8], kind: u16) -> Option<Vec<u8>> {
        let mut at = netlink_packet_xfrm::XFRM_USER_SA_INFO_LEN;
        while at + 4 <= buf.len() {
            let len = u16::from_ne_bytes([buf[at], buf[at + 1]]) as usize;
            let ty = u16::from_ne_bytes([buf[at + 2], buf[at + 3]]);
            if ty == kind {
                return Some(buf[at + 4..at + len].to_vec());
            }
            at += (len + 3) & !3;
        }
        None
    }

    fn words(bytes: &[u8]) -> Vec<u32> {
        bytes
            .chunks(4)
            .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    /// The kernel's answer to a dump, for an SA shaped by `info` and `nlas`.
    fn reply(mut info: UserSaInfo, mut nlas: Vec<XfrmAttrs>) -> XfrmMessage {
        let programmed = modify_message(&sample());
        info.id = programmed.user_sa_info.id;
        info.saddr = programmed.user_sa_info.saddr;
        info.reqid = programmed.user_sa_info.reqid;
        info.family = AF_INET;
        info.mode = XFRM_MODE_TUNNEL;
        nlas.extend(
            programmed
                .nlas
                .into_iter()
                .filter(|n| matches!(n, XfrmAttrs::EncryptionAlgAead(_))),
        );
        XfrmMessage::AddSa(ModifyMessage {
            user_sa_info: info,
            nlas,
        })
    }

    fn esn(window: u32) -> XfrmAttrs {
        XfrmAttrs::ReplayStateEsn(ReplayEsn {
            bmp_len: window.div_ceil(32),
            replay_window: window,
            bmp: vec![0; window.div_ceil(32) as usize],
            ..Default::default()
        })
    }

    fn flags(flags: u8, replay_window: u8) -> UserSaInfo {
        UserSaInfo {
            flags,
            replay_window,
            ..Default::default()
        }
    }

    #[test]
    fn every_sa_is_programmed_with_the_esn_flag_and_no_legacy_window() {
        let buf = wire(&sample());
        // struct xfrm_usersa_info: ... family (u16) at 212, mode, replay_window, flags.
        assert_eq!(u16::from_ne_bytes([buf[212], buf[213]]), AF_INET);
        assert_eq!(buf[214], XFRM_MODE_TUNNEL);
        assert_eq!(buf[215], 0, "the kernel refuses replay_window with ESN");
        assert_eq!(buf[216], XFRM_STATE_ESN);
    }

    #[test]
    fn an_sa_shared_with_a_protocol_2_agent_takes_its_shape_and_reads_back_so() {
        let sa = Sa {
            esn: false,
            ..sample()
        };
        let buf = wire(&sa);
        assert_eq!(buf[215], LEGACY_REPLAY_WINDOW);
        assert_eq!(buf[216], 0, "no ESN flag");
        assert!(attribute(&buf, netlink_packet_xfrm::XFRMA_REPLAY_ESN_VAL).is_none());
    }

    #[test]
    fn every_sa_carries_an_esn_replay_state_with_a_1024_packet_window() {
        for nat_traversal in [false, true] {
            let sa = Sa {
                nat_traversal,
                ..sample()
            };
            let esn = attribute(&wire(&sa), netlink_packet_xfrm::XFRMA_REPLAY_ESN_VAL)
                .expect("an XFRMA_REPLAY_ESN_VAL attribute");
            // bmp_len, oseq, seq, oseq_hi, seq_hi, replay_window; no bitmap.
            assert_eq!(words(&esn), [32, 0, 0, 0, 0, 1024]);
        }
    }

    #[test]
    fn an_sa_the_agent_programs_reads_back_as_ours() {
        let observed = observe(reply(flags(XFRM_STATE_ESN, 0), vec![esn(1024)])).expect("ESP");
        assert_eq!(observed.sa, Some(sample()));
    }

    #[test]
    fn a_legacy_sa_of_an_older_agent_is_kept_rather_than_reinstalled_with_its_key() {
        let legacy = XfrmAttrs::ReplayState(Replay {
            oseq: 5,
            seq: 9,
            bitmap: 0x1ff,
        });
        let observed = observe(reply(flags(0, 32), vec![legacy])).expect("ESP");
        // Ours, in the protocol-2 shape: the diff keeps it (same key), and
        // the run mode moves to a new generation to replace it.
        assert_eq!(
            observed.sa,
            Some(Sa {
                esn: false,
                ..sample()
            })
        );
        assert_eq!(
            (
                observed.counters.out_sequence,
                observed.counters.in_sequence
            ),
            (5, 9)
        );
    }

    #[test]
    fn other_replay_setups_are_not_ours_and_get_replaced() {
        for (info, nlas, what) in [
            (
                flags(XFRM_STATE_ESN, 0),
                vec![esn(64)],
                "ESN, 64-packet window",
            ),
            (flags(XFRM_STATE_ESN, 0), vec![], "ESN without its state"),
            (flags(0, 0), vec![], "anti-replay off"),
            (flags(0, 16), vec![], "a 16-packet legacy window"),
            (flags(0, 0), vec![esn(1024)], "a 1024 bitmap without ESN"),
        ] {
            let observed = observe(reply(info, nlas)).expect("ESP");
            assert_eq!(observed.sa, None, "{what}");
        }
    }

    #[test]
    fn esn_sequence_numbers_are_reported_with_their_high_half() {
        let state = XfrmAttrs::ReplayStateEsn(ReplayEsn {
            bmp_len: 32,
            oseq: 10,
            oseq_hi: 1,
            seq: 0xffff_fff0,
            seq_hi: 2,
            replay_window: 1024,
            bmp: vec![0; 32],
        });
        let observed = observe(reply(flags(XFRM_STATE_ESN, 0), vec![state])).expect("ESP");
        assert_eq!(observed.counters.out_sequence, (1 << 32) + 10);
        assert_eq!(observed.counters.in_sequence, (2 << 32) + 0xffff_fff0);
    }

    #[test]
    fn late_and_duplicate_packets_both_count_as_replay_drops() {
        let info = UserSaInfo {
            stats: Stats {
                replay_window: 3,
                replay: 4,
                integrity_failed: 5,
            },
            ..flags(XFRM_STATE_ESN, 0)
        };
        let observed = observe(reply(info, vec![esn(1024)])).expect("ESP");
        assert_eq!(observed.counters.replay_drops, 7);
        assert_eq!(observed.counters.integrity_failures, 5);
    }
}
