//! Argon2id password hashes, computed off the async runtime, a few at a
//! time: each takes 19 MiB, so a burst of sign-ins waits for a permit
//! instead of exhausting memory.

use argon2::{
    password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Argon2,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use tokio::sync::Semaphore;

/// How many hashes run at once, per server process.
pub const CONCURRENT_HASHES: usize = 4;

fn permits() -> &'static Semaphore {
    static PERMITS: Semaphore = Semaphore::const_new(CONCURRENT_HASHES);
    &PERMITS
}

/// Hashes being computed right now, and the most there ever were at once.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static MOST_AT_ONCE: AtomicUsize = AtomicUsize::new(0);

/// Runs one Argon2 computation, counted in [`IN_FLIGHT`].
fn counted<T>(work: impl FnOnce() -> T) -> T {
    let now = IN_FLIGHT.fetch_add(1, Ordering::SeqCst) + 1;
    MOST_AT_ONCE.fetch_max(now, Ordering::SeqCst);
    let out = work();
    IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    out
}

/// The most Argon2 computations this process ever ran at once.
pub fn most_hashes_at_once() -> usize {
    MOST_AT_ONCE.load(Ordering::SeqCst)
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
        counted(|| {
            let salt = SaltString::generate(&mut OsRng);
            Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| PasswordError::Hash(e.to_string()))
        })
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
        let ok = counted(|| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        });
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_burst_of_sixteen_checks_runs_at_most_four_hashes_at_once() {
        let stored = hash("correct horse battery staple").await.expect("hash");
        let checks: Vec<_> = (0..16)
            .map(|i| {
                let stored = stored.clone();
                tokio::spawn(async move { verify(&format!("guess {i}"), Some(&stored)).await })
            })
            .collect();
        for c in checks {
            assert!(!c.await.expect("joined").expect("verified"));
        }
        let most = most_hashes_at_once();
        assert!(most <= CONCURRENT_HASHES, "{most} hashes ran at once");
        assert!(
            most >= 2,
            "the checks ran one by one ({most}): the bound was not exercised"
        );
    }
}
