//! The demo organization the local run command creates, so a newcomer can
//! sign in at once.

use crate::{
    auth::password,
    identity::{orgs, users, validate},
};
use app::api::Role;
use rand::{distr::Alphanumeric, Rng};
use sqlx::PgPool;

pub const DEMO_ORG: &str = "Demo";

/// Ensures the demo organization and its admin exist, and gives the admin a
/// fresh random password, which is returned (and never stored in plaintext).
pub async fn ensure_demo_admin(pool: &PgPool, email: &str) -> anyhow::Result<String> {
    let email = validate::email(email).map_err(|e| anyhow::anyhow!("demo admin {e}"))?;
    let password: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(20)
        .map(char::from)
        .collect();
    let hash = password::hash(&password).await?;
    let mut tx = pool.begin().await?;
    let org = match orgs::find_by_name(&mut *tx, DEMO_ORG).await? {
        Some(org) => org,
        None => orgs::create(&mut *tx, DEMO_ORG).await?,
    };
    match users::find_in_org_by_email(&mut *tx, org.id, &email).await? {
        Some(user) => {
            users::set_password_hash(&mut *tx, user.id, &hash).await?;
        }
        None => {
            users::insert(
                &mut *tx,
                users::NewUserRow {
                    org_id: org.id,
                    email: &email,
                    name: "Demo Admin",
                    role: Role::Admin,
                    password_hash: &hash,
                },
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(password)
}

/// The demo network's name and the emulated customer account behind it.
pub const DEMO_NETWORK: &str = "demo mesh";
pub const DEMO_ACCOUNT: &str = "210987654321";
const DEMO_SITES: [(&str, &str); 3] = [
    ("us-east-1", "10.10.0.0/16"),
    ("eu-west-1", "10.20.0.0/16"),
    ("ap-southeast-2", "10.30.0.0/16"),
];

/// With a local AWS emulator only: a customer account with VPCs in three
/// regions (plus one that overlaps, to see the wizard flag it), registered and
/// verified, and a full mesh over them that starts provisioning at once. The
/// emulator forgets everything when it stops, so an earlier demo network is
/// retired first.
pub async fn seed_demo_network(state: &crate::AppState, email: &str) -> anyhow::Result<()> {
    use crate::{accounts, networks, provisioning::jobs::JobKind};
    use anyhow::Context;
    use app::api::{
        NetworkOptions, NetworkRequest, NewAccount, SiteRequest, SiteRole, TopologyKind,
    };

    anyhow::ensure!(
        state.settings.aws_endpoint_url.is_some(),
        "the demo network needs a local AWS emulator (--aws-endpoint-url)"
    );
    let pool = &state.pool;
    let email = validate::email(email).map_err(|e| anyhow::anyhow!("demo admin {e}"))?;
    let org = orgs::find_by_name(pool, DEMO_ORG)
        .await?
        .context("the demo organization must exist first")?;
    let admin = users::find_in_org_by_email(pool, org.id, &email)
        .await?
        .context("the demo admin must exist first")?;
    let admin = users::find(pool, admin.org_id, admin.id)
        .await?
        .context("the demo admin vanished")?;

    // Earlier demo networks pointed at emulator state that is gone now.
    sqlx::query(
        "UPDATE jobs SET state = 'failed', error = 'the local emulator restarted', finished_at = now()
          WHERE state = 'running' AND network_id IN (SELECT id FROM networks WHERE org_id = $1 AND name = $2)",
    )
    .bind(admin.org_id)
    .bind(DEMO_NETWORK)
    .execute(pool)
    .await?;
    sqlx::query(
        "UPDATE networks SET status = 'deleted', deleted_at = now(), status_note = 'the local emulator restarted'
          WHERE org_id = $1 AND name = $2 AND status <> 'deleted'",
    )
    .bind(admin.org_id)
    .bind(DEMO_NETWORK)
    .execute(pool)
    .await?;

    let role_arn = format!("arn:aws:iam::{DEMO_ACCOUNT}:role/vpcmesh-access");
    if accounts::store::find_by_account_id(pool, admin.org_id, DEMO_ACCOUNT)
        .await?
        .is_none()
    {
        accounts::ops::add(
            state,
            &admin,
            NewAccount {
                account_id: DEMO_ACCOUNT.into(),
                role_arn: role_arn.clone(),
                label: Some("Demo (local emulator)".into()),
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("register the demo account: {e}"))?;
    }
    let external_id = orgs::external_id(pool, admin.org_id).await?;
    let access = accounts::access(&role_arn, &external_id).map_err(|e| anyhow::anyhow!("{e}"))?;

    let mut vpcs = Vec::new();
    for (region, cidr) in DEMO_SITES {
        let ec2 = state.aws.ec2(&access, region).await?;
        vpcs.push(emulated_vpc(&ec2, cidr, &format!("demo-{region}")).await?);
    }
    let ec2 = state.aws.ec2(&access, "us-east-1").await?;
    emulated_vpc(&ec2, "10.20.128.0/17", "legacy (overlaps eu-west-1)").await?;
    let kms = state.aws.kms(&access, "us-east-1").await?;
    let key = kms
        .create_key()
        .description("vpcmesh demo network key")
        .send()
        .await
        .context("create the demo KMS key")?;
    let key_arn = key
        .key_metadata()
        .map(|m| m.arn().unwrap_or_default().to_string())
        .context("the demo key has no ARN")?;

    let network = networks::create::create(
        state,
        &admin,
        NetworkRequest {
            name: DEMO_NETWORK.into(),
            topology: TopologyKind::FullMesh,
            sites: DEMO_SITES
                .iter()
                .zip(&vpcs)
                .map(|((region, _), vpc)| SiteRequest {
                    account_id: DEMO_ACCOUNT.into(),
                    region: region.to_string(),
                    vpc_id: vpc.clone(),
                    role: SiteRole::Edge,
                    name: Some(format!("demo {region}")),
                })
                .collect(),
            options: NetworkOptions {
                instance_types: vec!["t3.small".into()],
                ha: true,
                spot: false,
                nat_t: true,
                kms_key_arn: key_arn,
            },
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("create the demo network: {e}"))?;
    let plan = networks::plan::preview(state, &admin, &network.id, JobKind::Apply)
        .await
        .map_err(|e| anyhow::anyhow!("plan the demo network: {e}"))?;
    networks::plan::start(
        state,
        &admin,
        &network.id,
        JobKind::Apply,
        &plan.fingerprint,
    )
    .await
    .map_err(|e| anyhow::anyhow!("provision the demo network: {e}"))?;
    tracing::info!(network_id = %network.id, "demo network provisioning");
    Ok(())
}

/// A VPC in the emulator with a subnet in each of two AZs, a route table
/// and an Internet gateway (its default route).
async fn emulated_vpc(ec2: &aws_sdk_ec2::Client, cidr: &str, name: &str) -> anyhow::Result<String> {
    use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
    let net: ipnet::Ipv4Net = cidr.parse()?;
    let vpc = ec2
        .create_vpc()
        .cidr_block(cidr)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Vpc)
                .tags(Tag::builder().key("Name").value(name).build())
                .build(),
        )
        .send()
        .await?;
    let vpc_id = vpc
        .vpc()
        .and_then(|v| v.vpc_id())
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("CreateVpc returned no id"))?;
    let zones = ec2.describe_availability_zones().send().await?;
    let table = ec2.create_route_table().vpc_id(&vpc_id).send().await?;
    let table_id = table
        .route_table()
        .and_then(|t| t.route_table_id())
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("CreateRouteTable returned no id"))?;
    // A public VPC: the appliances' Elastic IPs need the Internet gateway.
    let igw = ec2.create_internet_gateway().send().await?;
    let igw_id = igw
        .internet_gateway()
        .and_then(|g| g.internet_gateway_id())
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("CreateInternetGateway returned no id"))?;
    ec2.attach_internet_gateway()
        .internet_gateway_id(&igw_id)
        .vpc_id(&vpc_id)
        .send()
        .await?;
    ec2.create_route()
        .route_table_id(&table_id)
        .destination_cidr_block("0.0.0.0/0")
        .gateway_id(&igw_id)
        .send()
        .await?;
    let quarters: Vec<ipnet::Ipv4Net> = net.subnets(net.prefix_len() + 2)?.collect();
    for (zone, block) in zones.availability_zones().iter().take(2).zip(quarters) {
        let subnet = ec2
            .create_subnet()
            .vpc_id(&vpc_id)
            .cidr_block(block.to_string())
            .set_availability_zone(zone.zone_name().map(str::to_string))
            .send()
            .await?;
        if let Some(id) = subnet.subnet().and_then(|s| s.subnet_id()) {
            ec2.associate_route_table()
                .route_table_id(&table_id)
                .subnet_id(id)
                .send()
                .await?;
        }
    }
    Ok(vpc_id)
}
