//! Creating a network: check the request, discover every VPC live through
//! its account's role, compile the topology, create key epoch 1 in the
//! customer's KMS key, then store it all in one transaction, claiming
//! every VPC for this network. Any failure before the commit leaves
//! nothing behind.

use super::{claims, data_keys, request, store, view};
use crate::{
    accounts::{self, store::AccountRecord},
    audit,
    aws::{
        discovery::{self, VpcFacts},
        AccountAccess, AwsError,
    },
    identity::{orgs, users::UserRecord},
    internal::OrInternal,
    state::AppState,
    topology::{self, SiteKind, Topology},
};
use app::api::{ConsoleError, NetworkRequest, NetworkSummary, SiteRole, TopologyKind};
use std::collections::HashMap;
use tokio::task::JoinSet;
use uuid::Uuid;

#[tracing::instrument(skip_all, fields(org_id = %user.org_id))]
pub async fn create(
    state: &AppState,
    user: &UserRecord,
    req: NetworkRequest,
) -> Result<NetworkSummary, ConsoleError> {
    let checked = request::check(&req)?;
    let pool = &state.pool;
    let name_taken: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM networks WHERE org_id = $1 AND lower(name) = lower($2) AND status <> 'deleted')",
    )
    .bind(user.org_id)
    .bind(&checked.name)
    .fetch_one(pool)
    .await
    .or_internal("check a network name")?;
    if name_taken {
        return Err(name_conflict(&checked.name));
    }

    // Every account involved must be registered in this organization.
    let external_id = orgs::external_id(pool, user.org_id)
        .await
        .or_internal("read the external ID")?;
    let mut accounts: HashMap<String, (AccountRecord, AccountAccess)> = HashMap::new();
    let wanted = checked
        .sites
        .iter()
        .map(|s| {
            (
                format!("sites[{}].account_id", s.index),
                s.account.to_string(),
            )
        })
        .chain(std::iter::once((
            "options.kms_key_arn".to_string(),
            checked.kms_key.account.to_string(),
        )));
    for (field, account) in wanted {
        if accounts.contains_key(&account) {
            continue;
        }
        let record = accounts::store::find_by_account_id(pool, user.org_id, &account)
            .await
            .or_internal("look up an account")?
            .ok_or_else(|| {
                ConsoleError::invalid(
                    &field,
                    format!("account {account} is not registered: add and verify it on the Accounts page first"),
                )
            })?;
        let access = accounts::access(&record.role_arn, &external_id)?;
        accounts.insert(account, (record, access));
    }

    let mut seen = HashMap::new();
    for s in &checked.sites {
        if let Some(first) = seen.insert(
            (s.account.to_string(), s.region.clone(), s.vpc_id.clone()),
            s.index,
        ) {
            return Err(ConsoleError::invalid(
                &format!("sites[{}].vpc_id", s.index),
                format!(
                    "{} is already sites[{first}]; each VPC can be in a network once",
                    s.vpc_id
                ),
            ));
        }
    }

    // A VPC another live network holds is refused before AWS is asked;
    // the claim in the transaction below is what decides a race.
    {
        let mut conn = pool.acquire().await.or_internal("check VPC claims")?;
        claims::check_free(&mut conn, user.org_id, &checked.sites).await?;
    }

    let facts = discover_all(state, &checked, &accounts).await?;

    // Compile before anything is created: overlaps, hub, leaves, regions.
    let network_id = Uuid::new_v4();
    let site_ids: Vec<Uuid> = checked.sites.iter().map(|_| Uuid::new_v4()).collect();
    let mut leaf_of: Vec<Option<Uuid>> = vec![None; checked.sites.len()];
    for s in checked.sites.iter().filter(|s| s.role == SiteRole::Leaf) {
        let edge = checked
            .sites
            .iter()
            .find(|e| e.role != SiteRole::Leaf && e.account == s.account && e.region == s.region);
        let Some(edge) = edge else {
            return Err(ConsoleError::invalid(
                &format!("sites[{}].role", s.index),
                format!(
                    "leaf '{}' needs an edge site in the same account and region ({}, {}) to attach to",
                    s.name, s.account, s.region
                ),
            ));
        };
        leaf_of[s.index] = Some(site_ids[edge.index]);
    }
    let hub = checked
        .sites
        .iter()
        .find(|s| s.role == SiteRole::Hub)
        .map(|s| site_ids[s.index]);
    let net = topology::Network {
        id: network_id,
        topology: match checked.topology {
            TopologyKind::FullMesh => Topology::FullMesh,
            TopologyKind::Transit => Topology::Transit { hub },
            TopologyKind::MeshWithLeaves => Topology::MeshWithLeaves,
        },
        sites: checked
            .sites
            .iter()
            .map(|s| topology::Site {
                id: site_ids[s.index],
                name: s.name.clone(),
                account_id: s.account.to_string(),
                region: s.region.clone(),
                vpc_id: s.vpc_id.clone(),
                cidrs: facts[s.index].cidrs.clone(),
                kind: match leaf_of[s.index] {
                    Some(edge) => SiteKind::Leaf { edge },
                    None => SiteKind::Edge,
                },
            })
            .collect(),
    };
    let plans =
        topology::compile(&net).map_err(|e| ConsoleError::invalid("sites", e.to_string()))?;

    // Key epoch 1, per tunnel (no agent runs yet): only ciphertexts reach us.
    let key_account = &accounts[&checked.kms_key.account.to_string()].1;
    let key_arn = checked.kms_key.to_string();
    let kms_client = state
        .aws
        .kms(key_account, &checked.kms_key.region)
        .await
        .map_err(|e| accounts::aws_error_for_user(e, key_account, None))?;
    let material = data_keys::generate(&kms_client, &key_arn, network_id, 1, true, &plans)
        .await
        .map_err(|e| match e {
            AwsError::NotFound { message, .. } => ConsoleError::invalid(
                "options.kms_key_arn",
                format!("KMS key {key_arn} was not found: {message}"),
            ),
            e => accounts::aws_error_for_user(e, key_account, None),
        })?;

    let mut tx = pool.begin().await.or_internal("begin a transaction")?;
    if !store::insert(
        &mut *tx,
        store::NewNetwork {
            id: network_id,
            org_id: user.org_id,
            name: &checked.name,
            topology: checked.topology,
            options: &checked.options,
            created_by: user.id,
        },
    )
    .await
    .or_internal("insert a network")?
    {
        return Err(name_conflict(&checked.name));
    }
    // Edges first: leaves reference them.
    let mut order: Vec<&request::CheckedSite> = checked.sites.iter().collect();
    order.sort_by_key(|s| s.role == SiteRole::Leaf);
    for s in order {
        store::insert_site(
            &mut *tx,
            store::NewSite {
                id: site_ids[s.index],
                network_id,
                account_ref: accounts[&s.account.to_string()].0.id,
                region: &s.region,
                vpc_id: &s.vpc_id,
                name: &s.name,
                leaf_of: leaf_of[s.index],
                is_hub: s.role == SiteRole::Hub,
                facts: &facts[s.index],
            },
        )
        .await
        .or_internal("insert a site")?;
    }
    // In one order for every transaction, so two creations racing for the
    // same VPCs wait on each other instead of deadlocking.
    let mut by_vpc: Vec<&request::CheckedSite> = checked.sites.iter().collect();
    by_vpc.sort_by_key(|s| (s.account.to_string(), s.region.clone(), s.vpc_id.clone()));
    for s in by_vpc {
        claims::claim(&mut tx, user.org_id, network_id, site_ids[s.index], s).await?;
    }
    data_keys::insert_epoch(&mut tx, network_id, 1, &key_arn, &material)
        .await
        .or_internal("store key epoch 1")?;
    audit::record(
        &mut *tx,
        user.org_id,
        Some(user.id),
        "network.created",
        Some(&checked.name),
    )
    .await
    .or_internal("audit a new network")?;
    tx.commit().await.or_internal("commit a new network")?;
    tracing::info!(network_id = %network_id, sites = checked.sites.len(), "network created");
    view::summary(pool, user.org_id, network_id).await
}

fn name_conflict(name: &str) -> ConsoleError {
    ConsoleError::Conflict {
        message: format!("A network named '{name}' already exists."),
    }
}

/// Describes every site's VPC, in parallel across accounts and regions.
async fn discover_all(
    state: &AppState,
    checked: &request::CheckedRequest,
    accounts: &HashMap<String, (AccountRecord, AccountAccess)>,
) -> Result<Vec<VpcFacts>, ConsoleError> {
    let mut tasks = JoinSet::new();
    for s in &checked.sites {
        let aws = state.aws.clone();
        let access = accounts[&s.account.to_string()].1.clone();
        let (index, region, vpc_id) = (s.index, s.region.clone(), s.vpc_id.clone());
        tasks.spawn(async move {
            let result = match aws.ec2(&access, &region).await {
                Ok(ec2) => discovery::describe_vpc(&ec2, &vpc_id).await,
                Err(e) => Err(e),
            };
            (index, access, result)
        });
    }
    let mut facts: Vec<Option<VpcFacts>> = vec![None; checked.sites.len()];
    let mut first_error: Option<(usize, ConsoleError)> = None;
    while let Some(joined) = tasks.join_next().await {
        let (index, access, result) = joined.or_internal("join a discovery task")?;
        let s = &checked.sites[index];
        let outcome = result
            .map_err(|e| match e {
                AwsError::NotFound { .. } => ConsoleError::invalid(
                    &format!("sites[{index}].vpc_id"),
                    format!(
                        "VPC {} was not found in account {} in {}",
                        s.vpc_id, s.account, s.region
                    ),
                ),
                e => accounts::aws_error_for_user(e, &access, None),
            })
            .and_then(|f| check_subnets(checked, s, f));
        match outcome {
            Ok(f) => facts[index] = Some(f),
            Err(e) => {
                if first_error.as_ref().is_none_or(|(i, _)| index < *i) {
                    first_error = Some((index, e));
                }
            }
        }
    }
    if let Some((_, e)) = first_error {
        return Err(e);
    }
    facts
        .into_iter()
        .map(|f| f.ok_or(ConsoleError::Internal))
        .collect()
}

fn check_subnets(
    checked: &request::CheckedRequest,
    s: &request::CheckedSite,
    facts: VpcFacts,
) -> Result<VpcFacts, ConsoleError> {
    let field = format!("sites[{}].vpc_id", s.index);
    if facts.cidrs.is_empty() {
        return Err(ConsoleError::invalid(
            &field,
            format!("VPC {} has no IPv4 CIDR", s.vpc_id),
        ));
    }
    if facts.subnets.is_empty() {
        return Err(ConsoleError::invalid(
            &field,
            format!("VPC {} has no subnets", s.vpc_id),
        ));
    }
    if s.role != SiteRole::Leaf && checked.options.ha && facts.subnets_in_two_azs().is_none() {
        return Err(ConsoleError::invalid(
            &field,
            format!(
                "VPC {} has subnets in one availability zone only; an HA pair needs two (add a subnet in another AZ, or turn HA off)",
                s.vpc_id
            ),
        ));
    }
    if facts.route_tables.is_empty() {
        return Err(ConsoleError::invalid(
            &field,
            format!("VPC {} has no route tables", s.vpc_id),
        ));
    }
    Ok(facts)
}
