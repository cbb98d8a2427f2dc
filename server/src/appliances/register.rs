//! Registration: an instance with its member's bootstrap token becomes an
//! appliance with a credential, once EC2 confirms (through the customer's
//! role) that it is a running member of that member's Auto Scaling group
//! with the address it claims. The token alone registers nothing: it sits in
//! user data, which anything on the instance can read.

use super::{rotation::LIVE_WITHIN, store, ApplianceError};
use crate::aws::instances::{self, InstanceFacts, GROUP_TAG};
use crate::{accounts, audit, identity::orgs, state::AppState};
use rand::RngCore;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;
use vpcmesh_protocol::{Member, RegisterRequest, RegisterResponse, MAX_MEMBER_GENERATION};

pub fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

fn check(req: &RegisterRequest) -> Result<(), ApplianceError> {
    let invalid = |field, message: &str| {
        Err(ApplianceError::InvalidInput {
            field,
            message: message.to_string(),
        })
    };
    let id = &req.instance_id;
    if !(id.starts_with("i-")
        && (10..=19).contains(&id.len())
        && id[2..].bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return invalid("instance_id", "must look like i-0123456789abcdef0");
    }
    let az = &req.availability_zone;
    if az.is_empty()
        || az.len() > 32
        || !az
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return invalid("availability_zone", "must look like us-east-1a");
    }
    if req.agent_version.is_empty() || req.agent_version.len() > 64 {
        return invalid("agent_version", "must be 1 to 64 characters");
    }
    if req.private_ip.is_unspecified() || req.private_ip.is_multicast() {
        return invalid("private_ip", "must be the instance's own address");
    }
    if req.bootstrap_token.len() > 256 {
        return Err(ApplianceError::UnknownToken);
    }
    Ok(())
}

/// Why EC2's view of the instance does not match the registration; `None`
/// when it does.
pub fn mismatch(
    facts: Option<&InstanceFacts>,
    req: &RegisterRequest,
    group: &str,
) -> Option<String> {
    let id = &req.instance_id;
    let Some(f) = facts else {
        return Some(format!(
            "EC2 does not know instance {id} in this site's account and region"
        ));
    };
    if f.state != "running" {
        return Some(format!("instance {id} is {}, not running", f.state));
    }
    match f.tags.get(GROUP_TAG) {
        Some(g) if g == group => {}
        Some(g) => {
            return Some(format!(
            "instance {id} belongs to Auto Scaling group {g}, not to this member's group {group}"
        ))
        }
        None => {
            return Some(format!(
                "instance {id} was not launched by this member's Auto Scaling group {group}"
            ))
        }
    }
    if !f.private_ips.contains(&req.private_ip) {
        return Some(format!(
            "instance {id} does not have the private address {}",
            req.private_ip
        ));
    }
    if f.availability_zone != req.availability_zone {
        return Some(format!(
            "instance {id} is in {}, not in {}",
            f.availability_zone, req.availability_zone
        ));
    }
    None
}

pub async fn register(
    state: &AppState,
    req: RegisterRequest,
) -> Result<RegisterResponse, ApplianceError> {
    check(&req)?;
    let token_hash = hash(&req.bootstrap_token);
    let token = store::token(&state.pool, &token_hash)
        .await?
        .ok_or(ApplianceError::UnknownToken)?;
    if token
        .expires_at
        .is_some_and(|t| t <= OffsetDateTime::now_utc())
    {
        return Err(ApplianceError::TokenExpired);
    }
    let member = token.member;
    let site = store::registration_site(&state.pool, token.site_id)
        .await?
        .ok_or(ApplianceError::SiteGone)?;
    let group_output = match member {
        Member::A => "GroupA",
        Member::B => "GroupB",
    };
    let group = site
        .outputs
        .0
        .get(group_output)
        .and_then(|g| g.as_str())
        .ok_or_else(|| ApplianceError::NotVerified {
            reason:
                "the site's Auto Scaling group is not known yet (its stack is still being created)"
                    .into(),
        })?
        .to_string();

    // Through the customer's role: is this really our member's instance?
    let role_arn = site.role_arn.as_deref().ok_or(ApplianceError::SiteGone)?;
    let external_id = orgs::external_id(&state.pool, site.org_id).await?;
    let access = accounts::access(role_arn, &external_id).map_err(|e| {
        tracing::error!(site_id = %token.site_id, error = %e, "a site's stored role ARN does not parse");
        ApplianceError::Internal
    })?;
    let facts = async {
        let ec2 = state.aws.ec2(&access, &site.region).await?;
        instances::describe(&ec2, &req.instance_id).await
    }
    .await
    .map_err(|e| {
        tracing::warn!(site_id = %token.site_id, instance = %req.instance_id, error = %e, "cannot verify a registering instance with EC2");
        ApplianceError::VerificationUnavailable(e.to_string())
    })?;
    if let Some(reason) = mismatch(facts.as_ref(), &req, &group) {
        tracing::warn!(site_id = %token.site_id, member = member.as_str(), instance = %req.instance_id, %reason, "registration refused");
        audit::record(
            &state.pool,
            site.org_id,
            None,
            "appliance.registration_refused",
            Some(&format!("{}: {reason}", req.instance_id)),
        )
        .await?;
        return Err(ApplianceError::NotVerified { reason });
    }

    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let credential = format!("vma_{}", hex::encode(raw));
    let id = Uuid::new_v4();
    let mut tx = state.pool.begin().await?;
    // One registration of a member at a time.
    store::lock_token(&mut *tx, &token_hash).await?;
    let previous = store::live_member(&mut *tx, token.site_id, member).await?;
    if let Some(p) = &previous {
        let live = p
            .last_seen_at
            .is_some_and(|t| OffsetDateTime::now_utc() - t < LIVE_WITHIN);
        if p.instance_id == req.instance_id && live {
            return Err(ApplianceError::AlreadyRegistered(req.instance_id.clone()));
        }
    }
    let generation = store::last_generation(&mut *tx, token.site_id, member).await? + 1;
    if generation > MAX_MEMBER_GENERATION {
        return Err(ApplianceError::GenerationsExhausted);
    }
    store::replace_member(
        &mut tx,
        store::NewAppliance {
            id,
            site_id: token.site_id,
            member,
            instance_id: &req.instance_id,
            availability_zone: &req.availability_zone,
            private_ip: req.private_ip,
            public_ip: req.public_ip,
            credential_hash: &hash(&credential),
            agent_version: &req.agent_version,
            generation,
        },
    )
    .await?;
    store::use_token(&mut *tx, &token_hash).await?;
    if let Some(p) = &previous {
        audit::record(
            &mut *tx,
            site.org_id,
            None,
            "appliance.retired",
            Some(&format!(
                "{} (member {} of site {}, replaced by {})",
                p.instance_id,
                member.as_str(),
                site.name,
                req.instance_id
            )),
        )
        .await?;
    }
    audit::record(
        &mut *tx,
        site.org_id,
        None,
        "appliance.registered",
        Some(&format!(
            "{} (member {} of site {}, generation {generation})",
            req.instance_id,
            member.as_str(),
            site.name
        )),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(appliance_id = %id, site_id = %token.site_id, member = member.as_str(), instance = %req.instance_id, generation, replaced = ?previous.as_ref().map(|p| &p.instance_id), "appliance registered");
    Ok(RegisterResponse {
        appliance_id: id,
        credential,
        network_id: site.network_id,
        site_id: token.site_id,
        member,
        generation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn req() -> RegisterRequest {
        RegisterRequest {
            bootstrap_token: "vmb_x".into(),
            instance_id: "i-0123456789abcdef0".into(),
            availability_zone: "us-east-1a".into(),
            private_ip: "10.1.0.5".parse().expect("literal"),
            public_ip: None,
            agent_version: "0.1.0".into(),
        }
    }

    fn facts() -> InstanceFacts {
        InstanceFacts {
            id: "i-0123456789abcdef0".into(),
            state: "running".into(),
            availability_zone: "us-east-1a".into(),
            private_ips: vec!["10.1.0.5".parse().expect("literal")],
            tags: BTreeMap::from([(GROUP_TAG.to_string(), "grp-a".to_string())]),
        }
    }

    #[test]
    fn only_a_running_member_of_the_group_with_its_own_address_matches() {
        assert_eq!(mismatch(Some(&facts()), &req(), "grp-a"), None);
        assert!(mismatch(None, &req(), "grp-a").is_some_and(|r| r.contains("does not know")));
        let mut stopped = facts();
        stopped.state = "stopped".into();
        assert!(mismatch(Some(&stopped), &req(), "grp-a").is_some_and(|r| r.contains("stopped")));
        assert!(mismatch(Some(&facts()), &req(), "grp-b").is_some_and(|r| r.contains("grp-b")));
        let mut untagged = facts();
        untagged.tags.clear();
        assert!(
            mismatch(Some(&untagged), &req(), "grp-a").is_some_and(|r| r.contains("not launched"))
        );
        let mut other_ip = req();
        other_ip.private_ip = "10.1.0.6".parse().expect("literal");
        assert!(
            mismatch(Some(&facts()), &other_ip, "grp-a").is_some_and(|r| r.contains("10.1.0.6"))
        );
        let mut other_az = req();
        other_az.availability_zone = "us-east-1b".into();
        assert!(
            mismatch(Some(&facts()), &other_az, "grp-a").is_some_and(|r| r.contains("us-east-1b"))
        );
    }
}
