//! Types for AWS accounts, networks, plans and provisioning progress: what the
//! console and the JSON API exchange with the server.

use serde::{Deserialize, Serialize};

/// Where an account's last Verify left it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    Verified,
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountSummary {
    pub id: String,
    pub account_id: String,
    pub role_arn: String,
    pub label: String,
    pub status: AccountStatus,
    /// RFC 3339; the last successful Verify.
    pub verified_at: Option<String>,
    /// RFC 3339; the last Verify, successful or not.
    pub last_checked: String,
    /// Why the last Verify failed, in words a user can act on.
    pub last_error: Option<String>,
    /// Networks (not deleted) with a site in this account.
    pub networks: i64,
}

/// What an admin needs to create the role vpcmesh assumes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountSetup {
    /// Generated per organization; goes into the role's trust condition.
    pub external_id: String,
    /// The AWS account vpcmesh calls from; the role must trust it.
    pub trusted_account_id: String,
    pub role_name: String,
    /// The CloudFormation template that creates the role, with the two
    /// parameters above as defaults.
    pub template_yaml: String,
}

/// What an admin types to register an account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAccount {
    pub account_id: String,
    pub role_arn: String,
    #[serde(default)]
    pub label: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopologyKind {
    FullMesh,
    Transit,
    MeshWithLeaves,
}

/// A site's part in its network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SiteRole {
    /// Has its own appliances (every site of a full mesh, a transit spoke).
    #[default]
    Edge,
    /// The transit hub.
    Hub,
    /// Mesh with leaves: no appliances, attached to an edge in its region.
    Leaf,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteRequest {
    pub account_id: String,
    pub region: String,
    pub vpc_id: String,
    #[serde(default)]
    pub role: SiteRole,
    /// Optional display name; defaults to region/VPC.
    #[serde(default)]
    pub name: Option<String>,
}

fn default_true() -> bool {
    true
}

fn default_instance_types() -> Vec<String> {
    vec!["t3.small".to_string()]
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkOptions {
    /// The first is used on demand; several with `spot` make a mixed spot pool.
    #[serde(default = "default_instance_types")]
    pub instance_types: Vec<String>,
    /// Two appliances per site in two AZs.
    #[serde(default = "default_true")]
    pub ha: bool,
    #[serde(default)]
    pub spot: bool,
    /// ESP in UDP 4500 (needed through AWS Elastic IP NAT).
    #[serde(default = "default_true")]
    pub nat_t: bool,
    /// The customer's KMS key (ARN) that wraps the network's data keys.
    pub kms_key_arn: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRequest {
    pub name: String,
    pub topology: TopologyKind,
    pub sites: Vec<SiteRequest>,
    pub options: NetworkOptions,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkStatus {
    Planned,
    Provisioning,
    Ready,
    Failed,
    Deleting,
    Deleted,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteSummary {
    pub id: String,
    pub name: String,
    pub account_id: String,
    pub region: String,
    pub vpc_id: String,
    pub cidrs: Vec<String>,
    pub role: SiteRole,
    /// For a leaf: the edge site it attaches to.
    pub edge_site_id: Option<String>,
    pub availability_zones: Vec<String>,
    /// Stack outputs once provisioned (Elastic IP, groups, ...).
    pub outputs: serde_json::Value,
}

/// Where a key epoch stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyEpochState {
    /// The epoch appliances send with.
    Active,
    /// A rotation moves off it: still accepted until every site holds the
    /// new one.
    Retiring,
    /// No longer used.
    Retired,
    /// Revoked by an admin: never accepted again.
    Invalidated,
}

impl KeyEpochState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyEpochState::Active => "active",
            KeyEpochState::Retiring => "retiring",
            KeyEpochState::Retired => "retired",
            KeyEpochState::Invalidated => "invalidated",
        }
    }

    /// The badge the console shows it in.
    pub fn badge_class(self) -> &'static str {
        match self {
            KeyEpochState::Active => "badge badge-ok",
            KeyEpochState::Retiring => "badge badge-warn",
            KeyEpochState::Invalidated => "badge badge-bad",
            KeyEpochState::Retired => "badge",
        }
    }

    /// An admin may revoke it (which ends a rotation still under way).
    pub fn revocable(self) -> bool {
        matches!(self, KeyEpochState::Retired | KeyEpochState::Retiring)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEpochSummary {
    pub epoch: i32,
    pub kms_key_arn: String,
    pub state: KeyEpochState,
    pub created_at: String,
    /// On the active epoch while a rotation to it is in progress.
    #[serde(default)]
    pub rotation: Option<RotationProgress>,
}

/// How far a rotation has come over the network's live appliances.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationProgress {
    pub live: i64,
    /// Appliances that accept the new epoch.
    pub accepting: i64,
    /// Appliances that send with it on every tunnel.
    pub sending: i64,
    /// Sites with appliances none of which reports: the old epoch stays
    /// until they are heard again.
    #[serde(default)]
    pub sites_cut_off: i64,
    /// The live appliances the rotation still waits for, and why.
    #[serde(default)]
    pub waiting: Vec<RotationLaggard>,
}

/// A live appliance a rotation waits for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationLaggard {
    pub instance_id: String,
    pub region: String,
    pub member: String,
    /// What it has not done yet, with its last config error if any.
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSummary {
    pub id: String,
    pub name: String,
    pub topology: TopologyKind,
    pub status: NetworkStatus,
    pub status_note: Option<String>,
    pub options: NetworkOptions,
    pub sites: Vec<SiteSummary>,
    pub key_epochs: Vec<KeyEpochSummary>,
    pub created_at: String,
    /// Registered appliances with their latest status reports.
    #[serde(default)]
    pub appliances: Vec<ApplianceSummary>,
    /// Automatic key rotation: every this many days (None: off).
    #[serde(default)]
    pub rotate_every_days: Option<u32>,
    /// When the schedule rotates next (the active epoch's age reaching it).
    #[serde(default)]
    pub next_rotation_at: Option<String>,
    /// The latest connectivity check, if any.
    #[serde(default)]
    pub connectivity: Option<super::ConnectivityCheck>,
    /// Failovers between the members of a site, newest first (at most 50).
    #[serde(default)]
    pub failovers: Vec<super::FailoverEntry>,
    /// Per site, the latest takeover the server asked for (pending or done).
    #[serde(default)]
    pub takeovers: Vec<super::TakeoverView>,
}

impl NetworkSummary {
    /// A ready network whose tunnels are still coming up: no appliance
    /// reported yet, or an active one has a tunnel without traffic so far
    /// (a passive member's tunnels carry none by design).
    pub fn tunnels_settling(&self) -> bool {
        self.status == NetworkStatus::Ready
            && (self.appliances.is_empty()
                || self
                    .appliances
                    .iter()
                    .filter(|a| a.role.as_deref() != Some("passive"))
                    .any(|a| {
                        a.tunnels.is_empty() || a.tunnels.iter().any(|t| t.state == "pending")
                    }))
    }
}

/// One appliance as it registered and last reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplianceSummary {
    pub id: String,
    pub site_id: String,
    /// "a" or "b": which member of the site's HA pair.
    pub member: String,
    /// "active" or "passive", once reported.
    pub role: Option<String>,
    /// Why it has its role (see `describe_ha_reason`); None from agents
    /// before failover existed.
    #[serde(default)]
    pub ha_reason: Option<String>,
    /// Since when it has its role.
    #[serde(default)]
    pub role_since: Option<String>,
    pub instance_id: String,
    pub availability_zone: String,
    pub private_ip: String,
    pub public_ip: Option<String>,
    pub last_seen_at: Option<String>,
    pub applied_version: Option<i64>,
    pub config_error: Option<String>,
    pub tunnels: Vec<TunnelLive>,
    /// What its drift check last put back in its kernel, if ever.
    #[serde(default)]
    pub repaired: Option<Repaired>,
}

/// The appliance's last repair of its kernel: objects of the applied config
/// someone deleted or changed behind the agent's back, put back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repaired {
    /// When (RFC 3339).
    pub at: String,
    /// Kernel objects put back (0: lost SAs, replaced by a fresh generation).
    pub changes: u32,
    /// Repairs since the appliance's agent started.
    pub count: u64,
}

/// One tunnel as an appliance sees it in its kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelLive {
    pub peer_site: String,
    /// "pending", "up", "rekeying" or "down".
    pub state: String,
    /// The key epoch the appliance sends with on this tunnel.
    #[serde(default)]
    pub out_epoch: u32,
    pub out_bytes: u64,
    pub out_packets: u64,
    pub in_bytes: u64,
    pub in_packets: u64,
    pub in_errors: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeAction {
    Create,
    Update,
    Delete,
    Unchanged,
}

/// One thing an apply would do in one account and region.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedChange {
    pub account_id: String,
    pub region: String,
    pub site_id: String,
    pub site: String,
    pub action: ChangeAction,
    /// "address stack", "appliance stack" or "VPC routes".
    pub resource: String,
    pub name: String,
    /// What it consists of, e.g. "2 Auto Scaling groups in us-east-1a, us-east-1b".
    pub details: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub network_id: String,
    /// Apply or teardown.
    pub kind: String,
    pub changes: Vec<PlannedChange>,
    /// Hash of `changes`: an apply names it, so it runs exactly what was shown.
    pub fingerprint: String,
    /// Apply only: routes already in the sites' tables that vpcmesh did
    /// not create, where it needs its own (read live; the apply would stop
    /// at them). One sentence per site.
    #[serde(default)]
    pub route_conflicts: Vec<String>,
    /// Apply only: sites whose route tables could not be read, with why.
    #[serde(default)]
    pub routes_unchecked: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepView {
    pub id: String,
    pub site_id: String,
    pub phase: i32,
    pub action: String,
    pub state: String,
    pub stack_name: String,
    /// Failed attempts (errors retried with backoff, or final): the tries.
    pub failures: i32,
    /// Turns that found AWS still working (a stack in progress): never tries.
    pub polls: i32,
    /// What is wrong right now; cleared once the step gets on again.
    pub error: Option<String>,
    /// The latest failure, kept after the step recovered.
    pub last_error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressEvent {
    pub id: i64,
    pub at: String,
    pub site_id: Option<String>,
    pub source: String,
    pub resource: Option<String>,
    pub status: String,
    pub message: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobView {
    pub id: String,
    pub network_id: String,
    pub kind: String,
    pub state: String,
    pub error: Option<String>,
    pub steps: Vec<StepView>,
    pub created_at: String,
    pub finished_at: Option<String>,
}

/// A VPC found live in an account and region, for the network wizard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VpcChoice {
    pub vpc_id: String,
    /// The VPC's Name tag, if any.
    pub name: Option<String>,
    pub cidrs: Vec<String>,
    pub availability_zones: Vec<String>,
    pub subnets: usize,
}

/// A customer-managed KMS key found live (by its alias) in an account and
/// region, for the network wizard's key picker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KmsKeyChoice {
    /// e.g. `alias/vpcmesh-prod`.
    pub alias: String,
    pub key_id: String,
    /// The key's own ARN (`…:key/<key_id>`), what a network's options name.
    pub key_arn: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn network(status: &str, appliances: serde_json::Value) -> NetworkSummary {
        serde_json::from_value(json!({
            "id": "n", "name": "n", "topology": "full_mesh", "status": status,
            "status_note": null, "sites": [], "key_epochs": [], "created_at": "",
            "options": { "kms_key_arn": "arn:aws:kms:us-east-1:111122223333:key/k" },
            "appliances": appliances,
        }))
        .expect("a network summary")
    }

    fn appliance(role: Option<&str>, states: &[&str]) -> serde_json::Value {
        let tunnels: Vec<_> = states
            .iter()
            .map(|s| json!({ "peer_site": "p", "state": s, "out_bytes": 0, "out_packets": 0, "in_bytes": 0, "in_packets": 0, "in_errors": 0 }))
            .collect();
        json!({
            "id": "a", "site_id": "s", "member": "a", "role": role, "instance_id": "i",
            "availability_zone": "z", "private_ip": "10.0.0.4", "public_ip": null,
            "last_seen_at": null, "applied_version": null, "config_error": null,
            "tunnels": tunnels,
        })
    }

    #[test]
    fn tunnels_settle_once_every_active_appliance_has_traffic_on_each() {
        assert!(
            network("ready", json!([])).tunnels_settling(),
            "none reported yet"
        );
        assert!(!network("provisioning", json!([])).tunnels_settling());
        let coming = json!([appliance(Some("active"), &["up", "pending"])]);
        assert!(network("ready", coming).tunnels_settling());
        let no_tunnels_yet = json!([appliance(None, &[])]);
        assert!(network("ready", no_tunnels_yet).tunnels_settling());
        // A passive member carries no traffic: its pending tunnels are normal.
        let settled = json!([
            appliance(Some("active"), &["up", "rekeying"]),
            appliance(Some("passive"), &["pending", "pending"]),
        ]);
        assert!(!network("ready", settled).tunnels_settling());
        let down = json!([appliance(Some("active"), &["down"])]);
        assert!(
            !network("ready", down).tunnels_settling(),
            "down is news, not settling"
        );
    }
}
