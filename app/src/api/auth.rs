use super::{ConsoleError, OrgSummary, Viewer};
use leptos::prelude::*;

/// The signed-in user, or `None` when the session is absent or expired.
#[server(endpoint = "viewer")]
pub async fn current_viewer() -> Result<Option<Viewer>, ConsoleError> {
    crate::backend::console()?.viewer().await
}

/// Signs in with email and password; on success the browser goes to `next`
/// (a path inside the console) or the dashboard.
#[server(endpoint = "sign_in")]
pub async fn sign_in(
    email: String,
    password: String,
    next: Option<String>,
) -> Result<(), ConsoleError> {
    crate::backend::console()?
        .sign_in(&email, &password)
        .await?;
    leptos_axum::redirect(&safe_next(next.as_deref()));
    Ok(())
}

#[server(endpoint = "sign_out")]
pub async fn sign_out() -> Result<(), ConsoleError> {
    crate::backend::console()?.sign_out().await?;
    leptos_axum::redirect("/sign-in");
    Ok(())
}

#[server(endpoint = "overview")]
pub async fn org_overview() -> Result<OrgSummary, ConsoleError> {
    crate::backend::console()?.overview().await
}

/// Only same-site paths are accepted as a post-sign-in target, so a crafted
/// link cannot bounce a user to another site.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') => p.to_string(),
        _ => "/".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_path_must_stay_on_site() {
        assert_eq!(safe_next(Some("/admin")), "/admin");
        assert_eq!(safe_next(Some("//evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }
}
