//! Console sessions: tower-sessions with its Postgres store. The session
//! holds only who is signed in; the user row is re-read on every request so
//! role changes and removals take effect at once.

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
