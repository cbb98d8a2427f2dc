//! Checks on what people type, with messages that say what to change.

use app::api::ConsoleError;

pub const PASSWORD_MIN: usize = 12;
pub const PASSWORD_MAX: usize = 1024;

/// Trims and lowercases an email and checks its shape.
pub fn email(raw: &str) -> Result<String, ConsoleError> {
    let email = raw.trim().to_lowercase();
    let bad = |m: &str| Err(ConsoleError::invalid("email", m));
    if email.is_empty() {
        return bad("enter an email address");
    }
    if email.len() > 254 {
        return bad("must be at most 254 characters");
    }
    let Some((local, domain)) = email.split_once('@') else {
        return bad("must look like name@example.com");
    };
    if local.is_empty()
        || domain.len() < 3
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
        || email.chars().any(|c| c.is_whitespace() || c.is_control())
        || domain.contains('@')
    {
        return bad("must look like name@example.com");
    }
    Ok(email)
}

pub fn display_name(raw: &str) -> Result<String, ConsoleError> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(ConsoleError::invalid("name", "enter a name"));
    }
    if name.chars().count() > 100 {
        return Err(ConsoleError::invalid(
            "name",
            "must be at most 100 characters",
        ));
    }
    if name.chars().any(|c| c.is_control()) {
        return Err(ConsoleError::invalid(
            "name",
            "must not contain control characters",
        ));
    }
    Ok(name.to_string())
}

pub fn new_password(password: &str) -> Result<(), ConsoleError> {
    let n = password.chars().count();
    if n < PASSWORD_MIN {
        return Err(ConsoleError::invalid(
            "password",
            format!("must be at least {PASSWORD_MIN} characters"),
        ));
    }
    if password.len() > PASSWORD_MAX {
        return Err(ConsoleError::invalid(
            "password",
            format!("must be at most {PASSWORD_MAX} bytes"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised() {
        assert_eq!(email("  Ada@Example.COM ").unwrap(), "ada@example.com");
    }

    #[test]
    fn malformed_emails_are_refused() {
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada@x",
            "ada@@example.com",
            "a da@example.com",
            "ada@.com",
            &"a".repeat(300),
        ] {
            assert!(email(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn names_need_content() {
        assert!(display_name("   ").is_err());
        assert!(display_name(&"x".repeat(101)).is_err());
        assert!(display_name("a\u{7}b").is_err());
        assert_eq!(display_name(" Ada ").unwrap(), "Ada");
    }

    #[test]
    fn passwords_have_bounds() {
        assert!(new_password("short").is_err());
        assert!(new_password(&"x".repeat(PASSWORD_MAX + 1)).is_err());
        assert!(new_password("correct horse battery").is_ok());
    }
}
