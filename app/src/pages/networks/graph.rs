//! The network drawn as an SVG graph: sites as nodes on a circle, tunnels as
//! lines colored by state, leaves joined to their edge with dashes.

use crate::api::{NetworkSummary, SiteRole, TopologyKind};
use leptos::prelude::*;

/// The state of the tunnel between sites `a` and `b` from what the sites'
/// active appliances report about each other: down if either says down,
/// rekeying while either has two key epochs in play, up when every report
/// says up, pending before any report.
pub fn tunnel_state(network: &NetworkSummary, a: &str, b: &str) -> &'static str {
    if network.status == crate::api::NetworkStatus::Failed {
        return "down";
    }
    let reports: Vec<&str> = network
        .appliances
        .iter()
        .filter(|ap| ap.role.as_deref() == Some("active"))
        .filter_map(|ap| {
            let peer = if ap.site_id == a {
                b
            } else if ap.site_id == b {
                a
            } else {
                return None;
            };
            ap.tunnels.iter().find(|t| t.peer_site == peer)
        })
        .map(|t| t.state.as_str())
        .collect();
    if reports.contains(&"down") {
        "down"
    } else if reports.contains(&"rekeying") {
        "rekeying"
    } else if !reports.is_empty() && reports.iter().all(|s| *s == "up") {
        "up"
    } else {
        "pending"
    }
}

#[component]
pub fn TopologyGraph(network: NetworkSummary) -> impl IntoView {
    let n = network.sites.len().max(1) as f64;
    let (cx, cy, r) = (300.0_f64, 190.0_f64, 140.0_f64);
    let pos: Vec<(f64, f64)> = (0..network.sites.len())
        .map(|i| {
            let a = -std::f64::consts::FRAC_PI_2 + 2.0 * std::f64::consts::PI * i as f64 / n;
            (cx + r * a.cos(), cy + r * a.sin())
        })
        .collect();
    let index = |id: &str| network.sites.iter().position(|s| s.id == id);
    let hub = network.sites.iter().position(|s| s.role == SiteRole::Hub);
    let edges: Vec<usize> = (0..network.sites.len())
        .filter(|i| network.sites[*i].role != SiteRole::Leaf)
        .collect();
    let mut tunnels: Vec<(usize, usize)> = Vec::new();
    match (network.topology, hub) {
        (TopologyKind::Transit, Some(h)) => {
            tunnels.extend(edges.iter().filter(|e| **e != h).map(|e| (h, *e)))
        }
        _ => {
            for (k, a) in edges.iter().enumerate() {
                for b in &edges[k + 1..] {
                    tunnels.push((*a, *b));
                }
            }
        }
    }
    let attachments: Vec<(usize, usize)> = network
        .sites
        .iter()
        .enumerate()
        .filter_map(|(i, s)| Some((index(s.edge_site_id.as_deref()?)?, i)))
        .collect();
    let tunnel_count = tunnels.len();
    let states: Vec<&'static str> = tunnels
        .iter()
        .map(|(a, b)| tunnel_state(&network, &network.sites[*a].id, &network.sites[*b].id))
        .collect();
    view! {
        <figure class="graph" aria-labelledby="graph-caption">
            <svg viewBox="0 0 600 380" role="img" id="topology-graph">
                <title>{format!("{} sites, {tunnel_count} tunnels", network.sites.len())}</title>
                {tunnels.into_iter().zip(states).map(|((a, b), state)| view! {
                    <line class=format!("tunnel tunnel-{state}") data-tunnel=state x1=pos[a].0 y1=pos[a].1 x2=pos[b].0 y2=pos[b].1>
                        <title>{format!("{} ↔ {}: {state}", network.sites[a].region, network.sites[b].region)}</title>
                    </line>
                }).collect_view()}
                {attachments.into_iter().map(|(a, b)| view! {
                    <line class="attachment" x1=pos[a].0 y1=pos[a].1 x2=pos[b].0 y2=pos[b].1 />
                }).collect_view()}
                {network.sites.iter().enumerate().map(|(i, s)| {
                    let (x, y) = pos[i];
                    let kind = match s.role {
                        SiteRole::Hub => "node node-hub",
                        SiteRole::Leaf => "node node-leaf",
                        SiteRole::Edge => "node",
                    };
                    view! {
                        <g class=kind data-site=s.id.clone()>
                            <circle cx=x cy=y r=if s.role == SiteRole::Leaf { 14 } else { 20 } />
                            <text x=x y=y + 36.0 text-anchor="middle" class="node-label">{s.region.clone()}</text>
                            <text x=x y=y + 52.0 text-anchor="middle" class="node-sub">{s.cidrs.join(", ")}</text>
                        </g>
                    }
                }).collect_view()}
            </svg>
            <figcaption id="graph-caption" class="legend">
                <span class="swatch swatch-pending"></span>"pending"
                <span class="swatch swatch-up"></span>"up"
                <span class="swatch swatch-down"></span>"down"
                <span class="swatch swatch-rekeying"></span>"rekeying"
                <span class="muted">" · as the appliances report (dashed: leaf attachment)"</span>
            </figcaption>
        </figure>
    }
}
