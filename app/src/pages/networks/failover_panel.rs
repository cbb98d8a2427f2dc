//! The high-availability panel: per site of a pair, who is active and
//! since when, the latest takeover the server asked for, and (for admins)
//! "Fail over now" behind a confirmation; below, the network's failover
//! history.

use crate::api::{
    describe_ha_reason, ApplianceSummary, FailOver, FailoverEntry, NetworkStatus, NetworkSummary,
    TakeoverView,
};
use crate::components::time;
use leptos::prelude::*;

/// The panel's server action and its confirmation, kept by the page (the
/// panel is rebuilt on every refresh); the page refetches the network when
/// the action completes.
#[derive(Clone, Copy)]
pub struct FailoverAction {
    ask: ServerAction<FailOver>,
    /// The site whose "move traffic" box is ticked. Every answer unticks
    /// it: each takeover is confirmed on its own (a refresh keeps the
    /// page's checkboxes as they were, and the next one would go the other way).
    confirmed: RwSignal<Option<String>>,
}

impl FailoverAction {
    pub fn new() -> Self {
        let ask = ServerAction::<FailOver>::new();
        let confirmed = RwSignal::new(None);
        Effect::new(move |_| {
            ask.version().get();
            confirmed.set(None);
        });
        FailoverAction { ask, confirmed }
    }

    pub fn version(&self) -> usize {
        self.ask.version().get()
    }
}

/// A site with both members registered.
struct Pair {
    site_id: String,
    name: String,
    region: String,
    active: Option<ApplianceSummary>,
    passive: Option<ApplianceSummary>,
    takeover: Option<TakeoverView>,
}

fn pairs(network: &NetworkSummary) -> Vec<Pair> {
    network
        .sites
        .iter()
        .filter_map(|s| {
            let members: Vec<&ApplianceSummary> = network
                .appliances
                .iter()
                .filter(|a| a.site_id == s.id)
                .collect();
            if members.len() < 2 {
                return None;
            }
            let with = |role: &str| {
                members
                    .iter()
                    .find(|a| a.role.as_deref() == Some(role))
                    .map(|a| (*a).clone())
            };
            Some(Pair {
                site_id: s.id.clone(),
                name: s.name.clone(),
                region: s.region.clone(),
                active: with("active"),
                passive: with("passive"),
                takeover: network
                    .takeovers
                    .iter()
                    .find(|t| t.site_id == s.id)
                    .cloned(),
            })
        })
        .collect()
}

fn who(a: &ApplianceSummary) -> String {
    format!("{} ({})", a.member.to_uppercase(), a.instance_id)
}

/// "active since …" with the reason in words, for the appliances table too.
pub fn role_detail(a: &ApplianceSummary) -> Option<String> {
    let since = a
        .role_since
        .as_deref()
        .map(|s| format!("since {}", time::to_second(s)));
    let reason = a.ha_reason.as_deref().map(describe_ha_reason);
    match (since, reason) {
        (Some(s), Some(r)) => Some(format!("{s} · {r}")),
        (Some(s), None) => Some(s),
        (None, Some(r)) => Some(r),
        (None, None) => None,
    }
}

#[component]
pub fn FailoverPanel(network: NetworkSummary, action: FailoverAction) -> impl IntoView {
    let FailoverAction {
        ask: action,
        confirmed,
    } = action;
    let is_admin = crate::components::viewer_may(crate::api::Action::FailOver);
    let live = network.status == NetworkStatus::Ready;
    let pairs = pairs(&network);
    let id = network.id.clone();
    let done: Vec<(String, u64)> = network
        .takeovers
        .iter()
        .filter(|t| t.done_at.is_some())
        .map(|t| (t.site_id.clone(), t.number))
        .collect();
    view! {
        <section class="panel" aria-labelledby="failover-title" id="failover">
            <h2 id="failover-title">"High availability"</h2>
            {move || action.value().get().and_then(|r| match r {
                // Once done, the site's row and the history tell the rest.
                Ok(t) if done.contains(&(t.site_id.clone(), t.number)) => None,
                Ok(t) => Some(view! {
                    <p class="notice notice-ok" role="status" id="failover-result">
                        {format!("Asked member {} ({}) to take over (request {}). The failover shows below once it reports.", t.member.to_uppercase(), t.instance_id, t.number)}
                    </p>
                }.into_any()),
                Err(e) => Some(view! { <p class="field-error" role="alert" id="failover-error">{e.to_string()}</p> }.into_any()),
            })}
            {if pairs.is_empty() {
                view! { <p class="muted" id="ha-empty">"No site has both members of its pair registered yet. Each site runs an active and a passive appliance; the passive takes over within a second when the active fails."</p> }.into_any()
            } else {
                view! {
                    <table class="table" id="ha-sites-table">
                        <thead><tr>
                            <th scope="col">"Site"</th><th scope="col">"Active"</th><th scope="col">"Passive"</th>
                            <th scope="col">"Last takeover asked"</th><th scope="col"><span class="visually-hidden">"Actions"</span></th>
                        </tr></thead>
                        <tbody>
                            {pairs.into_iter().map(|p| {
                                let confirm = p.passive.as_ref().map(|a| format!(" move traffic to {}", a.member.to_uppercase()));
                                let id = id.clone();
                                let site_id = p.site_id.clone();
                                let (checked_for, ticked_for) = (p.site_id.clone(), p.site_id.clone());
                                let can_fail_over = is_admin && live && p.passive.is_some();
                                view! {
                                    <tr data-site=p.site_id.clone()>
                                        <td>{p.name}<br /><span class="muted small">{p.region}</span></td>
                                        <td>{p.active.as_ref().map_or_else(|| view! { <span class="muted">"none reports active"</span> }.into_any(), |a| view! {
                                            {who(a)}<br /><span class="small muted">{role_detail(a)}</span>
                                        }.into_any())}</td>
                                        <td>{p.passive.as_ref().map_or_else(|| view! { <span class="muted">"none reports passive"</span> }.into_any(), |a| view! {
                                            {who(a)}<br /><span class="small muted">{role_detail(a)}</span>
                                        }.into_any())}</td>
                                        <td class="takeover">{p.takeover.map(|t| takeover_text(&t))}</td>
                                        <td class="actions">
                                            {can_fail_over.then(|| view! {
                                                <ActionForm action=action attr:class="inline confirm-form fail-over-form">
                                                    <input type="hidden" name="id" value=id />
                                                    <input type="hidden" name="site_id" value=site_id />
                                                    <label class="small"><input type="checkbox" required class="confirm-fail-over"
                                                        prop:checked=move || confirmed.get().as_ref() == Some(&checked_for)
                                                        on:change=move |e| confirmed.set(event_target_checked(&e).then(|| ticked_for.clone())) />{confirm}</label>
                                                    <button type="submit" class="ghost danger fail-over" disabled=move || action.pending().get()>"Fail over now"</button>
                                                </ActionForm>
                                            })}
                                        </td>
                                    </tr>
                                }
                            }).collect_view()}
                        </tbody>
                    </table>
                }.into_any()
            }}
            <h3 id="failovers-title">"Failovers"</h3>
            <FailoverHistory entries=network.failovers.clone() />
            <p class="muted small">"The members of a pair watch each other with heartbeats and take over on their own. The server's health monitor is the backstop: when an active stops reporting while its partner still does, it asks the partner to take over. Fail over now asks the same of the passive member, for a drill or to move traffic off an instance; there is no automatic fail-back."</p>
        </section>
    }
}

fn takeover_text(t: &TakeoverView) -> String {
    let head = format!(
        "Request {} by {} at {}: member {}",
        t.number,
        t.requested_by.describe(),
        time::to_second(&t.requested_at),
        t.member.to_uppercase()
    );
    match &t.done_at {
        Some(done) => format!("{head} took over at {}", time::to_second(done)),
        None => format!("{head} is taking over…"),
    }
}

#[component]
fn FailoverHistory(entries: Vec<FailoverEntry>) -> impl IntoView {
    if entries.is_empty() {
        return view! { <p class="muted" id="failovers-empty">"No failover yet."</p> }.into_any();
    }
    view! {
        <table class="table" id="failovers-table">
            <thead><tr>
                <th scope="col">"Time"</th><th scope="col">"Site"</th><th scope="col">"From → to"</th>
                <th scope="col">"Reason"</th><th scope="col">"Requested by"</th>
            </tr></thead>
            <tbody>
                {entries.into_iter().map(|f| {
                    let from = match (&f.from_member, &f.from_instance_id) {
                        (Some(m), Some(i)) => format!("{} ({i})", m.to_uppercase()),
                        _ => "unknown".to_string(),
                    };
                    view! {
                        <tr data-failover=f.at.clone() data-reason=f.reason.clone()>
                            <td>{time::to_second(&f.at)}</td>
                            <td>{f.site_name}<br /><span class="muted small">{f.region}</span></td>
                            <td>{format!("{from} → {} ({})", f.to_member.to_uppercase(), f.to_instance_id)}</td>
                            <td>{describe_ha_reason(&f.reason)}</td>
                            <td>{f.requested_by.map_or_else(|| "—".to_string(), |b| b.describe())}</td>
                        </tr>
                    }
                }).collect_view()}
            </tbody>
        </table>
    }
    .into_any()
}
