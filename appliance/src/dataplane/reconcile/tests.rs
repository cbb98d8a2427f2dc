use super::*;
use crate::dataplane::{desired_state, DataKey, Underlay};
use crate::protocol::DesiredConfig;
use crate::xfrm::{Block, Direction, SaCounters};
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;
use vpcmesh_protocol::fixtures::sample_config;

fn config(peers: u32) -> DesiredConfig {
    sample_config(peers as usize)
}

fn state(c: &DesiredConfig) -> KernelState {
    let keys = c
        .epochs()
        .into_iter()
        .map(|e| (e, DataKey::new(vec![5; 32])))
        .collect();
    desired_state(
        c,
        &keys,
        Underlay {
            oif: 2,
            prefsrc: None,
        },
    )
    .expect("every epoch has a key")
}

/// What the kernel would report after `s` was applied.
fn as_observed(s: &KernelState) -> ObservedState {
    ObservedState {
        sas: s
            .sas
            .iter()
            .map(|(id, sa)| {
                (
                    *id,
                    ObservedSa {
                        id: *id,
                        reqid: sa.reqid,
                        sa: Some(sa.clone()),
                        counters: SaCounters::default(),
                    },
                )
            })
            .collect(),
        policies: s.policies.clone(),
        blocks: s.blocks.clone(),
        routes: s.routes.clone(),
    }
}

#[test]
fn one_tunnel_is_three_sas_three_policies_three_blocks_and_a_route() {
    let s = state(&config(1));
    assert_eq!(
        (
            s.sas.len(),
            s.policies.len(),
            s.blocks.len(),
            s.routes.len()
        ),
        (3, 3, 3, 1)
    );
    // The blocks cover the remote CIDR both ways, from and to anywhere.
    let remote = config(1).tunnels[0].remote_cidrs[0];
    let any = Ipv4Net::default();
    let covered: Vec<(Ipv4Net, Ipv4Net)> = s.blocks.keys().map(|id| (id.src, id.dst)).collect();
    for (dir, src, dst) in [
        (Direction::Out, any, remote),
        (Direction::In, remote, any),
        (Direction::Fwd, remote, any),
    ] {
        let id = PolicyId { dir, src, dst };
        assert_eq!(s.blocks.get(&id), Some(&Block::new(id)), "{covered:?}");
    }
}

#[test]
fn a_block_policy_in_another_shape_is_rewritten_and_a_missing_one_added() {
    let s = state(&config(1));
    let mut observed = as_observed(&s);
    let mut ids = observed.blocks.keys().copied();
    let (bent, gone) = (ids.next().expect("a block"), ids.next().expect("two"));
    if let Some(b) = observed.blocks.get_mut(&bent) {
        b.exact = false;
    }
    observed.blocks.remove(&gone);
    let changes = diff(&s, &observed);
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert!(changes.blocks.contains(&Change::Replace(Block::new(bent))));
    assert!(changes.blocks.contains(&Change::Add(Block::new(gone))));
}

#[test]
fn an_unchanged_config_changes_nothing() {
    let s = state(&config(3));
    assert!(diff(&s, &as_observed(&s)).is_empty());
}

#[test]
fn a_changed_peer_touches_only_its_own_objects() {
    let before = config(3);
    let mut after = before.clone();
    after.tunnels[1].peer_address = Ipv4Addr::new(203, 0, 113, 9);
    let changes = diff(&state(&after), &as_observed(&state(&before)));
    // 3 SAs re-created (delete + add), 3 policies replaced; the route stays.
    assert_eq!(changes.sas.len(), 3 + 3);
    assert_eq!(changes.policies.len(), 3);
    assert!(changes.routes.is_empty());
    let peer = after.tunnels[1].peer_address;
    for c in &changes.policies {
        let Change::Replace(p) = c else {
            panic!("expected a replace, got {c:?}")
        };
        assert!(p.tmpl_dst == peer || p.tmpl_src == peer);
    }
}

#[test]
fn a_removed_peer_is_deleted_after_the_rest_and_foreign_sas_stay() {
    let before = config(2);
    let mut after = before.clone();
    after.tunnels.pop();
    let changes = diff(&state(&after), &as_observed(&state(&before)));
    // 3 SAs, 3 policies, its 3 blocks and its route.
    assert_eq!(changes.len(), 3 + 3 + 3 + 1);
    assert!(changes.sas.iter().all(|c| matches!(c, Change::Delete(_))));
    assert!(changes
        .blocks
        .iter()
        .all(|c| matches!(c, Change::Delete(_))));
}

#[test]
fn an_sa_the_kernel_has_in_another_shape_is_recreated() {
    let s = state(&config(1));
    let mut observed = as_observed(&s);
    let first = *observed.sas.keys().next().expect("three SAs");
    if let Some(o) = observed.sas.get_mut(&first) {
        o.sa = None;
    }
    let changes = diff(&s, &observed);
    assert_eq!(
        changes.sas,
        vec![Change::Delete(first), Change::Add(s.sas[&first].clone())]
    );
}

#[test]
fn an_sa_with_its_key_in_another_shape_is_never_added_again_under_that_key() {
    let s = state(&config(1));
    let mut observed = as_observed(&s);
    let first = *observed.sas.keys().next().expect("three SAs");
    if let Some(sa) = observed.sas.get_mut(&first).and_then(|o| o.sa.as_mut()) {
        sa.esn = false;
        sa.nat_traversal = !sa.nat_traversal;
    }
    // Re-adding it would start its sequence numbers over under its key.
    assert!(diff(&s, &observed).sas.is_empty());
}

/// Make-before-break in three configs: accept the new epoch next to the old,
/// then send with it, then drop the old. No step deletes an SA still in use,
/// and policies and routes never change.
#[test]
fn a_rotation_adds_before_it_removes_and_never_touches_policies() {
    use vpcmesh_protocol::fixtures::rotating;
    let steady = config(3);
    let accept = rotating(steady.clone(), 1);
    let send = rotating(steady.clone(), 2);
    let mut done = send.clone();
    done.keys.truncate(1);
    for t in &mut done.tunnels {
        t.inbound.retain(|i| i.epoch == 2);
    }
    assert_eq!(done.validate(), Ok(()));

    // 1. Two new inbound SAs per tunnel; nothing else.
    let c = diff(&state(&accept), &as_observed(&state(&steady)));
    assert_eq!(c.sas.len(), 3 * 2);
    assert!(c.sas.iter().all(|c| matches!(c, Change::Add(_))));
    assert!(c.policies.is_empty() && c.routes.is_empty());

    // 2. The new outbound SA is added before the old one is deleted, and
    //    the delete waits until after every add.
    let c = diff(&state(&send), &as_observed(&state(&accept)));
    assert_eq!(c.sas.len(), 3 * 2);
    let first_delete = c
        .sas
        .iter()
        .position(|c| matches!(c, Change::Delete(_)))
        .expect("old outbound SAs go");
    assert!(c.sas[..first_delete]
        .iter()
        .all(|c| matches!(c, Change::Add(_))));
    assert_eq!(first_delete, 3);
    assert!(c.policies.is_empty() && c.routes.is_empty());
    let (deletes, puts) = split_trailing_deletes(c.sas);
    assert_eq!((deletes.len(), puts.len()), (3, 3));

    // 3. The old epoch's inbound SAs go.
    let c = diff(&state(&done), &as_observed(&state(&send)));
    assert_eq!(c.sas.len(), 3 * 2);
    assert!(c.sas.iter().all(|c| matches!(c, Change::Delete(_))));
    assert!(c.policies.is_empty() && c.routes.is_empty());
}

#[test]
fn a_config_naming_an_epoch_without_its_key_programs_nothing() {
    let c = vpcmesh_protocol::fixtures::rotating(config(1), 2);
    let only_old = [(1, DataKey::new(vec![5; 32]))].into_iter().collect();
    let underlay = Underlay {
        oif: 2,
        prefsrc: None,
    };
    assert_eq!(
        desired_state(&c, &only_old, underlay).map(|_| ()),
        Err(crate::dataplane::MissingKey(2))
    );
}

#[test]
fn status_says_rekeying_while_two_epochs_are_in_play() {
    use crate::dataplane::tunnel_status;
    use crate::protocol::TunnelState;
    let mark = |c: &DesiredConfig| {
        let mut o = as_observed(&state(c));
        for s in o.sas.values_mut() {
            s.counters.packets = 4;
        }
        tunnel_status(c, &o)
    };
    let steady = config(2);
    assert!(mark(&steady).iter().all(|t| t.state == TunnelState::Up));
    let rotating = vpcmesh_protocol::fixtures::rotating(steady, 2);
    let status = mark(&rotating);
    assert!(status
        .iter()
        .all(|t| t.state == TunnelState::Rekeying && t.out_epoch == 2));
}

mod lost_answers {
    use super::super::{Landing, ObservedState, Tally};
    use crate::netlink::NetlinkError;
    use crate::route::Route;
    use crate::xfrm::{Block, Change, Direction, PolicyId};
    use std::collections::BTreeMap;

    fn lost() -> NetlinkError {
        NetlinkError::Unconfirmed {
            what: "a change".into(),
            reason: "No buffer space available (os error 105)".into(),
        }
    }

    fn route(dst: &str) -> Route {
        Route {
            dst: dst.parse().expect("a CIDR"),
            oif: 2,
            prefsrc: None,
        }
    }

    fn block(dst: &str) -> Block {
        Block::new(PolicyId {
            dir: Direction::Out,
            src: Default::default(),
            dst: dst.parse().expect("a CIDR"),
        })
    }

    #[test]
    fn changes_whose_answers_were_lost_count_as_the_kernel_shows_them() {
        let mut tally = Tally::default();
        let blocks = [
            Change::Add(block("10.2.0.0/16")),
            Change::Add(block("10.3.0.0/16")),
        ];
        tally.take(vec![Err(lost()), Err(lost())], &blocks, Landing::BlockPut);
        let routes = [
            Change::Add(route("10.2.0.0/16")),
            Change::Delete("10.9.0.0/16".parse().expect("a CIDR")),
            Change::Add(route("10.4.0.0/16")),
        ];
        tally.take(
            vec![Err(lost()), Err(lost()), Ok(())],
            &routes,
            Landing::Route,
        );
        // The kernel took the first block and route and the deletion, not
        // the second block.
        let mut observed = ObservedState::default();
        let b = block("10.2.0.0/16");
        observed.blocks.insert(b.id, b);
        let r = route("10.2.0.0/16");
        observed.routes.insert(r.dst, r);
        tally.read_back(&observed, &BTreeMap::new());
        match tally.finish(5) {
            Err(crate::dataplane::ReconcileError::Apply {
                failed,
                total,
                blocks_in,
                first,
            }) => {
                assert_eq!((failed, total), (1, 5));
                assert!(
                    !blocks_in,
                    "a block policy is missing: forwarding stays off"
                );
                assert!(matches!(first, NetlinkError::Unconfirmed { .. }), "{first}");
            }
            other => panic!("one change did not land: {other:?}"),
        }
    }

    #[test]
    fn when_every_lost_answer_landed_the_apply_succeeded() {
        let mut tally = Tally::default();
        let blocks = [Change::Add(block("10.2.0.0/16"))];
        tally.take(vec![Err(lost())], &blocks, Landing::BlockPut);
        let mut observed = ObservedState::default();
        let b = block("10.2.0.0/16");
        observed.blocks.insert(b.id, b);
        tally.read_back(&observed, &BTreeMap::new());
        let report = tally.finish(1).expect("everything landed");
        assert_eq!(report.added, 1);
    }

    #[test]
    fn a_refusal_is_a_failure_without_reading_back() {
        let mut tally = Tally::default();
        let blocks = [Change::Add(block("10.2.0.0/16"))];
        let refused = NetlinkError::Refused {
            what: "a block".into(),
            source: std::io::Error::from_raw_os_error(libc::EINVAL),
        };
        tally.take(vec![Err(refused)], &blocks, Landing::BlockPut);
        assert!(tally.unconfirmed.is_empty());
        assert!(matches!(
            tally.finish(1),
            Err(crate::dataplane::ReconcileError::Apply {
                blocks_in: false,
                ..
            })
        ));
    }
}
