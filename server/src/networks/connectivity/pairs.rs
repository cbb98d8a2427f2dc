//! A check's results as pairs of sites: pure, so the states are tested
//! without a database.

use super::store::ResultRow;
use crate::networks::store::rfc3339;
use app::api::{ConnectivityPair, PairSite, PairState, PathResult};
use uuid::Uuid;

/// A site as the pairs name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteName {
    pub id: Uuid,
    pub name: String,
    pub region: String,
}

/// Every unordered pair of `sites` (ordered by region, then name), with
/// both directions' results. `running`: the check still waits for reports,
/// so a missing direction is pending rather than "no report".
pub fn pairs(sites: &[SiteName], results: &[ResultRow], running: bool) -> Vec<ConnectivityPair> {
    let mut sites: Vec<&SiteName> = sites.iter().collect();
    sites.sort_by(|a, b| (&a.region, &a.name, a.id).cmp(&(&b.region, &b.name, b.id)));
    let path = |from: Uuid, to: Uuid| {
        results
            .iter()
            .find(|r| r.from_site == from && r.to_site == to)
            .map(|r| PathResult {
                sent: r.sent,
                received: r.received,
                loss_percent: PathResult::loss(r.sent, r.received),
                rtt_min_us: r.rtt_min_us,
                rtt_avg_us: r.rtt_avg_us,
                rtt_max_us: r.rtt_max_us,
                reported_at: rfc3339(r.reported_at),
            })
    };
    let site = |s: &SiteName| PairSite {
        id: s.id.to_string(),
        name: s.name.clone(),
        region: s.region.clone(),
    };
    let mut out = Vec::new();
    for (i, a) in sites.iter().enumerate() {
        for b in &sites[i + 1..] {
            let a_to_b = path(a.id, b.id);
            let b_to_a = path(b.id, a.id);
            out.push(ConnectivityPair {
                a: site(a),
                b: site(b),
                state: state(a_to_b.as_ref(), b_to_a.as_ref(), running),
                a_to_b,
                b_to_a,
            });
        }
    }
    out
}

fn state(a_to_b: Option<&PathResult>, b_to_a: Option<&PathResult>, running: bool) -> PairState {
    match (a_to_b, b_to_a) {
        (Some(x), Some(y)) if x.received == 0 || y.received == 0 => PairState::Unreachable,
        (Some(x), Some(y)) if x.received < x.sent || y.received < y.sent => PairState::Loss,
        (Some(_), Some(_)) => PairState::Ok,
        _ if running => PairState::Pending,
        _ => PairState::NoReport,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::OffsetDateTime;

    fn site(n: u128, name: &str, region: &str) -> SiteName {
        SiteName {
            id: Uuid::from_u128(n),
            name: name.into(),
            region: region.into(),
        }
    }

    fn measured(from: u128, to: u128, received: u16) -> ResultRow {
        ResultRow {
            from_site: Uuid::from_u128(from),
            to_site: Uuid::from_u128(to),
            sent: 5,
            received,
            rtt_min_us: (received > 0).then_some(900),
            rtt_avg_us: (received > 0).then_some(1100),
            rtt_max_us: (received > 0).then_some(1500),
            reported_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn states(p: &[ConnectivityPair]) -> Vec<(String, String, PairState)> {
        p.iter()
            .map(|p| (p.a.name.clone(), p.b.name.clone(), p.state))
            .collect()
    }

    #[test]
    fn every_unordered_pair_appears_once_in_a_stable_order() {
        let sites = [
            site(3, "west", "us-west-2"),
            site(1, "east", "us-east-1"),
            site(2, "frankfurt", "eu-central-1"),
        ];
        let p = pairs(&sites, &[], true);
        assert_eq!(
            states(&p),
            vec![
                ("frankfurt".into(), "east".into(), PairState::Pending),
                ("frankfurt".into(), "west".into(), PairState::Pending),
                ("east".into(), "west".into(), PairState::Pending),
            ]
        );
        assert!(pairs(&sites[..1], &[], true).is_empty());
    }

    #[test]
    fn both_directions_decide_a_pairs_state() {
        let sites = [
            site(1, "a", "r1"),
            site(2, "b", "r2"),
            site(3, "c", "r3"),
            site(4, "d", "r4"),
        ];
        let results = [
            // a <-> b: everything came back.
            measured(1, 2, 5),
            measured(2, 1, 5),
            // a <-> c: one echo lost one way.
            measured(1, 3, 5),
            measured(3, 1, 4),
            // b <-> c: nothing back one way.
            measured(2, 3, 0),
            measured(3, 2, 5),
            // a -> d only: d never reported.
            measured(1, 4, 5),
        ];
        let running = pairs(&sites, &results, true);
        let ended = pairs(&sites, &results, false);
        let state_of = |p: &[ConnectivityPair], a: &str, b: &str| {
            p.iter()
                .find(|x| x.a.name == a && x.b.name == b)
                .map(|x| x.state)
        };
        assert_eq!(state_of(&ended, "a", "b"), Some(PairState::Ok));
        assert_eq!(state_of(&ended, "a", "c"), Some(PairState::Loss));
        assert_eq!(state_of(&ended, "b", "c"), Some(PairState::Unreachable));
        // A missing direction waits while the check runs, then shows that
        // the site did not report.
        assert_eq!(state_of(&running, "a", "d"), Some(PairState::Pending));
        assert_eq!(state_of(&ended, "a", "d"), Some(PairState::NoReport));
        assert_eq!(state_of(&ended, "c", "d"), Some(PairState::NoReport));
        // Both directions are carried with loss and times.
        let ac = ended.iter().find(|x| x.a.name == "a" && x.b.name == "c");
        let ac = ac.expect("a-c");
        let back = ac.b_to_a.as_ref().expect("c reported");
        assert_eq!(
            (back.sent, back.received, back.loss_percent, back.rtt_avg_us),
            (5, 4, 20, Some(1100))
        );
        assert_eq!(ac.a_to_b.as_ref().map(|r| r.loss_percent), Some(0));
        let ad = ended.iter().find(|x| x.a.name == "a" && x.b.name == "d");
        assert_eq!(ad.and_then(|x| x.b_to_a.clone()), None);
    }
}
