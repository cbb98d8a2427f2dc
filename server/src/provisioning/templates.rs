//! The CloudFormation templates vpcmesh deploys per site, from the YAML in
//! `server/templates/`, rendered for one site: its peers' addresses, HA, spot
//! pool and (mesh with leaves) the regional Transit Gateway.

use serde_json::{json, Map, Value};

const ADDRESS: &str = include_str!("../../templates/address-stack.yaml");
const APPLIANCE: &str = include_str!("../../templates/appliance-stack.yaml");
/// The appliances' user data (both members), filled by CloudFormation's
/// `Fn::Sub` with the stack parameters and the member's own values.
pub const USER_DATA: &str = include_str!("../../templates/user-data.sh");
/// The launch templates whose instances run [`USER_DATA`].
pub const LAUNCH_TEMPLATES: [&str; 2] = ["LaunchTemplateA", "LaunchTemplateB"];

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("stack template {name} is not valid YAML: {source}")]
    Yaml {
        name: &'static str,
        source: serde_norway::Error,
    },
    #[error("appliance-stack.yaml: {0} has no UserData Fn::Sub [script, values] for user-data.sh")]
    NoUserDataSlot(&'static str),
}

fn parse(name: &'static str, yaml: &str) -> Result<Value, TemplateError> {
    serde_norway::from_str(yaml).map_err(|source| TemplateError::Yaml { name, source })
}

/// Puts the one user-data script in place of each launch template's
/// placeholder; the YAML keeps which member and token go with it.
fn put_user_data(t: &mut Value) -> Result<(), TemplateError> {
    for lt in LAUNCH_TEMPLATES {
        let slot = t["Resources"][lt]["Properties"]["LaunchTemplateData"]["UserData"]["Fn::Base64"]
            ["Fn::Sub"]
            .get_mut(0)
            .filter(|s| s.is_string())
            .ok_or(TemplateError::NoUserDataSlot(lt))?;
        *slot = json!(USER_DATA);
    }
    Ok(())
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
    /// Every CIDR block of the site's VPC (a VPC may have several).
    pub vpc_cidrs: Vec<String>,
    pub ha: bool,
    pub nat_t: bool,
    /// Several types = spot mixed-instances pool.
    pub spot_types: Option<Vec<String>>,
    /// Mesh with leaves: leaves attached here, and every CIDR reached through
    /// this edge's appliances (the rest of the network).
    pub leaves: Vec<LeafAttachment>,
    pub remote_cidrs: Vec<String>,
}

impl ApplianceSpec {
    /// The CIDRs whose traffic the appliances carry: the VPC's, then each
    /// attached leaf's, each once.
    fn local_cidrs(&self) -> Vec<&str> {
        let mut cidrs: Vec<&str> = Vec::new();
        let leaf_cidrs = self.leaves.iter().flat_map(|l| l.cidrs.iter());
        for c in self.vpc_cidrs.iter().chain(leaf_cidrs) {
            if !cidrs.contains(&c.as_str()) {
                cidrs.push(c);
            }
        }
        cidrs
    }
}

pub fn appliance_stack(spec: &ApplianceSpec) -> Result<String, TemplateError> {
    let mut t = parse("appliance-stack.yaml", APPLIANCE)?;
    put_user_data(&mut t)?;
    if !spec.ha {
        t["Parameters"]["HighAvailability"]["Default"] = json!("false");
    }
    let ingress = t["Resources"]["ApplianceSecurityGroup"]["Properties"]["SecurityGroupIngress"]
        .as_array_mut()
        .map(std::mem::take)
        .unwrap_or_default();
    let mut ingress = ingress;
    for cidr in spec.local_cidrs() {
        // The HA pair's heartbeat, and traffic the appliances forward into
        // tunnels, come from any CIDR of the VPC or of a leaf behind it.
        ingress.push(json!({"Description": "HA heartbeat from the site", "IpProtocol": "udp", "FromPort": 4800, "ToPort": 4800, "CidrIp": cidr}));
        ingress.push(json!({"Description": "Forwarded traffic from the site", "IpProtocol": "-1", "FromPort": -1, "ToPort": -1, "CidrIp": cidr}));
    }
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
            vpc_cidrs: vec!["10.1.0.0/16".into()],
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
    fn every_vpc_and_leaf_cidr_gets_a_heartbeat_and_a_forward_rule() {
        let mut s = spec();
        s.vpc_cidrs = vec!["10.1.0.0/16".into(), "100.64.0.0/20".into()];
        s.leaves = vec![LeafAttachment {
            vpc_id: "vpc-0123456789abcdef0".into(),
            subnet_ids: vec!["subnet-0123456789abcdef0".into()],
            cidrs: vec!["10.9.0.0/16".into()],
        }];
        let t = rendered(&s);
        let ingress = t["Resources"]["ApplianceSecurityGroup"]["Properties"]
            ["SecurityGroupIngress"]
            .as_array()
            .expect("ingress")
            .clone();
        let from = |cidr: &str| -> Vec<(String, i64, i64)> {
            ingress
                .iter()
                .filter(|r| r["CidrIp"] == cidr)
                .map(|r| {
                    (
                        r["IpProtocol"].as_str().unwrap_or_default().to_string(),
                        r["FromPort"].as_i64().unwrap_or_default(),
                        r["ToPort"].as_i64().unwrap_or_default(),
                    )
                })
                .collect()
        };
        for cidr in ["10.1.0.0/16", "100.64.0.0/20", "10.9.0.0/16"] {
            assert_eq!(
                from(cidr),
                vec![("udp".into(), 4800, 4800), ("-1".into(), -1, -1)],
                "{cidr}: {ingress:?}"
            );
        }
        // Nothing else is open to local CIDRs, and nothing refers to a
        // single-CIDR parameter any more.
        assert_eq!(ingress.len(), 3 * 2 + 2 * 3, "{ingress:?}");
        assert!(t["Parameters"].get("VpcCidr").is_none());
        assert!(ingress.iter().all(|r| r["CidrIp"].is_string()));
    }

    #[test]
    fn a_leaf_cidr_that_is_also_a_vpc_cidr_gets_its_rules_once() {
        let mut s = spec();
        s.leaves = vec![LeafAttachment {
            vpc_id: "vpc-0123456789abcdef0".into(),
            subnet_ids: vec!["subnet-0123456789abcdef0".into()],
            cidrs: vec!["10.1.0.0/16".into()],
        }];
        let t = rendered(&s);
        let rules = t["Resources"]["ApplianceSecurityGroup"]["Properties"]["SecurityGroupIngress"]
            .as_array()
            .expect("ingress")
            .iter()
            .filter(|r| r["CidrIp"] == "10.1.0.0/16")
            .count();
        assert_eq!(rules, 2);
    }

    /// The statements of the appliances' instance role.
    fn instance_role_statements(t: &Value) -> Vec<Value> {
        t["Resources"]["ApplianceRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
            .as_array()
            .expect("statements")
            .clone()
    }

    #[test]
    fn the_instance_role_takes_over_only_its_own_address_and_appliances() {
        let t = rendered(&spec());
        let statements = instance_role_statements(&t);
        let by_action = |action: &str| -> Vec<Value> {
            statements
                .iter()
                .filter(|s| s["Action"] == action)
                .cloned()
                .collect()
        };
        let associate = by_action("ec2:AssociateAddress");
        assert_eq!(associate.len(), 2, "{associate:?}");
        let own_address = associate
            .iter()
            .find(|s| s.get("Condition").is_none())
            .expect("the address statement");
        assert!(own_address["Resource"]["Fn::Sub"]
            .as_str()
            .is_some_and(|r| r.ends_with(":elastic-ip/${AllocationId}")));
        let site_tag = json!({"StringEquals": {"aws:ResourceTag/vpcmesh:site": {"Ref": "SiteId"}}});
        let onto = associate
            .iter()
            .find(|s| s.get("Condition").is_some())
            .expect("the target statement");
        assert_eq!(onto["Condition"], site_tag);
        let modify = by_action("ec2:ModifyNetworkInterfaceAttribute");
        assert_eq!(modify.len(), 1);
        assert_eq!(modify[0]["Condition"], site_tag);
        assert!(modify[0]["Resource"]["Fn::Sub"]
            .as_str()
            .is_some_and(|r| r.ends_with(":network-interface/*")));
        // The tag the conditions test is put on what both groups launch.
        for lt in ["LaunchTemplateA", "LaunchTemplateB"] {
            let specs = t["Resources"][lt]["Properties"]["LaunchTemplateData"]["TagSpecifications"]
                .as_array()
                .expect("tag specifications")
                .clone();
            for kind in ["instance", "network-interface"] {
                let tagged = specs.iter().find(|s| s["ResourceType"] == kind);
                assert!(
                    tagged.is_some_and(|s| s["Tags"]
                        .as_array()
                        .is_some_and(|tags| tags.iter().any(|t| t["Key"] == "vpcmesh:site"
                            && t["Value"] == json!({"Ref": "SiteId"})))),
                    "{lt} tags its {kind}s with the site: {specs:?}"
                );
            }
        }
    }

    #[test]
    fn the_instance_role_decrypts_only_keys_that_name_its_own_site() {
        let t = rendered(&spec());
        let statements = instance_role_statements(&t);
        let decrypt: Vec<&Value> = statements
            .iter()
            .filter(|s| s["Action"] == "kms:Decrypt")
            .collect();
        assert_eq!(decrypt.len(), 2, "{decrypt:?}");
        let network = json!({"kms:EncryptionContext:vpcmesh:network": {"Ref": "NetworkId"}});
        for st in &decrypt {
            assert_eq!(st["Resource"], json!({"Ref": "KmsKeyArn"}));
            assert_eq!(st["Condition"]["StringEquals"], network);
        }
        // Keys per tunnel and site: "<low>/<high>" must name this site.
        let own = decrypt
            .iter()
            .find(|s| s["Condition"].get("StringLike").is_some())
            .expect("the per-tunnel statement");
        assert_eq!(
            own["Condition"]["StringLike"]["kms:EncryptionContext:vpcmesh:sites"],
            json!([{"Fn::Sub": "${SiteId}/*"}, {"Fn::Sub": "*/${SiteId}"}])
        );
        // The network key of older epochs: only with no sites in the context,
        // so it cannot stand in for another pair's key.
        let older = decrypt
            .iter()
            .find(|s| s["Condition"].get("Null").is_some())
            .expect("the network-key statement");
        assert_eq!(
            older["Condition"]["Null"],
            json!({"kms:EncryptionContext:vpcmesh:sites": "true"})
        );
        assert_eq!(
            vpcmesh_protocol::SITES_CONTEXT_KEY,
            "vpcmesh:sites",
            "the template's condition names the protocol's context key"
        );
    }

    #[test]
    fn the_instance_role_sits_under_the_customers_boundary() {
        use crate::accounts::role_template::{BOUNDARY_NAME, BOUNDARY_PATH};
        let t = rendered(&spec());
        let role = &t["Resources"]["ApplianceRole"]["Properties"];
        assert_eq!(role["Path"], BOUNDARY_PATH);
        assert_eq!(
            role["PermissionsBoundary"]["Fn::Sub"],
            format!(
                "arn:${{AWS::Partition}}:iam::${{AWS::AccountId}}:policy{BOUNDARY_PATH}{BOUNDARY_NAME}"
            )
        );
        assert_eq!(
            t["Resources"]["ApplianceProfile"]["Properties"]["Path"],
            BOUNDARY_PATH
        );
        // The access role launches only from templates tagged with a site.
        for lt in ["LaunchTemplateA", "LaunchTemplateB"] {
            let specs = &t["Resources"][lt]["Properties"]["TagSpecifications"];
            assert_eq!(specs[0]["ResourceType"], "launch-template", "{lt}");
            assert_eq!(specs[0]["Tags"][0]["Key"], "vpcmesh:site", "{lt}");
        }
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

    /// The `${Name}` placeholders of an `Fn::Sub` string.
    fn placeholders(s: &str) -> Vec<&str> {
        s.split("${")
            .skip(1)
            .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
            .collect()
    }

    #[test]
    fn both_members_run_the_one_user_data_script_with_their_own_token() {
        let t = rendered(&spec());
        for (lt, member, token) in [
            ("LaunchTemplateA", "a", "BootstrapTokenA"),
            ("LaunchTemplateB", "b", "BootstrapTokenB"),
        ] {
            let sub = &t["Resources"][lt]["Properties"]["LaunchTemplateData"]["UserData"]
                ["Fn::Base64"]["Fn::Sub"];
            assert_eq!(sub[0], USER_DATA, "{lt}");
            assert_eq!(
                sub[1],
                json!({"Member": member, "BootstrapToken": {"Ref": token}}),
                "{lt}"
            );
        }
    }

    #[test]
    fn every_user_data_placeholder_is_a_stack_parameter_or_a_member_value() {
        let t = rendered(&spec());
        let params = t["Parameters"].as_object().expect("parameters");
        let used = placeholders(USER_DATA);
        for name in &used {
            assert!(
                params.contains_key(*name) || ["Member", "BootstrapToken"].contains(name),
                "user-data.sh uses ${{{name}}}, which CloudFormation cannot fill"
            );
        }
        for needed in [
            "ServerUrl",
            "NetworkId",
            "SiteId",
            "AllocationId",
            "AgentUrl",
            "AgentSha256",
            "Member",
            "BootstrapToken",
        ] {
            assert!(
                used.contains(&needed),
                "user-data.sh never uses ${{{needed}}}"
            );
        }
        assert_eq!(params["AgentSha256"]["AllowedPattern"], "[0-9a-f]{64}");
    }

    #[test]
    fn the_user_data_fits_the_ec2_limit_with_room_to_spare() {
        // 16 KiB before base64; the placeholders' values add well under 1 KiB.
        assert!(USER_DATA.len() < 12 * 1024, "{} bytes", USER_DATA.len());
    }
}
