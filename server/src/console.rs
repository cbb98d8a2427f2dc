//! The console's operations for one request: the [`Console`] seam that
//! server functions call, also used by the JSON API.

use crate::{
    accounts, audit,
    auth::{
        password, rate_limit,
        session::{SessionIdentity, IDENTITY_KEY},
    },
    identity::{orgs, users, validate},
    internal::OrInternal,
    networks,
    provisioning::jobs::{self, JobKind},
    state::AppState,
};
use app::{
    api::{
        AccountSetup, AccountSummary, Action, AuditEntry, ConnectivityCheck, ConsoleError, JobView,
        KmsKeyChoice, NetworkRequest, NetworkSummary, NewAccount, NewUser, OrgChoice, OrgSummary,
        Plan, ProgressEvent, Role, TakeoverView, UserSummary, Viewer, VpcChoice,
    },
    backend::Console,
};
use axum::{extract::FromRequestParts, http::request::Parts};
use std::net::IpAddr;
use tower_sessions::Session;
use uuid::Uuid;

/// One caller: the shared state, their session and their address.
#[derive(Clone)]
pub struct ConsoleSession {
    state: AppState,
    session: Session,
    client_ip: IpAddr,
}

impl FromRequestParts<AppState> for ConsoleSession {
    type Rejection = crate::http::error::ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let session = parts.extensions.get::<Session>().cloned().ok_or_else(|| {
            tracing::error!("session layer missing from the router");
            ConsoleError::Internal
        })?;
        Ok(ConsoleSession {
            state: state.clone(),
            session,
            client_ip: crate::http::client_ip::client_ip(parts, state.settings.trust_forwarded_for),
        })
    }
}

impl ConsoleSession {
    async fn identity(&self) -> Result<Option<SessionIdentity>, ConsoleError> {
        self.session
            .get::<SessionIdentity>(IDENTITY_KEY)
            .await
            .or_internal("read the session")
    }

    /// The signed-in user's row, re-read so removals and role changes count now.
    pub(crate) async fn current(&self) -> Result<users::UserRecord, ConsoleError> {
        let Some(id) = self.identity().await? else {
            return Err(ConsoleError::Unauthenticated);
        };
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        if id.expired(self.state.settings.session_lifetime, now) {
            tracing::info!(user_id = %id.user_id, "session over its lifetime: signed out");
            self.session
                .flush()
                .await
                .or_internal("end an expired session")?;
            return Err(ConsoleError::Unauthenticated);
        }
        match users::find(&self.state.pool, id.org_id, id.user_id)
            .await
            .or_internal("load the signed-in user")?
        {
            Some(user) if user.session_epoch == id.epoch => Ok(user),
            found => {
                tracing::info!(
                    user_id = %id.user_id,
                    removed = found.is_none(),
                    "session revoked or its user removed: signed out"
                );
                self.session
                    .flush()
                    .await
                    .or_internal("end a stale session")?;
                Err(ConsoleError::Unauthenticated)
            }
        }
    }

    /// The signed-in user, if their role may do `action` (see
    /// [`app::api::Action`]: the one table of who may do what).
    pub(crate) async fn authorize(
        &self,
        action: Action,
    ) -> Result<users::UserRecord, ConsoleError> {
        let user = self.current().await?;
        if !user.role.may(action) {
            tracing::info!(user_id = %user.id, role = %user.role, ?action, "refused by role");
            return Err(ConsoleError::Forbidden {
                needs: action.needs(),
            });
        }
        Ok(user)
    }

    /// Remembers `user` as signed in on this session (a new session id, so an
    /// id planted or seen before is worthless).
    async fn remember(
        &self,
        user: &users::UserRecord,
        signed_in_at: i64,
    ) -> Result<(), ConsoleError> {
        self.session
            .cycle_id()
            .await
            .or_internal("rotate the session id")?;
        self.session
            .insert(
                IDENTITY_KEY,
                SessionIdentity {
                    user_id: user.id,
                    org_id: user.org_id,
                    signed_in_at,
                    epoch: user.session_epoch,
                },
            )
            .await
            .or_internal("store the session")
    }

    /// One password guess for `email` from this client, counted against the
    /// sign-in limits (per email and per address) before it is checked.
    async fn reserve_attempt(
        &self,
        email: &str,
        what: &str,
    ) -> Result<rate_limit::Attempt, ConsoleError> {
        match rate_limit::reserve(&self.state.pool, email, self.client_ip)
            .await
            .or_internal("check the sign-in rate limit")?
        {
            Ok(attempt) => Ok(attempt),
            Err(retry_after_secs) => {
                tracing::warn!(retry_after_secs, what, "rate limited");
                Err(ConsoleError::RateLimited { retry_after_secs })
            }
        }
    }

    /// A transaction holding the organization's admin lock, with `admin`
    /// checked to be an admin still under it.
    async fn admin_change(
        &self,
        admin: &users::UserRecord,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, ConsoleError> {
        let mut tx = self
            .state
            .pool
            .begin()
            .await
            .or_internal("begin a transaction")?;
        if !users::lock_admins(&mut tx, admin.org_id, admin.id)
            .await
            .or_internal("lock the organization's admins")?
        {
            tracing::info!(user_id = %admin.id, "no longer an admin: change refused");
            return Err(ConsoleError::Forbidden { needs: Role::Admin });
        }
        Ok(tx)
    }
}

fn last_admin() -> ConsoleError {
    ConsoleError::Conflict {
        message: "An organization needs at least one admin: make someone else admin first.".into(),
    }
}

fn viewer(user: &users::UserRecord) -> Viewer {
    Viewer {
        user_id: user.id.to_string(),
        email: user.email.clone(),
        name: user.name.clone(),
        role: user.role,
        org_id: user.org_id.to_string(),
        org_name: user.org_name.clone(),
    }
}

impl ConsoleSession {
    /// The users among `candidates` whose password `password_text` is. No
    /// candidate costs one hash too (a dummy), so an unknown email answers
    /// as slowly as a wrong password; several are checked side by side, so
    /// the answer's time says little about how many organizations have
    /// the email (as long as hashes are free to run, see `password`).
    async fn passwords_open(
        &self,
        candidates: &[users::UserRecord],
        password_text: &str,
    ) -> Result<Vec<users::UserRecord>, ConsoleError> {
        if candidates.is_empty() {
            password::verify(password_text, None)
                .await
                .or_internal("verify a password")?;
            return Ok(Vec::new());
        }
        let checked = futures::future::join_all(
            candidates
                .iter()
                .map(|u| password::verify(password_text, Some(u.password_hash.as_str()))),
        )
        .await;
        let mut opened = Vec::new();
        for (u, ok) in candidates.iter().zip(checked) {
            if ok.or_internal("verify a password")? {
                opened.push(u.clone());
            }
        }
        Ok(opened)
    }
}

#[async_trait::async_trait]
impl Console for ConsoleSession {
    async fn viewer(&self) -> Result<Option<Viewer>, ConsoleError> {
        match self.current().await {
            Ok(user) => Ok(Some(viewer(&user))),
            Err(ConsoleError::Unauthenticated) => Ok(None),
            Err(e) => Err(e),
        }
    }

    #[tracing::instrument(skip_all, fields(client_ip = %self.client_ip))]
    async fn sign_in(
        &self,
        email: &str,
        password_text: &str,
        organization: Option<&str>,
    ) -> Result<Viewer, ConsoleError> {
        let email = validate::email(email)?;
        let organization = organization
            .filter(|o| !o.is_empty())
            .map(|o| {
                Uuid::parse_str(o).map_err(|_| {
                    ConsoleError::invalid("organization", "choose one of the organizations listed")
                })
            })
            .transpose()?;
        if password_text.is_empty() {
            return Err(ConsoleError::invalid("password", "enter your password"));
        }
        if password_text.len() > validate::PASSWORD_MAX {
            return Err(ConsoleError::InvalidCredentials);
        }
        let pool = &self.state.pool;
        let attempt = self.reserve_attempt(&email, "sign-in").await?;
        let mut candidates = users::find_by_email(pool, &email)
            .await
            .or_internal("look up a user")?;
        if let Some(org) = organization {
            candidates.retain(|u| u.org_id == org);
        }
        let opened = self.passwords_open(&candidates, password_text).await?;
        if !opened.is_empty() {
            rate_limit::succeeded(pool, &email, attempt)
                .await
                .or_internal("record a sign-in")?;
        }
        let user = match opened.as_slice() {
            [user] => user.clone(),
            [] => {
                for u in &candidates {
                    audit::record(pool, u.org_id, Some(u.id), "sign_in.failed", None)
                        .await
                        .or_internal("audit a failed sign-in")?;
                }
                tracing::info!("sign-in refused");
                return Err(ConsoleError::InvalidCredentials);
            }
            several => {
                let mut organizations: Vec<OrgChoice> = several
                    .iter()
                    .map(|u| OrgChoice {
                        id: u.org_id.to_string(),
                        name: u.org_name.clone(),
                    })
                    .collect();
                organizations.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
                tracing::info!(
                    organizations = organizations.len(),
                    "sign-in needs an organization"
                );
                return Err(ConsoleError::ChooseOrganization { organizations });
            }
        };
        self.remember(&user, time::OffsetDateTime::now_utc().unix_timestamp())
            .await?;
        audit::record(pool, user.org_id, Some(user.id), "sign_in", None)
            .await
            .or_internal("audit a sign-in")?;
        tracing::info!(user_id = %user.id, org_id = %user.org_id, "signed in");
        Ok(viewer(&user))
    }

    async fn sign_out(&self) -> Result<(), ConsoleError> {
        if let Some(id) = self.identity().await? {
            audit::record(
                &self.state.pool,
                id.org_id,
                Some(id.user_id),
                "sign_out",
                None,
            )
            .await
            .or_internal("audit a sign-out")?;
        }
        self.session.flush().await.or_internal("end the session")
    }

    async fn overview(&self) -> Result<OrgSummary, ConsoleError> {
        let user = self.authorize(Action::Read).await?;
        orgs::summary(&self.state.pool, user.org_id)
            .await
            .or_internal("summarise the organization")
    }

    async fn list_users(&self) -> Result<Vec<UserSummary>, ConsoleError> {
        let admin = self.authorize(Action::ManageUsers).await?;
        let rows = users::list(&self.state.pool, admin.org_id)
            .await
            .or_internal("list users")?;
        Ok(rows.iter().map(users::UserRecord::summary).collect())
    }

    #[tracing::instrument(skip_all)]
    async fn create_user(&self, new: NewUser) -> Result<UserSummary, ConsoleError> {
        let admin = self.authorize(Action::ManageUsers).await?;
        let email = validate::email(&new.email)?;
        let name = validate::display_name(&new.name)?;
        validate::new_password(&new.password)?;
        let hash = password::hash(&new.password)
            .await
            .or_internal("hash a password")?;
        let mut tx = self
            .state
            .pool
            .begin()
            .await
            .or_internal("begin a transaction")?;
        let id = users::insert(
            &mut *tx,
            users::NewUserRow {
                org_id: admin.org_id,
                email: &email,
                name: &name,
                role: new.role,
                password_hash: &hash,
            },
        )
        .await
        .or_internal("insert a user")?
        .ok_or_else(|| ConsoleError::Conflict {
            message: format!("A user with the email {email} already exists."),
        })?;
        audit::record(
            &mut *tx,
            admin.org_id,
            Some(admin.id),
            "user.created",
            Some(&email),
        )
        .await
        .or_internal("audit a new user")?;
        let created = users::find(&mut *tx, admin.org_id, id)
            .await
            .or_internal("read back a new user")?
            .ok_or(ConsoleError::Internal)?;
        tx.commit().await.or_internal("commit a new user")?;
        tracing::info!(user_id = %id, org_id = %admin.org_id, role = %new.role, "user created");
        Ok(created.summary())
    }

    async fn set_user_role(&self, user_id: &str, role: Role) -> Result<UserSummary, ConsoleError> {
        let admin = self.authorize(Action::ManageUsers).await?;
        let id = user_id_arg(user_id)?;
        let mut tx = self.admin_change(&admin).await?;
        let target = users::find(&mut *tx, admin.org_id, id)
            .await
            .or_internal("load a user")?
            .ok_or_else(|| ConsoleError::not_found("User"))?;
        if !users::set_role(&mut *tx, admin.org_id, id, role)
            .await
            .or_internal("change a role")?
        {
            return Err(last_admin());
        }
        audit::record(
            &mut *tx,
            admin.org_id,
            Some(admin.id),
            &format!("user.role.{role}"),
            Some(&target.email),
        )
        .await
        .or_internal("audit a role change")?;
        let updated = users::find(&mut *tx, admin.org_id, id)
            .await
            .or_internal("read back a user")?
            .ok_or_else(|| ConsoleError::not_found("User"))?;
        tx.commit().await.or_internal("commit a role change")?;
        tracing::info!(user_id = %id, org_id = %admin.org_id, %role, "role changed");
        Ok(updated.summary())
    }

    #[tracing::instrument(skip_all)]
    async fn remove_user(&self, user_id: &str) -> Result<(), ConsoleError> {
        let admin = self.authorize(Action::ManageUsers).await?;
        let id = user_id_arg(user_id)?;
        if id == admin.id {
            return Err(ConsoleError::Conflict {
                message: "You cannot remove yourself: ask another admin.".into(),
            });
        }
        let mut tx = self.admin_change(&admin).await?;
        let email = match users::remove(&mut tx, admin.org_id, id)
            .await
            .or_internal("remove a user")?
        {
            Ok(email) => email,
            Err(users::RemoveRefused::NotFound) => return Err(ConsoleError::not_found("User")),
            Err(users::RemoveRefused::LastAdmin) => return Err(last_admin()),
        };
        audit::record(
            &mut *tx,
            admin.org_id,
            Some(admin.id),
            "user.removed",
            Some(&email),
        )
        .await
        .or_internal("audit a removal")?;
        tx.commit().await.or_internal("commit a removal")?;
        tracing::info!(user_id = %id, org_id = %admin.org_id, "user removed");
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn revoke_sessions(&self, user_id: &str) -> Result<(), ConsoleError> {
        let admin = self.authorize(Action::ManageUsers).await?;
        let id = user_id_arg(user_id)?;
        let pool = &self.state.pool;
        let target = users::find(pool, admin.org_id, id)
            .await
            .or_internal("load a user")?
            .ok_or_else(|| ConsoleError::not_found("User"))?;
        users::revoke_sessions(pool, admin.org_id, id)
            .await
            .or_internal("revoke sessions")?
            .ok_or_else(|| ConsoleError::not_found("User"))?;
        audit::record(
            pool,
            admin.org_id,
            Some(admin.id),
            "user.sessions_revoked",
            Some(&target.email),
        )
        .await
        .or_internal("audit a revocation")?;
        tracing::info!(user_id = %id, org_id = %admin.org_id, "sessions revoked");
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(client_ip = %self.client_ip))]
    async fn change_password(&self, current: &str, new: &str) -> Result<(), ConsoleError> {
        let user = self.authorize(Action::ChangeOwnPassword).await?;
        if current.is_empty() {
            return Err(ConsoleError::invalid(
                "current_password",
                "enter your current password",
            ));
        }
        validate::new_password(new).map_err(|e| match e {
            ConsoleError::InvalidInput { message, .. } => {
                ConsoleError::invalid("new_password", message)
            }
            other => other,
        })?;
        if current == new {
            return Err(ConsoleError::invalid(
                "new_password",
                "is your current password: choose a new one",
            ));
        }
        let pool = &self.state.pool;
        // Guesses of the current password count against the sign-in limits,
        // so a borrowed session cannot try passwords faster than sign-in.
        let attempt = self.reserve_attempt(&user.email, "password change").await?;
        let ok = current.len() <= validate::PASSWORD_MAX
            && password::verify(current, Some(user.password_hash.as_str()))
                .await
                .or_internal("verify a password")?;
        if !ok {
            audit::record(
                pool,
                user.org_id,
                Some(user.id),
                "password.change_failed",
                None,
            )
            .await
            .or_internal("audit a failed password change")?;
            return Err(ConsoleError::invalid(
                "current_password",
                "is not your current password",
            ));
        }
        rate_limit::succeeded(pool, &user.email, attempt)
            .await
            .or_internal("record a password check")?;
        let hash = password::hash(new).await.or_internal("hash a password")?;
        let mut tx = pool.begin().await.or_internal("begin a transaction")?;
        let epoch = users::set_password_hash(&mut *tx, user.id, &hash)
            .await
            .or_internal("store a password")?;
        audit::record(
            &mut *tx,
            user.org_id,
            Some(user.id),
            "password.changed",
            None,
        )
        .await
        .or_internal("audit a password change")?;
        tx.commit().await.or_internal("commit a password change")?;
        // This session stays signed in (same sign-in time, new id and epoch);
        // every other session of the user ends at its next request.
        let signed_in_at = self
            .identity()
            .await?
            .map(|id| id.signed_in_at)
            .ok_or(ConsoleError::Unauthenticated)?;
        let user = users::UserRecord {
            session_epoch: epoch,
            ..user
        };
        self.remember(&user, signed_in_at).await?;
        tracing::info!(user_id = %user.id, "password changed; other sessions ended");
        Ok(())
    }

    async fn audit_log(&self, limit: i64) -> Result<Vec<AuditEntry>, ConsoleError> {
        let admin = self.authorize(Action::ReadAuditLog).await?;
        audit::recent(&self.state.pool, admin.org_id, limit)
            .await
            .or_internal("read the audit log")
    }

    async fn rename_org(&self, name: &str) -> Result<OrgSummary, ConsoleError> {
        let admin = self.authorize(Action::RenameOrganization).await?;
        let name = validate::display_name(name)?;
        let pool = &self.state.pool;
        orgs::rename(pool, admin.org_id, &name)
            .await
            .or_internal("rename an organization")?;
        audit::record(
            pool,
            admin.org_id,
            Some(admin.id),
            "org.renamed",
            Some(&name),
        )
        .await
        .or_internal("audit a rename")?;
        orgs::summary(pool, admin.org_id)
            .await
            .or_internal("summarise the organization")
    }

    async fn account_setup(&self) -> Result<AccountSetup, ConsoleError> {
        let user = self.authorize(Action::Read).await?;
        accounts::ops::setup(&self.state, &user).await
    }

    async fn list_accounts(&self) -> Result<Vec<AccountSummary>, ConsoleError> {
        let user = self.authorize(Action::Read).await?;
        accounts::ops::list(&self.state, &user).await
    }

    async fn add_account(&self, new: NewAccount) -> Result<AccountSummary, ConsoleError> {
        let admin = self.authorize(Action::ManageAccounts).await?;
        accounts::ops::add(&self.state, &admin, new).await
    }

    async fn verify_account(&self, id: &str) -> Result<AccountSummary, ConsoleError> {
        let admin = self.authorize(Action::ManageAccounts).await?;
        accounts::ops::verify(&self.state, &admin, id).await
    }

    async fn remove_account(&self, id: &str) -> Result<(), ConsoleError> {
        let admin = self.authorize(Action::ManageAccounts).await?;
        accounts::ops::remove(&self.state, &admin, id).await
    }

    async fn list_networks(&self) -> Result<Vec<NetworkSummary>, ConsoleError> {
        let user = self.authorize(Action::Read).await?;
        networks::view::list(&self.state.pool, user.org_id).await
    }

    async fn create_network(&self, req: NetworkRequest) -> Result<NetworkSummary, ConsoleError> {
        let user = self.authorize(Action::CreateNetwork).await?;
        networks::create::create(&self.state, &user, req).await
    }

    async fn network(&self, id: &str) -> Result<NetworkSummary, ConsoleError> {
        let user = self.authorize(Action::Read).await?;
        let id = networks::view::parse_id(id)?;
        networks::view::summary(&self.state.pool, user.org_id, id).await
    }

    async fn network_plan(&self, id: &str, teardown: bool) -> Result<Plan, ConsoleError> {
        let user = self.authorize(Action::PreviewPlan).await?;
        networks::plan::preview(&self.state, &user, id, job_kind(teardown)).await
    }

    async fn start_job(
        &self,
        id: &str,
        teardown: bool,
        fingerprint: &str,
    ) -> Result<JobView, ConsoleError> {
        let user = self
            .authorize(if teardown {
                Action::TearDownNetwork
            } else {
                Action::ApplyNetwork
            })
            .await?;
        networks::plan::start(&self.state, &user, id, job_kind(teardown), fingerprint).await
    }

    async fn network_job(&self, id: &str) -> Result<Option<JobView>, ConsoleError> {
        let user = self.authorize(Action::Read).await?;
        let id = networks::view::owned(&self.state.pool, user.org_id, id).await?;
        jobs::latest(&self.state.pool, id)
            .await
            .or_internal("load a job")
    }

    async fn network_events(
        &self,
        id: &str,
        after: i64,
    ) -> Result<Vec<ProgressEvent>, ConsoleError> {
        let user = self.authorize(Action::Read).await?;
        let id = networks::view::owned(&self.state.pool, user.org_id, id).await?;
        jobs::events_after(&self.state.pool, id, after.max(0))
            .await
            .or_internal("load progress events")
    }

    async fn check_connectivity(&self, id: &str) -> Result<ConnectivityCheck, ConsoleError> {
        let user = self.authorize(Action::CheckConnectivity).await?;
        networks::connectivity::request(&self.state, &user, id).await
    }

    async fn connectivity(&self, id: &str) -> Result<Option<ConnectivityCheck>, ConsoleError> {
        let user = self.authorize(Action::Read).await?;
        networks::connectivity::latest(&self.state.pool, &user, id).await
    }

    async fn fail_over(&self, id: &str, site_id: &str) -> Result<TakeoverView, ConsoleError> {
        let admin = self.authorize(Action::FailOver).await?;
        crate::failover::request::fail_over(&self.state, &admin, id, site_id).await
    }

    async fn rotate_key(&self, id: &str) -> Result<NetworkSummary, ConsoleError> {
        let admin = self.authorize(Action::RotateKeys).await?;
        networks::keys::rotate(&self.state, &admin, id).await
    }

    async fn set_rotation_schedule(
        &self,
        id: &str,
        every_days: Option<u32>,
    ) -> Result<NetworkSummary, ConsoleError> {
        let admin = self.authorize(Action::RotateKeys).await?;
        networks::schedule::set(&self.state, &admin, id, every_days).await
    }

    async fn invalidate_key(&self, id: &str, epoch: i32) -> Result<NetworkSummary, ConsoleError> {
        let admin = self.authorize(Action::RotateKeys).await?;
        networks::keys::invalidate(&self.state, &admin, id, epoch).await
    }

    async fn discover_vpcs(
        &self,
        account: &str,
        region: &str,
    ) -> Result<Vec<VpcChoice>, ConsoleError> {
        let user = self.authorize(Action::DiscoverCloud).await?;
        accounts::ops::vpcs(&self.state, &user, account, region).await
    }

    async fn kms_keys(
        &self,
        account: &str,
        region: &str,
    ) -> Result<Vec<KmsKeyChoice>, ConsoleError> {
        let user = self.authorize(Action::DiscoverCloud).await?;
        accounts::ops::kms_keys(&self.state, &user, account, region).await
    }
}

fn user_id_arg(user_id: &str) -> Result<Uuid, ConsoleError> {
    user_id
        .parse()
        .map_err(|_| ConsoleError::invalid("user_id", "is not a user id"))
}

fn job_kind(teardown: bool) -> JobKind {
    if teardown {
        JobKind::Teardown
    } else {
        JobKind::Apply
    }
}
