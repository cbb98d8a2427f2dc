use crate::api::list_networks;
use crate::components::{time, ErrorPanel};
use leptos::prelude::*;
use leptos_meta::Title;

/// Every network's key epochs in one place; rotation and invalidation live on
/// each network's page.
#[component]
pub fn KeysPage() -> impl IntoView {
    let networks = Resource::new(|| (), |_| list_networks());
    view! {
        <Title text="Keys" />
        <div class="page-header">
            <h1>"Keys"</h1>
        </div>
        <p class="muted">"Each network's tunnel keys come from your own KMS key. vpcmesh stores only the encrypted data key; appliances decrypt it in your account."</p>
        <Suspense fallback=|| view! { <p class="muted">"Loading keys…"</p> }>
            {move || Suspend::new(async move {
                match networks.await {
                    Ok(list) if list.is_empty() => view! {
                        <section class="empty-state">
                            <h2>"No key epochs yet"</h2>
                            <p>"A network gets its first key epoch when it is created. Epochs, rotation and invalidation appear here once a network exists."</p>
                        </section>
                    }.into_any(),
                    Ok(list) => view! {
                        <section class="panel">
                            <table class="table" id="all-keys">
                                <thead><tr><th scope="col">"Network"</th><th scope="col">"Epoch"</th><th scope="col">"State"</th><th scope="col">"KMS key"</th><th scope="col">"Created"</th></tr></thead>
                                <tbody>
                                    {list.into_iter().flat_map(|n| {
                                        let href = format!("/networks/{}", n.id);
                                        let name = n.name.clone();
                                        n.key_epochs.into_iter().rev().map(move |k| {
                                            let class = k.state.badge_class();
                                            view! {
                                                <tr>
                                                    <td><a href=href.clone()>{name.clone()}</a></td>
                                                    <td>{k.epoch}</td>
                                                    <td><span class=class>{k.state.as_str()}</span></td>
                                                    <td><code class="wrap">{k.kms_key_arn}</code></td>
                                                    <td>{time::to_minute(&k.created_at)}</td>
                                                </tr>
                                            }
                                        })
                                    }).collect_view()}
                                </tbody>
                            </table>
                        </section>
                    }.into_any(),
                    Err(e) => view! { <ErrorPanel error=e /> }.into_any(),
                }
            })}
        </Suspense>
    }
}
