//! Policies: which traffic goes through which tunnel. Each tunnel has an
//! `out` policy per (local, remote) CIDR pair and matching `in` and `fwd`
//! policies, all with one template naming the tunnel's reqid. Below them,
//! block policies cover every remote CIDR: what no tunnel policy takes
//! (a tunnel being replaced, a policy the kernel refused) is dropped,
//! never sent in clear.

use super::{xfrm_address, Change};
use crate::netlink::{NetlinkError, NetlinkSocket};
use ipnet::Ipv4Net;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_xfrm::{
    constants::{
        AF_INET, IPPROTO_ESP, XFRM_MODE_TUNNEL, XFRM_MSG_GETPOLICY, XFRM_POLICY_ALLOW,
        XFRM_POLICY_BLOCK, XFRM_POLICY_FWD, XFRM_POLICY_IN, XFRM_POLICY_OUT,
    },
    policy::{DelGetMessage, ModifyMessage},
    Id, LifetimeConfig, Selector, UserPolicyId, UserPolicyInfo, UserTemplate, XfrmAttrs,
    XfrmMessage, XFRM_INF,
};
use std::net::{IpAddr, Ipv4Addr};

/// The priority of every policy vpcmesh installs; the agent owns exactly the
/// policies with this priority and never touches others.
pub const POLICY_PRIORITY: u32 = 0x0076_6d00;

/// The priority of vpcmesh's block policies: a larger number than
/// [`POLICY_PRIORITY`], so the kernel tries every tunnel policy first and
/// a block policy matches only what none of them covers.
pub const BLOCK_PRIORITY: u32 = POLICY_PRIORITY + 0x80;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    In,
    Out,
    Fwd,
}

impl Direction {
    fn to_kernel(self) -> u8 {
        match self {
            Direction::In => XFRM_POLICY_IN,
            Direction::Out => XFRM_POLICY_OUT,
            Direction::Fwd => XFRM_POLICY_FWD,
        }
    }

    fn from_kernel(dir: u8) -> Option<Self> {
        match dir {
            XFRM_POLICY_IN => Some(Direction::In),
            XFRM_POLICY_OUT => Some(Direction::Out),
            XFRM_POLICY_FWD => Some(Direction::Fwd),
            _ => None,
        }
    }
}

/// What identifies a policy in the kernel: direction and selector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyId {
    pub dir: Direction,
    pub src: Ipv4Net,
    pub dst: Ipv4Net,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub id: PolicyId,
    /// The tunnel's outer addresses.
    pub tmpl_src: Ipv4Addr,
    pub tmpl_dst: Ipv4Addr,
    pub reqid: u32,
}

/// A policy that drops what it matches (no template: no SA can carry it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    pub id: PolicyId,
    /// `false`: a policy at [`BLOCK_PRIORITY`] in another shape (an allow,
    /// a template, a port selector); the reconciler rewrites it.
    pub exact: bool,
}

impl Block {
    pub fn new(id: PolicyId) -> Self {
        Block { id, exact: true }
    }
}

pub struct PolicyHandle<'a>(pub(super) &'a mut NetlinkSocket);

impl PolicyHandle<'_> {
    /// The policies vpcmesh owns (by priority), read from the kernel in one
    /// dump: the tunnels' and the blocks. A tunnel policy of ours in a shape
    /// we would not write comes back with `reqid = 0`, a block with `exact`
    /// false, so the reconciler rewrites it.
    pub fn list(&mut self) -> Result<(Vec<Policy>, Vec<Block>), NetlinkError> {
        let replies = self.0.dump(
            XfrmMessage::Other((XFRM_MSG_GETPOLICY, vec![])),
            "the policy dump",
        )?;
        let mut tunnels = Vec::new();
        let mut blocks = Vec::new();
        for reply in replies {
            let XfrmMessage::AddPolicy(msg) = reply else {
                continue;
            };
            if let Some(b) = observe_block(&msg) {
                blocks.push(b);
            } else if let Some(p) = observe(msg) {
                tunnels.push(p);
            }
        }
        Ok((tunnels, blocks))
    }

    pub fn apply_blocks(
        &mut self,
        changes: &[Change<PolicyId, Block>],
    ) -> Vec<Result<(), NetlinkError>> {
        let requests = changes
            .iter()
            .map(|c| match c {
                Change::Add(b) => (
                    XfrmMessage::AddPolicy(block_message(&b.id)),
                    NLM_F_CREATE | NLM_F_EXCL,
                    format!(
                        "adding block policy {:?} {} -> {}",
                        b.id.dir, b.id.src, b.id.dst
                    ),
                ),
                Change::Replace(b) => (
                    XfrmMessage::UpdatePolicy(block_message(&b.id)),
                    0,
                    format!(
                        "updating block policy {:?} {} -> {}",
                        b.id.dir, b.id.src, b.id.dst
                    ),
                ),
                Change::Delete(id) => (
                    XfrmMessage::DeletePolicy(delete_message(id)),
                    0,
                    format!(
                        "deleting block policy {:?} {} -> {}",
                        id.dir, id.src, id.dst
                    ),
                ),
            })
            .collect();
        self.0.execute(requests)
    }

    pub fn apply(&mut self, changes: &[Change<PolicyId, Policy>]) -> Vec<Result<(), NetlinkError>> {
        let requests = changes
            .iter()
            .map(|c| match c {
                Change::Add(p) => (
                    XfrmMessage::AddPolicy(modify_message(p)),
                    NLM_F_CREATE | NLM_F_EXCL,
                    format!("adding policy {:?} {} -> {}", p.id.dir, p.id.src, p.id.dst),
                ),
                Change::Replace(p) => (
                    XfrmMessage::UpdatePolicy(modify_message(p)),
                    0,
                    format!(
                        "updating policy {:?} {} -> {}",
                        p.id.dir, p.id.src, p.id.dst
                    ),
                ),
                Change::Delete(id) => (
                    XfrmMessage::DeletePolicy(delete_message(id)),
                    0,
                    format!("deleting policy {:?} {} -> {}", id.dir, id.src, id.dst),
                ),
            })
            .collect();
        self.0.execute(requests)
    }
}

fn selector(id: &PolicyId) -> Selector {
    let mut s = Selector::default();
    s.source_prefix(&IpAddr::V4(id.src.network()), id.src.prefix_len());
    s.destination_prefix(&IpAddr::V4(id.dst.network()), id.dst.prefix_len());
    // An all-zero selector (0.0.0.0/0 both ways) still is IPv4.
    s.family = AF_INET;
    s
}

fn delete_message(id: &PolicyId) -> DelGetMessage {
    DelGetMessage {
        user_policy_id: UserPolicyId {
            selector: selector(id),
            index: 0,
            direction: id.dir.to_kernel(),
        },
        nlas: vec![],
    }
}

fn policy_info(id: &PolicyId, priority: u32, action: u8) -> UserPolicyInfo {
    UserPolicyInfo {
        selector: selector(id),
        lifetime_cfg: LifetimeConfig {
            soft_byte_limit: XFRM_INF,
            hard_byte_limit: XFRM_INF,
            soft_packet_limit: XFRM_INF,
            hard_packet_limit: XFRM_INF,
            ..Default::default()
        },
        priority,
        direction: id.dir.to_kernel(),
        action,
        ..Default::default()
    }
}

fn block_message(id: &PolicyId) -> ModifyMessage {
    ModifyMessage {
        user_policy_info: policy_info(id, BLOCK_PRIORITY, XFRM_POLICY_BLOCK),
        nlas: vec![],
    }
}

fn modify_message(p: &Policy) -> ModifyMessage {
    let info = policy_info(&p.id, POLICY_PRIORITY, XFRM_POLICY_ALLOW);
    let template = UserTemplate {
        id: Id {
            daddr: xfrm_address(p.tmpl_dst),
            spi: 0,
            proto: IPPROTO_ESP,
        },
        family: AF_INET,
        saddr: xfrm_address(p.tmpl_src),
        reqid: p.reqid,
        mode: XFRM_MODE_TUNNEL,
        share: 0,
        optional: 0,
        aalgos: u32::MAX,
        ealgos: u32::MAX,
        calgos: u32::MAX,
    };
    ModifyMessage {
        user_policy_info: info,
        nlas: vec![XfrmAttrs::Template(vec![template])],
    }
}

/// The direction and selector of a policy of ours at `priority`.
fn owned_id(info: &UserPolicyInfo, priority: u32) -> Option<PolicyId> {
    if info.priority != priority || info.selector.family != AF_INET {
        return None;
    }
    let dir = Direction::from_kernel(info.direction)?;
    let sel = &info.selector;
    let src = Ipv4Net::new(sel.saddr.to_ipv4(), sel.prefixlen_s).ok()?;
    let dst = Ipv4Net::new(sel.daddr.to_ipv4(), sel.prefixlen_d).ok()?;
    Some(PolicyId { dir, src, dst })
}

/// A selector of addresses only (no protocol, ports or interface).
fn plain(sel: &Selector) -> bool {
    sel.proto == 0 && sel.dport == 0 && sel.sport == 0 && sel.ifindex == 0
}

fn observe_block(msg: &ModifyMessage) -> Option<Block> {
    let id = owned_id(&msg.user_policy_info, BLOCK_PRIORITY)?;
    let templates = msg
        .nlas
        .iter()
        .any(|n| matches!(n, XfrmAttrs::Template(t) if !t.is_empty()));
    Some(Block {
        id,
        exact: plain(&msg.user_policy_info.selector)
            && msg.user_policy_info.action == XFRM_POLICY_BLOCK
            && !templates,
    })
}

fn observe(msg: ModifyMessage) -> Option<Policy> {
    let info = msg.user_policy_info;
    let mut policy = Policy {
        id: owned_id(&info, POLICY_PRIORITY)?,
        tmpl_src: Ipv4Addr::UNSPECIFIED,
        tmpl_dst: Ipv4Addr::UNSPECIFIED,
        reqid: 0,
    };
    let templates: Vec<UserTemplate> = msg
        .nlas
        .into_iter()
        .filter_map(|n| match n {
            XfrmAttrs::Template(t) => Some(t),
            _ => None,
        })
        .flatten()
        .collect();
    if let [t] = templates.as_slice() {
        if plain(&info.selector)
            && info.action == XFRM_POLICY_ALLOW
            && t.mode == XFRM_MODE_TUNNEL
            && t.id.proto == IPPROTO_ESP
            && t.optional == 0
        {
            policy.tmpl_src = t.saddr.to_ipv4();
            policy.tmpl_dst = t.id.daddr.to_ipv4();
            policy.reqid = t.reqid;
        }
    }
    Some(policy)
}
