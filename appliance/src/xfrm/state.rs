//! Security associations: ESP tunnel mode, AES-GCM-256, anti-replay on,
//! optionally encapsulated in UDP 4500 (NAT-T).

use super::{xfrm_address, Change};
use crate::netlink::{NetlinkError, NetlinkSocket};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_xfrm::{
    constants::{AF_INET, IPPROTO_ESP, UDP_ENCAP_ESPINUDP, XFRM_INF, XFRM_MODE_TUNNEL},
    state::{DelGetMessage, GetDumpMessage, ModifyMessage},
    AlgAead, EncapTmpl, Id, LifetimeConfig, UserSaId, UserSaInfo, XfrmAttrs, XfrmMessage,
};
use std::fmt;
use std::net::Ipv4Addr;
use zeroize::Zeroizing;

pub const AEAD_ALGORITHM: &str = "rfc4106(gcm(aes))";
/// A 256-bit AES key followed by the 4-byte GCM salt.
pub const AEAD_KEY_LEN: usize = 36;
const ICV_BITS: u32 = 128;
/// The legacy replay window is a 32-bit bitmap.
const REPLAY_WINDOW: u8 = 32;
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
    pub replay_drops: u64,
    pub integrity_failures: u64,
}

/// An SA as the kernel has it. `sa` is `None` when the kernel's SA is not
/// one vpcmesh would have programmed (other algorithm, transport mode, ...)
/// so that the reconciler replaces it.
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
        replay_window: REPLAY_WINDOW,
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
            _ => {}
        }
    }
    let ours = integrity_ok && info.mode == XFRM_MODE_TUNNEL && info.replay_window == REPLAY_WINDOW;
    let sa = match key {
        Some(key) if ours => Some(Sa {
            src: info.saddr.to_ipv4(),
            dst: id.dst,
            spi: id.spi,
            reqid: info.reqid,
            key,
            nat_traversal,
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
            replay_drops: info.stats.replay as u64,
            integrity_failures: info.stats.integrity_failed as u64,
        },
    })
}
