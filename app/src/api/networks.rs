use super::{
    ConsoleError, JobView, KmsKeyChoice, NetworkRequest, NetworkSummary, Plan, ProgressEvent,
    VpcChoice,
};
use leptos::prelude::*;
use leptos::server_fn::codec::Json;

#[server(endpoint = "list_networks")]
pub async fn list_networks() -> Result<Vec<NetworkSummary>, ConsoleError> {
    crate::backend::console()?.list_networks().await
}

#[server(endpoint = "get_network")]
pub async fn get_network(id: String) -> Result<NetworkSummary, ConsoleError> {
    crate::backend::console()?.network(&id).await
}

/// VPCs in a registered account (its id in vpcmesh) and region, found live.
#[server(endpoint = "discover_vpcs")]
pub async fn discover_vpcs(
    account: String,
    region: String,
) -> Result<Vec<VpcChoice>, ConsoleError> {
    crate::backend::console()?
        .discover_vpcs(&account, &region)
        .await
}

/// Customer-managed KMS keys with an alias in a registered account (its id
/// in vpcmesh) and region, found live.
#[server(endpoint = "list_kms_keys")]
pub async fn list_kms_keys(
    account: String,
    region: String,
) -> Result<Vec<KmsKeyChoice>, ConsoleError> {
    crate::backend::console()?.kms_keys(&account, &region).await
}

#[server(endpoint = "create_network", input = Json)]
pub async fn create_network(request: NetworkRequest) -> Result<NetworkSummary, ConsoleError> {
    crate::backend::console()?.create_network(request).await
}

#[server(endpoint = "network_plan")]
pub async fn network_plan(id: String, teardown: bool) -> Result<Plan, ConsoleError> {
    crate::backend::console()?.network_plan(&id, teardown).await
}

/// Starts exactly the plan the user saw (its fingerprint).
#[server(endpoint = "start_job")]
pub async fn start_job(
    id: String,
    teardown: bool,
    fingerprint: String,
) -> Result<JobView, ConsoleError> {
    crate::backend::console()?
        .start_job(&id, teardown, &fingerprint)
        .await
}

#[server(endpoint = "network_job")]
pub async fn network_job(id: String) -> Result<Option<JobView>, ConsoleError> {
    crate::backend::console()?.network_job(&id).await
}

#[server(endpoint = "network_events")]
pub async fn network_events(id: String, after: i64) -> Result<Vec<ProgressEvent>, ConsoleError> {
    crate::backend::console()?.network_events(&id, after).await
}

#[server(endpoint = "rotate_key")]
pub async fn rotate_key(id: String) -> Result<NetworkSummary, ConsoleError> {
    crate::backend::console()?.rotate_key(&id).await
}

/// `every_days` as typed in the form: empty turns automatic rotation off.
#[server(endpoint = "set_rotation_schedule")]
pub async fn set_rotation_schedule(
    id: String,
    every_days: String,
) -> Result<NetworkSummary, ConsoleError> {
    let every_days =
        match every_days.trim() {
            "" => None,
            d => Some(d.parse::<u32>().map_err(|_| {
                ConsoleError::invalid("every_days", "must be a whole number of days")
            })?),
        };
    crate::backend::console()?
        .set_rotation_schedule(&id, every_days)
        .await
}

#[server(endpoint = "invalidate_key")]
pub async fn invalidate_key(id: String, epoch: i32) -> Result<NetworkSummary, ConsoleError> {
    crate::backend::console()?.invalidate_key(&id, epoch).await
}
