use crate::components::set_http_status;
use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn NotFoundPage() -> impl IntoView {
    set_http_status(404);
    view! {
        <Title text="Not found" />
        <main class="auth">
            <section class="auth-card">
                <h1>"Page not found"</h1>
                <p class="muted">"There is nothing at this address. It may have moved, or the link may be mistyped."</p>
                <a class="button primary" href="/">"Go to the dashboard"</a>
            </section>
        </main>
    }
}
