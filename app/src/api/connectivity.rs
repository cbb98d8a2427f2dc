//! Connectivity checks: the appliances ping each other through the tunnels
//! (in the lab between appliances; on AWS between the appliances' own
//! inside addresses) and the console shows loss and round-trip times per
//! pair of sites.

use super::ConsoleError;
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

/// A network's latest connectivity check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectivityCheck {
    pub id: String,
    pub requested_at: String,
    /// Who asked (their email), if they still exist.
    pub requested_by: Option<String>,
    /// Reports are expected by then; pairs still missing one show `no_report`.
    pub deadline_at: String,
    /// When the last site reported.
    pub finished_at: Option<String>,
    /// Still waiting for reports.
    pub running: bool,
    /// Echoes each appliance sends per peer, and their spacing.
    pub count: u16,
    pub interval_ms: u32,
    /// Every unordered pair of the sites with appliances.
    pub pairs: Vec<ConnectivityPair>,
}

/// Two sites and what each measured towards the other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectivityPair {
    pub a: PairSite,
    pub b: PairSite,
    pub state: PairState,
    /// From `a`'s appliance to `b`'s, once `a` reported.
    pub a_to_b: Option<PathResult>,
    pub b_to_a: Option<PathResult>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairSite {
    pub id: String,
    pub name: String,
    pub region: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PairState {
    /// The check runs and a direction has not reported yet.
    Pending,
    /// Both directions reported and every echo came back.
    Ok,
    /// Both reported; some echoes were lost.
    Loss,
    /// Both reported; nothing came back in at least one direction.
    Unreachable,
    /// The check ended without a report from one of the two sites.
    NoReport,
}

impl PairState {
    pub fn as_str(self) -> &'static str {
        match self {
            PairState::Pending => "pending",
            PairState::Ok => "ok",
            PairState::Loss => "loss",
            PairState::Unreachable => "unreachable",
            PairState::NoReport => "no report",
        }
    }
}

/// One direction of a pair, as the sending appliance measured it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathResult {
    pub sent: u16,
    pub received: u16,
    /// Lost echoes in percent, rounded (never 0 or 100 unless none or all were lost).
    pub loss_percent: u8,
    pub rtt_min_us: Option<u32>,
    pub rtt_avg_us: Option<u32>,
    pub rtt_max_us: Option<u32>,
    pub reported_at: String,
}

impl PathResult {
    /// `received` of `sent` as a loss percentage; a partial loss never
    /// rounds to 0 or 100.
    pub fn loss(sent: u16, received: u16) -> u8 {
        if sent == 0 || received >= sent {
            return 0;
        }
        let lost = u32::from(sent - received);
        let pct = (lost * 100 + u32::from(sent) / 2) / u32::from(sent);
        match (received, pct) {
            (0, _) => 100,
            (_, p) => p.clamp(1, 99) as u8,
        }
    }
}

/// Starts a check: every live appliance pings its peer sites' appliances.
#[server(endpoint = "check_connectivity")]
pub async fn check_connectivity(id: String) -> Result<ConnectivityCheck, ConsoleError> {
    crate::backend::console()?.check_connectivity(&id).await
}

/// The network's latest check (None: never checked).
#[server(endpoint = "get_connectivity")]
pub async fn get_connectivity(id: String) -> Result<Option<ConnectivityCheck>, ConsoleError> {
    crate::backend::console()?.connectivity(&id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_is_a_rounded_percentage_that_keeps_partial_loss_visible() {
        assert_eq!(PathResult::loss(5, 5), 0);
        assert_eq!(PathResult::loss(5, 4), 20);
        assert_eq!(PathResult::loss(3, 2), 33);
        assert_eq!(PathResult::loss(3, 1), 67);
        assert_eq!(PathResult::loss(5, 0), 100);
        assert_eq!(PathResult::loss(200, 199), 1);
        assert_eq!(PathResult::loss(200, 1), 99);
    }
}
