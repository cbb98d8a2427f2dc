//! The customer-side CloudFormation template that creates the role vpcmesh
//! assumes, with this organization's values filled in as parameter defaults.

use crate::aws::AccountId;

const TEMPLATE: &str = include_str!("../../templates/customer-role.yaml");
pub const ROLE_NAME: &str = "vpcmesh-access";

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
}
