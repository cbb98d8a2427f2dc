use super::*;
use crate::dataplane::{desired_state, DataKey, Underlay};
use crate::protocol::tests::sample_config;
use crate::protocol::DesiredConfig;
use crate::xfrm::SaCounters;
use std::net::Ipv4Addr;

fn config(peers: u32) -> DesiredConfig {
    sample_config(peers as usize)
}

fn state(c: &DesiredConfig) -> KernelState {
    desired_state(
        c,
        &DataKey::new(vec![5; 32]),
        Underlay {
            oif: 2,
            prefsrc: None,
        },
    )
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
        routes: s.routes.clone(),
    }
}

#[test]
fn one_tunnel_is_three_sas_three_policies_and_a_route() {
    let s = state(&config(1));
    assert_eq!((s.sas.len(), s.policies.len(), s.routes.len()), (3, 3, 1));
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
    assert_eq!(changes.len(), 3 + 3 + 1);
    assert!(changes.sas.iter().all(|c| matches!(c, Change::Delete(_))));
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
