//! Argon2id password hashes, computed off the async runtime, a few at a
//! time: each takes 19 MiB, so a burst of sign-ins waits for a permit
//! instead of exhausting memory.

use argon2::{
    password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Argon2,
};
use std::sync::OnceLock;
use tokio::sync::Semaphore;

/// How many hashes run at once, per server process.
pub const CONCURRENT_HASHES: usize = 4;

fn permits() -> &'static Semaphore {
    static PERMITS: Semaphore = Semaphore::const_new(CONCURRENT_HASHES);
    &PERMITS
}

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("hashing failed: {0}")]
    Hash(String),
    #[error("hashing task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("the hashing permits are closed")]
    Closed(#[from] tokio::sync::AcquireError),
}

pub async fn hash(password: &str) -> Result<String, PasswordError> {
    let password = password.to_owned();
    let _permit = permits().acquire().await?;
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| PasswordError::Hash(e.to_string()))
    })
    .await?
}

/// Checks `password` against a stored hash. With `None` (unknown user) it
/// verifies against a fixed dummy hash, so both cases take the same time.
pub async fn verify(password: &str, stored: Option<&str>) -> Result<bool, PasswordError> {
    let password = password.to_owned();
    let known = stored.is_some();
    let stored = match stored {
        Some(h) => h.to_owned(),
        None => dummy_hash().to_owned(),
    };
    let _permit = permits().acquire().await?;
    tokio::task::spawn_blocking(move || {
        let parsed = PasswordHash::new(&stored).map_err(|e| PasswordError::Hash(e.to_string()))?;
        let ok = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        Ok(ok && known)
    })
    .await?
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(b"vpcmesh-no-such-user", &salt)
            .map(|h| h.to_string())
            .expect("argon2 with default parameters hashes a constant")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn right_password_verifies_and_wrong_does_not() {
        let h = hash("correct horse battery").await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse battery", Some(&h)).await.unwrap());
        assert!(!verify("wrong horse battery", Some(&h)).await.unwrap());
    }

    #[tokio::test]
    async fn unknown_user_never_verifies() {
        assert!(!verify("vpcmesh-no-such-user", None).await.unwrap());
    }
}
