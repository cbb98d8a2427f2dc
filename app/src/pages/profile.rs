use crate::api::{ChangePassword, Viewer};
use leptos::prelude::*;
use leptos_meta::Title;

/// The signed-in user's own account: who they are and their password.
#[component]
pub fn ProfilePage() -> impl IntoView {
    let change = ServerAction::<ChangePassword>::new();
    let viewer = use_context::<Viewer>();
    view! {
        <Title text="Your account" />
        <div class="page-header">
            <h1>"Your account"</h1>
        </div>
        {viewer.map(|v| view! {
            <section class="panel" aria-labelledby="me-title">
                <h2 id="me-title">{v.name.clone()}</h2>
                <p>{v.email.clone()}" · "<span class="badge" id="my-role">{v.role.to_string()}</span>" in "{v.org_name.clone()}</p>
            </section>
        })}
        <section class="panel" aria-labelledby="password-title">
            <h2 id="password-title">"Change password"</h2>
            <p class="muted">"Your other sessions end when the password changes; this one stays signed in."</p>
            <ActionForm action=change attr:class="form form-grid" attr:id="password-form">
                <label for="current-password">"Current password"</label>
                <input id="current-password" name="current_password" type="password" required maxlength="1024" autocomplete="current-password" />
                <label for="new-password">"New password"</label>
                <input id="new-password" name="new_password" type="password" required minlength="12" maxlength="1024" autocomplete="new-password" />
                <label for="confirm-password">"New password again"</label>
                <input id="confirm-password" name="confirm_password" type="password" required minlength="12" maxlength="1024" autocomplete="new-password" />
                <button type="submit" class="primary" disabled=move || change.pending().get()>"Change password"</button>
            </ActionForm>
            {move || change.value().get().map(|r| match r {
                Ok(()) => view! { <p class="notice notice-ok" role="status" id="password-changed">"Your password is changed; your other sessions are signed out."</p> }.into_any(),
                Err(e) => view! { <p class="field-error" role="alert">{e.to_string()}</p> }.into_any(),
            })}
        </section>
    }
}
