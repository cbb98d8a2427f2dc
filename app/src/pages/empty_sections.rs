//! Sections whose content arrives with later capabilities; until then each
//! says plainly what it will hold and what to do first.

use leptos::prelude::*;
use leptos_meta::Title;

#[component]
fn EmptySection(
    title: &'static str,
    headline: &'static str,
    detail: &'static str,
) -> impl IntoView {
    view! {
        <Title text=title />
        <div class="page-header">
            <h1>{title}</h1>
        </div>
        <section class="empty-state">
            <h2>{headline}</h2>
            <p>{detail}</p>
        </section>
    }
}

#[component]
pub fn KeysPage() -> impl IntoView {
    view! {
        <EmptySection
            title="Keys"
            headline="No key epochs yet"
            detail="Each network's tunnel keys come from your own KMS key. vpcmesh stores only the encrypted data key; appliances decrypt it in your account. Epochs, rotation and invalidation appear here once a network exists."
        />
    }
}
