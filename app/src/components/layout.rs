use crate::api::{current_viewer, SignOut, Viewer};
use crate::components::ErrorPanel;
use leptos::prelude::*;
use leptos_router::{
    components::{Outlet, Redirect, A},
    hooks::use_location,
};

/// Frame of every signed-in page: navigation, the user's menu and the page.
/// Sends a visitor without a session to the sign-in page, remembering where
/// they were going.
#[component]
pub fn ConsoleLayout() -> impl IntoView {
    let viewer = Resource::new(|| (), |_| current_viewer());
    let location = use_location();
    view! {
        <Suspense fallback=|| view! { <div class="loading" aria-busy="true">"Loading…"</div> }>
            {move || Suspend::new(async move {
                match viewer.await {
                    Ok(Some(v)) => {
                        provide_context(v.clone());
                        view! { <Chrome viewer=v /> }.into_any()
                    }
                    Ok(None) => {
                        let next = location.pathname.get_untracked();
                        let path = if next == "/" {
                            "/sign-in".to_string()
                        } else {
                            format!("/sign-in?next={next}")
                        };
                        view! { <Redirect path=path /> }.into_any()
                    }
                    Err(e) => view! { <main class="page"><ErrorPanel error=e /></main> }.into_any(),
                }
            })}
        </Suspense>
    }
}

#[component]
fn Chrome(viewer: Viewer) -> impl IntoView {
    let sign_out = ServerAction::<SignOut>::new();
    let is_admin = viewer.may(crate::api::Action::ManageUsers);
    view! {
        <div class="app">
            <header class="topbar">
                <a class="brand" href="/">
                    <span class="brand-mark" aria-hidden="true">"◆"</span>
                    "vpcmesh"
                </a>
                <nav class="nav" aria-label="Main">
                    <A href="/" exact=true>"Dashboard"</A>
                    <A href="/networks">"Networks"</A>
                    <A href="/accounts">"Accounts"</A>
                    <A href="/keys">"Keys"</A>
                    <Show when=move || is_admin>
                        <A href="/admin">"Admin"</A>
                    </Show>
                </nav>
                <div class="user-menu">
                    <a class="user-name" href="/account" id="my-account" title="Your account">{viewer.name.clone()}</a>
                    <span class="badge" title="Your role">{viewer.role.to_string()}</span>
                    <span class="org-name">{viewer.org_name.clone()}</span>
                    <ActionForm action=sign_out attr:class="inline">
                        <button type="submit" class="ghost">"Sign out"</button>
                    </ActionForm>
                </div>
            </header>
            <main class="page" id="main">
                <Outlet />
            </main>
        </div>
    }
}
