//! The key epochs panel: the epochs and their states, a rotation's live
//! progress, Rotate now / Invalidate behind confirmations, and the
//! automatic rotation schedule.

use crate::api::{
    ConsoleError, InvalidateKey, KeyEpochState, NetworkStatus, NetworkSummary, RotateKey,
    SetRotationSchedule,
};
use crate::components::time;
use leptos::prelude::*;

/// The panel's server actions; the page refetches the network after any.
#[derive(Clone, Copy)]
pub struct KeyActions {
    pub rotate: ServerAction<RotateKey>,
    pub invalidate: ServerAction<InvalidateKey>,
    pub schedule: ServerAction<SetRotationSchedule>,
}

impl KeyActions {
    pub fn new() -> Self {
        KeyActions {
            rotate: ServerAction::new(),
            invalidate: ServerAction::new(),
            schedule: ServerAction::new(),
        }
    }

    /// Changes whenever any of them completes.
    pub fn version(&self) -> usize {
        self.rotate.version().get()
            + self.invalidate.version().get()
            + self.schedule.version().get()
    }

    /// The latest refusal, for display next to the panel's controls.
    pub fn error(&self) -> Option<ConsoleError> {
        let err = |v: Option<Result<NetworkSummary, ConsoleError>>| v.and_then(|r| r.err());
        err(self.rotate.value().get())
            .or_else(|| err(self.invalidate.value().get()))
            .or_else(|| err(self.schedule.value().get()))
    }
}

#[component]
pub fn KeysPanel(network: NetworkSummary, actions: KeyActions) -> impl IntoView {
    let KeyActions {
        rotate,
        invalidate,
        schedule,
    } = actions;
    let is_admin = crate::components::viewer_may(crate::api::Action::RotateKeys);
    let live = !matches!(
        network.status,
        NetworkStatus::Deleting | NetworkStatus::Deleted
    );
    let id = network.id.clone();
    let rotate_id = network.id.clone();
    let rotating = network
        .key_epochs
        .iter()
        .find_map(|k| k.rotation.clone().map(|p| (k.epoch, p)));
    let retiring = network
        .key_epochs
        .iter()
        .find(|k| k.state == KeyEpochState::Retiring)
        .map(|k| k.epoch);
    let error = move || actions.error();
    let schedule_id = network.id.clone();
    let every = network.rotate_every_days;
    let schedule_text = match (every, &network.next_rotation_at) {
        (Some(d), Some(next)) => format!(
            "Rotates automatically every {d} days; next at {}.",
            time::to_minute(next)
        ),
        (Some(d), None) => format!("Rotates automatically every {d} days."),
        (None, _) => "Automatic rotation is off.".to_string(),
    };
    view! {
        <section class="panel" aria-labelledby="keys-title">
            <div class="panel-header">
                <h2 id="keys-title">"Key epochs"</h2>
                {(is_admin && live && rotating.is_none()).then(|| view! {
                    <ActionForm action=rotate attr:class="inline confirm-form" attr:id="rotate-form">
                        <input type="hidden" name="id" value=rotate_id />
                        <label class="small"><input type="checkbox" required id="confirm-rotate" />" new key for every tunnel"</label>
                        <button type="submit" class="secondary" id="rotate-key" disabled=move || rotate.pending().get()>"Rotate now"</button>
                    </ActionForm>
                })}
            </div>
            {move || error().map(|e| view! { <p class="field-error" role="alert" id="keys-error">{e.to_string()}</p> })}
            {rotating.map(|(epoch, p)| view! {
                <p class="notice notice-warn" id="rotation-progress" role="status">
                    <strong>{format!("Rotating to epoch {epoch}. ")}</strong>
                    {format!(
                        "{} of {} live appliances accept it, {} of {} send with it.",
                        p.accepting, p.live, p.sending, p.live
                    )}
                    {(p.sites_cut_off > 0).then(|| format!(
                        " {} site(s) with appliances are not reporting: they may still forward with the old key, so nobody sends to them with the new one and it is kept until they are heard again (or invalidated).",
                        p.sites_cut_off
                    ))}
                    {retiring.map(|old| format!(
                        " Epoch {old} keeps being accepted until every appliance sends with epoch {epoch}, then a short grace period passes; nothing is dropped on the way."
                    ))}
                </p>
                {(!p.waiting.is_empty()).then(|| view! {
                    <details class="small" id="rotation-waiting">
                        <summary>{format!("Waiting for {} appliance(s)", p.waiting.len())}</summary>
                        <ul>
                            {p.waiting.iter().map(|w| view! {
                                <li><code>{w.instance_id.clone()}</code>{format!(" ({}, member {}): {}", w.region, w.member, w.reason)}</li>
                            }).collect_view()}
                        </ul>
                    </details>
                })}
            })}
            <table class="table" id="keys-table">
                <thead><tr><th scope="col">"Epoch"</th><th scope="col">"State"</th><th scope="col">"KMS key"</th><th scope="col">"Created"</th><th scope="col"><span class="visually-hidden">"Actions"</span></th></tr></thead>
                <tbody>
                    {network.key_epochs.iter().rev().map(|k| {
                        let class = k.state.badge_class();
                        let revocable = is_admin && k.state.revocable();
                        let confirm = if k.state == KeyEpochState::Retiring { " end the rotation now" } else { " revoke now" };
                        let id = id.clone();
                        let epoch = k.epoch;
                        view! {
                            <tr data-epoch=k.epoch>
                                <td>{k.epoch}</td>
                                <td><span class=class>{k.state.as_str()}</span></td>
                                <td><code class="wrap">{k.kms_key_arn.clone()}</code></td>
                                <td>{time::to_minute(&k.created_at)}</td>
                                <td class="actions">
                                    {revocable.then(|| view! {
                                        <ActionForm action=invalidate attr:class="inline confirm-form">
                                            <input type="hidden" name="id" value=id />
                                            <input type="hidden" name="epoch" value=epoch />
                                            <label class="small"><input type="checkbox" required />{confirm}</label>
                                            <button type="submit" class="ghost danger">"Invalidate"</button>
                                        </ActionForm>
                                    })}
                                </td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
            <p id="rotation-schedule">{schedule_text}</p>
            {(is_admin && live).then(|| view! {
                <ActionForm action=schedule attr:class="inline" attr:id="schedule-form">
                    <input type="hidden" name="id" value=schedule_id />
                    <label for="rotate-every">"Rotate every (days, empty for off)"</label>
                    " "
                    <input id="rotate-every" name="every_days" type="number" min="1" max="365" inputmode="numeric"
                        class="narrow" value=every.map(|d| d.to_string()).unwrap_or_default() />
                    " "
                    <button type="submit" class="secondary" id="save-schedule" disabled=move || schedule.pending().get()>"Save"</button>
                </ActionForm>
            })}
            <p class="muted small">"vpcmesh stores only the KMS-encrypted data key; appliances decrypt it in your account. Rotation is make-before-break: every appliance first accepts the new epoch next to the old one, each sender moves to it once its peers accept it, and the old epoch's SAs go once every appliance sends with the new one. Invalidating an epoch revokes it at once, even mid-rotation."</p>
        </section>
    }
}
