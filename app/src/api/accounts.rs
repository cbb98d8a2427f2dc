#[cfg(feature = "ssr")]
use super::NewAccount;
use super::{AccountSetup, AccountSummary, ConsoleError};
use leptos::prelude::*;

#[server(endpoint = "account_setup")]
pub async fn get_account_setup() -> Result<AccountSetup, ConsoleError> {
    crate::backend::console()?.account_setup().await
}

#[server(endpoint = "list_accounts")]
pub async fn list_accounts() -> Result<Vec<AccountSummary>, ConsoleError> {
    crate::backend::console()?.list_accounts().await
}

/// Registers an account after vpcmesh assumed its role successfully.
#[server(endpoint = "add_account")]
pub async fn add_account(
    account_id: String,
    role_arn: String,
    label: String,
) -> Result<AccountSummary, ConsoleError> {
    crate::backend::console()?
        .add_account(NewAccount {
            account_id,
            role_arn,
            label: Some(label),
        })
        .await
}

#[server(endpoint = "verify_account")]
pub async fn verify_account(id: String) -> Result<AccountSummary, ConsoleError> {
    crate::backend::console()?.verify_account(&id).await
}

#[server(endpoint = "remove_account")]
pub async fn remove_account(id: String) -> Result<(), ConsoleError> {
    crate::backend::console()?.remove_account(&id).await
}
