use crate::api::{
    audit_log, list_users, AuditEntry, CreateUser, RemoveUser, RenameOrg, RevokeSessions, Role,
    SetUserRole, UserSummary, Viewer,
};
use crate::components::{time, ErrorPanel};
use leptos::prelude::*;
use leptos_meta::Title;

/// Users and roles of the organization, and its audit log. Admins only: the
/// server refuses members, and the page shows that refusal.
#[component]
pub fn AdminPage() -> impl IntoView {
    let create = ServerAction::<CreateUser>::new();
    let set_role = ServerAction::<SetUserRole>::new();
    let rename = ServerAction::<RenameOrg>::new();
    let actions = UserActions {
        set_role,
        remove: ServerAction::<RemoveUser>::new(),
        revoke: ServerAction::<RevokeSessions>::new(),
    };
    let users = Resource::new(
        move || (create.version().get(), actions.version()),
        |_| list_users(),
    );
    let audit = Resource::new(
        move || {
            (
                create.version().get(),
                actions.version(),
                rename.version().get(),
            )
        },
        |_| audit_log(),
    );

    view! {
        <Title text="Admin" />
        <div class="page-header">
            <h1>"Admin"</h1>
        </div>
        <Suspense fallback=|| view! { <p class="muted">"Loading users…"</p> }>
            {move || Suspend::new(async move {
                match users.await {
                    Ok(list) => view! {
                        <UsersTable users=list actions />
                        <NewUserForm create=create />
                    }.into_any(),
                    Err(e) => view! { <ErrorPanel error=e /> }.into_any(),
                }
            })}
        </Suspense>
        <Suspense>
            {move || Suspend::new(async move {
                audit.await.ok().map(|entries| view! { <AuditTable entries /> })
            })}
        </Suspense>
        <OrganizationPanel rename />
    }
}

/// What an admin does to an existing user.
#[derive(Clone, Copy)]
struct UserActions {
    set_role: ServerAction<SetUserRole>,
    remove: ServerAction<RemoveUser>,
    revoke: ServerAction<RevokeSessions>,
}

impl UserActions {
    fn version(&self) -> (usize, usize, usize) {
        (
            self.set_role.version().get(),
            self.remove.version().get(),
            self.revoke.version().get(),
        )
    }

    fn error(&self) -> Option<String> {
        let err = |r: Option<Result<_, crate::api::ConsoleError>>| r.and_then(|r| r.err());
        err(self.set_role.value().get().map(|r| r.map(|_| ())))
            .or_else(|| err(self.remove.value().get()))
            .or_else(|| err(self.revoke.value().get()))
            .map(|e| e.to_string())
    }
}

#[component]
fn UsersTable(users: Vec<UserSummary>, actions: UserActions) -> impl IntoView {
    let me = use_context::<Viewer>()
        .map(|v| v.user_id)
        .unwrap_or_default();
    let revoked = move || actions.revoke.value().get().is_some_and(|r| r.is_ok());
    view! {
        <section class="panel" aria-labelledby="users-title">
            <h2 id="users-title">"Users"</h2>
            <p class="muted small">"Viewers read everything and change nothing. Members also create, provision and check networks. Admins also delete networks, rotate keys, fail over, and manage accounts and people."</p>
            {move || actions.error().map(|e| view! { <p class="field-error" role="alert" id="users-error">{e}</p> })}
            {move || revoked().then(|| view! { <p class="notice notice-ok" role="status">"Signed out everywhere: their sessions have ended."</p> })}
            <table class="table" id="users-table">
                <thead>
                    <tr><th scope="col">"Name"</th><th scope="col">"Email"</th><th scope="col">"Role"</th><th scope="col">"Added"</th><th scope="col"><span class="visually-hidden">"Actions"</span></th></tr>
                </thead>
                <tbody>
                    {users.into_iter().map(|u| {
                        let is_me = u.id == me;
                        let role = u.role;
                        let (role_id, revoke_id, remove_id) = (u.id.clone(), u.id.clone(), u.id.clone());
                        let select_id = format!("role-{}", u.id);
                        let label = format!("Role of {}", u.email);
                        view! {
                            <tr data-email=u.email.clone()>
                                <td>{u.name.clone()}</td>
                                <td>{u.email.clone()}</td>
                                <td>
                                    <ActionForm action=actions.set_role attr:class="inline role-form">
                                        <input type="hidden" name="user_id" value=role_id />
                                        <label class="visually-hidden" for=select_id.clone()>{label}</label>
                                        <select name="role" id=select_id>
                                            {[Role::Admin, Role::Member, Role::Viewer].into_iter().map(move |r| view! {
                                                <option value=r.as_str() selected=r == role>{r.as_str()}</option>
                                            }).collect_view()}
                                        </select>
                                        <button type="submit" class="link">"Change"</button>
                                    </ActionForm>
                                </td>
                                <td><time datetime=u.created_at.clone()>{u.created_at.get(..10).unwrap_or_default().to_string()}</time></td>
                                <td class="actions">
                                    <ActionForm action=actions.revoke attr:class="inline">
                                        <input type="hidden" name="user_id" value=revoke_id />
                                        <button type="submit" class="ghost revoke-sessions">"Sign out everywhere"</button>
                                    </ActionForm>
                                    {(!is_me).then(|| view! {
                                        <ActionForm action=actions.remove attr:class="inline">
                                            <input type="hidden" name="user_id" value=remove_id.clone() />
                                            <button type="submit" class="ghost danger remove-user">"Remove"</button>
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
fn NewUserForm(create: ServerAction<CreateUser>) -> impl IntoView {
    let result = move || create.value().get();
    view! {
        <section class="panel" aria-labelledby="new-user-title">
            <h2 id="new-user-title">"Add a user"</h2>
            <p class="muted">"They sign in with this email and the initial password you hand them."</p>
            <ActionForm action=create attr:class="form form-grid">
                <label for="new-name">"Name"</label>
                <input id="new-name" name="name" required maxlength="100" />
                <label for="new-email">"Email"</label>
                <input id="new-email" name="email" type="email" required maxlength="254" />
                <label for="new-role">"Role"</label>
                <select id="new-role" name="role">
                    <option value="member" selected>"Member"</option>
                    <option value="viewer">"Viewer (read only)"</option>
                    <option value="admin">"Admin"</option>
                </select>
                <label for="new-password">"Initial password"</label>
                <input id="new-password" name="password" type="password" required minlength="12" maxlength="1024" autocomplete="new-password" />
                <button type="submit" class="primary" disabled=move || create.pending().get()>"Add user"</button>
            </ActionForm>
            {move || result().map(|r| match r {
                Ok(u) => view! { <p class="notice notice-ok" role="status">{format!("Added {} as {}.", u.email, u.role)}</p> }.into_any(),
                Err(e) => view! { <p class="field-error" role="alert">{e.to_string()}</p> }.into_any(),
            })}
        </section>
    }
}

#[component]
fn AuditTable(entries: Vec<AuditEntry>) -> impl IntoView {
    let filter = RwSignal::new(String::new());
    let matches = move |e: &AuditEntry| {
        let f = filter.get().to_lowercase();
        f.is_empty()
            || e.action.to_lowercase().contains(&f)
            || e.actor.as_deref().unwrap_or("").to_lowercase().contains(&f)
            || e.target
                .as_deref()
                .unwrap_or("")
                .to_lowercase()
                .contains(&f)
    };
    let entries = StoredValue::new(entries);
    view! {
        <section class="panel" aria-labelledby="audit-title">
            <div class="panel-header">
                <h2 id="audit-title">"Audit log"</h2>
                <div>
                    <label for="audit-filter" class="visually-hidden">"Filter the audit log"</label>
                    <input id="audit-filter" type="search" placeholder="Filter: action, person or target"
                        prop:value=move || filter.get() on:input=move |e| filter.set(event_target_value(&e)) />
                </div>
            </div>
            <table class="table" id="audit-table">
                <thead>
                    <tr><th scope="col">"When"</th><th scope="col">"Who"</th><th scope="col">"What"</th><th scope="col">"Target"</th></tr>
                </thead>
                <tbody>
                    {move || entries.with_value(|all| all.iter().filter(|e| matches(e)).cloned().collect::<Vec<_>>()).into_iter().map(|e| view! {
                        <tr>
                            <td><time datetime=e.at.clone()>{time::to_second(&e.at)}</time></td>
                            <td>{e.actor.unwrap_or_else(|| "—".into())}</td>
                            <td><code>{e.action}</code></td>
                            <td>{e.target.unwrap_or_default()}</td>
                        </tr>
                    }).collect_view()}
                </tbody>
            </table>
        </section>
    }
}

#[component]
fn OrganizationPanel(rename: ServerAction<RenameOrg>) -> impl IntoView {
    let current = use_context::<Viewer>()
        .map(|v| v.org_name)
        .unwrap_or_default();
    view! {
        <section class="panel" aria-labelledby="org-title">
            <h2 id="org-title">"Organization"</h2>
            <ActionForm action=rename attr:class="form form-grid" attr:id="rename-org-form">
                <label for="org-name">"Name"</label>
                <input id="org-name" name="name" required maxlength="100" value=current />
                <button type="submit" class="secondary" disabled=move || rename.pending().get()>"Rename"</button>
            </ActionForm>
            {move || rename.value().get().map(|r| match r {
                Ok(o) => view! { <p class="notice notice-ok" role="status">{format!("The organization is now called {}.", o.org_name)}</p> }.into_any(),
                Err(e) => view! { <p class="field-error" role="alert">{e.to_string()}</p> }.into_any(),
            })}
            <p class="muted small">"The external ID your account roles trust is on the Accounts page; it never changes."</p>
        </section>
    }
}
