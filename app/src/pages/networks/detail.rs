//! One network: its graph, the plan and the Provision button, live progress
//! (steps and stack events, polled while a job runs), sites, key epochs, and
//! Delete with a typed confirmation.

use super::step_tries::StepTries;
use super::{
    connectivity_panel::{ConnectivityAction, ConnectivityPanel},
    failover_panel::{role_detail, FailoverAction, FailoverPanel},
    graph::TopologyGraph,
    keys_panel::{KeyActions, KeysPanel},
    status_badge, topology_name,
};
use crate::api::{
    get_network, network_events, network_job, network_plan, start_job, ChangeAction, ConsoleError,
    JobView, NetworkStatus, NetworkSummary, Plan, ProgressEvent,
};
use crate::components::{time, viewer_may, ErrorPanel};
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_params_map;

/// How long after the page opened it refreshes every second while tunnels
/// come up (a tunnel that never does falls back to every 5 s).
#[cfg(feature = "hydrate")]
const SETTLING_FOR_SECS: u64 = 120;

#[component]
pub fn NetworkPage() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.read().get("id").unwrap_or_default();
    // Bumped every second while a job runs, so progress updates without a reload.
    let tick = RwSignal::new(0u64);
    let provision =
        Action::new(move |fingerprint: &String| start_job(id(), false, fingerprint.clone()));
    let teardown = Action::new(move |_: &()| async move {
        let plan = network_plan(id(), true).await?;
        start_job(id(), true, plan.fingerprint).await
    });
    let keys = KeyActions::new();
    let connectivity = ConnectivityAction::new();
    let failover = FailoverAction::new();
    let network = Resource::new(
        move || {
            (
                id(),
                tick.get(),
                provision.version().get() + teardown.version().get(),
                keys.version() + connectivity.version() + failover.version(),
            )
        },
        |(id, _, _, _)| get_network(id),
    );
    let job = Resource::new(
        move || {
            (
                id(),
                tick.get(),
                provision.version().get(),
                teardown.version().get(),
            )
        },
        |(id, _, _, _)| network_job(id),
    );
    let events = Resource::new(move || (id(), tick.get()), |(id, _)| network_events(id, 0));

    #[cfg(feature = "hydrate")]
    {
        let seconds = StoredValue::new(0u64);
        let handle = set_interval_with_handle(
            move || {
                let busy = network
                    .get_untracked()
                    .and_then(|r| r.ok())
                    .is_some_and(|n| {
                        matches!(
                            n.status,
                            NetworkStatus::Provisioning | NetworkStatus::Deleting
                        ) || ConnectivityAction::running(&n)
                    });
                // While a job runs: every second. While tunnels come up
                // (for the first two minutes on the page): every second
                // too, so a tunnel shows up as soon as its appliance says.
                // Else while ready: every 5 s, so states and counters stay live.
                let (ready, settling) = network
                    .get_untracked()
                    .and_then(|r| r.ok())
                    .map(|n| (n.status == NetworkStatus::Ready, n.tunnels_settling()))
                    .unwrap_or_default();
                seconds.update_value(|s| *s += 1);
                let settling = settling && seconds.get_value() <= SETTLING_FOR_SECS;
                if busy || settling || (ready && seconds.get_value() % 5 == 0) {
                    tick.update(|t| *t += 1);
                }
            },
            std::time::Duration::from_millis(1000),
        );
        if let Ok(handle) = handle {
            on_cleanup(move || handle.clear());
        }
    }

    view! {
        <Transition fallback=|| view! { <p class="muted">"Loading the network…"</p> }>
            {move || Suspend::new(async move {
                match network.await {
                    Ok(n) => view! { <NetworkView network=n job events provision teardown keys connectivity failover /> }.into_any(),
                    Err(e) => view! { <Title text="Network" /><ErrorPanel error=e /> }.into_any(),
                }
            })}
        </Transition>
    }
}

#[component]
fn NetworkView(
    network: NetworkSummary,
    job: Resource<Result<Option<JobView>, ConsoleError>>,
    events: Resource<Result<Vec<ProgressEvent>, ConsoleError>>,
    provision: Action<String, Result<JobView, ConsoleError>>,
    teardown: Action<(), Result<JobView, ConsoleError>>,
    keys: KeyActions,
    connectivity: ConnectivityAction,
    failover: FailoverAction,
) -> impl IntoView {
    let (class, text) = status_badge(network.status);
    let can_provision = matches!(
        network.status,
        NetworkStatus::Planned | NetworkStatus::Failed
    ) && viewer_may(crate::api::Action::ApplyNetwork);
    let can_delete = matches!(
        network.status,
        NetworkStatus::Planned | NetworkStatus::Ready | NetworkStatus::Failed
    ) && viewer_may(crate::api::Action::TearDownNetwork);
    let name = network.name.clone();
    view! {
        <Title text=network.name.clone() />
        <div class="page-header">
            <h1>{network.name.clone()}" "<span class=class id="network-status">{text}</span></h1>
            <span class="muted">{topology_name(network.topology)}</span>
        </div>
        {network.status_note.clone().map(|n| view! { <p class="notice notice-error" role="alert">{n}</p> })}
        <section class="panel" aria-labelledby="graph-title">
            <h2 id="graph-title">"Topology"</h2>
            <TopologyGraph network=network.clone() />
        </section>
        {can_provision.then(|| view! { <PlanPanel id=network.id.clone() provision /> })}
        <ProgressPanel job events />
        <SitesPanel network=network.clone() />
        <AppliancesPanel network=network.clone() />
        <FailoverPanel network=network.clone() action=failover />
        <ConnectivityPanel network=network.clone() action=connectivity />
        <KeysPanel network=network.clone() actions=keys />
        {can_delete.then(|| view! { <DeletePanel name teardown /> })}
    }
}

#[component]
fn PlanPanel(
    id: String,
    provision: Action<String, Result<JobView, ConsoleError>>,
) -> impl IntoView {
    // Only a network that can be provisioned has a plan to show.
    let plan: Resource<Result<Plan, ConsoleError>> =
        Resource::new(move || id.clone(), |id| network_plan(id, false));
    view! {
        <section class="panel" aria-labelledby="plan-title">
            <h2 id="plan-title">"Plan"</h2>
            <Suspense fallback=|| view! { <p class="muted">"Computing the plan…"</p> }>
                {move || Suspend::new(async move {
                    match plan.await {
                        Ok(p) => {
                            let fingerprint = p.fingerprint.clone();
                            let conflicts = p.route_conflicts.clone();
                            let unchecked = p.routes_unchecked.clone();
                            view! {
                                {(!conflicts.is_empty()).then(|| view! {
                                    <div class="notice notice-error" id="plan-conflicts" role="alert">
                                        <strong>"Routes in the way: provisioning would stop at them."</strong>
                                        <ul>{conflicts.into_iter().map(|c| view! { <li>{c}</li> }).collect_view()}</ul>
                                    </div>
                                })}
                                {(!unchecked.is_empty()).then(|| view! {
                                    <div class="notice notice-warn" id="plan-unchecked">
                                        <strong>"Route tables not checked:"</strong>
                                        <ul>{unchecked.into_iter().map(|c| view! { <li>{c}</li> }).collect_view()}</ul>
                                    </div>
                                })}
                                <p class="muted">{format!("Provision creates {} resources in your accounts:", p.changes.iter().filter(|c| c.action == ChangeAction::Create).count())}</p>
                                <table class="table" id="plan-table">
                                    <thead><tr><th scope="col">"Account / region"</th><th scope="col">"What"</th><th scope="col">"Details"</th></tr></thead>
                                    <tbody>
                                        {p.changes.into_iter().map(|c| view! {
                                            <tr>
                                                <td><code>{c.account_id}</code><br />{c.region}</td>
                                                <td><span class="badge badge-ok">{format!("{:?}", c.action).to_lowercase()}</span>" "{c.resource}<br /><code class="small wrap">{c.name}</code></td>
                                                <td><ul class="details">{c.details.into_iter().map(|d| view! { <li>{d}</li> }).collect_view()}</ul></td>
                                            </tr>
                                        }).collect_view()}
                                    </tbody>
                                </table>
                                <button type="button" class="primary" id="provision"
                                    disabled=move || provision.pending().get()
                                    on:click=move |_| { provision.dispatch(fingerprint.clone()); }>
                                    {move || if provision.pending().get() { "Starting…" } else { "Provision" }}
                                </button>
                                {move || provision.value().get().and_then(|r| r.err()).map(|e| view! { <p class="field-error" role="alert">{e.to_string()}</p> })}
                            }.into_any()
                        }
                        Err(e) => view! { <ErrorPanel error=e /> }.into_any(),
                    }
                })}
            </Suspense>
        </section>
    }
}

#[component]
fn ProgressPanel(
    job: Resource<Result<Option<JobView>, ConsoleError>>,
    events: Resource<Result<Vec<ProgressEvent>, ConsoleError>>,
) -> impl IntoView {
    view! {
        <Transition>
            {move || Suspend::new(async move {
                let job = job.await.ok().flatten()?;
                let events = events.await.unwrap_or_default();
                let done = job.steps.iter().filter(|s| s.state == "succeeded").count();
                let total = job.steps.len();
                Some(view! {
                    <section class="panel" aria-labelledby="progress-title">
                        <h2 id="progress-title">{if job.kind == "teardown" { "Teardown" } else { "Provisioning" }}</h2>
                        <p>
                            <progress max=total value=done aria-label="steps done"></progress>
                            <span id="progress-text">{format!(" {done} of {total} steps · job {}", job.state)}</span>
                        </p>
                        {job.error.clone().map(|e| view! { <p class="field-error">{e}</p> })}
                        <table class="table" id="steps-table">
                            <thead><tr><th scope="col">"Step"</th><th scope="col">"State"</th><th scope="col">"Failed tries"</th></tr></thead>
                            <tbody>
                                {job.steps.into_iter().map(|s| {
                                    let class = match s.state.as_str() { "succeeded" => "badge badge-ok", "failed" => "badge badge-bad", "waiting" => "badge badge-warn", _ => "badge" };
                                    let recovered = s.error.is_none();
                                    view! {
                                        <tr><td>{s.action.replace('_', " ")}<br /><code class="small wrap">{s.stack_name}</code></td><td><span class=class>{s.state}</span>{s.error.map(|e| view! { <br /><span class="small muted">{e}</span> })}</td><td><StepTries failures=s.failures last_error=s.last_error recovered /></td></tr>
                                    }
                                }).collect_view()}
                            </tbody>
                        </table>
                        <details>
                            <summary>{format!("Events ({})", events.len())}</summary>
                            <ol class="events" id="events">
                                {events.into_iter().rev().take(50).map(|e| view! {
                                    <li><time>{e.at.get(11..19).unwrap_or_default().to_string()}</time>" "<strong>{e.resource.unwrap_or_default()}</strong>" "{e.status}{e.message.map(|m| format!(" — {m}"))}</li>
                                }).collect_view()}
                            </ol>
                        </details>
                    </section>
                })
            })}
        </Transition>
    }
}

#[component]
fn SitesPanel(network: NetworkSummary) -> impl IntoView {
    view! {
        <section class="panel" aria-labelledby="sites-title">
            <h2 id="sites-title">"Sites"</h2>
            <table class="table" id="sites-table">
                <thead><tr><th scope="col">"Site"</th><th scope="col">"Account"</th><th scope="col">"VPC"</th><th scope="col">"CIDR"</th><th scope="col">"Role"</th><th scope="col">"Elastic IP"</th></tr></thead>
                <tbody>
                    {network.sites.into_iter().map(|s| view! {
                        <tr>
                            <td>{s.name}</td>
                            <td><code>{s.account_id}</code></td>
                            <td><code>{s.vpc_id}</code><br /><span class="muted small">{s.region}</span></td>
                            <td>{s.cidrs.join(", ")}</td>
                            <td>{format!("{:?}", s.role).to_lowercase()}</td>
                            <td>{s.outputs.get("PublicIp").and_then(|v| v.as_str()).map(str::to_string).unwrap_or_else(|| "—".into())}</td>
                        </tr>
                    }).collect_view()}
                </tbody>
            </table>
        </section>
    }
}

#[component]
fn AppliancesPanel(network: NetworkSummary) -> impl IntoView {
    let site = |id: &str| network.sites.iter().find(|s| s.id == id);
    let site_name = |id: &str| {
        site(id)
            .map(|s| s.name.clone())
            .unwrap_or_else(|| id.to_string())
    };
    let peer_name = |id: &str| {
        site(id)
            .map(|s| s.region.clone())
            .unwrap_or_else(|| id.to_string())
    };
    let rows: Vec<_> = network
        .appliances
        .iter()
        .map(|a| {
            let tunnels: Vec<(String, crate::api::TunnelLive)> = a
                .tunnels
                .iter()
                .map(|t| (peer_name(&t.peer_site), t.clone()))
                .collect();
            (site_name(&a.site_id), a.clone(), tunnels)
        })
        .collect();
    view! {
        <section class="panel" aria-labelledby="appliances-title">
            <h2 id="appliances-title">"Appliances"</h2>
            {if rows.is_empty() {
                view! { <p class="muted" id="appliances-empty">"No appliance has registered yet. Appliances register by themselves once their instances boot; they appear here with their tunnels."</p> }.into_any()
            } else {
                view! {
                    <table class="table" id="appliances-table">
                        <thead><tr>
                            <th scope="col">"Site"</th><th scope="col">"Member"</th><th scope="col">"Role"</th>
                            <th scope="col">"Instance"</th><th scope="col">"Addresses"</th><th scope="col">"Last seen"</th>
                            <th scope="col">"Config"</th><th scope="col">"Tunnels (packets in / out)"</th>
                        </tr></thead>
                        <tbody>
                            {rows.into_iter().map(|(site, a, tunnels)| view! {
                                <tr data-appliance=a.instance_id.clone()>
                                    <td>{site}</td>
                                    <td>{a.member.to_uppercase()}</td>
                                    <td data-role=a.role.clone().unwrap_or_default()>
                                        {a.role.clone().unwrap_or_else(|| "—".into())}
                                        {role_detail(&a).map(|d| view! { <br /><span class="small muted role-since">{d}</span> })}
                                    </td>
                                    <td><code>{a.instance_id.clone()}</code><br /><span class="muted small">{a.availability_zone.clone()}</span></td>
                                    <td>{a.private_ip.clone()}{a.public_ip.clone().map(|p| format!(" / {p}"))}</td>
                                    <td>{a.last_seen_at.as_deref().map_or_else(|| "never".to_string(), time::to_second)}</td>
                                    <td>
                                        {a.applied_version.map(|v| format!("{:012x}", v as u64 & 0xffff_ffff_ffff)).unwrap_or_else(|| "none applied".into())}
                                        {a.config_error.clone().map(|e| view! { <br /><span class="field-error small" role="alert">{e}</span> })}
                                        {a.repaired.clone().map(|r| view! { <br /><span class="small muted repaired">{describe_repair(&r)}</span> })}
                                    </td>
                                    <td>
                                        <ul class="plain">
                                            {tunnels.into_iter().map(|(peer, t)| view! {
                                                <li>
                                                    <span class=format!("swatch swatch-{}", t.state)></span>
                                                    {format!("{peer}: {} · {} / {}", t.state, t.in_packets, t.out_packets)}
                                                    {(t.in_errors > 0).then(|| format!(" · {} errors", t.in_errors))}
                                                </li>
                                            }).collect_view()}
                                        </ul>
                                    </td>
                                </tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                }.into_any()
            }}
        </section>
    }
}

#[component]
fn DeletePanel(name: String, teardown: Action<(), Result<JobView, ConsoleError>>) -> impl IntoView {
    let typed = RwSignal::new(String::new());
    let expected = name.clone();
    view! {
        <section class="panel danger-zone" aria-labelledby="delete-title">
            <h2 id="delete-title">"Delete network"</h2>
            <p>"Deleting removes the VPC routes, the appliances and their stacks in every region. Type the network's name to confirm."</p>
            <div class="form form-grid">
                <label for="confirm-name">"Network name"</label>
                <input id="confirm-name" autocomplete="off" placeholder=name.clone()
                    prop:value=move || typed.get() on:input=move |e| typed.set(event_target_value(&e)) />
                <button type="button" class="danger-button" id="delete-network"
                    disabled=move || typed.get() != expected || teardown.pending().get()
                    on:click=move |_| { teardown.dispatch(()); }>
                    "Delete network"
                </button>
            </div>
            {move || teardown.value().get().and_then(|r| r.err()).map(|e| view! { <p class="field-error" role="alert">{e.to_string()}</p> })}
        </section>
    }
}

/// What an appliance's drift check last put back, for its Config cell.
fn describe_repair(r: &crate::api::Repaired) -> String {
    let what = match r.changes {
        0 => "lost SAs replaced with fresh ones".to_string(),
        1 => "put back 1 kernel object changed behind its back".to_string(),
        n => format!("put back {n} kernel objects changed behind its back"),
    };
    let times = match r.count {
        1 => String::new(),
        n => format!(" ({n} repairs since the agent started)"),
    };
    format!("{what} at {}{times}", time::to_second(&r.at))
}
