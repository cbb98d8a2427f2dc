//! The closed sets of values Postgres stores as text: each Rust enum names
//! exactly the values its column's CHECK constraint allows, so no stored
//! value can fail to read and no Rust value can fail to write.

use crate::support::TestApp;
use server::networks::store::{StoredKeyEpochState, StoredSiteKind};
use server::provisioning::jobs::{JobKind, StepAction, StepState};
use std::collections::BTreeSet;

/// The quoted literals of the CHECK constraint on `table.column`.
async fn allowed(app: &TestApp, table: &str, column: &str) -> BTreeSet<String> {
    let defs: Vec<String> = sqlx::query_scalar(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint
          WHERE conrelid = $1::regclass AND contype = 'c'",
    )
    .bind(table)
    .fetch_all(&app.pool)
    .await
    .expect("the table's constraints");
    let def = defs
        .iter()
        .find(|d| d.starts_with(&format!("CHECK (({column} = ANY")))
        .unwrap_or_else(|| panic!("no CHECK on {table}.{column}: {defs:?}"));
    def.split('\'')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn names(all: impl IntoIterator<Item = &'static str>) -> BTreeSet<String> {
    all.into_iter().map(str::to_string).collect()
}

#[tokio::test]
async fn every_text_enum_names_exactly_what_its_column_allows() {
    let app = TestApp::start().await;
    let cases = [
        (
            "jobs",
            "kind",
            names(JobKind::ALL.iter().map(|v| v.as_str())),
        ),
        (
            "job_steps",
            "action",
            names(StepAction::ALL.iter().map(|v| v.as_str())),
        ),
        (
            "job_steps",
            "state",
            names(StepState::ALL.iter().map(|v| v.as_str())),
        ),
        (
            "sites",
            "kind",
            names(StoredSiteKind::ALL.iter().map(|v| v.as_str())),
        ),
        (
            "key_epochs",
            "state",
            names(StoredKeyEpochState::ALL.iter().map(|v| v.as_str())),
        ),
    ];
    for (table, column, rust) in cases {
        assert_eq!(
            allowed(&app, table, column).await,
            rust,
            "{table}.{column}: Postgres allows one set, the enum names another"
        );
    }
    // And a value outside the set reads as an error, not a default.
    let read: Result<StepAction, sqlx::Error> = sqlx::query_scalar("SELECT 'reboot_stack'::text")
        .fetch_one(&app.pool)
        .await;
    assert!(
        matches!(&read, Err(sqlx::Error::ColumnDecode { .. })),
        "{read:?}"
    );
}
