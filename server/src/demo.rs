//! The demo organization the local run command creates, so a newcomer can
//! sign in at once.

use crate::{
    auth::password,
    identity::{orgs, users, validate},
};
use app::api::Role;
use rand::{distr::Alphanumeric, Rng};
use sqlx::PgPool;

pub const DEMO_ORG: &str = "Demo";

/// Ensures the demo organization and its admin exist, and gives the admin a
/// fresh random password, which is returned (and never stored in plaintext).
pub async fn ensure_demo_admin(pool: &PgPool, email: &str) -> anyhow::Result<String> {
    let email = validate::email(email).map_err(|e| anyhow::anyhow!("demo admin {e}"))?;
    let password: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(20)
        .map(char::from)
        .collect();
    let hash = password::hash(&password).await?;
    let mut tx = pool.begin().await?;
    let org = match orgs::find_by_name(&mut *tx, DEMO_ORG).await? {
        Some(org) => org,
        None => orgs::create(&mut *tx, DEMO_ORG).await?,
    };
    match users::find_by_email(&mut *tx, &email).await? {
        Some(user) if user.org_id == org.id => {
            users::set_password_hash(&mut *tx, user.id, &hash).await?
        }
        Some(_) => anyhow::bail!(
            "{email} already belongs to another organization; choose another --demo-admin"
        ),
        None => {
            users::insert(
                &mut *tx,
                users::NewUserRow {
                    org_id: org.id,
                    email: &email,
                    name: "Demo Admin",
                    role: Role::Admin,
                    password_hash: &hash,
                },
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(password)
}
