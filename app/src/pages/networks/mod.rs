//! Networks: the list, the new-network wizard and each network's page.

mod connectivity_panel;
mod detail;
mod failover_panel;
mod graph;
mod keys_panel;
mod step_tries;
mod wizard;

pub use detail::NetworkPage;
pub use wizard::NewNetworkPage;

use crate::api::{list_networks, NetworkStatus, NetworkSummary, TopologyKind};
use crate::components::ErrorPanel;
use leptos::prelude::*;
use leptos_meta::Title;

pub fn topology_name(t: TopologyKind) -> &'static str {
    match t {
        TopologyKind::FullMesh => "Full mesh",
        TopologyKind::Transit => "Transit (hub and spoke)",
        TopologyKind::MeshWithLeaves => "Mesh with leaves",
    }
}

pub fn status_badge(s: NetworkStatus) -> (&'static str, &'static str) {
    match s {
        NetworkStatus::Planned => ("badge", "planned"),
        NetworkStatus::Provisioning => ("badge badge-warn", "provisioning"),
        NetworkStatus::Ready => ("badge badge-ok", "ready"),
        NetworkStatus::Failed => ("badge badge-bad", "failed"),
        NetworkStatus::Deleting => ("badge badge-warn", "deleting"),
        NetworkStatus::Deleted => ("badge", "deleted"),
    }
}

#[component]
pub fn NetworksPage() -> impl IntoView {
    let networks = Resource::new(|| (), |_| list_networks());
    view! {
        <Title text="Networks" />
        <div class="page-header">
            <h1>"Networks"</h1>
            {crate::components::viewer_may(crate::api::Action::CreateNetwork).then(|| view! {
                <a class="button primary" href="/networks/new" id="new-network">"New network"</a>
            })}
        </div>
        <Suspense fallback=|| view! { <p class="muted">"Loading networks…"</p> }>
            {move || Suspend::new(async move {
                match networks.await {
                    Ok(list) if list.is_empty() => view! {
                        <section class="empty-state">
                            <h2>"No networks yet"</h2>
                            <p>"A network connects VPCs in several regions and accounts as a full mesh, a transit hub with spokes, or a mesh core with leaf VPCs. Add an AWS account on the Accounts page, then create a network."</p>
                        </section>
                    }.into_any(),
                    Ok(list) => view! { <NetworksTable networks=list /> }.into_any(),
                    Err(e) => view! { <ErrorPanel error=e /> }.into_any(),
                }
            })}
        </Suspense>
    }
}

#[component]
fn NetworksTable(networks: Vec<NetworkSummary>) -> impl IntoView {
    view! {
        <section class="panel">
            <table class="table" id="networks-table">
                <thead>
                    <tr><th scope="col">"Name"</th><th scope="col">"Topology"</th><th scope="col">"Sites"</th><th scope="col">"Regions"</th><th scope="col">"Status"</th></tr>
                </thead>
                <tbody>
                    {networks.into_iter().map(|n| {
                        let (class, text) = status_badge(n.status);
                        let mut regions: Vec<String> = n.sites.iter().map(|s| s.region.clone()).collect();
                        regions.sort();
                        regions.dedup();
                        view! {
                            <tr>
                                <td><a href=format!("/networks/{}", n.id)>{n.name.clone()}</a></td>
                                <td>{topology_name(n.topology)}</td>
                                <td>{n.sites.len()}</td>
                                <td>{regions.join(", ")}</td>
                                <td><span class=class>{text}</span></td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
        </section>
    }
}
