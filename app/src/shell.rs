use crate::components::ConsoleLayout;
use crate::pages::{
    AccountsPage, AdminPage, DashboardPage, KeysPage, NetworkPage, NetworksPage, NewNetworkPage,
    NotFoundPage, ProfilePage, SignInPage,
};
use leptos::prelude::*;
use leptos_meta::{provide_meta_context, MetaTags, Stylesheet, Title};
use leptos_router::{
    components::{ParentRoute, Route, Router, Routes},
    path, SsrMode,
};

/// The HTML document around the app, rendered on the server only.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    #[cfg(feature = "ssr")]
    set_page_policy();
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <meta name="color-scheme" content="light dark" />
                <link rel="icon" href="data:," />
                <AutoReload options=options.clone() />
                <HydrationScripts options />
                <MetaTags />
            </head>
            <body>
                <App />
            </body>
        </html>
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    view! {
        <Stylesheet id="leptos" href="/pkg/vpcmesh.css" />
        <Title formatter=|page: String| {
            if page.is_empty() { "vpcmesh".to_string() } else { format!("{page} · vpcmesh") }
        } />
        // Async rendering: pages arrive complete (readable without JavaScript)
        // and a missing session becomes a real redirect.
        <Router>
            <Routes fallback=NotFoundPage>
                <Route path=path!("/sign-in") view=SignInPage ssr=SsrMode::Async />
                <ParentRoute path=path!("") view=ConsoleLayout ssr=SsrMode::Async>
                    <Route path=path!("") view=DashboardPage ssr=SsrMode::Async />
                    <Route path=path!("networks") view=NetworksPage ssr=SsrMode::Async />
                    <Route path=path!("networks/new") view=NewNetworkPage ssr=SsrMode::Async />
                    <Route path=path!("networks/:id") view=NetworkPage ssr=SsrMode::Async />
                    <Route path=path!("accounts") view=AccountsPage ssr=SsrMode::Async />
                    <Route path=path!("keys") view=KeysPage ssr=SsrMode::Async />
                    <Route path=path!("admin") view=AdminPage ssr=SsrMode::Async />
                    <Route path=path!("account") view=ProfilePage ssr=SsrMode::Async />
                </ParentRoute>
            </Routes>
        </Router>
    }
}

/// The page's Content-Security-Policy: scripts only from us or carrying this
/// response's nonce (Leptos puts it on its hydration scripts), WebAssembly allowed.
#[cfg(feature = "ssr")]
fn set_page_policy() {
    let (Some(nonce), Some(response)) = (
        leptos::nonce::use_nonce(),
        use_context::<leptos_axum::ResponseOptions>(),
    ) else {
        return;
    };
    let policy = format!(
        "default-src 'self'; script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'; \
         style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
         object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    );
    if let Ok(value) = http::HeaderValue::from_str(&policy) {
        response.insert_header(http::header::CONTENT_SECURITY_POLICY, value);
    }
}
