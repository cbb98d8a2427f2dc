//! The CloudFormation templates vpcmesh deploys per site, from the YAML in
//! `server/templates/`, rendered for one site: its peers' addresses, HA, spot
//! pool and (mesh with leaves) the regional Transit Gateway.

use serde_json::{json, Map, Value};

const ADDRESS: &str = include_str!("../../templates/address-stack.yaml");
const APPLIANCE: &str = include_str!("../../templates/appliance-stack.yaml");

#[derive(Debug, thiserror::Error)]
#[error("stack template {name} is not valid YAML: {source}")]
pub struct TemplateError {
    name: &'static str,
    source: serde_norway::Error,
}

fn parse(name: &'static str, yaml: &str) -> Result<Value, TemplateError> {
    serde_norway::from_str(yaml).map_err(|source| TemplateError { name, source })
}

/// The address stack is the same for every site.
pub fn address_stack() -> Result<String, TemplateError> {
    Ok(parse("address-stack.yaml", ADDRESS)?.to_string())
}

/// A leaf VPC attached to this edge through the Transit Gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafAttachment {
    pub vpc_id: String,
    /// One subnet per AZ.
    pub subnet_ids: Vec<String>,
    pub cidrs: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplianceSpec {
    /// Public IPs of the other sites this one tunnels to.
    pub peer_addresses: Vec<String>,
    pub ha: bool,
    pub nat_t: bool,
    /// Several types = spot mixed-instances pool.
    pub spot_types: Option<Vec<String>>,
    /// Mesh with leaves: leaves attached here, and every CIDR reached through
    /// this edge's appliances (the rest of the network).
    pub leaves: Vec<LeafAttachment>,
    pub remote_cidrs: Vec<String>,
}

pub fn appliance_stack(spec: &ApplianceSpec) -> Result<String, TemplateError> {
    let mut t = parse("appliance-stack.yaml", APPLIANCE)?;
    if !spec.ha {
        t["Parameters"]["HighAvailability"]["Default"] = json!("false");
    }
    let ingress = t["Resources"]["ApplianceSecurityGroup"]["Properties"]["SecurityGroupIngress"]
        .as_array_mut()
        .map(std::mem::take)
        .unwrap_or_default();
    let mut ingress = ingress;
    for ip in &spec.peer_addresses {
        let cidr = format!("{ip}/32");
        // Protocol 50 needs explicit -1 ports (EC2 accepts it; moto insists).
        ingress.push(json!({"Description": "ESP from a peer site", "IpProtocol": "50", "FromPort": -1, "ToPort": -1, "CidrIp": cidr}));
        ingress.push(json!({"Description": "IKE port from a peer site", "IpProtocol": "udp", "FromPort": 500, "ToPort": 500, "CidrIp": cidr}));
        if spec.nat_t {
            ingress.push(json!({"Description": "ESP in UDP (NAT-T) from a peer site", "IpProtocol": "udp", "FromPort": 4500, "ToPort": 4500, "CidrIp": cidr}));
        }
    }
    t["Resources"]["ApplianceSecurityGroup"]["Properties"]["SecurityGroupIngress"] =
        Value::Array(ingress);

    if let Some(types) = &spec.spot_types {
        for group in ["GroupA", "GroupB"] {
            let props = &mut t["Resources"][group]["Properties"];
            let template = props
                .as_object_mut()
                .and_then(|p| p.remove("LaunchTemplate"))
                .unwrap_or(Value::Null);
            props["MixedInstancesPolicy"] = json!({
                "InstancesDistribution": {
                    "OnDemandBaseCapacity": 0,
                    "OnDemandPercentageAboveBaseCapacity": 0,
                    "SpotAllocationStrategy": "price-capacity-optimized"
                },
                "LaunchTemplate": {
                    "LaunchTemplateSpecification": template,
                    "Overrides": types.iter().map(|t| json!({"InstanceType": t})).collect::<Vec<_>>()
                }
            });
        }
    }

    if !spec.leaves.is_empty() {
        add_transit_gateway(&mut t, spec);
    }
    Ok(t.to_string())
}

/// The regional Transit Gateway: the edge VPC and every leaf attached, one
/// route table where leaves reach the rest of the network via the edge.
fn add_transit_gateway(t: &mut Value, spec: &ApplianceSpec) {
    let mut resources = Map::new();
    resources.insert(
        "TransitGateway".into(),
        json!({
            "Type": "AWS::EC2::TransitGateway",
            "Properties": {
                "Description": "vpcmesh leaves of this site",
                "DefaultRouteTableAssociation": "disable",
                "DefaultRouteTablePropagation": "disable",
                "Tags": [{"Key": "vpcmesh:site", "Value": {"Ref": "SiteId"}}]
            }
        }),
    );
    resources.insert(
        "TransitRouteTable".into(),
        json!({
            "Type": "AWS::EC2::TransitGatewayRouteTable",
            "Properties": {"TransitGatewayId": {"Ref": "TransitGateway"}}
        }),
    );
    let mut attachments = vec![(
        "EdgeAttachment".to_string(),
        json!({"Ref": "VpcId"}),
        json!([{"Ref": "SubnetA"}, {"Ref": "SubnetB"}]),
    )];
    for (i, leaf) in spec.leaves.iter().enumerate() {
        attachments.push((
            format!("LeafAttachment{i}"),
            json!(leaf.vpc_id),
            json!(leaf.subnet_ids),
        ));
    }
    for (name, vpc, subnets) in &attachments {
        resources.insert(name.clone(), json!({
            "Type": "AWS::EC2::TransitGatewayAttachment",
            "Properties": {"TransitGatewayId": {"Ref": "TransitGateway"}, "VpcId": vpc, "SubnetIds": subnets}
        }));
        resources.insert(format!("{name}Association"), json!({
            "Type": "AWS::EC2::TransitGatewayRouteTableAssociation",
            "Properties": {"TransitGatewayAttachmentId": {"Ref": name}, "TransitGatewayRouteTableId": {"Ref": "TransitRouteTable"}}
        }));
        resources.insert(format!("{name}Propagation"), json!({
            "Type": "AWS::EC2::TransitGatewayRouteTablePropagation",
            "Properties": {"TransitGatewayAttachmentId": {"Ref": name}, "TransitGatewayRouteTableId": {"Ref": "TransitRouteTable"}}
        }));
    }
    for (i, cidr) in spec.remote_cidrs.iter().enumerate() {
        resources.insert(
            format!("RemoteRoute{i}"),
            json!({
                "Type": "AWS::EC2::TransitGatewayRoute",
                "Properties": {
                    "DestinationCidrBlock": cidr,
                    "TransitGatewayAttachmentId": {"Ref": "EdgeAttachment"},
                    "TransitGatewayRouteTableId": {"Ref": "TransitRouteTable"}
                }
            }),
        );
    }
    if let Some(r) = t["Resources"].as_object_mut() {
        r.extend(resources);
    }
    t["Outputs"]["TransitGatewayId"] = json!({"Value": {"Ref": "TransitGateway"}});
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ApplianceSpec {
        ApplianceSpec {
            peer_addresses: vec!["198.51.100.7".into(), "203.0.113.9".into()],
            ha: true,
            nat_t: true,
            spot_types: None,
            leaves: vec![],
            remote_cidrs: vec![],
        }
    }

    fn rendered(spec: &ApplianceSpec) -> Value {
        serde_json::from_str(&appliance_stack(spec).expect("renders")).expect("json")
    }

    #[test]
    fn peers_get_exactly_esp_ike_and_nat_t() {
        let t = rendered(&spec());
        let ingress = t["Resources"]["ApplianceSecurityGroup"]["Properties"]
            ["SecurityGroupIngress"]
            .as_array()
            .expect("ingress")
            .clone();
        let from_peer: Vec<&Value> = ingress
            .iter()
            .filter(|r| r["CidrIp"] == "198.51.100.7/32")
            .collect();
        assert_eq!(from_peer.len(), 3);
        let mut no_nat = spec();
        no_nat.nat_t = false;
        let t = rendered(&no_nat);
        let rules = t["Resources"]["ApplianceSecurityGroup"]["Properties"]["SecurityGroupIngress"]
            .as_array()
            .expect("ingress")
            .len();
        assert_eq!(rules, 2 + 2 * 2);
    }

    #[test]
    fn spot_turns_both_groups_into_mixed_pools() {
        let mut s = spec();
        s.spot_types = Some(vec!["c6in.large".into(), "c5n.large".into()]);
        let t = rendered(&s);
        for g in ["GroupA", "GroupB"] {
            let p = &t["Resources"][g]["Properties"];
            assert!(p.get("LaunchTemplate").is_none());
            assert_eq!(
                p["MixedInstancesPolicy"]["LaunchTemplate"]["Overrides"]
                    .as_array()
                    .map(Vec::len),
                Some(2)
            );
        }
    }

    #[test]
    fn no_ha_drops_the_second_group() {
        let mut s = spec();
        s.ha = false;
        let t = rendered(&s);
        assert_eq!(t["Parameters"]["HighAvailability"]["Default"], "false");
    }

    #[test]
    fn leaves_bring_a_transit_gateway() {
        let mut s = spec();
        s.leaves = vec![LeafAttachment {
            vpc_id: "vpc-0123456789abcdef0".into(),
            subnet_ids: vec!["subnet-0123456789abcdef0".into()],
            cidrs: vec!["10.9.0.0/16".into()],
        }];
        s.remote_cidrs = vec!["10.1.0.0/16".into(), "10.2.0.0/16".into()];
        let t = rendered(&s);
        let r = &t["Resources"];
        assert_eq!(r["TransitGateway"]["Type"], "AWS::EC2::TransitGateway");
        assert_eq!(
            r["LeafAttachment0"]["Properties"]["VpcId"],
            "vpc-0123456789abcdef0"
        );
        assert_eq!(
            r["RemoteRoute1"]["Properties"]["DestinationCidrBlock"],
            "10.2.0.0/16"
        );
        assert!(t["Outputs"]["TransitGatewayId"].is_object());
    }
}
