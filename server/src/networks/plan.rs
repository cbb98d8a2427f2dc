//! Plans: what an apply or a teardown will do, per account and region, step
//! by step. The preview and the job come from the same function, and an
//! apply names the fingerprint of the plan it was shown.

use super::{model, store, view};
use crate::{
    audit,
    identity::users::UserRecord,
    internal::OrInternal,
    provisioning::jobs::{self, JobKind, StepAction},
    state::AppState,
    topology::RouteTarget,
};
use app::api::{ChangeAction, ConsoleError, JobView, NetworkStatus, Plan, PlannedChange};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Deterministic stack names: the same network and site always give the
/// same names, so a retried or resumed step finds what it created.
pub fn stack_names(network_id: Uuid, site_id: Uuid) -> (String, String) {
    let n = &network_id.simple().to_string()[..12];
    let s = &site_id.simple().to_string()[..12];
    (
        format!("vpcmesh-{n}-{s}-address"),
        format!("vpcmesh-{n}-{s}-appliances"),
    )
}

pub struct StepSpec {
    pub site_id: Uuid,
    pub phase: i32,
    pub action: StepAction,
    pub stack_name: String,
    pub change: PlannedChange,
}

fn steps_for(
    net: &store::NetworkRow,
    sites: &[store::SiteRow],
    kind: JobKind,
) -> Result<Vec<StepSpec>, ConsoleError> {
    let plans = model::compile(net, sites).map_err(|e| ConsoleError::Conflict {
        message: format!("The network no longer compiles: {e}"),
    })?;
    let o = &net.options;
    let mut steps = Vec::new();
    for s in sites {
        let (address, appliances) = stack_names(net.id, s.id);
        let change = |action: ChangeAction, resource: &str, name: &str, details: Vec<String>| {
            PlannedChange {
                account_id: s.account_id.clone().unwrap_or_default(),
                region: s.region.clone(),
                site_id: s.id.to_string(),
                site: s.name.clone(),
                action,
                resource: resource.to_string(),
                name: name.to_string(),
                details,
            }
        };
        let plan = plans.get(&s.id);
        let route_details: Vec<String> = plan
            .map(|p| {
                p.vpc_routes
                    .iter()
                    .map(|(cidr, target)| {
                        let via = match target {
                            RouteTarget::Appliance => "the active appliance",
                            RouteTarget::TransitGateway => "the Transit Gateway",
                        };
                        format!(
                            "{cidr} via {via} in {} route table(s)",
                            s.discovered.0.route_tables.len()
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let routes_name = format!("{} routes", s.vpc_id);
        let tunnels = plan.map_or(0, |p| p.tunnels.len());
        let leaves = sites
            .iter()
            .filter(|l| l.edge_site_id == Some(s.id) && !l.is_edge())
            .count();
        let mut appliance_details = vec![
            format!(
                "{} in {}",
                if o.ha {
                    "2 Auto Scaling groups (min = max = 1)"
                } else {
                    "1 Auto Scaling group (min = max = 1)"
                },
                s.discovered
                    .0
                    .azs()
                    .iter()
                    .take(if o.ha { 2 } else { 1 })
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            if o.spot {
                format!("spot instances: {}", o.instance_types.join(", "))
            } else {
                format!("on-demand {}", o.instance_types[0])
            },
            format!(
                "security group: ESP, UDP 500{} from {tunnels} peer site(s)",
                if o.nat_t { ", UDP 4500" } else { "" }
            ),
            "instance role: kms:Decrypt on the network key under its context".to_string(),
        ];
        if leaves > 0 {
            appliance_details.push(format!("Transit Gateway with {leaves} leaf attachment(s)"));
        }
        match kind {
            JobKind::Apply => {
                if s.is_edge() {
                    steps.push(StepSpec {
                        site_id: s.id,
                        phase: 1,
                        action: StepAction::AddressStack,
                        stack_name: address.clone(),
                        change: change(
                            ChangeAction::Create,
                            "address stack",
                            &address,
                            vec!["1 Elastic IP".into()],
                        ),
                    });
                    steps.push(StepSpec {
                        site_id: s.id,
                        phase: 2,
                        action: StepAction::ApplianceStack,
                        stack_name: appliances.clone(),
                        change: change(
                            ChangeAction::Create,
                            "appliance stack",
                            &appliances,
                            appliance_details,
                        ),
                    });
                }
                steps.push(StepSpec {
                    site_id: s.id,
                    phase: 3,
                    action: StepAction::Routes,
                    stack_name: routes_name.clone(),
                    change: change(
                        ChangeAction::Create,
                        "VPC routes",
                        &routes_name,
                        route_details,
                    ),
                });
            }
            JobKind::Teardown => {
                steps.push(StepSpec {
                    site_id: s.id,
                    phase: 1,
                    action: StepAction::RemoveRoutes,
                    stack_name: routes_name.clone(),
                    change: change(
                        ChangeAction::Delete,
                        "VPC routes",
                        &routes_name,
                        route_details,
                    ),
                });
                if s.is_edge() {
                    steps.push(StepSpec {
                        site_id: s.id,
                        phase: 2,
                        action: StepAction::DeleteStack,
                        stack_name: appliances.clone(),
                        change: change(
                            ChangeAction::Delete,
                            "appliance stack",
                            &appliances,
                            vec![],
                        ),
                    });
                    steps.push(StepSpec {
                        site_id: s.id,
                        phase: 3,
                        action: StepAction::DeleteStack,
                        stack_name: address.clone(),
                        change: change(
                            ChangeAction::Delete,
                            "address stack",
                            &address,
                            vec!["1 Elastic IP".into()],
                        ),
                    });
                }
            }
        }
    }
    steps.sort_by(|a, b| {
        (
            a.phase,
            &a.change.account_id,
            &a.change.region,
            &a.stack_name,
        )
            .cmp(&(
                b.phase,
                &b.change.account_id,
                &b.change.region,
                &b.stack_name,
            ))
    });
    Ok(steps)
}

fn fingerprint(changes: &[PlannedChange]) -> String {
    let bytes = serde_json::to_vec(changes).unwrap_or_default();
    hex::encode(&Sha256::digest(&bytes)[..16])
}

fn allowed(status: NetworkStatus, kind: JobKind) -> Result<(), ConsoleError> {
    let ok = match kind {
        JobKind::Apply => matches!(status, NetworkStatus::Planned | NetworkStatus::Failed),
        JobKind::Teardown => matches!(
            status,
            NetworkStatus::Planned | NetworkStatus::Ready | NetworkStatus::Failed
        ),
    };
    if ok {
        return Ok(());
    }
    let what = match kind {
        JobKind::Apply => "provisioned",
        JobKind::Teardown => "deleted",
    };
    Err(ConsoleError::Conflict {
        message: format!(
            "The network is {} and cannot be {what} now.",
            store::status_str(status)
        ),
    })
}

async fn load(
    state: &AppState,
    user: &UserRecord,
    id: &str,
) -> Result<(store::NetworkRow, Vec<store::SiteRow>), ConsoleError> {
    let id = view::parse_id(id)?;
    let net = store::find(&state.pool, user.org_id, id)
        .await
        .or_internal("load a network")?
        .ok_or_else(|| ConsoleError::not_found("Network"))?;
    let sites = store::sites(&state.pool, id)
        .await
        .or_internal("load sites")?;
    Ok((net, sites))
}

pub async fn preview(
    state: &AppState,
    user: &UserRecord,
    id: &str,
    kind: JobKind,
) -> Result<Plan, ConsoleError> {
    let (net, sites) = load(state, user, id).await?;
    allowed(net.status, kind)?;
    let changes: Vec<PlannedChange> = steps_for(&net, &sites, kind)?
        .into_iter()
        .map(|s| s.change)
        .collect();
    let (route_conflicts, routes_unchecked) = match kind {
        JobKind::Apply => {
            crate::provisioning::vpc_routes::preview_conflicts(state, &net, &sites).await
        }
        JobKind::Teardown => (Vec::new(), Vec::new()),
    };
    Ok(Plan {
        network_id: net.id.to_string(),
        kind: kind.as_str().to_string(),
        fingerprint: fingerprint(&changes),
        changes,
        route_conflicts,
        routes_unchecked,
    })
}

/// Starts a job that runs exactly the plan with `expected` fingerprint.
#[tracing::instrument(skip_all, fields(org_id = %user.org_id, kind = kind.as_str()))]
pub async fn start(
    state: &AppState,
    user: &UserRecord,
    id: &str,
    kind: JobKind,
    expected: &str,
) -> Result<JobView, ConsoleError> {
    let (net, sites) = load(state, user, id).await?;
    allowed(net.status, kind)?;
    let steps = steps_for(&net, &sites, kind)?;
    let changes: Vec<PlannedChange> = steps.iter().map(|s| s.change.clone()).collect();
    if fingerprint(&changes) != expected.trim() {
        return Err(ConsoleError::Conflict {
            message: "The plan changed since it was shown: review the new plan and confirm again."
                .into(),
        });
    }
    let plan = serde_json::to_value(&changes).or_internal("serialize a plan")?;
    let mut tx = state
        .pool
        .begin()
        .await
        .or_internal("begin a transaction")?;
    let job_id = jobs::insert_job(&mut *tx, net.id, kind, &plan)
        .await
        .or_internal("insert a job")?
        .ok_or_else(|| ConsoleError::Conflict {
            message: "The network already has a job running; wait for it to finish.".into(),
        })?;
    for s in &steps {
        jobs::insert_step(
            &mut *tx,
            jobs::NewStep {
                job_id,
                site_id: s.site_id,
                phase: s.phase,
                action: s.action,
                stack_name: &s.stack_name,
            },
        )
        .await
        .or_internal("insert a step")?;
    }
    let status = match kind {
        JobKind::Apply => NetworkStatus::Provisioning,
        JobKind::Teardown => NetworkStatus::Deleting,
    };
    store::set_status(&mut *tx, net.id, status, None)
        .await
        .or_internal("update a network")?;
    audit::record(
        &mut *tx,
        user.org_id,
        Some(user.id),
        &format!("network.{}", kind.as_str()),
        Some(&net.name),
    )
    .await
    .or_internal("audit a job")?;
    tx.commit().await.or_internal("commit a job")?;
    state.engine_wake.notify_waiters();
    tracing::info!(network_id = %net.id, job_id = %job_id, steps = steps.len(), "job started");
    jobs::latest(&state.pool, net.id)
        .await
        .or_internal("read back a job")?
        .ok_or(ConsoleError::Internal)
}
