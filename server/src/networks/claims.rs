//! One live network per VPC. Two networks in one VPC would fight over its
//! route tables and both launch appliances into it, so a network claims
//! its VPCs (by AWS account number, region and VPC ID, whichever
//! organization registered the account) in the transaction that creates
//! it; the claim goes when the network is deleted (migration 0011's
//! trigger). A VPC already claimed is a conflict that names the holding
//! network to its own organization only.

use super::request::CheckedSite;
use crate::internal::OrInternal;
use app::api::ConsoleError;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// The live network that holds a VPC.
struct Holder {
    org_id: Uuid,
    name: String,
    status: String,
}

const HOLDER: &str = "SELECT n.org_id, n.name, n.status FROM vpc_claims c
      JOIN networks n ON n.id = c.network_id
     WHERE c.aws_account_id = $1 AND c.region = $2 AND c.vpc_id = $3";

async fn holder(db: impl PgExecutor<'_>, s: &CheckedSite) -> Result<Option<Holder>, ConsoleError> {
    let row: Option<(Uuid, String, String)> = sqlx::query_as(HOLDER)
        .bind(s.account.to_string())
        .bind(&s.region)
        .bind(&s.vpc_id)
        .fetch_optional(db)
        .await
        .or_internal("read a VPC's claim")?;
    Ok(row.map(|(org_id, name, status)| Holder {
        org_id,
        name,
        status,
    }))
}

/// Fails with a conflict for the first of `sites` whose VPC a live network
/// holds (checked before anything is asked of AWS; [`claim`] decides).
pub async fn check_free(
    db: &mut PgConnection,
    org_id: Uuid,
    sites: &[CheckedSite],
) -> Result<(), ConsoleError> {
    for s in sites {
        if let Some(h) = holder(&mut *db, s).await? {
            return Err(taken(org_id, s, &h));
        }
    }
    Ok(())
}

/// Claims `s`'s VPC for `network_id` in the creating transaction; a VPC
/// claimed first by another transaction is a conflict once that commits.
pub async fn claim(
    tx: &mut PgConnection,
    org_id: Uuid,
    network_id: Uuid,
    site_id: Uuid,
    s: &CheckedSite,
) -> Result<(), ConsoleError> {
    let done = sqlx::query(
        "INSERT INTO vpc_claims (aws_account_id, region, vpc_id, network_id, site_id)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(s.account.to_string())
    .bind(&s.region)
    .bind(&s.vpc_id)
    .bind(network_id)
    .bind(site_id)
    .execute(&mut *tx)
    .await
    .or_internal("claim a VPC")?;
    if done.rows_affected() == 1 {
        return Ok(());
    }
    match holder(&mut *tx, s).await? {
        Some(h) => Err(taken(org_id, s, &h)),
        // Taken and let go between the two statements: ask again.
        None => Err(ConsoleError::Conflict {
            message: format!(
                "VPC {} was being added to another network at the same time. Try again.",
                s.vpc_id
            ),
        }),
    }
}

fn taken(org_id: Uuid, s: &CheckedSite, h: &Holder) -> ConsoleError {
    let vpc = format!("VPC {} (account {}, {})", s.vpc_id, s.account, s.region);
    let message = if h.org_id == org_id {
        let state = match h.status.as_str() {
            "deleting" => " (being deleted)",
            "failed" => " (failed)",
            _ => "",
        };
        format!(
            "{vpc} is already in network '{}'{state}. A VPC can be in one network at a time: delete '{}' first, or choose another VPC.",
            h.name, h.name
        )
    } else {
        format!(
            "{vpc} is already connected by another organization's vpcmesh network. A VPC can be in one network at a time."
        )
    };
    ConsoleError::Conflict { message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> CheckedSite {
        CheckedSite {
            index: 0,
            account: "123456789012".parse().expect("an account"),
            region: "us-east-1".into(),
            vpc_id: "vpc-0abc".into(),
            role: app::api::SiteRole::Edge,
            name: "east".into(),
        }
    }

    #[test]
    fn a_taken_vpc_names_its_network_only_to_its_own_organization() {
        let (mine, theirs) = (Uuid::new_v4(), Uuid::new_v4());
        let h = Holder {
            org_id: mine,
            name: "prod".into(),
            status: "failed".into(),
        };
        let own = taken(mine, &site(), &h).to_string();
        assert!(own.contains("'prod' (failed)"), "{own}");
        assert!(
            own.contains("vpc-0abc (account 123456789012, us-east-1)"),
            "{own}"
        );
        let other = taken(theirs, &site(), &h).to_string();
        assert!(!other.contains("prod"), "{other}");
        assert!(other.contains("another organization"), "{other}");
    }
}
