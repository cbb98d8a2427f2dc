//! Console sessions: tower-sessions with its Postgres store. The session
//! holds only who is signed in and when; the user row is re-read on every
//! request so role changes and removals take effect at once. A session ends
//! after `session_idle` without a request, and `session_lifetime` after its
//! sign-in however busy it is.

use crate::config::Settings;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tower_sessions::{cookie::SameSite, Expiry, SessionManagerLayer};
use tower_sessions_sqlx_store::PostgresStore;
use uuid::Uuid;

pub const COOKIE_NAME: &str = "vpcmesh_session";
pub const IDENTITY_KEY: &str = "identity";

/// What the session remembers about the signed-in user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionIdentity {
    pub user_id: Uuid,
    pub org_id: Uuid,
    /// Unix seconds of the sign-in. Sessions from before it was kept read
    /// as 0: over any lifetime, so they end.
    #[serde(default)]
    pub signed_in_at: i64,
    /// The user's session epoch at sign-in: a revocation or a password
    /// change raises the user's epoch and so ends this session.
    #[serde(default)]
    pub epoch: i32,
}

impl SessionIdentity {
    /// Whether `lifetime` has passed since the sign-in, at `now` (unix s).
    pub fn expired(&self, lifetime: std::time::Duration, now: i64) -> bool {
        now.saturating_sub(self.signed_in_at) >= lifetime.as_secs() as i64
    }
}

pub fn store(pool: &PgPool) -> PostgresStore {
    PostgresStore::new(pool.clone())
}

pub fn layer(pool: &PgPool, settings: &Settings) -> SessionManagerLayer<PostgresStore> {
    let idle = time::Duration::try_from(settings.session_idle).unwrap_or(time::Duration::hours(12));
    SessionManagerLayer::new(store(pool))
        .with_name(COOKIE_NAME)
        .with_http_only(true)
        .with_secure(settings.secure_cookies)
        .with_same_site(SameSite::Lax)
        .with_path("/")
        .with_expiry(Expiry::OnInactivity(idle))
        // Save on every request, so activity pushes the idle expiry forward.
        .with_always_save(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_ends_its_lifetime_after_the_sign_in_and_old_ones_at_once() {
        let id = |at| SessionIdentity {
            user_id: Uuid::nil(),
            org_id: Uuid::nil(),
            signed_in_at: at,
            epoch: 0,
        };
        let day = std::time::Duration::from_secs(86_400);
        assert!(!id(1_000_000).expired(day, 1_000_000 + 86_399));
        assert!(id(1_000_000).expired(day, 1_000_000 + 86_400));
        let old: SessionIdentity = serde_json::from_str(
            r#"{"user_id":"00000000-0000-0000-0000-000000000000","org_id":"00000000-0000-0000-0000-000000000000"}"#,
        )
        .expect("a session from before");
        assert!(old.expired(day, 1_000_000));
    }
}
