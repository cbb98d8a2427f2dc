use super::{AuditEntry, ConsoleError, OrgSummary, UserSummary};
#[cfg(feature = "ssr")]
use super::{NewUser, Role};
use leptos::prelude::*;

#[server(endpoint = "users")]
pub async fn list_users() -> Result<Vec<UserSummary>, ConsoleError> {
    crate::backend::console()?.list_users().await
}

/// Adds a user to the caller's organization with an initial password the
/// admin hands over; the role arrives as text from the form and is checked here.
#[server(endpoint = "create_user")]
pub async fn create_user(
    email: String,
    name: String,
    role: String,
    password: String,
) -> Result<UserSummary, ConsoleError> {
    let role: Role = role
        .parse()
        .map_err(|m: String| ConsoleError::invalid("role", m))?;
    crate::backend::console()?
        .create_user(NewUser {
            email,
            name,
            role,
            password,
        })
        .await
}

#[server(endpoint = "set_user_role")]
pub async fn set_user_role(user_id: String, role: String) -> Result<UserSummary, ConsoleError> {
    let role: Role = role
        .parse()
        .map_err(|m: String| ConsoleError::invalid("role", m))?;
    crate::backend::console()?
        .set_user_role(&user_id, role)
        .await
}

#[server(endpoint = "remove_user")]
pub async fn remove_user(user_id: String) -> Result<(), ConsoleError> {
    crate::backend::console()?.remove_user(&user_id).await
}

/// Signs a user of the organization out everywhere.
#[server(endpoint = "revoke_sessions")]
pub async fn revoke_sessions(user_id: String) -> Result<(), ConsoleError> {
    crate::backend::console()?.revoke_sessions(&user_id).await
}

/// The caller's own password; the caller's other sessions end.
#[server(endpoint = "change_password")]
pub async fn change_password(
    current_password: String,
    new_password: String,
    confirm_password: String,
) -> Result<(), ConsoleError> {
    if new_password != confirm_password {
        return Err(ConsoleError::invalid(
            "confirm_password",
            "does not match the new password",
        ));
    }
    crate::backend::console()?
        .change_password(&current_password, &new_password)
        .await
}

#[server(endpoint = "audit_log")]
pub async fn audit_log() -> Result<Vec<AuditEntry>, ConsoleError> {
    crate::backend::console()?.audit_log(100).await
}

#[server(endpoint = "rename_org")]
pub async fn rename_org(name: String) -> Result<OrgSummary, ConsoleError> {
    crate::backend::console()?.rename_org(&name).await
}
