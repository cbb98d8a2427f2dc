use crate::api::{current_viewer, ConsoleError, OrgChoice, SignIn};
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::{components::Redirect, hooks::use_query_map};

#[component]
pub fn SignInPage() -> impl IntoView {
    let action = ServerAction::<SignIn>::new();
    let query = use_query_map();
    let next = move || query.read().get("next").unwrap_or_default();
    let already = Resource::new(|| (), |_| current_viewer());
    let show_password = RwSignal::new(false);
    let error = move || action.value().get().and_then(|r| r.err());
    let pending = action.pending();

    view! {
        <Title text="Sign in" />
        <Suspense>
            {move || Suspend::new(async move {
                matches!(already.await, Ok(Some(_))).then(|| view! { <Redirect path="/" /> })
            })}
        </Suspense>
        <main class="auth">
            <section class="auth-card" aria-labelledby="sign-in-title">
                <div class="brand auth-brand">
                    <span class="brand-mark" aria-hidden="true">"◆"</span>
                    "vpcmesh"
                </div>
                <h1 id="sign-in-title">"Sign in"</h1>
                <p class="muted">"Connect your VPCs across regions and accounts."</p>
                <ActionForm action=action attr:class="form" attr:novalidate="">
                    <input type="hidden" name="next" value=next />
                    <label for="email">"Email"</label>
                    <input
                        id="email"
                        name="email"
                        type="email"
                        autocomplete="username"
                        maxlength="254"
                        required
                    />
                    <label for="password">"Password"</label>
                    <div class="password-field">
                        <input
                            id="password"
                            name="password"
                            type=move || if show_password.get() { "text" } else { "password" }
                            autocomplete="current-password"
                            maxlength="1024"
                            required
                        />
                        <button
                            type="button"
                            class="ghost"
                            id="toggle-password"
                            aria-controls="password"
                            aria-pressed=move || show_password.get().to_string()
                            on:click=move |_| show_password.update(|s| *s = !*s)
                        >
                            {move || if show_password.get() { "Hide" } else { "Show" }}
                        </button>
                    </div>
                    {move || {
                        error().map(|e| view! { <p class="field-error" role="alert">{e.to_string()}</p> })
                    }}
                    {move || match error() {
                        Some(ConsoleError::ChooseOrganization { organizations }) => {
                            Some(view! { <OrganizationChoice organizations /> })
                        }
                        _ => None,
                    }}
                    <button type="submit" class="primary" disabled=move || pending.get()>
                        {move || if pending.get() { "Signing in…" } else { "Sign in" }}
                    </button>
                </ActionForm>
            </section>
        </main>
    }
}

/// The organizations the email and password open: pick one and sign in
/// again (with the same email and password, still in the form).
#[component]
fn OrganizationChoice(organizations: Vec<OrgChoice>) -> impl IntoView {
    let first = organizations.first().map(|o| o.id.clone());
    view! {
        <fieldset class="choices" id="organization-choice">
            <legend>"Organization"</legend>
            {organizations
                .into_iter()
                .map(|o| {
                    let id = format!("org-{}", o.id);
                    let label_for = id.clone();
                    let checked = first.as_deref() == Some(o.id.as_str());
                    view! {
                        <label class="choice" for=label_for>
                            <input
                                type="radio"
                                id=id
                                name="organization"
                                value=o.id
                                checked=checked
                            />
                            {o.name}
                        </label>
                    }
                })
                .collect_view()}
        </fieldset>
    }
}
