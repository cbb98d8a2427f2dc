//! One turn of one step against AWS. Every turn first looks at what exists
//! (by deterministic stack name), so a turn repeated after a crash or by
//! another replica continues instead of duplicating.

use super::{
    jobs::{self, ClaimedStep, Outcome, StepAction},
    retry::{self, AfterFailure},
    templates::{self, ApplianceSpec, LeafAttachment},
};
use crate::{
    accounts,
    aws::{AccountAccess, AwsError},
    identity::orgs,
    networks::{model, store},
    state::AppState,
    topology::RouteTarget,
};
use aws_sdk_cloudformation::types::{Capability, Parameter, Stack};
use aws_sdk_ec2::types::Filter;
use ipnet::Ipv4Net;
use rand::RngCore;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::time::Duration;
use vpcmesh_protocol::Member;

const POLL: Duration = Duration::from_secs(2);
/// How long the routes step waits for the site's appliance instance once its
/// stack is complete. Bounded by time, not by a count of polls: the question
/// is whether EC2 has had long enough to launch an instance (Auto Scaling
/// keeps retrying capacity and spot for a while), and a count's meaning
/// would shift with the poll interval, busy workers and retried failures.
const INSTANCE_WAIT: Duration = Duration::from_secs(300);

/// Why a turn stopped early.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Broken(String),
    /// Instances launched now could never install their agent.
    #[error("this server has no vpcmesh-agent binary for the appliances to install: start it with --agent-binary PATH (VPCMESH_AGENT_BINARY)")]
    NoAgentBinary,
}

pub struct Ctx<'a> {
    pub state: &'a AppState,
    pub step: &'a ClaimedStep,
    pub owner: &'a str,
}

pub async fn run(ctx: &Ctx<'_>) -> Outcome {
    let policy = ctx.state.settings.step_retry;
    let failed_before = ctx.step.failures;
    let jitter = f64::from(rand::rng().next_u32()) / f64::from(u32::MAX);
    match turn(ctx).await {
        Ok(outcome) => outcome,
        Err(StepError::Aws(e)) if e.is_retryable() => {
            match policy.after_failure(failed_before, jitter) {
                AfterFailure::RetryIn(delay) => Outcome::Retry {
                    delay,
                    error: e.to_string(),
                },
                AfterFailure::GiveUp => Outcome::Failed(format!(
                    "{} {}: gave up after {}; last error: {}",
                    ctx.step.action.words(),
                    ctx.step.stack_name,
                    retry::failed_attempts(failed_before.saturating_add(1)),
                    last_words(&e)
                )),
            }
        }
        // The job's own state is in that database: no point giving up on it.
        Err(StepError::Db(e)) => Outcome::Retry {
            delay: policy.backoff(failed_before, jitter),
            error: format!("database: {e}"),
        },
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// A retryable error as the step's final word, without its promise of a retry.
fn last_words(e: &AwsError) -> String {
    match e {
        AwsError::Throttled { action } => format!("AWS kept throttling {action}"),
        AwsError::Unavailable { action, message } => {
            format!("AWS did not answer {action} ({message})")
        }
        other => other.to_string(),
    }
}

async fn turn(ctx: &Ctx<'_>) -> Result<Outcome, StepError> {
    let state = ctx.state;
    let step = ctx.step;
    let net = store::find_any(&state.pool, step.network_id)
        .await?
        .ok_or_else(|| StepError::Broken("the network is gone".into()))?;
    let sites = store::sites(&state.pool, net.id).await?;
    let site = sites
        .iter()
        .find(|s| s.id == step.site_id)
        .ok_or_else(|| StepError::Broken("the site is gone".into()))?;
    let external_id = orgs::external_id(&state.pool, net.org_id).await?;
    let role_arn = site.role_arn.as_deref().ok_or_else(|| {
        StepError::Broken(format!("site {}: its AWS account was removed", site.name))
    })?;
    let access =
        accounts::access(role_arn, &external_id).map_err(|e| StepError::Broken(e.to_string()))?;
    match step.action {
        StepAction::AddressStack | StepAction::ApplianceStack => {
            ensure_stack(ctx, &access, &net, &sites, site).await
        }
        StepAction::DeleteStack => delete_stack(ctx, &access, site).await,
        StepAction::Routes => routes(ctx, &access, &net, &sites, site, true).await,
        StepAction::RemoveRoutes => routes(ctx, &access, &net, &sites, site, false).await,
    }
}

/// Notes, under our lease, that this turn is about to change something in AWS.
async fn executing(ctx: &Ctx<'_>) -> Result<(), StepError> {
    if jobs::record_execution(&ctx.state.pool, ctx.step, ctx.owner).await? {
        Ok(())
    } else {
        Err(StepError::Broken("lost the lease".into()))
    }
}

async fn describe(
    cfn: &aws_sdk_cloudformation::Client,
    name: &str,
) -> Result<Option<Stack>, AwsError> {
    match cfn.describe_stacks().stack_name(name).send().await {
        Ok(out) => Ok(out.stacks().first().cloned()),
        Err(e) => match AwsError::from_sdk("cloudformation:DescribeStacks", e) {
            AwsError::Rejected { message, .. } if message.contains("does not exist") => Ok(None),
            e => Err(e),
        },
    }
}

/// Copies new stack events into the progress log (each once).
async fn record_stack_events(
    ctx: &Ctx<'_>,
    cfn: &aws_sdk_cloudformation::Client,
    stack: &str,
) -> Result<Option<String>, StepError> {
    let out = cfn
        .describe_stack_events()
        .stack_name(stack)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("cloudformation:DescribeStackEvents", e))?;
    let mut first_failure = None;
    for e in out.stack_events().iter().rev() {
        let status = e
            .resource_status()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default();
        let reason = e.resource_status_reason();
        if status.ends_with("_FAILED") && first_failure.is_none() {
            first_failure = Some(format!(
                "{}: {}",
                e.logical_resource_id().unwrap_or("stack"),
                reason.unwrap_or("failed")
            ));
        }
        let at = e
            .timestamp()
            .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t.secs()).ok());
        jobs::event(
            &ctx.state.pool,
            jobs::Event {
                network_id: ctx.step.network_id,
                job_id: Some(ctx.step.job_id),
                site_id: Some(ctx.step.site_id),
                source: "stack",
                source_id: e.event_id(),
                resource: e.logical_resource_id(),
                status: &status,
                message: reason,
                at,
            },
        )
        .await?;
    }
    Ok(first_failure)
}

fn outputs_of(stack: &Stack) -> Map<String, Value> {
    stack
        .outputs()
        .iter()
        .filter_map(|o| Some((o.output_key()?.to_string(), json!(o.output_value()?))))
        .collect()
}

async fn ensure_stack(
    ctx: &Ctx<'_>,
    access: &AccountAccess,
    net: &store::NetworkRow,
    sites: &[store::SiteRow],
    site: &store::SiteRow,
) -> Result<Outcome, StepError> {
    let step = ctx.step;
    let cfn = ctx.state.aws.cloudformation(access, &site.region).await?;
    let Some(stack) = describe(&cfn, &step.stack_name).await? else {
        let (body, params) = if step.action == StepAction::AddressStack {
            (
                templates::address_stack().map_err(|e| StepError::Broken(e.to_string()))?,
                vec![
                    ("NetworkId", net.id.to_string()),
                    ("SiteId", site.id.to_string()),
                ],
            )
        } else {
            appliance_template(ctx, access, net, sites, site).await?
        };
        executing(ctx).await?;
        let created = cfn
            .create_stack()
            .stack_name(&step.stack_name)
            .template_body(body)
            .set_parameters(Some(
                params
                    .into_iter()
                    .map(|(k, v)| {
                        Parameter::builder()
                            .parameter_key(k)
                            .parameter_value(v)
                            .build()
                    })
                    .collect(),
            ))
            .capabilities(Capability::CapabilityNamedIam)
            .client_request_token(&step.client_token)
            .tags(
                aws_sdk_cloudformation::types::Tag::builder()
                    .key("vpcmesh:network")
                    .value(net.id.to_string())
                    .build(),
            )
            .send()
            .await;
        match created.map_err(|e| AwsError::from_sdk("cloudformation:CreateStack", e)) {
            Ok(_) => {}
            // The stack name is ours alone: an SDK retry of our own call (or a
            // replica that got there first) created it. The next turn looks.
            Err(AwsError::Rejected { code, .. }) if code == "AlreadyExistsException" => {
                tracing::info!(stack = %step.stack_name, "stack already exists; following it");
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(stack = %step.stack_name, region = %site.region, "stack create requested");
        return Ok(Outcome::Waiting(Duration::from_millis(500)));
    };
    let failure = record_stack_events(ctx, &cfn, &step.stack_name).await?;
    let status = stack.stack_status().map(|s| s.as_str()).unwrap_or("");
    match status {
        "CREATE_COMPLETE" | "UPDATE_COMPLETE" => {
            let outputs = outputs_of(&stack);
            store::merge_outputs(&ctx.state.pool, site.id, &outputs).await?;
            Ok(Outcome::Succeeded(Value::Object(outputs)))
        }
        s if s.ends_with("_IN_PROGRESS")
            && !s.starts_with("ROLLBACK")
            && !s.starts_with("DELETE") =>
        {
            Ok(Outcome::Waiting(POLL))
        }
        s => Ok(Outcome::Failed(format!(
            "stack {} is {s}{}",
            step.stack_name,
            failure.map(|f| format!(" ({f})")).unwrap_or_default()
        ))),
    }
}

async fn appliance_template(
    ctx: &Ctx<'_>,
    access: &AccountAccess,
    net: &store::NetworkRow,
    sites: &[store::SiteRow],
    site: &store::SiteRow,
) -> Result<(String, Vec<(&'static str, String)>), StepError> {
    // Checked first: no bootstrap token is minted for a stack never created.
    let agent = ctx.state.agent.as_ref().ok_or(StepError::NoAgentBinary)?;
    let plans = model::compile(net, sites).map_err(|e| StepError::Broken(e.to_string()))?;
    let mine = plans
        .get(&site.id)
        .ok_or_else(|| StepError::Broken("the site has no compiled plan".into()))?;
    let mut peer_addresses = Vec::new();
    for t in &mine.tunnels {
        let peer = sites.iter().find(|s| s.id == t.peer);
        let ip = peer
            .and_then(|p| p.output("PublicIp"))
            .ok_or_else(|| StepError::Broken(format!("peer site {} has no address yet", t.peer)))?;
        peer_addresses.push(ip.to_string());
    }
    let facts = &site.discovered.0;
    let (a, b) = facts
        .subnets_in_two_azs()
        .or_else(|| facts.subnets.first().map(|s| (s, s)))
        .ok_or_else(|| StepError::Broken(format!("VPC {} has no subnets", site.vpc_id)))?;
    let leaves: Vec<LeafAttachment> = sites
        .iter()
        .filter(|l| !l.is_edge() && l.edge_site_id == Some(site.id))
        .map(|l| {
            let mut per_az: Vec<&crate::aws::discovery::SubnetFact> = Vec::new();
            for s in &l.discovered.0.subnets {
                if !per_az.iter().any(|p| p.az == s.az) {
                    per_az.push(s);
                }
            }
            LeafAttachment {
                vpc_id: l.vpc_id.clone(),
                subnet_ids: per_az.iter().map(|s| s.id.clone()).collect(),
                cidrs: l.cidrs.clone(),
            }
        })
        .collect();
    let remote_cidrs: Vec<String> = mine
        .tunnels
        .iter()
        .flat_map(|t| t.remote_cidrs.iter().map(ToString::to_string))
        .collect();
    let o = &net.options;
    let spec = ApplianceSpec {
        peer_addresses,
        vpc_cidrs: site.cidrs.clone(),
        ha: o.ha,
        nat_t: o.nat_t,
        spot_types: o.spot.then(|| o.instance_types.clone()),
        leaves,
        remote_cidrs,
    };
    let body = templates::appliance_stack(&spec).map_err(|e| StepError::Broken(e.to_string()))?;
    // One token per HA member: each member's launch template carries its own.
    let token_a = new_bootstrap_token(ctx, site.id, Member::A).await?;
    let token_b = new_bootstrap_token(ctx, site.id, Member::B).await?;
    let account = access.account().to_string();
    let route_table_arns: Vec<String> = facts
        .route_tables
        .iter()
        .map(|rt| format!("arn:aws:ec2:{}:{account}:route-table/{rt}", site.region))
        .collect();
    let mut params = vec![
        ("NetworkId", net.id.to_string()),
        ("SiteId", site.id.to_string()),
        ("VpcId", site.vpc_id.clone()),
        ("SubnetA", a.id.clone()),
        ("SubnetB", b.id.clone()),
        ("InstanceType", o.instance_types[0].clone()),
        ("ServerUrl", ctx.state.settings.public_origin.clone()),
        ("BootstrapTokenA", token_a),
        ("BootstrapTokenB", token_b),
        (
            "AllocationId",
            site.output("AllocationId").unwrap_or_default().to_string(),
        ),
        ("KmsKeyArn", net.kms_key_arn.clone()),
        ("RouteTableArns", route_table_arns.join(",")),
        ("HighAvailability", o.ha.to_string()),
    ];
    params.extend(agent.stack_parameters(&ctx.state.settings.public_origin));
    Ok((body, params))
}

/// A fresh registration token for one member of the site's pair; only its
/// hash is stored. It registers every instance the member's Auto Scaling
/// group launches (each checked with EC2) while the site lives. Earlier
/// tokens of the member stay valid too: a create retried with the same
/// request token leaves the stack with the first call's token, and without
/// an instance EC2 vouches for, no token registers anything.
async fn new_bootstrap_token(
    ctx: &Ctx<'_>,
    site_id: uuid::Uuid,
    member: Member,
) -> Result<String, StepError> {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let token = format!("vmb_{}", hex::encode(raw));
    sqlx::query(
        "INSERT INTO site_bootstrap_tokens (token_hash, site_id, member, expires_at)
         VALUES ($1, $2, $3, NULL)",
    )
    .bind(Sha256::digest(token.as_bytes()).to_vec())
    .bind(site_id)
    .bind(member.as_str())
    .execute(&ctx.state.pool)
    .await?;
    Ok(token)
}

async fn delete_stack(
    ctx: &Ctx<'_>,
    access: &AccountAccess,
    site: &store::SiteRow,
) -> Result<Outcome, StepError> {
    let step = ctx.step;
    let cfn = ctx.state.aws.cloudformation(access, &site.region).await?;
    let Some(stack) = describe(&cfn, &step.stack_name).await? else {
        return Ok(Outcome::Succeeded(json!({})));
    };
    let status = stack.stack_status().map(|s| s.as_str()).unwrap_or("");
    match status {
        "DELETE_COMPLETE" => Ok(Outcome::Succeeded(json!({}))),
        "DELETE_IN_PROGRESS" => {
            record_stack_events(ctx, &cfn, &step.stack_name).await?;
            Ok(Outcome::Waiting(POLL))
        }
        _ => {
            executing(ctx).await?;
            cfn.delete_stack()
                .stack_name(&step.stack_name)
                .client_request_token(&step.client_token)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("cloudformation:DeleteStack", e))?;
            tracing::info!(stack = %step.stack_name, region = %site.region, "stack delete requested");
            Ok(Outcome::Waiting(Duration::from_millis(500)))
        }
    }
}

/// The running instance of the site's HA member A: where routes point until
/// appliances report which member is active.
async fn active_instance(
    ec2: &aws_sdk_ec2::Client,
    site_id: &str,
) -> Result<Option<String>, AwsError> {
    let out = ec2
        .describe_instances()
        .filters(
            Filter::builder()
                .name("tag:vpcmesh:site")
                .values(site_id)
                .build(),
        )
        .filters(
            Filter::builder()
                .name("tag:vpcmesh:member")
                .values("a")
                .build(),
        )
        .filters(
            Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .build(),
        )
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("ec2:DescribeInstances", e))?;
    let mut ids: Vec<String> = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect();
    ids.sort();
    Ok(ids.into_iter().next())
}

/// Programs (or removes) the site's VPC routes for every remote CIDR, by
/// `vpcmesh_protocol::route_owner`'s rule (see `super::vpc_routes`).
async fn routes(
    ctx: &Ctx<'_>,
    access: &AccountAccess,
    net: &store::NetworkRow,
    sites: &[store::SiteRow],
    site: &store::SiteRow,
    install: bool,
) -> Result<Outcome, StepError> {
    let plans = model::compile(net, sites).map_err(|e| StepError::Broken(e.to_string()))?;
    let Some(mine) = plans.get(&site.id) else {
        return Ok(Outcome::Succeeded(json!({})));
    };
    let ec2 = ctx.state.aws.ec2(access, &site.region).await?;
    let tables = &site.discovered.0.route_tables;
    // The site's appliances are its edge's (a leaf has none of its own).
    let (edge, owners) = super::vpc_routes::owners(sites, site);
    let owners = &owners[..];
    let edge_id = edge.id;
    let current = super::vpc_routes::table_routes(&ec2, tables).await?;
    if !install {
        let hosts =
            super::vpc_routes::site_hosts(&ec2, owners, edge.output("TransitGatewayId")).await?;
        let ours: Vec<Ipv4Net> = mine.vpc_routes.iter().map(|(c, _)| *c).collect();
        let (gone, left) = super::vpc_routes::remove(&current, &ours, &hosts);
        let mut removed = 0;
        for r in gone {
            let Some(dest) = r.destination else { continue };
            match ec2
                .delete_route()
                .route_table_id(&r.table_id)
                .destination_cidr_block(dest.to_string())
                .send()
                .await
            {
                Ok(_) => removed += 1,
                Err(e) => match AwsError::from_sdk("ec2:DeleteRoute", e) {
                    AwsError::NotFound { .. } => {}
                    e => return Err(e.into()),
                },
            }
        }
        for r in &left {
            tracing::warn!(route_table = %r.table_id, destination = ?r.destination, target = %r.target, "teardown: a route to the network's CIDRs that vpcmesh did not create is left in place");
        }
        let note = if left.is_empty() {
            format!("{removed} route(s) removed")
        } else {
            let each: Vec<String> = left
                .iter()
                .map(|r| {
                    format!(
                        "{} {} -> {}",
                        r.table_id,
                        r.destination.map(|d| d.to_string()).unwrap_or_default(),
                        r.target
                    )
                })
                .collect();
            format!(
                "{removed} route(s) removed; left in place, not created by vpcmesh: {}",
                each.join(", ")
            )
        };
        jobs::step_event(&ctx.state.pool, ctx.step, "routes removed", Some(&note)).await?;
        return Ok(Outcome::Succeeded(
            json!({ "removed": removed, "left": left.len() }),
        ));
    }

    let instance = if mine
        .vpc_routes
        .iter()
        .any(|(_, t)| *t == RouteTarget::Appliance)
    {
        match active_instance(&ec2, &edge_id.to_string()).await? {
            Some(i) => Some(i),
            None if ctx.step.waited() < INSTANCE_WAIT => return Ok(Outcome::Waiting(POLL)),
            None => {
                return Ok(Outcome::Failed(format!(
                    "no running appliance instance (member A) appeared in {} within {} minutes of its stack completing: see its Auto Scaling group's activity history in {}",
                    edge.vpc_id,
                    INSTANCE_WAIT.as_secs() / 60,
                    edge.region
                )));
            }
        }
    } else {
        None
    };
    let tgw = if mine
        .vpc_routes
        .iter()
        .any(|(_, t)| *t == RouteTarget::TransitGateway)
    {
        Some(
            edge.output("TransitGatewayId")
                .ok_or_else(|| StepError::Broken("the edge has no Transit Gateway".into()))?
                .to_string(),
        )
    } else {
        None
    };
    let hosts = super::vpc_routes::site_hosts(&ec2, owners, tgw.as_deref()).await?;
    let changes = match super::vpc_routes::install(&current, tables, &mine.vpc_routes, &hosts) {
        Ok(changes) => changes,
        Err(conflicts) => {
            return Ok(Outcome::Failed(super::vpc_routes::Conflict::describe(
                &conflicts,
            )))
        }
    };
    executing(ctx).await?;
    let via = |target: RouteTarget| match target {
        RouteTarget::Appliance => (instance.clone(), None),
        RouteTarget::TransitGateway => (None, tgw.clone()),
    };
    let (mut created, mut replaced) = (0, 0);
    for change in &changes {
        match change {
            super::vpc_routes::Change::Create {
                table_id,
                destination,
                target,
            } => {
                let (via_instance, via_gateway) = via(*target);
                let done = ec2
                    .create_route()
                    .route_table_id(table_id)
                    .destination_cidr_block(destination.to_string())
                    .set_instance_id(via_instance)
                    .set_transit_gateway_id(via_gateway)
                    .send()
                    .await;
                match done.map_err(|e| AwsError::from_sdk("ec2:CreateRoute", e)) {
                    Ok(_) => created += 1,
                    // Someone made it since we read the table: read again.
                    Err(AwsError::Rejected { code, .. }) if code == "RouteAlreadyExists" => {
                        return Ok(Outcome::Waiting(POLL))
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            super::vpc_routes::Change::Replace {
                table_id,
                destination,
                target,
                was,
            } => {
                let (via_instance, via_gateway) = via(*target);
                ec2.replace_route()
                    .route_table_id(table_id)
                    .destination_cidr_block(destination.to_string())
                    .set_instance_id(via_instance)
                    .set_transit_gateway_id(via_gateway)
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk("ec2:ReplaceRoute", e))?;
                tracing::info!(route_table = %table_id, %destination, was = %was, "a dead or outdated route of the site replaced");
                replaced += 1;
            }
        }
    }
    let kept = tables.len() * mine.vpc_routes.len() - changes.len();
    let note = format!(
        "{} route(s) in {} table(s): {created} created, {replaced} replaced, {kept} already right",
        tables.len() * mine.vpc_routes.len(),
        tables.len()
    );
    jobs::step_event(&ctx.state.pool, ctx.step, "routes programmed", Some(&note)).await?;
    Ok(Outcome::Succeeded(
        json!({ "routes": created + replaced + kept, "created": created, "replaced": replaced, "instance": instance, "transit_gateway": tgw }),
    ))
}
