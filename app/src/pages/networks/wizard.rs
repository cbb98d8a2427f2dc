//! The new-network wizard: name, topology, sites picked from VPCs discovered
//! live (overlaps flagged as you pick), options, then create and review the
//! plan on the network's page.

use super::topology_name;
use crate::api::cidr::overlaps;
use crate::api::{
    create_network, discover_vpcs, list_accounts, list_kms_keys, AccountSummary, ConsoleError,
    KmsKeyChoice, NetworkOptions, NetworkRequest, NetworkSummary, SiteRequest, SiteRole,
    TopologyKind, VpcChoice, REGIONS,
};
use crate::components::ErrorPanel;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_navigate;

#[derive(Clone, Debug, PartialEq)]
struct Draft {
    /// vpcmesh's id for the account (what live listings take).
    account: String,
    /// The AWS account number.
    account_id: String,
    region: String,
    vpc_id: String,
    label: String,
    cidrs: Vec<String>,
    role: SiteRole,
}

impl Draft {
    fn overlaps(&self, cidrs: &[String]) -> bool {
        self.cidrs
            .iter()
            .any(|a| cidrs.iter().any(|b| overlaps(a, b)))
    }
}

#[component]
pub fn NewNetworkPage() -> impl IntoView {
    let accounts = Resource::new(|| (), |_| list_accounts());
    if !crate::components::viewer_may(crate::api::Action::CreateNetwork) {
        return view! {
            <Title text="New network" />
            <div class="page-header">
                <h1>"New network"</h1>
            </div>
            <section class="empty-state" id="viewer-cannot-create">
                <h2>"Viewers can only look"</h2>
                <p>"Creating a network needs a member or admin role; an admin of your organization can change yours. "<a href="/networks">"Back to networks"</a></p>
            </section>
        }
        .into_any();
    }
    view! {
        <Title text="New network" />
        <div class="page-header">
            <h1>"New network"</h1>
        </div>
        <Suspense fallback=|| view! { <p class="muted">"Loading accounts…"</p> }>
            {move || Suspend::new(async move {
                match accounts.await {
                    Ok(list) if list.is_empty() => view! {
                        <section class="empty-state">
                            <h2>"Add an AWS account first"</h2>
                            <p>"A network's sites are VPCs in your AWS accounts. "<a href="/accounts">"Add an account"</a>", then come back."</p>
                        </section>
                    }.into_any(),
                    Ok(list) => view! { <Wizard accounts=list /> }.into_any(),
                    Err(e) => view! { <ErrorPanel error=e /> }.into_any(),
                }
            })}
        </Suspense>
    }
    .into_any()
}

const TOPOLOGIES: [(TopologyKind, &str, &str); 3] = [
    (TopologyKind::FullMesh, "full_mesh", "Every site tunnels to every other site. Best latency; n sites make n(n-1)/2 tunnels."),
    (TopologyKind::Transit, "transit", "One hub; every spoke tunnels only to it and the hub forwards between spokes."),
    (TopologyKind::MeshWithLeaves, "mesh_with_leaves", "Edge sites form a full mesh; leaf VPCs in the same region attach to their edge through a Transit Gateway, without appliances."),
];

#[component]
fn Wizard(accounts: Vec<AccountSummary>) -> impl IntoView {
    let name = RwSignal::new(String::new());
    let topology = RwSignal::new(TopologyKind::FullMesh);
    let sites = RwSignal::new(Vec::<Draft>::new());
    let pick_account = RwSignal::new(accounts.first().map(|a| a.id.clone()).unwrap_or_default());
    let pick_region = RwSignal::new("us-east-1".to_string());
    let instance_types = RwSignal::new("t3.small".to_string());
    let ha = RwSignal::new(true);
    let spot = RwSignal::new(false);
    let nat_t = RwSignal::new(true);
    let kms_key = RwSignal::new(String::new());
    let find = Action::new(|(account, region): &(String, String)| {
        let (account, region) = (account.clone(), region.clone());
        async move {
            discover_vpcs(account, region.clone())
                .await
                .map(|v| (region, v))
        }
    });
    let create = Action::new(|req: &NetworkRequest| create_network(req.clone()));
    let navigate = use_navigate();
    Effect::new(move |_| {
        if let Some(Ok(n)) = create.value().get() {
            let n: NetworkSummary = n;
            navigate(&format!("/networks/{}", n.id), Default::default());
        }
    });
    let key_labels: Vec<(String, String)> = accounts
        .iter()
        .map(|a| (a.id.clone(), format!("{} ({})", a.label, a.account_id)))
        .collect();
    let account_numbers: Vec<(String, String)> = accounts
        .iter()
        .map(|a| (a.id.clone(), a.account_id.clone()))
        .collect();
    let account_of = move |id: &str| {
        account_numbers
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, n)| n.clone())
            .unwrap_or_default()
    };
    let submit = move |_| {
        let types: Vec<String> = instance_types
            .get()
            .split(',')
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        create.dispatch(NetworkRequest {
            name: name.get(),
            topology: topology.get(),
            sites: sites
                .get()
                .into_iter()
                .map(|d| SiteRequest {
                    account_id: d.account_id,
                    region: d.region,
                    vpc_id: d.vpc_id,
                    role: d.role,
                    name: Some(d.label),
                })
                .collect(),
            options: NetworkOptions {
                instance_types: types,
                ha: ha.get(),
                spot: spot.get(),
                nat_t: nat_t.get(),
                kms_key_arn: kms_key.get(),
            },
        });
    };
    let warnings = move || {
        let s = sites.get();
        let mut out = Vec::new();
        for (i, a) in s.iter().enumerate() {
            for b in &s[i + 1..] {
                if a.overlaps(&b.cidrs) {
                    out.push(format!(
                        "{} and {} overlap: VPCs in one network need distinct addresses.",
                        a.label, b.label
                    ));
                }
            }
        }
        if topology.get() == TopologyKind::Transit
            && !s.iter().any(|d| d.role == SiteRole::Hub)
            && s.len() >= 2
        {
            out.push("A transit network needs a hub: mark one site as hub.".to_string());
        }
        out
    };

    view! {
        <section class="panel" aria-labelledby="step-name">
            <h2 id="step-name">"1. Name"</h2>
            <div class="form form-grid">
                <label for="network-name">"Network name"</label>
                <input id="network-name" maxlength="64" placeholder="production-mesh"
                    prop:value=move || name.get() on:input=move |e| name.set(event_target_value(&e)) />
            </div>
        </section>

        <section class="panel" aria-labelledby="step-topology">
            <h2 id="step-topology">"2. Topology"</h2>
            <div class="choices" role="radiogroup" aria-labelledby="step-topology">
                {TOPOLOGIES.into_iter().map(|(kind, id, text)| view! {
                    <label class="choice" class:chosen=move || topology.get() == kind>
                        <input type="radio" name="topology" id=format!("topology-{id}") value=id
                            prop:checked=move || topology.get() == kind
                            on:change=move |_| {
                                topology.set(kind);
                                // Roles that make no sense for the new topology fall back to edge.
                                sites.update(|s| s.iter_mut().for_each(|d| {
                                    let ok = matches!((kind, d.role), (_, SiteRole::Edge) | (TopologyKind::Transit, SiteRole::Hub) | (TopologyKind::MeshWithLeaves, SiteRole::Leaf));
                                    if !ok { d.role = SiteRole::Edge; }
                                }));
                            } />
                        <TopologyIcon kind />
                        <strong>{topology_name(kind)}</strong>
                        <span class="muted small">{text}</span>
                    </label>
                }).collect_view()}
            </div>
        </section>

        <section class="panel" aria-labelledby="step-sites">
            <h2 id="step-sites">"3. Sites"</h2>
            <p class="muted">"Pick an account and a region; vpcmesh lists that region's VPCs live through the account's role."</p>
            <div class="picker">
                <label for="pick-account">"Account"</label>
                <select id="pick-account" on:change=move |e| pick_account.set(event_target_value(&e))>
                    {accounts.iter().map(|a| view! { <option value=a.id.clone()>{format!("{} ({})", a.label, a.account_id)}</option> }).collect_view()}
                </select>
                <label for="pick-region">"Region"</label>
                <select id="pick-region" on:change=move |e| pick_region.set(event_target_value(&e))>
                    {REGIONS.iter().map(|r| view! { <option value=*r selected=*r == "us-east-1">{*r}</option> }).collect_view()}
                </select>
                <button type="button" class="secondary" id="find-vpcs"
                    disabled=move || find.pending().get()
                    on:click=move |_| { find.dispatch((pick_account.get(), pick_region.get())); }>
                    {move || if find.pending().get() { "Looking…" } else { "Find VPCs" }}
                </button>
            </div>
            {move || find.value().get().map(|r| match r {
                Err(e) => view! { <p class="field-error" role="alert">{e.to_string()}</p> }.into_any(),
                Ok((region, vpcs)) if vpcs.is_empty() => view! { <p class="muted" id="vpc-list">{format!("No VPCs in {region} for this account.")}</p> }.into_any(),
                Ok((region, vpcs)) => {
                    let account = pick_account.get_untracked();
                    let account_id = account_of(&account);
                    view! { <VpcList region vpcs account account_id sites topology /> }.into_any()
                }
            })}
            <SitesTable sites topology />
            <ul class="warnings" id="site-warnings">
                {move || warnings().into_iter().map(|w| view! { <li class="field-error">{w}</li> }).collect_view()}
            </ul>
        </section>

        <section class="panel" aria-labelledby="step-options">
            <h2 id="step-options">"4. Options"</h2>
            <div class="form form-grid">
                <label for="instance-types">"Instance types"</label>
                <input id="instance-types" prop:value=move || instance_types.get() on:input=move |e| instance_types.set(event_target_value(&e))
                    aria-describedby="instance-types-help" />
                <span></span><span class="muted small" id="instance-types-help">"One type, or several separated by commas for a spot pool."</span>
                <label for="opt-ha">"HA pair"</label>
                <span><input type="checkbox" id="opt-ha" prop:checked=move || ha.get() on:change=move |e| ha.set(event_target_checked(&e)) />" two appliances per site in two AZs"</span>
                <label for="opt-spot">"Spot"</label>
                <span><input type="checkbox" id="opt-spot" prop:checked=move || spot.get() on:change=move |e| spot.set(event_target_checked(&e)) />" spot instances (mixed types)"</span>
                <label for="opt-nat-t">"NAT-T"</label>
                <span><input type="checkbox" id="opt-nat-t" prop:checked=move || nat_t.get() on:change=move |e| nat_t.set(event_target_checked(&e)) />" ESP in UDP 4500"</span>
                <KeyPicker sites kms_key accounts=key_labels />
            </div>
        </section>

        <section class="panel" aria-labelledby="step-create">
            <h2 id="step-create">"5. Review"</h2>
            <p class="muted">"vpcmesh checks every VPC again, compiles the topology and creates the network's first key with your KMS key. Nothing is provisioned yet: the next page shows the plan."</p>
            <button type="button" class="primary" id="create-network" on:click=submit disabled=move || create.pending().get()>
                {move || if create.pending().get() { "Checking…" } else { "Create and review plan" }}
            </button>
            {move || create.value().get().and_then(|r| r.err()).map(|e: ConsoleError| {
                let field = match &e { ConsoleError::InvalidInput { field, .. } => Some(field.clone()), _ => None };
                view! { <p class="field-error" role="alert" id="create-error" data-field=field>{e.to_string()}</p> }
            })}
        </section>
    }
}

/// The KMS key: picked from the keys (by alias) of one of the network's
/// accounts in a region, listed live, or typed as an ARN by hand. It looks in
/// the first site's account and region unless the user chooses another.
#[component]
fn KeyPicker(
    sites: RwSignal<Vec<Draft>>,
    kms_key: RwSignal<String>,
    /// (vpcmesh id, label) of every account.
    accounts: Vec<(String, String)>,
) -> impl IntoView {
    let key_account = RwSignal::new(None::<String>);
    let key_region = RwSignal::new(None::<String>);
    let context = Memo::new(move |_| {
        let s = sites.get();
        let first = s.first()?;
        let account = key_account
            .get()
            .filter(|a| s.iter().any(|d| &d.account == a))
            .unwrap_or_else(|| first.account.clone());
        let region = key_region.get().unwrap_or_else(|| first.region.clone());
        Some((account, region))
    });
    let list = Action::new(|ctx: &(String, String)| {
        let ctx = ctx.clone();
        async move {
            let keys = list_kms_keys(ctx.0.clone(), ctx.1.clone()).await;
            (ctx, keys)
        }
    });
    // Effects run only in the browser: the server renders no listing and
    // hydration finds the same page.
    Effect::new(move |_| {
        if let Some(ctx) = context.get() {
            list.dispatch(ctx);
        }
    });
    // The answer for the context shown now; a slower, older one is ignored.
    let answer = move || {
        list.value()
            .get()
            .filter(|(ctx, _)| Some(ctx) == context.get().as_ref())
            .map(|(_, keys)| keys)
    };
    let listed = move || answer().and_then(Result::ok).unwrap_or_default();
    // The network's accounts, first site's first, each once.
    let site_accounts = move || {
        let mut seen = std::collections::HashSet::new();
        sites
            .get()
            .into_iter()
            .filter(|d| seen.insert(d.account.clone()))
            .map(|d| {
                let label = accounts
                    .iter()
                    .find(|(id, _)| id == &d.account)
                    .map_or_else(|| d.account_id.clone(), |(_, l)| l.clone());
                (d.account, label)
            })
            .collect::<Vec<_>>()
    };
    let hint = move || {
        let Some((_, region)) = context.get() else {
            return view! { <span class="muted small" id="kms-key-hint">"Add a site to pick one of its account's keys, or type a key ARN."</span> }.into_any();
        };
        match answer() {
            None => view! { <span class="muted small" id="kms-key-hint" data-state="listing">{format!("Listing keys in {region}…")}</span> }.into_any(),
            Some(Ok(keys)) => {
                let text = match keys.len() {
                    1 => format!("1 key in {region}"),
                    n => format!("{n} keys in {region}"),
                };
                view! { <span class="muted small" id="kms-key-hint" data-state="listed">{text}</span> }.into_any()
            }
            // Listing failed: typing an ARN still works.
            Some(Err(e)) => view! { <span class="field-error small" id="kms-key-hint" data-state="failed" role="alert">{e.to_string()}</span> }.into_any(),
        }
    };

    view! {
        {move || context.get().map(|(account, region)| view! {
            <label for="kms-key-region">"Key from"</label>
            <span class="picker">
                <select id="kms-key-account" aria-label="Account of the KMS key"
                    on:change=move |e| key_account.set(Some(event_target_value(&e)))>
                    {site_accounts().into_iter().map(|(id, label)| {
                        let chosen = id == account;
                        view! { <option value=id prop:selected=chosen>{label}</option> }
                    }).collect_view()}
                </select>
                <select id="kms-key-region" aria-label="Region of the KMS key"
                    on:change=move |e| key_region.set(Some(event_target_value(&e)))>
                    {REGIONS.iter().map(|r| view! { <option value=*r prop:selected=*r == region>{*r}</option> }).collect_view()}
                </select>
            </span>
            <label for="kms-key-pick">"Pick a key"</label>
            <select id="kms-key-pick" disabled=move || listed().is_empty()
                on:change=move |e| {
                    let arn = event_target_value(&e);
                    if !arn.is_empty() { kms_key.set(arn); }
                }>
                <option value="">"Choose by alias…"</option>
                {move || listed().into_iter().map(|k| {
                    let arn = k.key_arn.clone();
                    view! { <option value=k.key_arn.clone() prop:selected=move || kms_key.get() == arn>{k.alias.clone()}</option> }
                }).collect_view()}
            </select>
        })}
        <label for="kms-key">"KMS key ARN"</label>
        <input id="kms-key" list="kms-keys" aria-describedby="kms-key-hint"
            placeholder="arn:aws:kms:us-east-1:123456789012:key/…" prop:value=move || kms_key.get()
            on:input=move |e| kms_key.set(event_target_value(&e)) />
        <span></span>
        {hint}
        // Suggestions while typing in the ARN field itself.
        <datalist id="kms-keys">
            {move || listed().into_iter().map(|k: KmsKeyChoice| view! {
                <option value=k.key_arn.clone() label=k.alias.clone()></option>
            }).collect_view()}
        </datalist>
    }
    // Erased: the wizard's view type is otherwise deeper than rustc lays out.
    .into_any()
}

#[component]
fn VpcList(
    region: String,
    vpcs: Vec<VpcChoice>,
    account: String,
    account_id: String,
    sites: RwSignal<Vec<Draft>>,
    topology: RwSignal<TopologyKind>,
) -> impl IntoView {
    view! {
        <table class="table" id="vpc-list">
            <caption class="muted small">{format!("VPCs in {region}")}</caption>
            <thead><tr><th scope="col">"VPC"</th><th scope="col">"CIDR"</th><th scope="col">"AZs"</th><th scope="col"><span class="visually-hidden">"Add"</span></th></tr></thead>
            <tbody>
                {vpcs.into_iter().map(|v| {
                    let draft = Draft {
                        account: account.clone(),
                        account_id: account_id.clone(),
                        region: region.clone(),
                        vpc_id: v.vpc_id.clone(),
                        label: format!("{region} {}", v.name.clone().unwrap_or_else(|| v.vpc_id.clone())),
                        cidrs: v.cidrs.clone(),
                        role: SiteRole::Edge,
                    };
                    let cidrs = v.cidrs.clone();
                    let vpc_id = v.vpc_id.clone();
                    let clash = move || sites.get().iter().find(|d| d.overlaps(&cidrs)).map(|d| d.label.clone());
                    let clash2 = clash.clone();
                    let added = move || sites.get().iter().any(|d| d.vpc_id == vpc_id);
                    view! {
                        <tr data-vpc=v.vpc_id.clone()>
                            <td><code>{v.vpc_id.clone()}</code>" "{v.name.clone().unwrap_or_default()}</td>
                            <td>{v.cidrs.join(", ")}{move || clash().map(|c| view! { <span class="badge badge-bad small">{format!(" overlaps {c}")}</span> })}</td>
                            <td>{v.availability_zones.len()}</td>
                            <td class="actions">
                                <button type="button" class="secondary add-vpc"
                                    disabled=move || added() || clash2().is_some()
                                    on:click=move |_| {
                                        let mut d = draft.clone();
                                        if topology.get() == TopologyKind::Transit && !sites.get().iter().any(|s| s.role == SiteRole::Hub) {
                                            d.role = SiteRole::Hub;
                                        }
                                        sites.update(|s| s.push(d));
                                    }>
                                    "Add"
                                </button>
                            </td>
                        </tr>
                    }
                }).collect_view()}
            </tbody>
        </table>
    }
}

#[component]
fn SitesTable(sites: RwSignal<Vec<Draft>>, topology: RwSignal<TopologyKind>) -> impl IntoView {
    let roles = move || -> Vec<(SiteRole, &'static str)> {
        match topology.get() {
            TopologyKind::FullMesh => vec![(SiteRole::Edge, "edge")],
            TopologyKind::Transit => vec![(SiteRole::Hub, "hub"), (SiteRole::Edge, "spoke")],
            TopologyKind::MeshWithLeaves => {
                vec![(SiteRole::Edge, "edge"), (SiteRole::Leaf, "leaf")]
            }
        }
    };
    view! {
        <table class="table" id="picked-sites">
            <caption class="muted small">{move || format!("{} site(s) in this network", sites.get().len())}</caption>
            <thead><tr><th scope="col">"Site"</th><th scope="col">"Account"</th><th scope="col">"CIDR"</th><th scope="col">"Role"</th><th scope="col"><span class="visually-hidden">"Remove"</span></th></tr></thead>
            <tbody>
                {move || sites.get().into_iter().enumerate().map(|(i, d)| {
                    let role = d.role;
                    view! {
                        <tr data-site-vpc=d.vpc_id.clone()>
                            <td>{d.label.clone()}</td>
                            <td><code>{d.account_id.clone()}</code></td>
                            <td>{d.cidrs.join(", ")}</td>
                            <td>
                                <select aria-label=format!("Role of {}", d.label) on:change=move |e| {
                                    let v = event_target_value(&e);
                                    let r = match v.as_str() { "hub" => SiteRole::Hub, "leaf" => SiteRole::Leaf, _ => SiteRole::Edge };
                                    sites.update(|s| {
                                        if r == SiteRole::Hub { s.iter_mut().for_each(|x| if x.role == SiteRole::Hub { x.role = SiteRole::Edge }); }
                                        if let Some(x) = s.get_mut(i) { x.role = r; }
                                    });
                                }>
                                    {roles().into_iter().map(|(r, label)| view! {
                                        <option value=label selected=r == role>{label}</option>
                                    }).collect_view()}
                                </select>
                            </td>
                            <td class="actions"><button type="button" class="ghost danger" on:click=move |_| sites.update(|s| { if i < s.len() { s.remove(i); } })>"Remove"</button></td>
                        </tr>
                    }
                }).collect_view()}
            </tbody>
        </table>
    }
}

/// A small diagram of each topology for the chooser.
#[component]
fn TopologyIcon(kind: TopologyKind) -> impl IntoView {
    let nodes = [(20.0, 8.0), (36.0, 34.0), (4.0, 34.0)];
    type Point = (f64, f64);
    let lines: Vec<(Point, Point, bool)> = match kind {
        TopologyKind::FullMesh => vec![
            (nodes[0], nodes[1], false),
            (nodes[1], nodes[2], false),
            (nodes[2], nodes[0], false),
        ],
        TopologyKind::Transit => vec![(nodes[0], nodes[1], false), (nodes[0], nodes[2], false)],
        TopologyKind::MeshWithLeaves => vec![
            (nodes[0], nodes[1], false),
            (nodes[1], nodes[2], false),
            (nodes[2], nodes[0], false),
            (nodes[1], (44.0, 12.0), true),
        ],
    };
    view! {
        <svg class="topology-icon" viewBox="0 0 48 42" aria-hidden="true">
            {lines.into_iter().map(|(a, b, dashed)| view! {
                <line x1=a.0 y1=a.1 x2=b.0 y2=b.1 class=if dashed { "attachment" } else { "tunnel" } />
            }).collect_view()}
            {nodes.into_iter().map(|(x, y)| view! { <circle cx=x cy=y r="4" class="icon-node" /> }).collect_view()}
            {(kind == TopologyKind::MeshWithLeaves).then(|| view! { <circle cx="44" cy="12" r="3" class="icon-leaf" /> })}
        </svg>
    }
}
