//! The customer-side CloudFormation template that creates the role vpcmesh
//! assumes, with this organization's values filled in as parameter defaults.

use crate::aws::AccountId;

const TEMPLATE: &str = include_str!("../../templates/customer-role.yaml");
pub const ROLE_NAME: &str = "vpcmesh-access";
/// The permissions boundary the template creates; every role vpcmesh creates
/// (the appliance stacks' instance roles) lives under its path and carries it.
pub const BOUNDARY_NAME: &str = "vpcmesh-appliance-boundary";
pub const BOUNDARY_PATH: &str = "/vpcmesh/";

/// The template with `TrustedAccountId` and `ExternalId` defaulting to this
/// organization's values, so deploying it needs no typing.
pub fn render(trusted: &AccountId, external_id: &str) -> String {
    let mut out = String::with_capacity(TEMPLATE.len() + 128);
    let mut pending: Option<String> = None;
    for line in TEMPLATE.lines() {
        out.push_str(line);
        out.push('\n');
        match line.trim_end() {
            "  TrustedAccountId:" => pending = Some(format!("\"{trusted}\"")),
            // The external ID is alphanumeric with a dash (generated), so it
            // needs no YAML escaping beyond the quotes.
            "  ExternalId:" => pending = Some(format!("\"{external_id}\"")),
            l if l.starts_with("    Type:") => {
                if let Some(value) = pending.take() {
                    out.push_str(&format!("    Default: {value}\n"));
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_filled_in_once() {
        let account: AccountId = "123456789012".parse().expect("account");
        let yaml = render(&account, "vpcmesh-abc");
        assert_eq!(yaml.matches("Default: \"123456789012\"").count(), 1);
        assert_eq!(yaml.matches("Default: \"vpcmesh-abc\"").count(), 1);
        assert!(yaml.contains("sts:ExternalId"));
    }

    /// (policy, Sid, actions, resource as YAML) of every statement of the
    /// role's inline policies.
    fn statements(yaml: &str) -> Vec<(String, String, Vec<String>, String)> {
        let doc: serde_norway::Value = serde_norway::from_str(yaml).expect("the template is YAML");
        let policies = doc["Resources"]["AccessRole"]["Properties"]["Policies"]
            .as_sequence()
            .expect("inline policies");
        let text = |v: &serde_norway::Value| v.as_str().expect("a string").to_string();
        let mut out = Vec::new();
        for p in policies {
            for st in p["PolicyDocument"]["Statement"]
                .as_sequence()
                .expect("statements")
            {
                // Deny statements narrow the grants; they are tested apart.
                if st["Effect"].as_str() == Some("Deny") {
                    continue;
                }
                assert_eq!(st["Effect"].as_str(), Some("Allow"));
                let actions = match &st["Action"] {
                    serde_norway::Value::Sequence(a) => a.iter().map(text).collect(),
                    one => vec![text(one)],
                };
                let resource = serde_norway::to_string(&st["Resource"]).expect("resource");
                out.push((text(&p["PolicyName"]), text(&st["Sid"]), actions, resource));
            }
        }
        out
    }

    #[test]
    fn the_role_allows_exactly_the_actions_vpcmesh_calls() {
        let account: AccountId = "123456789012".parse().expect("account");
        let st = statements(&render(&account, "vpcmesh-abc"));
        let mut actions: Vec<&str> = st
            .iter()
            .flat_map(|(_, _, a, _)| a.iter().map(String::as_str))
            .collect();
        actions.sort();
        let mut want = vec![
            "autoscaling:CreateAutoScalingGroup",
            "autoscaling:CreateOrUpdateTags",
            "autoscaling:DeleteAutoScalingGroup",
            "autoscaling:DescribeAutoScalingGroups",
            "autoscaling:DescribeScalingActivities",
            "autoscaling:UpdateAutoScalingGroup",
            "cloudformation:CreateStack",
            "cloudformation:DeleteStack",
            "cloudformation:DescribeStackEvents",
            "cloudformation:DescribeStackResources",
            "cloudformation:DescribeStacks",
            "cloudformation:UpdateStack",
            "ec2:AllocateAddress",
            "ec2:AuthorizeSecurityGroupEgress",
            "ec2:AuthorizeSecurityGroupIngress",
            "ec2:CreateLaunchTemplate",
            "ec2:CreateLaunchTemplateVersion",
            "ec2:CreateRoute",
            "ec2:CreateSecurityGroup",
            "ec2:CreateTags",
            "ec2:CreateTransitGateway",
            "ec2:CreateTransitGatewayRoute",
            "ec2:CreateTransitGatewayVpcAttachment",
            "ec2:DeleteLaunchTemplate",
            "ec2:DeleteRoute",
            "ec2:DeleteSecurityGroup",
            "ec2:DeleteTransitGateway",
            "ec2:DeleteTransitGatewayRoute",
            "ec2:DeleteTransitGatewayVpcAttachment",
            "ec2:DescribeAddresses",
            "ec2:DescribeAvailabilityZones",
            "ec2:DescribeInstances",
            "ec2:DescribeLaunchTemplateVersions",
            "ec2:DescribeLaunchTemplates",
            "ec2:DescribeRouteTables",
            "ec2:DescribeSecurityGroups",
            "ec2:DescribeSubnets",
            "ec2:DescribeTransitGatewayAttachments",
            "ec2:DescribeTransitGatewayRouteTables",
            "ec2:DescribeTransitGatewayVpcAttachments",
            "ec2:DescribeTransitGateways",
            "ec2:DescribeVpcs",
            "ec2:ReleaseAddress",
            "ec2:ReplaceRoute",
            "ec2:RevokeSecurityGroupEgress",
            "ec2:RevokeSecurityGroupIngress",
            "ec2:RunInstances",
            "iam:AddRoleToInstanceProfile",
            "iam:CreateInstanceProfile",
            "iam:CreateRole",
            "iam:DeleteInstanceProfile",
            "iam:DeleteRole",
            "iam:DeleteRolePolicy",
            "iam:GetInstanceProfile",
            "iam:GetRole",
            "iam:PassRole",
            "iam:PutRolePolicy",
            "iam:RemoveRoleFromInstanceProfile",
            "kms:DescribeKey",
            "kms:GenerateDataKeyWithoutPlaintext",
            "kms:ListAliases",
            "ssm:GetParameters",
            "ec2:CreateTransitGatewayRouteTable",
            "ec2:DeleteTransitGatewayRouteTable",
            "ec2:AssociateTransitGatewayRouteTable",
            "ec2:DisassociateTransitGatewayRouteTable",
            "ec2:EnableTransitGatewayRouteTablePropagation",
            "ec2:DisableTransitGatewayRouteTablePropagation",
            "iam:CreateServiceLinkedRole",
        ];
        want.sort();
        assert_eq!(actions, want, "each action once, nothing more");
    }

    #[test]
    fn listing_key_aliases_is_a_statement_of_its_own() {
        let account: AccountId = "123456789012".parse().expect("account");
        let st = statements(&render(&account, "vpcmesh-abc"));
        let holding: Vec<_> = st
            .iter()
            .filter(|(_, _, a, _)| a.iter().any(|a| a == "kms:ListAliases"))
            .collect();
        assert_eq!(holding.len(), 1, "{holding:?}");
        let (policy, sid, actions, resource) = holding[0];
        assert_eq!(
            (policy.as_str(), sid.as_str()),
            ("vpcmesh-discover", "ListKeyAliases")
        );
        assert_eq!(actions, &vec!["kms:ListAliases".to_string()]);
        assert_eq!(resource.trim(), "'*'");
    }

    /// Every statement of the access role's inline policies, as YAML.
    fn raw_statements(yaml: &str) -> Vec<serde_norway::Value> {
        let doc: serde_norway::Value = serde_norway::from_str(yaml).expect("the template is YAML");
        doc["Resources"]["AccessRole"]["Properties"]["Policies"]
            .as_sequence()
            .expect("inline policies")
            .iter()
            .flat_map(|p| {
                p["PolicyDocument"]["Statement"]
                    .as_sequence()
                    .cloned()
                    .unwrap_or_default()
            })
            .collect()
    }

    fn actions_of(st: &serde_norway::Value) -> Vec<String> {
        match &st["Action"] {
            serde_norway::Value::Sequence(a) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            one => one.as_str().map(str::to_string).into_iter().collect(),
        }
    }

    fn rendered() -> String {
        let account: AccountId = "123456789012".parse().expect("account");
        render(&account, "vpcmesh-abc")
    }

    #[test]
    fn roles_it_creates_carry_the_boundary_and_go_only_to_ec2() {
        let yaml = rendered();
        let statements = raw_statements(&yaml);
        let text = |v: &serde_norway::Value| serde_norway::to_string(v).expect("yaml");
        for st in &statements {
            let actions = actions_of(st);
            let iam: Vec<&String> = actions.iter().filter(|a| a.starts_with("iam:")).collect();
            if iam.is_empty() {
                continue;
            }
            let resource = text(&st["Resource"]);
            let condition = text(&st["Condition"]);
            if actions == ["iam:CreateServiceLinkedRole"] {
                assert!(
                    resource.contains("role/aws-service-role/autoscaling.amazonaws.com/"),
                    "{resource}"
                );
                assert!(
                    condition.contains("iam:AWSServiceName: autoscaling.amazonaws.com"),
                    "{condition}"
                );
                continue;
            }
            // Never the access role itself (vpcmesh-access, at /): only the
            // /vpcmesh/ path.
            assert!(!resource.contains("role/vpcmesh-"), "{resource}");
            assert!(resource.contains("/vpcmesh/*"), "{resource}");
            for a in &iam {
                assert!(
                    ![
                        "iam:PutRolePermissionsBoundary",
                        "iam:DeleteRolePermissionsBoundary",
                        "iam:AttachRolePolicy",
                        "iam:UpdateAssumeRolePolicy"
                    ]
                    .contains(&a.as_str()),
                    "{a} is never granted"
                );
            }
            if actions
                .iter()
                .any(|a| a == "iam:CreateRole" || a == "iam:PutRolePolicy")
            {
                assert!(
                    condition.contains("iam:PermissionsBoundary")
                        && condition.contains("ApplianceBoundary"),
                    "{condition}"
                );
            }
            if actions.iter().any(|a| a == "iam:PassRole") {
                assert_eq!(actions, vec!["iam:PassRole".to_string()], "PassRole alone");
                assert!(
                    condition.contains("iam:PassedToService: ec2.amazonaws.com"),
                    "{condition}"
                );
            }
        }
        // The boundary grants nothing in IAM, and is the role template's own.
        let doc: serde_norway::Value = serde_norway::from_str(&yaml).expect("yaml");
        let boundary = &doc["Resources"]["ApplianceBoundary"]["Properties"];
        assert_eq!(boundary["ManagedPolicyName"].as_str(), Some(BOUNDARY_NAME));
        assert_eq!(boundary["Path"].as_str(), Some(BOUNDARY_PATH));
        let boundary_text = text(&boundary["PolicyDocument"]);
        assert!(!boundary_text.contains("iam:"), "{boundary_text}");
        assert!(!boundary_text.contains("Action: '*'"), "{boundary_text}");
    }

    #[test]
    fn instances_launch_only_from_vpcmesh_launch_templates() {
        let statements = raw_statements(&rendered());
        let launching: Vec<_> = statements
            .iter()
            .filter(|st| actions_of(st).iter().any(|a| a == "ec2:RunInstances"))
            .collect();
        // One grant (from launch templates only) and one denial (of
        // templates without a site tag).
        assert_eq!(launching.len(), 2);
        assert_eq!(
            launching
                .iter()
                .filter(|st| st["Effect"].as_str() == Some("Deny"))
                .count(),
            1
        );
        for st in launching {
            assert_eq!(actions_of(st), vec!["ec2:RunInstances".to_string()]);
            let resource = serde_norway::to_string(&st["Resource"]).expect("yaml");
            assert!(!resource.contains("'*'"), "{resource}");
            let condition = serde_norway::to_string(&st["Condition"]).expect("yaml");
            assert!(
                condition.contains("aws:ResourceTag/vpcmesh:site")
                    || condition.contains("ec2:LaunchTemplate"),
                "{condition}"
            );
        }
    }
}
