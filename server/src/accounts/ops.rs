//! What the console and API do with accounts, for one signed-in user.

use super::{aws_error_for_user, org_access, role_template, store};
use crate::{
    audit,
    aws::{AccountAccess, AccountId, RoleArn},
    identity::{orgs, users::UserRecord},
    internal::OrInternal,
    state::AppState,
};
use app::api::{AccountSetup, AccountSummary, ConsoleError, NewAccount};
use uuid::Uuid;

const LABEL_MAX: usize = 100;

pub async fn setup(state: &AppState, user: &UserRecord) -> Result<AccountSetup, ConsoleError> {
    let external_id = orgs::external_id(&state.pool, user.org_id)
        .await
        .or_internal("read the external ID")?;
    let trusted = state.aws.own_account().await.map_err(|e| {
        tracing::error!(error = %e, "cannot tell vpcmesh's own AWS account");
        ConsoleError::AwsUnavailable {
            message: "vpcmesh could not reach AWS to tell which account your role must trust."
                .into(),
        }
    })?;
    Ok(AccountSetup {
        template_yaml: role_template::render(&trusted, &external_id),
        external_id,
        trusted_account_id: trusted.to_string(),
        role_name: role_template::ROLE_NAME.into(),
    })
}

pub async fn list(
    state: &AppState,
    user: &UserRecord,
) -> Result<Vec<AccountSummary>, ConsoleError> {
    let rows = store::list(&state.pool, user.org_id)
        .await
        .or_internal("list accounts")?;
    Ok(rows.iter().map(store::AccountRecord::summary).collect())
}

fn parse_label(label: Option<&str>, account: &AccountId) -> Result<String, ConsoleError> {
    let label = label.map(str::trim).unwrap_or("");
    if label.is_empty() {
        return Ok(format!("AWS account {account}"));
    }
    if label.chars().count() > LABEL_MAX || label.chars().any(char::is_control) {
        return Err(ConsoleError::invalid(
            "label",
            format!("use at most {LABEL_MAX} printable characters"),
        ));
    }
    Ok(label.to_string())
}

/// Registers an account only after AssumeRole with the organization's
/// external ID worked: a denied or mistyped role stores nothing.
#[tracing::instrument(skip_all, fields(org_id = %admin.org_id))]
pub async fn add(
    state: &AppState,
    admin: &UserRecord,
    new: NewAccount,
) -> Result<AccountSummary, ConsoleError> {
    let account: AccountId = new
        .account_id
        .parse()
        .map_err(|e: crate::aws::IdentifierError| {
            ConsoleError::invalid("account_id", e.to_string())
        })?;
    let role_arn = RoleArn::for_account(new.role_arn.trim(), &account)
        .map_err(|e| ConsoleError::invalid("role_arn", e.to_string()))?;
    let label = parse_label(new.label.as_deref(), &account)?;
    let pool = &state.pool;
    if store::find_by_account_id(pool, admin.org_id, &account.to_string())
        .await
        .or_internal("look up an account")?
        .is_some()
    {
        return Err(already_registered(&account));
    }
    let external_id = orgs::external_id(pool, admin.org_id)
        .await
        .or_internal("read the external ID")?;
    let access = AccountAccess {
        role_arn,
        external_id,
    };
    check_access(state, &access).await?;

    let mut tx = pool.begin().await.or_internal("begin a transaction")?;
    let id = store::insert_verified(
        &mut *tx,
        admin.org_id,
        &account.to_string(),
        &access.role_arn.to_string(),
        &label,
    )
    .await
    .or_internal("insert an account")?
    .ok_or_else(|| already_registered(&account))?;
    audit::record(
        &mut *tx,
        admin.org_id,
        Some(admin.id),
        "account.added",
        Some(&account.to_string()),
    )
    .await
    .or_internal("audit a new account")?;
    let row = store::find(&mut *tx, admin.org_id, id)
        .await
        .or_internal("read back an account")?
        .ok_or(ConsoleError::Internal)?;
    tx.commit().await.or_internal("commit a new account")?;
    tracing::info!(account = %account, "account registered");
    Ok(row.summary())
}

fn already_registered(account: &AccountId) -> ConsoleError {
    ConsoleError::Conflict {
        message: format!("Account {account} is already registered in your organization."),
    }
}

/// AssumeRole now and check the session landed in the role's own account.
async fn check_access(state: &AppState, access: &AccountAccess) -> Result<(), ConsoleError> {
    let trusted = state.aws.own_account().await.ok();
    let landed = state
        .aws
        .verify(access)
        .await
        .map_err(|e| aws_error_for_user(e, access, trusted.as_ref()))?;
    if &landed != access.account() {
        state.aws.forget(access).await;
        return Err(ConsoleError::AwsRefused {
            message: format!(
                "Assuming {} gave a session in account {landed}, not {}.",
                access.role_arn,
                access.account()
            ),
        });
    }
    Ok(())
}

pub fn parse_id(raw: &str) -> Result<Uuid, ConsoleError> {
    raw.parse()
        .map_err(|_| ConsoleError::invalid("account", "is not an account id"))
}

/// Verifies again and records the outcome; a failure is returned as the error
/// after it was recorded.
#[tracing::instrument(skip_all, fields(org_id = %admin.org_id))]
pub async fn verify(
    state: &AppState,
    admin: &UserRecord,
    id: &str,
) -> Result<AccountSummary, ConsoleError> {
    let id = parse_id(id)?;
    let pool = &state.pool;
    let row = store::find(pool, admin.org_id, id)
        .await
        .or_internal("load an account")?
        .ok_or_else(|| ConsoleError::not_found("Account"))?;
    let access = org_access(pool, admin.org_id, &row.role_arn).await?;
    let outcome = check_access(state, &access).await;
    let error = outcome.as_ref().err().map(ToString::to_string);
    store::record_check(pool, id, error.as_deref())
        .await
        .or_internal("record a verification")?;
    audit::record(
        pool,
        admin.org_id,
        Some(admin.id),
        if error.is_none() {
            "account.verified"
        } else {
            "account.verify_failed"
        },
        Some(&row.account_id),
    )
    .await
    .or_internal("audit a verification")?;
    outcome?;
    let row = store::find(pool, admin.org_id, id)
        .await
        .or_internal("read back an account")?
        .ok_or_else(|| ConsoleError::not_found("Account"))?;
    Ok(row.summary())
}

pub async fn remove(state: &AppState, admin: &UserRecord, id: &str) -> Result<(), ConsoleError> {
    let id = parse_id(id)?;
    let pool = &state.pool;
    let row = store::find(pool, admin.org_id, id)
        .await
        .or_internal("load an account")?
        .ok_or_else(|| ConsoleError::not_found("Account"))?;
    if !store::delete_unused(pool, admin.org_id, id)
        .await
        .or_internal("delete an account")?
    {
        return Err(ConsoleError::Conflict {
            message: format!(
                "Account {} is used by {} network(s): delete them first.",
                row.account_id, row.networks
            ),
        });
    }
    audit::record(
        pool,
        admin.org_id,
        Some(admin.id),
        "account.removed",
        Some(&row.account_id),
    )
    .await
    .or_internal("audit an account removal")?;
    Ok(())
}

/// The access for registered account `id` of the user's organization, after
/// checking `region` is one vpcmesh knows: what every live listing starts with.
async fn access_in_region(
    state: &AppState,
    user: &UserRecord,
    id: &str,
    region: &str,
) -> Result<AccountAccess, ConsoleError> {
    let id = parse_id(id)?;
    if !app::api::is_known_region(region) {
        return Err(ConsoleError::invalid(
            "region",
            format!("'{region}' is not an AWS region vpcmesh knows"),
        ));
    }
    let row = store::find(&state.pool, user.org_id, id)
        .await
        .or_internal("load an account")?
        .ok_or_else(|| ConsoleError::not_found("Account"))?;
    org_access(&state.pool, user.org_id, &row.role_arn).await
}

/// The VPCs of a registered account in `region`, found live for the wizard.
pub async fn vpcs(
    state: &AppState,
    user: &UserRecord,
    id: &str,
    region: &str,
) -> Result<Vec<app::api::VpcChoice>, ConsoleError> {
    let access = access_in_region(state, user, id, region).await?;
    let ec2 = state
        .aws
        .ec2(&access, region)
        .await
        .map_err(|e| aws_error_for_user(e, &access, None))?;
    crate::aws::discovery::list_vpcs(&ec2)
        .await
        .map_err(|e| aws_error_for_user(e, &access, None))
}

/// The customer-managed KMS keys (those with an alias) of a registered
/// account in `region`, found live for the wizard's key picker.
#[tracing::instrument(skip_all, fields(org_id = %user.org_id, region = %region))]
pub async fn kms_keys(
    state: &AppState,
    user: &UserRecord,
    id: &str,
    region: &str,
) -> Result<Vec<app::api::KmsKeyChoice>, ConsoleError> {
    let access = access_in_region(state, user, id, region).await?;
    let kms = state
        .aws
        .kms(&access, region)
        .await
        .map_err(|e| aws_error_for_user(e, &access, None))?;
    crate::aws::kms::list_keys(&kms, &access.role_arn.partition, region, access.account())
        .await
        .map_err(|e| aws_error_for_user(e, &access, None))
}
