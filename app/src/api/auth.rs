use super::{ConsoleError, OrgSummary, Viewer};
use leptos::prelude::*;

/// The signed-in user, or `None` when the session is absent or expired.
#[server(endpoint = "viewer")]
pub async fn current_viewer() -> Result<Option<Viewer>, ConsoleError> {
    crate::backend::console()?.viewer().await
}

/// Signs in with email and password (and the organization, when they open
/// several); on success the browser goes to `next` (a path inside the
/// console) or the dashboard.
#[server(endpoint = "sign_in")]
pub async fn sign_in(
    email: String,
    password: String,
    next: Option<String>,
    organization: Option<String>,
) -> Result<(), ConsoleError> {
    crate::backend::console()?
        .sign_in(&email, &password, organization.as_deref())
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
/// link cannot bounce a user to another site in any encoding: the target is
/// printable ASCII without spaces or backslashes (browsers drop tabs and
/// newlines, and read `\` as `/`, which would turn `/\t/evil` into
/// `//evil`), starts with one `/`, and still does once percent-decoded.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(p) if is_local_path(p) && percent_decode(p).is_some_and(|d| stays_local(&d)) => {
            p.to_string()
        }
        _ => "/".to_string(),
    }
}

fn is_local_path(p: &str) -> bool {
    p.starts_with('/')
        && !p.starts_with("//")
        && p.len() <= 2048
        && p.bytes().all(|b| b.is_ascii_graphic() && b != b'\\')
}

/// What a decoded target must still be: one leading `/`, no backslash, no
/// control character.
fn stays_local(d: &str) -> bool {
    d.starts_with('/')
        && !d.starts_with("//")
        && !d.contains('\\')
        && !d.chars().any(char::is_control)
}

/// One round of percent-decoding; `None` for a malformed escape.
fn percent_decode(p: &str) -> Option<String> {
    let bytes = p.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
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

    #[test]
    fn no_encoding_of_an_off_site_target_gets_through() {
        for evil in [
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r\n/evil.example",
            "/ /evil.example",
            "/%2F/evil.example",
            "/%2f%2fevil.example",
            "/%5Cevil.example",
            "/%5c%5cevil.example",
            "/%09/evil.example",
            "/\u{3000}/evil.example",
            "/\u{ff0f}evil.example",
            "/%zz",
            "/%2",
            "\\\\evil.example",
            "javascript:alert(1)",
            "",
        ] {
            assert_eq!(safe_next(Some(evil)), "/", "{evil:?}");
        }
        let long = format!("/{}", "a".repeat(3000));
        assert_eq!(safe_next(Some(&long)), "/");
        for ok in [
            "/networks/5f0c?tab=keys#rotation",
            "/networks/a%20b",
            "/admin",
        ] {
            assert_eq!(safe_next(Some(ok)), ok);
        }
    }
}
