//! What an appliance owns in EC2, with its instance role: source/destination
//! check off on its own interface (EC2 drops forwarded packets otherwise;
//! both members turn it off, so a takeover needs one call less), and, for
//! the active member, the site's Elastic IP on itself.

use super::backoff::Backoff;
use super::Identity;
use crate::address::{SiteAddress, SourceDestCheck, TakeOver};
use crate::protocol::HaRole;
use std::time::Duration;

/// Runs until both are done; retries what AWS did not do with backoff (a
/// denied call slowly: the stack's role may be fixed by an update).
pub async fn own(
    identity: Identity,
    allocation_id: Option<String>,
    role: HaRole,
    endpoint: Option<String>,
) {
    let ec2 = SiteAddress::new(&identity.region, endpoint.as_deref()).await;
    let eni = identity.interface_id.as_deref();
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
    let mut forwarding = false;
    let mut address = role != HaRole::Active || allocation_id.is_none();
    if role == HaRole::Active && allocation_id.is_none() {
        tracing::error!("this site's bootstrap file names no Elastic IP allocation; the address stays where it is");
    }
    while !(forwarding && address) {
        let mut failed = None;
        if !forwarding {
            match ec2
                .disable_source_dest_check(&identity.instance_id, eni)
                .await
            {
                Ok(SourceDestCheck::AlreadyOff) => forwarding = true,
                Ok(SourceDestCheck::TurnedOff) => {
                    tracing::info!(instance = %identity.instance_id, "source/destination check turned off");
                    forwarding = true;
                }
                Err(e) => failed = Some(e),
            }
        }
        if !address {
            if let Some(alloc) = &allocation_id {
                match ec2.take_over(alloc, &identity.instance_id, eni).await {
                    Ok(TakeOver::AlreadyOurs) => address = true,
                    Ok(TakeOver::Moved { from }) => {
                        tracing::info!(allocation_id = %alloc, from = ?from, "the site's Elastic IP now points at this instance");
                        address = true;
                    }
                    Err(e) => failed = failed.or(Some(e)),
                }
            }
        }
        if let Some(e) = failed {
            let wait = backoff.next_wait();
            if e.is_retryable() {
                tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "EC2 did not take the change yet; retrying");
            } else {
                tracing::error!(error = %e, wait_ms = wait.as_millis() as u64, "EC2 refused; retrying later");
            }
            tokio::time::sleep(wait).await;
        }
    }
}
