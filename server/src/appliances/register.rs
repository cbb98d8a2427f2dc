//! Registration: a bootstrap token, used once, becomes a credential.

use super::{store, ApplianceError};
use crate::{audit, state::AppState};
use appliance::protocol::{Member, RegisterRequest, RegisterResponse};
use rand::RngCore;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

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

pub async fn register(
    state: &AppState,
    req: RegisterRequest,
) -> Result<RegisterResponse, ApplianceError> {
    check(&req)?;
    let token_hash = hash(&req.bootstrap_token);
    let mut tx = state.pool.begin().await?;
    let token = store::lock_token(&mut *tx, &token_hash)
        .await?
        .ok_or(ApplianceError::UnknownToken)?;
    if token.used_at.is_some() {
        tracing::warn!(site_id = %token.site_id, instance = %req.instance_id, "replayed bootstrap token refused");
        return Err(ApplianceError::TokenUsed);
    }
    if token.expires_at <= OffsetDateTime::now_utc() {
        return Err(ApplianceError::TokenExpired);
    }
    let member = match token.member.as_deref() {
        Some("a") => Member::A,
        Some("b") => Member::B,
        _ => return Err(ApplianceError::UnknownToken),
    };
    let (network_id, org_id) = store::live_site(&mut *tx, token.site_id)
        .await?
        .ok_or(ApplianceError::SiteGone)?;
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let credential = format!("vma_{}", hex::encode(raw));
    let id = Uuid::new_v4();
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
        },
    )
    .await?;
    store::use_token(&mut *tx, &token_hash).await?;
    audit::record(
        &mut *tx,
        org_id,
        None,
        "appliance.registered",
        Some(&req.instance_id),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(appliance_id = %id, site_id = %token.site_id, member = member.as_str(), instance = %req.instance_id, "appliance registered");
    Ok(RegisterResponse {
        appliance_id: id,
        credential,
        network_id,
        site_id: token.site_id,
        member,
    })
}
