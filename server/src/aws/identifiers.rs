use std::{fmt, str::FromStr};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentifierError {
    #[error("an AWS account ID is 12 digits, like 123456789012; got '{0}'")]
    AccountId(String),
    #[error("a role ARN looks like arn:aws:iam::123456789012:role/vpcmesh-access; got '{0}'")]
    RoleArnShape(String),
    #[error("'{0}' is not in a partition vpcmesh supports (aws, aws-us-gov, aws-cn)")]
    Partition(String),
    #[error("the role name in '{0}' must be 1-64 characters of letters, digits and +=,.@_-")]
    RoleName(String),
    #[error(
        "the role ARN belongs to account {arn_account}, but the account ID given is {account}"
    )]
    AccountMismatch {
        arn_account: String,
        account: String,
    },
}

/// A 12-digit AWS account ID.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountId(String);

impl FromStr for AccountId {
    type Err = IdentifierError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(AccountId(s.to_string()))
        } else {
            Err(IdentifierError::AccountId(s.to_string()))
        }
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The ARN of an IAM role vpcmesh assumes in a customer account.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoleArn {
    pub partition: String,
    pub account: AccountId,
    /// Path and name after `role/`, e.g. `vpcmesh/access`.
    pub name: String,
}

impl RoleArn {
    /// Parses `raw` and checks that it belongs to `account`.
    pub fn for_account(raw: &str, account: &AccountId) -> Result<Self, IdentifierError> {
        let arn: RoleArn = raw.parse()?;
        if &arn.account != account {
            return Err(IdentifierError::AccountMismatch {
                arn_account: arn.account.to_string(),
                account: account.to_string(),
            });
        }
        Ok(arn)
    }
}

impl FromStr for RoleArn {
    type Err = IdentifierError;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let raw = raw.trim();
        let shape = || IdentifierError::RoleArnShape(raw.to_string());
        let parts: Vec<&str> = raw.splitn(6, ':').collect();
        let [arn, partition, service, region, account, resource] = parts[..] else {
            return Err(shape());
        };
        if arn != "arn" || service != "iam" || !region.is_empty() {
            return Err(shape());
        }
        if !matches!(partition, "aws" | "aws-us-gov" | "aws-cn") {
            return Err(IdentifierError::Partition(partition.to_string()));
        }
        let account: AccountId = account.parse().map_err(|_| shape())?;
        let name = resource.strip_prefix("role/").ok_or_else(shape)?;
        let role_name = name.rsplit('/').next().unwrap_or_default();
        let valid = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c);
        if role_name.is_empty()
            || role_name.len() > 64
            || !role_name.chars().all(valid)
            || name.len() > 512
        {
            return Err(IdentifierError::RoleName(raw.to_string()));
        }
        Ok(RoleArn {
            partition: partition.to_string(),
            account,
            name: name.to_string(),
        })
    }
}

impl fmt::Display for RoleArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "arn:{}:iam::{}:role/{}",
            self.partition, self.account, self.name
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_are_twelve_digits() {
        assert_eq!(
            " 123456789012 ".parse::<AccountId>().unwrap().to_string(),
            "123456789012"
        );
        for bad in [
            "",
            "12345678901",
            "1234567890123",
            "12345678901a",
            "１２３４５６７８９０１２",
        ] {
            assert!(bad.parse::<AccountId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn role_arns_parse_and_print_back() {
        for ok in [
            "arn:aws:iam::123456789012:role/vpcmesh-access",
            "arn:aws:iam::123456789012:role/team/net/vpcmesh@prod",
            "arn:aws-us-gov:iam::123456789012:role/x",
        ] {
            assert_eq!(ok.parse::<RoleArn>().unwrap().to_string(), ok);
        }
    }

    #[test]
    fn malformed_role_arns_say_what_is_wrong() {
        let shape = |s: &str| IdentifierError::RoleArnShape(s.to_string());
        let cases = [
            ("vpcmesh-access", shape("vpcmesh-access")),
            (
                "arn:aws:iam::123456789012:user/bob",
                shape("arn:aws:iam::123456789012:user/bob"),
            ),
            (
                "arn:aws:s3::123456789012:role/x",
                shape("arn:aws:s3::123456789012:role/x"),
            ),
            (
                "arn:aws:iam:us-east-1:123456789012:role/x",
                shape("arn:aws:iam:us-east-1:123456789012:role/x"),
            ),
            (
                "arn:aws:iam::12345:role/x",
                shape("arn:aws:iam::12345:role/x"),
            ),
            (
                "arn:azure:iam::123456789012:role/x",
                IdentifierError::Partition("azure".into()),
            ),
            (
                "arn:aws:iam::123456789012:role/",
                IdentifierError::RoleName("arn:aws:iam::123456789012:role/".into()),
            ),
            (
                "arn:aws:iam::123456789012:role/a b",
                IdentifierError::RoleName("arn:aws:iam::123456789012:role/a b".into()),
            ),
        ];
        for (raw, expected) in cases {
            assert_eq!(raw.parse::<RoleArn>().unwrap_err(), expected, "{raw}");
        }
        let long = format!("arn:aws:iam::123456789012:role/{}", "r".repeat(65));
        assert!(matches!(
            long.parse::<RoleArn>(),
            Err(IdentifierError::RoleName(_))
        ));
    }

    #[test]
    fn the_arn_must_belong_to_the_account() {
        let acct: AccountId = "111111111111".parse().unwrap();
        let err = RoleArn::for_account("arn:aws:iam::222222222222:role/x", &acct).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the role ARN belongs to account 222222222222, but the account ID given is 111111111111"
        );
        assert!(RoleArn::for_account("arn:aws:iam::111111111111:role/x", &acct).is_ok());
    }
}

/// The ARN of a customer's KMS key: `arn:aws:kms:REGION:ACCOUNT:key/ID`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KmsKeyArn {
    pub partition: String,
    pub region: String,
    pub account: AccountId,
    pub key_id: String,
}

impl FromStr for KmsKeyArn {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let shape = || {
            format!("a KMS key ARN looks like arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab; got '{raw}'")
        };
        let parts: Vec<&str> = raw.trim().splitn(6, ':').collect();
        let [arn, partition, service, region, account, resource] = parts[..] else {
            return Err(shape());
        };
        if arn != "arn" || service != "kms" || !matches!(partition, "aws" | "aws-us-gov" | "aws-cn")
        {
            return Err(shape());
        }
        let key_id = resource.strip_prefix("key/").ok_or_else(|| {
            format!("'{raw}' names an alias or other resource; use the key's own ARN (key/…)")
        })?;
        if key_id.is_empty()
            || key_id.len() > 64
            || !key_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(shape());
        }
        let account: AccountId = account.parse().map_err(|_| shape())?;
        Ok(KmsKeyArn {
            partition: partition.to_string(),
            region: region.to_string(),
            account,
            key_id: key_id.to_string(),
        })
    }
}

impl fmt::Display for KmsKeyArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "arn:{}:kms:{}:{}:key/{}",
            self.partition, self.region, self.account, self.key_id
        )
    }
}

#[cfg(test)]
mod kms_arn_tests {
    use super::*;

    #[test]
    fn kms_key_arns_parse_and_print_back() {
        let raw = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        let arn: KmsKeyArn = raw.parse().expect("valid");
        assert_eq!(arn.region, "eu-west-1");
        assert_eq!(arn.to_string(), raw);
        for bad in [
            "",
            "arn:aws:kms:eu-west-1:123456789012:alias/mine",
            "arn:aws:s3:eu-west-1:123456789012:key/x",
            "arn:aws:kms:eu-west-1:12345:key/x",
            "arn:aws:kms:eu-west-1:123456789012:key/",
            "arn:aws:kms:eu-west-1:123456789012:key/a b",
        ] {
            assert!(bad.parse::<KmsKeyArn>().is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// Strings near the shapes: ARN-like pieces, digits, unicode and noise.
    fn near_arn() -> impl Strategy<Value = String> {
        let part = prop_oneof![
            Just("arn".to_string()),
            Just("aws".to_string()),
            Just("iam".to_string()),
            Just("kms".to_string()),
            Just("".to_string()),
            "[0-9]{0,14}",
            "(role|key|alias)/[ -~]{0,20}",
            "[a-z]{2}-[a-z]{4,9}-[0-9]",
            "\\PC{0,8}",
        ];
        proptest::collection::vec(part, 0..8).prop_map(|p| p.join(":"))
    }

    proptest! {
        /// Whatever is typed: a value that prints back as it parsed, or a
        /// refusal that says what the value must look like. Never a panic.
        #[test]
        fn identifiers_parse_or_say_what_they_must_look_like(s in near_arn(), t in "\\PC{0,40}") {
            for input in [&s, &t] {
                match input.parse::<RoleArn>() {
                    Ok(arn) => prop_assert_eq!(arn.to_string().parse::<RoleArn>().map(|a| a.to_string()), Ok(arn.to_string())),
                    Err(e) => prop_assert!(!e.to_string().is_empty()),
                }
                match input.parse::<KmsKeyArn>() {
                    Ok(arn) => prop_assert_eq!(arn.to_string().parse::<KmsKeyArn>().map(|a| a.to_string()), Ok(arn.to_string())),
                    Err(e) => prop_assert!(!e.is_empty()),
                }
                match input.parse::<AccountId>() {
                    Ok(id) => prop_assert_eq!(id.to_string().len(), 12),
                    Err(e) => prop_assert!(!e.to_string().is_empty()),
                }
            }
        }
    }
}
