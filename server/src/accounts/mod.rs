//! Customer AWS accounts: registration with a verified AssumeRole, the role
//! template customers deploy, and the access (role + external ID) every later
//! AWS call for the account goes through.

pub mod ops;
pub mod role_template;
pub mod store;

use crate::aws::{AccountAccess, AccountId, AwsError, RoleArn};
use app::api::ConsoleError;

/// Turns a failed AWS call on an account into words the user can act on.
pub fn aws_error_for_user(
    err: AwsError,
    access: &AccountAccess,
    trusted: Option<&AccountId>,
) -> ConsoleError {
    match err {
        AwsError::Denied {
            action: "sts:AssumeRole",
            message,
        } => {
            let trust = trusted
                .map(|a| format!(" trusts account {a} and"))
                .unwrap_or_default();
            ConsoleError::AwsRefused {
                message: format!(
                    "vpcmesh could not assume {}: AWS said \"{message}\". Check that the role exists,{trust} requires your organization's external ID (deploy the role template from the Accounts page).",
                    access.role_arn
                ),
            }
        }
        AwsError::Denied { action, message } => ConsoleError::AwsRefused {
            message: format!(
                "The role {} may not call {action} in account {}: AWS said \"{message}\". Update the role from the current template.",
                access.role_arn,
                access.account()
            ),
        },
        AwsError::NotFound { action, message } => ConsoleError::AwsRefused {
            message: format!("{action} in account {}: {message}", access.account()),
        },
        AwsError::Rejected {
            action,
            code,
            message,
        } => ConsoleError::AwsRefused {
            message: format!(
                "AWS rejected {action} in account {} ({code}): {message}",
                access.account()
            ),
        },
        e @ (AwsError::Throttled { .. } | AwsError::Unavailable { .. }) => {
            tracing::warn!(error = %e, "AWS unavailable");
            ConsoleError::AwsUnavailable {
                message: format!("AWS did not answer for account {}.", access.account()),
            }
        }
    }
}

/// The access for `role_arn` with the external ID of organization `org_id`.
pub async fn org_access(
    pool: &sqlx::PgPool,
    org_id: uuid::Uuid,
    role_arn: &str,
) -> Result<AccountAccess, ConsoleError> {
    use crate::internal::OrInternal;
    let external_id = crate::identity::orgs::external_id(pool, org_id)
        .await
        .or_internal("read the external ID")?;
    access(role_arn, &external_id)
}

/// The access for a stored account of an organization.
pub fn access(role_arn: &str, external_id: &str) -> Result<AccountAccess, ConsoleError> {
    let role_arn: RoleArn = role_arn.parse().map_err(|e: crate::aws::IdentifierError| {
        ConsoleError::invalid("role_arn", e.to_string())
    })?;
    Ok(AccountAccess {
        role_arn,
        external_id: external_id.to_string(),
    })
}
