use crate::api::{
    get_account_setup, list_accounts, AccountSetup, AccountStatus, AccountSummary, AddAccount,
    RemoveAccount, VerifyAccount,
};
use crate::components::{time, ErrorPanel};
use leptos::prelude::*;
use leptos_meta::Title;

/// The organization's AWS accounts: verification state, Verify and Remove,
/// and for admins the two steps of adding one (deploy the role, then register).
#[component]
pub fn AccountsPage() -> impl IntoView {
    let add = ServerAction::<AddAccount>::new();
    let verify = ServerAction::<VerifyAccount>::new();
    let remove = ServerAction::<RemoveAccount>::new();
    let accounts = Resource::new(
        move || {
            (
                add.version().get(),
                verify.version().get(),
                remove.version().get(),
            )
        },
        |_| list_accounts(),
    );
    let setup = Resource::new(|| (), |_| get_account_setup());
    let is_admin = crate::components::viewer_may(crate::api::Action::ManageAccounts);

    view! {
        <Title text="Accounts" />
        <div class="page-header">
            <h1>"Accounts"</h1>
        </div>
        <Suspense fallback=|| view! { <p class="muted">"Loading accounts…"</p> }>
            {move || Suspend::new(async move {
                match accounts.await {
                    Ok(list) if list.is_empty() => view! {
                        <section class="empty-state">
                            <h2>"No AWS accounts yet"</h2>
                            <p>"vpcmesh works in your AWS accounts through a role you create with our CloudFormation template. The role trusts vpcmesh only with your organization's external ID. Add an account below, then create a network."</p>
                        </section>
                    }.into_any(),
                    Ok(list) => view! { <AccountsTable accounts=list verify remove is_admin /> }.into_any(),
                    Err(e) => view! { <ErrorPanel error=e /> }.into_any(),
                }
            })}
        </Suspense>
        <Show when=move || is_admin>
            <Suspense>
                {move || Suspend::new(async move {
                    match setup.await {
                        Ok(s) => view! { <AddAccountPanel setup=s add /> }.into_any(),
                        Err(e) => view! { <ErrorPanel error=e /> }.into_any(),
                    }
                })}
            </Suspense>
        </Show>
    }
}

#[component]
fn AccountsTable(
    accounts: Vec<AccountSummary>,
    verify: ServerAction<VerifyAccount>,
    remove: ServerAction<RemoveAccount>,
    is_admin: bool,
) -> impl IntoView {
    let verify_error = move || verify.value().get().and_then(|r| r.err());
    let remove_error = move || remove.value().get().and_then(|r| r.err());
    view! {
        <section class="panel" aria-labelledby="accounts-title">
            <h2 id="accounts-title">"AWS accounts"</h2>
            {move || verify_error().map(|e| view! { <p class="field-error" role="alert" id="verify-error">{e.to_string()}</p> })}
            {move || remove_error().map(|e| view! { <p class="field-error" role="alert" id="remove-error">{e.to_string()}</p> })}
            <table class="table" id="accounts-table">
                <thead>
                    <tr>
                        <th scope="col">"Account"</th>
                        <th scope="col">"Role"</th>
                        <th scope="col">"Status"</th>
                        <th scope="col">"Networks"</th>
                        <th scope="col"><span class="visually-hidden">"Actions"</span></th>
                    </tr>
                </thead>
                <tbody>
                    {accounts.into_iter().map(|a| {
                        let (badge, text) = match a.status {
                            AccountStatus::Verified => ("badge badge-ok", "Verified"),
                            AccountStatus::Failed => ("badge badge-bad", "Verify failed"),
                        };
                        let checked = time::to_minute(&a.last_checked);
                        let in_use = a.networks > 0;
                        let (verify_id, remove_id) = (a.id.clone(), a.id.clone());
                        view! {
                            <tr data-account=a.account_id.clone()>
                                <td><strong>{a.label.clone()}</strong><br /><code>{a.account_id.clone()}</code></td>
                                <td><code class="wrap">{a.role_arn.clone()}</code></td>
                                <td>
                                    <span class=badge>{text}</span>
                                    <span class="muted small">{format!(" checked {checked} UTC")}</span>
                                    {a.last_error.clone().map(|e| view! { <p class="field-error small">{e}</p> })}
                                </td>
                                <td>{a.networks}</td>
                                <td class="actions">
                                    {is_admin.then(|| view! {
                                        <ActionForm action=verify attr:class="inline">
                                            <input type="hidden" name="id" value=verify_id />
                                            <button type="submit" class="secondary" disabled=move || verify.pending().get()>"Verify"</button>
                                        </ActionForm>
                                        <ActionForm action=remove attr:class="inline">
                                            <input type="hidden" name="id" value=remove_id />
                                            <button type="submit" class="ghost danger" disabled=in_use
                                                title=if in_use { "Delete its networks first" } else { "Remove this account from vpcmesh" }>
                                                "Remove"
                                            </button>
                                        </ActionForm>
                                    })}
                                </td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
        </section>
    }
}

#[component]
fn AddAccountPanel(setup: AccountSetup, add: ServerAction<AddAccount>) -> impl IntoView {
    let result = move || add.value().get();
    let placeholder = format!("arn:aws:iam::123456789012:role/{}", setup.role_name);
    view! {
        <section class="panel" aria-labelledby="add-account-title">
            <h2 id="add-account-title">"Add an AWS account"</h2>
            <ol class="steps">
                <li>
                    <h3>"Create the vpcmesh role in the account"</h3>
                    <p>
                        "Deploy our CloudFormation template in the account (any region). It creates the role "
                        <code>{setup.role_name.clone()}</code>
                        " with only the permissions vpcmesh uses."
                    </p>
                    <dl class="facts">
                        <dt>"Trusted account"</dt>
                        <dd><code id="trusted-account">{setup.trusted_account_id.clone()}</code></dd>
                        <dt>"External ID"</dt>
                        <dd><code id="external-id">{setup.external_id.clone()}</code></dd>
                    </dl>
                    <p>
                        <a class="button secondary" href="/api/v1/accounts/role-template.yaml" download="vpcmesh-access-role.yaml" id="download-template">
                            "Download the role template"
                        </a>
                    </p>
                    <p class="muted small">"Both values are already the template's defaults. With the AWS CLI:"</p>
                    <pre class="code">"aws cloudformation deploy --stack-name vpcmesh-access \\\n  --template-file vpcmesh-access-role.yaml --capabilities CAPABILITY_NAMED_IAM"</pre>
                </li>
                <li>
                    <h3>"Register it"</h3>
                    <p class="muted">"vpcmesh assumes the role right away; the account is added only if that works."</p>
                    <ActionForm action=add attr:class="form form-grid" attr:id="add-account-form">
                        <label for="account-id">"Account ID"</label>
                        <input id="account-id" name="account_id" required inputmode="numeric" pattern="[0-9]{12}" maxlength="12" placeholder="123456789012" />
                        <label for="role-arn">"Role ARN"</label>
                        <input id="role-arn" name="role_arn" required maxlength="2048" placeholder=placeholder />
                        <label for="account-label">"Label (optional)"</label>
                        <input id="account-label" name="label" maxlength="100" placeholder="Production" />
                        <button type="submit" class="primary" disabled=move || add.pending().get()>
                            {move || if add.pending().get() { "Verifying…" } else { "Add and verify" }}
                        </button>
                    </ActionForm>
                    {move || result().map(|r| match r {
                        Ok(a) => view! { <p class="notice notice-ok" role="status" id="add-account-result">{format!("Verified: vpcmesh can work in account {}.", a.account_id)}</p> }.into_any(),
                        Err(e) => view! { <p class="field-error" role="alert" id="add-account-result">{e.to_string()}</p> }.into_any(),
                    })}
                </li>
            </ol>
        </section>
    }
}
