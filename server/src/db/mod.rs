//! Postgres: the connection pool, migrations, and the private cluster used
//! for local runs and tests.

mod pg_cluster;
mod text_enum;

pub use pg_cluster::{ClusterError, Durability, PrivateCluster};
pub(crate) use text_enum::text_enum;
pub use text_enum::UnknownValue;

use sqlx::{postgres::PgPoolOptions, PgPool};
use std::time::Duration;

pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect(url)
        .await
}

pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!("../migrations").run(pool).await
}

/// `/readyz`: the database answers a trivial query.
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await.map(|_| ())
}
