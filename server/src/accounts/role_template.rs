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
}
