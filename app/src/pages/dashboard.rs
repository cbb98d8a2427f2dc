use crate::api::{org_overview, OrgSummary};
use crate::components::ErrorPanel;
use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn DashboardPage() -> impl IntoView {
    let overview = Resource::new(|| (), |_| org_overview());
    let checklist_open = RwSignal::new(true);

    view! {
        <Title text="Dashboard" />
        <div class="page-header">
            <h1>"Dashboard"</h1>
        </div>
        <Suspense fallback=|| view! { <p class="muted">"Loading your organization…"</p> }>
            {move || Suspend::new(async move {
                match overview.await {
                    Ok(o) => view! { <OverviewCards overview=o /> }.into_any(),
                    Err(e) => view! { <ErrorPanel error=e /> }.into_any(),
                }
            })}
        </Suspense>
        <section class="panel" aria-labelledby="getting-started">
            <div class="panel-header">
                <h2 id="getting-started">"Getting started"</h2>
                <button
                    type="button"
                    class="ghost"
                    id="toggle-checklist"
                    aria-controls="checklist"
                    aria-expanded=move || checklist_open.get().to_string()
                    on:click=move |_| checklist_open.update(|o| *o = !*o)
                >
                    {move || if checklist_open.get() { "Hide steps" } else { "Show steps" }}
                </button>
            </div>
            <Show when=move || checklist_open.get()>
                <ol class="checklist" id="checklist">
                    <li>
                        <a href="/accounts">"Add an AWS account"</a>
                        " — vpcmesh gives you a role template with an external ID to paste into CloudFormation."
                    </li>
                    <li>
                        <a href="/networks">"Create a network"</a>
                        " — pick a topology (full mesh, transit, mesh with leaves), regions and VPCs."
                    </li>
                    <li>"Review the plan and provision: appliances launch in your account and connect over IPsec."</li>
                    <li>
                        <a href="/keys">"Check your key epochs"</a>
                        " — tunnel keys come from your own KMS key; vpcmesh never sees them."
                    </li>
                </ol>
            </Show>
        </section>
    }
}

#[component]
fn OverviewCards(overview: OrgSummary) -> impl IntoView {
    view! {
        <p class="muted">"Organization " <strong>{overview.org_name.clone()}</strong></p>
        <div class="cards">
            <Card label="Networks" value=overview.networks href="/networks" />
            <Card label="AWS accounts" value=overview.accounts href="/accounts" />
            <Card label="Users" value=overview.users href="/admin" />
            <Card label="Admins" value=overview.admins href="/admin" />
        </div>
    }
}

#[component]
fn Card(label: &'static str, value: i64, href: &'static str) -> impl IntoView {
    view! {
        <a class="card" href=href>
            <span class="card-value">{value}</span>
            <span class="card-label">{label}</span>
        </a>
    }
}
