//! The connectivity panel: "Check connectivity" has every site's appliance
//! ping the others through the tunnels (from its own inside address), and
//! the latest check shows per pair of sites the loss and round-trip time of
//! each direction, updating while the reports come in.

use crate::api::{
    CheckConnectivity, ConnectivityCheck, NetworkStatus, NetworkSummary, PairState, PathResult,
};
use crate::components::time;
use leptos::prelude::*;

/// The panel's server action, kept by the page (the panel is rebuilt on
/// every refresh); the page refetches the network when it completes.
#[derive(Clone, Copy)]
pub struct ConnectivityAction(pub ServerAction<CheckConnectivity>);

impl ConnectivityAction {
    pub fn new() -> Self {
        ConnectivityAction(ServerAction::new())
    }

    pub fn version(&self) -> usize {
        self.0.version().get()
    }

    /// A check is waiting for reports: the page then refreshes every second.
    pub fn running(network: &NetworkSummary) -> bool {
        network.connectivity.as_ref().is_some_and(|c| c.running)
    }
}

#[component]
pub fn ConnectivityPanel(network: NetworkSummary, action: ConnectivityAction) -> impl IntoView {
    let action = action.0;
    let ready = network.status == NetworkStatus::Ready;
    let running = ConnectivityAction::running(&network);
    let may_check = crate::components::viewer_may(crate::api::Action::CheckConnectivity);
    let hint = if !ready {
        Some("Available once the network is provisioned: the appliances do the pinging.")
    } else if running {
        Some("Checking: the appliances ping each other; results appear as they report.")
    } else {
        None
    };
    view! {
        <section class="panel" aria-labelledby="connectivity-title" id="connectivity">
            <div class="panel-header">
                <h2 id="connectivity-title">"Connectivity"</h2>
                {may_check.then(|| view! {
                <ActionForm action=action attr:class="inline" attr:id="connectivity-form">
                    <input type="hidden" name="id" value=network.id.clone() />
                    <button type="submit" class="secondary" id="check-connectivity"
                        aria-describedby=hint.map(|_| "connectivity-hint")
                        disabled=move || !ready || running || action.pending().get()>
                        {move || if action.pending().get() { "Starting…" } else { "Check connectivity" }}
                    </button>
                </ActionForm>
                })}
            </div>
            {hint.map(|h| view! { <p class="muted small" id="connectivity-hint">{h}</p> })}
            {move || action.value().get().and_then(|r| r.err()).map(|e| view! {
                <p class="field-error" role="alert" id="connectivity-error">{e.to_string()}</p>
            })}
            {match network.connectivity.clone() {
                None => view! {
                    <p class="muted" id="connectivity-empty">"Not checked yet. A check sends a few ICMP echoes from every site's active appliance to the others' inside addresses, through the tunnels, and shows loss and round-trip time per pair."</p>
                }.into_any(),
                Some(check) => view! { <CheckTable check /> }.into_any(),
            }}
        </section>
    }
}

#[component]
fn CheckTable(check: ConnectivityCheck) -> impl IntoView {
    let by = check
        .requested_by
        .as_deref()
        .map(|e| format!(" by {e}"))
        .unwrap_or_default();
    let progress = if check.running {
        "waiting for reports…".to_string()
    } else {
        match &check.finished_at {
            Some(at) => format!("all reported at {}", time::to_second(at)),
            None => "ended".to_string(),
        }
    };
    view! {
        <p id="connectivity-summary" data-running=check.running.to_string()>
            {format!(
                "Checked at {}{by} · {} echoes each way, {} ms apart · {progress}",
                time::to_second(&check.requested_at), check.count, check.interval_ms
            )}
        </p>
        <table class="table" id="connectivity-table">
            <thead><tr>
                <th scope="col">"Sites"</th><th scope="col">"State"</th>
                <th scope="col">"A → B"</th><th scope="col">"B → A"</th>
            </tr></thead>
            <tbody>
                {check.pairs.into_iter().map(|p| {
                    let state = p.state;
                    view! {
                        <tr data-pair=format!("{}:{}", p.a.id, p.b.id) data-state=state.as_str()>
                            <td>{p.a.name}" "<span class="muted small">{p.a.region}</span>" ↔ "{p.b.name}" "<span class="muted small">{p.b.region}</span></td>
                            <td><span class=state_class(state)>{state.as_str()}</span></td>
                            <td>{direction(p.a_to_b.as_ref(), state)}</td>
                            <td>{direction(p.b_to_a.as_ref(), state)}</td>
                        </tr>
                    }
                }).collect_view()}
            </tbody>
        </table>
    }
}

/// Green when everything came back, red when something did not, amber while waiting.
fn state_class(s: PairState) -> &'static str {
    match s {
        PairState::Ok => "badge badge-ok",
        PairState::Pending => "badge badge-warn",
        PairState::Loss | PairState::Unreachable | PairState::NoReport => "badge badge-bad",
    }
}

/// One direction: loss and average round trip, min/max in the tooltip.
fn direction(r: Option<&PathResult>, pair: PairState) -> AnyView {
    let Some(r) = r else {
        let text = if pair == PairState::Pending {
            "waiting"
        } else {
            "no report"
        };
        return view! { <span class="muted">{text}</span> }.into_any();
    };
    let title = match (r.rtt_min_us, r.rtt_avg_us, r.rtt_max_us) {
        (Some(min), Some(avg), Some(max)) => format!(
            "{} of {} replies · min {} / avg {} / max {}",
            r.received,
            r.sent,
            ms(min),
            ms(avg),
            ms(max)
        ),
        _ => format!("{} of {} replies", r.received, r.sent),
    };
    let text = match r.rtt_avg_us {
        Some(avg) => format!("{}% loss · {}", r.loss_percent, ms(avg)),
        None => format!("{}% loss", r.loss_percent),
    };
    view! { <span class="rtt" title=title>{text}</span> }.into_any()
}

/// Microseconds as milliseconds, two decimals below 10 ms, one above
/// (rounded half up, in integers so 175 µs reads 0.18 ms).
pub fn ms(us: u32) -> String {
    let us = u64::from(us);
    if us < 9_995 {
        let h = (us + 5) / 10;
        format!("{}.{:02} ms", h / 100, h % 100)
    } else {
        let t = (us + 50) / 100;
        format!("{}.{} ms", t / 10, t % 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_read_in_milliseconds() {
        assert_eq!(ms(175), "0.18 ms");
        assert_eq!(ms(1_250), "1.25 ms");
        assert_eq!(ms(84_321), "84.3 ms");
        assert_eq!(ms(9_996), "10.0 ms");
        assert_eq!(ms(0), "0.00 ms");
    }
}
