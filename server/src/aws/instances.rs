//! EC2's view of one instance: what registration checks an appliance's
//! claims against (through the customer's assumed role).

use super::AwsError;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The tag EC2 Auto Scaling puts on every instance it launches.
pub const GROUP_TAG: &str = "aws:autoscaling:groupName";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceFacts {
    pub id: String,
    /// `pending`, `running`, `stopping`, ...
    pub state: String,
    pub availability_zone: String,
    /// Every private address of every interface.
    pub private_ips: Vec<Ipv4Addr>,
    pub tags: BTreeMap<String, String>,
}

/// The instance, or `None` when EC2 does not know it.
pub async fn describe(
    ec2: &aws_sdk_ec2::Client,
    instance_id: &str,
) -> Result<Option<InstanceFacts>, AwsError> {
    let out = match ec2
        .describe_instances()
        .instance_ids(instance_id)
        .send()
        .await
    {
        Ok(out) => out,
        Err(e) => {
            return match AwsError::from_sdk("ec2:DescribeInstances", e) {
                AwsError::NotFound { .. } => Ok(None),
                AwsError::Rejected { code, .. } if code == "InvalidInstanceID.Malformed" => {
                    Ok(None)
                }
                other => Err(other),
            }
        }
    };
    let Some(i) = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .find(|i| i.instance_id() == Some(instance_id))
    else {
        return Ok(None);
    };
    let mut private_ips: Vec<Ipv4Addr> = i
        .network_interfaces()
        .iter()
        .flat_map(|n| n.private_ip_addresses())
        .filter_map(|a| a.private_ip_address()?.parse().ok())
        .collect();
    if let Some(ip) = i.private_ip_address().and_then(|a| a.parse().ok()) {
        if !private_ips.contains(&ip) {
            private_ips.push(ip);
        }
    }
    Ok(Some(InstanceFacts {
        id: instance_id.to_string(),
        state: i
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_string())
            .unwrap_or_default(),
        availability_zone: i
            .placement()
            .and_then(|p| p.availability_zone())
            .unwrap_or_default()
            .to_string(),
        private_ips,
        tags: i
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
            .collect(),
    }))
}
