//! What a customer VPC is, read live through the assumed role: its CIDRs,
//! subnets per AZ and route tables. Nothing about a VPC is typed by users.

use super::AwsError;
use aws_sdk_ec2::types::Filter;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetFact {
    pub id: String,
    pub az: String,
    pub cidr: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VpcFacts {
    pub cidrs: Vec<Ipv4Net>,
    pub subnets: Vec<SubnetFact>,
    pub route_tables: Vec<String>,
}

impl VpcFacts {
    /// One subnet in each of the first two AZs (sorted), for the HA pair.
    pub fn subnets_in_two_azs(&self) -> Option<(&SubnetFact, &SubnetFact)> {
        let mut subnets: Vec<&SubnetFact> = self.subnets.iter().collect();
        subnets.sort_by(|a, b| (&a.az, &a.id).cmp(&(&b.az, &b.id)));
        let first = *subnets.first()?;
        let second = subnets.iter().find(|s| s.az != first.az)?;
        Some((first, second))
    }

    pub fn azs(&self) -> Vec<String> {
        let mut azs: Vec<String> = self.subnets.iter().map(|s| s.az.clone()).collect();
        azs.sort();
        azs.dedup();
        azs
    }
}

pub async fn describe_vpc(ec2: &aws_sdk_ec2::Client, vpc_id: &str) -> Result<VpcFacts, AwsError> {
    let vpcs = ec2
        .describe_vpcs()
        .vpc_ids(vpc_id)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("ec2:DescribeVpcs", e))?;
    let vpc = vpcs.vpcs().first().ok_or_else(|| AwsError::NotFound {
        action: "ec2:DescribeVpcs",
        message: format!("VPC {vpc_id} does not exist"),
    })?;
    let mut cidrs: Vec<Ipv4Net> = vpc
        .cidr_block_association_set()
        .iter()
        .filter(|a| {
            a.cidr_block_state()
                .and_then(|s| s.state())
                .is_none_or(|s| s.as_str() == "associated")
        })
        .filter_map(|a| a.cidr_block()?.parse().ok())
        .collect();
    if cidrs.is_empty() {
        cidrs.extend(vpc.cidr_block().and_then(|c| c.parse::<Ipv4Net>().ok()));
    }
    cidrs.sort();
    cidrs.dedup();

    let by_vpc = Filter::builder().name("vpc-id").values(vpc_id).build();
    // Every page: a VPC may have more subnets and tables than one answer.
    let subnets = ec2
        .describe_subnets()
        .filters(by_vpc.clone())
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| AwsError::from_sdk("ec2:DescribeSubnets", e))?;
    let mut subnets: Vec<SubnetFact> = subnets
        .iter()
        .filter_map(|s| {
            Some(SubnetFact {
                id: s.subnet_id()?.to_string(),
                az: s.availability_zone()?.to_string(),
                cidr: s.cidr_block().unwrap_or_default().to_string(),
            })
        })
        .collect();
    subnets.sort_by(|a, b| (&a.az, &a.id).cmp(&(&b.az, &b.id)));

    let tables = ec2
        .describe_route_tables()
        .filters(by_vpc)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| AwsError::from_sdk("ec2:DescribeRouteTables", e))?;
    let mut route_tables: Vec<String> = tables
        .iter()
        .filter_map(|t| t.route_table_id().map(str::to_string))
        .collect();
    route_tables.sort();
    Ok(VpcFacts {
        cidrs,
        subnets,
        route_tables,
    })
}

/// Every VPC of the account in the client's region, with its Name tag, CIDRs,
/// AZs and subnet count; sorted by id.
pub async fn list_vpcs(ec2: &aws_sdk_ec2::Client) -> Result<Vec<app::api::VpcChoice>, AwsError> {
    let vpcs = ec2
        .describe_vpcs()
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| AwsError::from_sdk("ec2:DescribeVpcs", e))?;
    let subnets = ec2
        .describe_subnets()
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| AwsError::from_sdk("ec2:DescribeSubnets", e))?;
    let mut out: Vec<app::api::VpcChoice> = vpcs
        .iter()
        .filter_map(|v| {
            let id = v.vpc_id()?.to_string();
            let mut cidrs: Vec<String> = v
                .cidr_block_association_set()
                .iter()
                .filter_map(|a| a.cidr_block().map(str::to_string))
                .collect();
            if cidrs.is_empty() {
                cidrs.extend(v.cidr_block().map(str::to_string));
            }
            let mine: Vec<_> = subnets
                .iter()
                .filter(|s| s.vpc_id() == Some(id.as_str()))
                .collect();
            let mut azs: Vec<String> = mine
                .iter()
                .filter_map(|s| s.availability_zone().map(str::to_string))
                .collect();
            azs.sort();
            azs.dedup();
            Some(app::api::VpcChoice {
                name: v
                    .tags()
                    .iter()
                    .find(|t| t.key() == Some("Name"))
                    .and_then(|t| t.value().map(str::to_string)),
                vpc_id: id,
                cidrs,
                availability_zones: azs,
                subnets: mine.len(),
            })
        })
        .collect();
    out.sort_by(|a, b| a.vpc_id.cmp(&b.vpc_id));
    Ok(out)
}
