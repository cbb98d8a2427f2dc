//! The seam between server functions and the server that owns state.
//!
//! The server crate implements [`Console`] for one request (database, session,
//! caller address) and provides it as context; server functions stay thin.

use crate::api::{
    AccountSetup, AccountSummary, AuditEntry, ConnectivityCheck, ConsoleError, JobView,
    KmsKeyChoice, NetworkRequest, NetworkSummary, NewAccount, NewUser, OrgSummary, Plan,
    ProgressEvent, Role, TakeoverView, UserSummary, Viewer, VpcChoice,
};
use leptos::prelude::use_context;
use std::sync::Arc;

#[async_trait::async_trait]
pub trait Console: Send + Sync {
    async fn viewer(&self) -> Result<Option<Viewer>, ConsoleError>;
    /// Signs in; `organization` picks one when the email and password
    /// open several (see [`ConsoleError::ChooseOrganization`]).
    async fn sign_in(
        &self,
        email: &str,
        password: &str,
        organization: Option<&str>,
    ) -> Result<Viewer, ConsoleError>;
    async fn sign_out(&self) -> Result<(), ConsoleError>;
    async fn overview(&self) -> Result<OrgSummary, ConsoleError>;
    async fn list_users(&self) -> Result<Vec<UserSummary>, ConsoleError>;
    async fn create_user(&self, new: NewUser) -> Result<UserSummary, ConsoleError>;
    async fn set_user_role(&self, user_id: &str, role: Role) -> Result<UserSummary, ConsoleError>;
    /// Removes a user of the organization (admins; never the last admin);
    /// their sessions end at once.
    async fn remove_user(&self, user_id: &str) -> Result<(), ConsoleError>;
    /// Ends every session of a user of the organization (admins).
    async fn revoke_sessions(&self, user_id: &str) -> Result<(), ConsoleError>;
    /// Changes the caller's password; their other sessions end.
    async fn change_password(&self, current: &str, new: &str) -> Result<(), ConsoleError>;
    async fn audit_log(&self, limit: i64) -> Result<Vec<AuditEntry>, ConsoleError>;
    /// Renames the caller's organization (admins).
    async fn rename_org(&self, name: &str) -> Result<OrgSummary, ConsoleError>;
    async fn account_setup(&self) -> Result<AccountSetup, ConsoleError>;
    async fn list_accounts(&self) -> Result<Vec<AccountSummary>, ConsoleError>;
    async fn add_account(&self, new: NewAccount) -> Result<AccountSummary, ConsoleError>;
    async fn verify_account(&self, id: &str) -> Result<AccountSummary, ConsoleError>;
    async fn remove_account(&self, id: &str) -> Result<(), ConsoleError>;
    async fn list_networks(&self) -> Result<Vec<NetworkSummary>, ConsoleError>;
    async fn create_network(&self, req: NetworkRequest) -> Result<NetworkSummary, ConsoleError>;
    async fn network(&self, id: &str) -> Result<NetworkSummary, ConsoleError>;
    /// `teardown` false: what Provision would do; true: what Delete would do.
    async fn network_plan(&self, id: &str, teardown: bool) -> Result<Plan, ConsoleError>;
    /// Runs exactly the plan whose fingerprint the user confirmed.
    async fn start_job(
        &self,
        id: &str,
        teardown: bool,
        fingerprint: &str,
    ) -> Result<JobView, ConsoleError>;
    async fn network_job(&self, id: &str) -> Result<Option<JobView>, ConsoleError>;
    async fn network_events(
        &self,
        id: &str,
        after: i64,
    ) -> Result<Vec<ProgressEvent>, ConsoleError>;
    /// A new key epoch from the customer's KMS key; the previous one retires.
    async fn rotate_key(&self, id: &str) -> Result<NetworkSummary, ConsoleError>;
    /// Automatic rotation every `every_days` days, or off.
    async fn set_rotation_schedule(
        &self,
        id: &str,
        every_days: Option<u32>,
    ) -> Result<NetworkSummary, ConsoleError>;
    /// Revokes a (non-active) key epoch at once.
    async fn invalidate_key(&self, id: &str, epoch: i32) -> Result<NetworkSummary, ConsoleError>;
    /// Starts a connectivity check (409 while one runs or without live appliances).
    async fn check_connectivity(&self, id: &str) -> Result<ConnectivityCheck, ConsoleError>;
    /// The network's latest connectivity check.
    async fn connectivity(&self, id: &str) -> Result<Option<ConnectivityCheck>, ConsoleError>;
    /// Asks the site's passive appliance to take over (admins; 409 without
    /// a registered passive partner).
    async fn fail_over(&self, id: &str, site_id: &str) -> Result<TakeoverView, ConsoleError>;
    /// VPCs in a registered account (vpcmesh's id for it) and region.
    async fn discover_vpcs(
        &self,
        account: &str,
        region: &str,
    ) -> Result<Vec<VpcChoice>, ConsoleError>;
    /// Customer-managed KMS keys (by alias) in a registered account and region.
    async fn kms_keys(
        &self,
        account: &str,
        region: &str,
    ) -> Result<Vec<KmsKeyChoice>, ConsoleError>;
}

pub type ConsoleHandle = Arc<dyn Console>;

/// The request's console, provided by the server for every page render and
/// server function call.
pub fn console() -> Result<ConsoleHandle, ConsoleError> {
    use_context::<ConsoleHandle>().ok_or_else(|| {
        tracing::error!("no Console in context: server wiring is broken");
        ConsoleError::Internal
    })
}
