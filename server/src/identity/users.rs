use app::api::{Role, UserSummary};
use sqlx::{PgExecutor, Row};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use uuid::Uuid;

/// A user row with what sign-in needs; the hash never leaves the server.
#[derive(Debug, Clone)]
pub struct UserRecord {
    pub id: Uuid,
    pub org_id: Uuid,
    pub org_name: String,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub password_hash: String,
    /// Sessions signed in under another epoch are over.
    pub session_epoch: i32,
    pub created_at: OffsetDateTime,
}

impl UserRecord {
    pub fn summary(&self) -> UserSummary {
        UserSummary {
            id: self.id.to_string(),
            email: self.email.clone(),
            name: self.name.clone(),
            role: self.role,
            created_at: self.created_at.format(&Rfc3339).unwrap_or_default(),
        }
    }
}

const SELECT: &str = "SELECT u.id, u.org_id, o.name AS org_name, u.email, u.name, u.role,
                             u.password_hash, u.session_epoch, u.created_at
                        FROM users u JOIN organizations o ON o.id = u.org_id";

fn from_row(row: sqlx::postgres::PgRow) -> Result<UserRecord, sqlx::Error> {
    let role: String = row.try_get("role")?;
    Ok(UserRecord {
        id: row.try_get("id")?,
        org_id: row.try_get("org_id")?,
        org_name: row.try_get("org_name")?,
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        role: role
            .parse()
            .map_err(|e: String| sqlx::Error::Decode(e.into()))?,
        password_hash: row.try_get("password_hash")?,
        session_epoch: row.try_get("session_epoch")?,
        created_at: row.try_get("created_at")?,
    })
}

/// How many organizations' users sign-in checks for one email at most (the
/// oldest first): each costs a password hash.
pub const SIGN_IN_CANDIDATES: i64 = 8;

/// The users with `email`, across organizations (at most
/// [`SIGN_IN_CANDIDATES`], the oldest first): only sign-in does this.
pub async fn find_by_email(
    db: impl PgExecutor<'_>,
    email: &str,
) -> Result<Vec<UserRecord>, sqlx::Error> {
    sqlx::query(&format!(
        "{SELECT} WHERE u.email = $1 ORDER BY u.created_at, u.id LIMIT {SIGN_IN_CANDIDATES}"
    ))
    .bind(email)
    .fetch_all(db)
    .await?
    .into_iter()
    .map(from_row)
    .collect()
}

/// The user with `email` in `org_id`.
pub async fn find_in_org_by_email(
    db: impl PgExecutor<'_>,
    org_id: Uuid,
    email: &str,
) -> Result<Option<UserRecord>, sqlx::Error> {
    sqlx::query(&format!("{SELECT} WHERE u.org_id = $1 AND u.email = $2"))
        .bind(org_id)
        .bind(email)
        .fetch_optional(db)
        .await?
        .map(from_row)
        .transpose()
}

pub async fn find(
    db: impl PgExecutor<'_>,
    org_id: Uuid,
    id: Uuid,
) -> Result<Option<UserRecord>, sqlx::Error> {
    sqlx::query(&format!("{SELECT} WHERE u.org_id = $1 AND u.id = $2"))
        .bind(org_id)
        .bind(id)
        .fetch_optional(db)
        .await?
        .map(from_row)
        .transpose()
}

pub async fn list(db: impl PgExecutor<'_>, org_id: Uuid) -> Result<Vec<UserRecord>, sqlx::Error> {
    sqlx::query(&format!(
        "{SELECT} WHERE u.org_id = $1 ORDER BY u.created_at, u.email"
    ))
    .bind(org_id)
    .fetch_all(db)
    .await?
    .into_iter()
    .map(from_row)
    .collect()
}

pub struct NewUserRow<'a> {
    pub org_id: Uuid,
    pub email: &'a str,
    pub name: &'a str,
    pub role: Role,
    pub password_hash: &'a str,
}

/// Inserts a user; `Ok(None)` when the organization has the email already.
pub async fn insert(
    db: impl PgExecutor<'_>,
    new: NewUserRow<'_>,
) -> Result<Option<Uuid>, sqlx::Error> {
    let id = Uuid::new_v4();
    let inserted = sqlx::query(
        "INSERT INTO users (id, org_id, email, name, role, password_hash)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (org_id, email) DO NOTHING",
    )
    .bind(id)
    .bind(new.org_id)
    .bind(new.email)
    .bind(new.name)
    .bind(new.role.as_str())
    .bind(new.password_hash)
    .execute(db)
    .await?;
    Ok((inserted.rows_affected() == 1).then_some(id))
}

/// Changes a user's role inside `org_id`. Refuses (returns `Ok(false)`) to
/// demote the organization's last admin; the check and the update are one
/// statement, so two concurrent demotions cannot both pass.
pub async fn set_role(
    db: impl PgExecutor<'_>,
    org_id: Uuid,
    id: Uuid,
    role: Role,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE users SET role = $3
          WHERE org_id = $1 AND id = $2
            AND ($3 = 'admin'
                 OR (SELECT count(*) FROM users WHERE org_id = $1 AND role = 'admin' AND id <> $2) > 0)",
    )
    .bind(org_id)
    .bind(id)
    .bind(role.as_str())
    .execute(db)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Sets a new password hash and ends every session signed in with the old
/// password; returns the new session epoch.
pub async fn set_password_hash(
    db: impl PgExecutor<'_>,
    id: Uuid,
    hash: &str,
) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE users SET password_hash = $2, session_epoch = session_epoch + 1
          WHERE id = $1 RETURNING session_epoch",
    )
    .bind(id)
    .bind(hash)
    .fetch_one(db)
    .await
}

/// Ends every session of a user of `org_id` at its next request; `None`
/// when there is no such user.
pub async fn revoke_sessions(
    db: impl PgExecutor<'_>,
    org_id: Uuid,
    id: Uuid,
) -> Result<Option<i32>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE users SET session_epoch = session_epoch + 1
          WHERE org_id = $1 AND id = $2 RETURNING session_epoch",
    )
    .bind(org_id)
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Serializes changes to who is admin in `org_id` (role changes, removals)
/// for the rest of the transaction, and says whether `acting` is still an
/// admin once it holds the lock: two admins demoting or removing each other
/// at the same moment leave one admin, never none.
pub async fn lock_admins(
    conn: &mut sqlx::PgConnection,
    org_id: Uuid,
    acting: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query("SELECT 1 FROM organizations WHERE id = $1 FOR UPDATE")
        .bind(org_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM users WHERE org_id = $1 AND id = $2 AND role = 'admin')",
    )
    .bind(org_id)
    .bind(acting)
    .fetch_one(&mut *conn)
    .await
}

/// Why a user was not removed.
#[derive(Debug, PartialEq, Eq)]
pub enum RemoveRefused {
    NotFound,
    LastAdmin,
}

/// Removes a user of `org_id`; their sessions end at their next request (the
/// row they name is gone). The last admin is never removed: the check and
/// the delete are one statement, so two concurrent removals cannot both pass.
pub async fn remove(
    conn: &mut sqlx::PgConnection,
    org_id: Uuid,
    id: Uuid,
) -> Result<Result<String, RemoveRefused>, sqlx::Error> {
    let removed: Option<String> = sqlx::query_scalar(
        "DELETE FROM users
          WHERE org_id = $1 AND id = $2
            AND (role <> 'admin'
                 OR (SELECT count(*) FROM users WHERE org_id = $1 AND role = 'admin' AND id <> $2) > 0)
          RETURNING email",
    )
    .bind(org_id)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(email) = removed {
        return Ok(Ok(email));
    }
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE org_id = $1 AND id = $2)")
            .bind(org_id)
            .bind(id)
            .fetch_one(&mut *conn)
            .await?;
    Ok(Err(if exists {
        RemoveRefused::LastAdmin
    } else {
        RemoveRefused::NotFound
    }))
}
