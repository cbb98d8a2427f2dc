//! The active appliance's hold on its site, through `appliance::address`
//! against moto: it takes the site's Elastic IP and turns off the
//! source/destination check of its interface; the other member can take
//! the address over, and EC2 then names it the holder. Every outcome is
//! read back with the customer's own EC2 calls, not the agent's.

use crate::appliances::{ready_east_west, running_instances, Instance};
use crate::moto::{moto, Customer, ThrottlingProxy};
use crate::networks::World;
use appliance::address::{AddressError, Retry, SiteAddress, SourceDestCheck, TakeOver};
use aws_credential_types::Credentials;
use std::sync::atomic::Ordering;
use std::time::Duration;

const REGION: &str = "us-east-1";

/// The us-east-1 site of a ready network: its id and its Elastic IP.
struct Site {
    id: String,
    allocation_id: String,
    public_ip: String,
}

async fn east_site(w: &World, network: &str) -> Site {
    let net = w.admin_get(&format!("/api/v1/networks/{network}")).await;
    let site = net["sites"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["region"] == REGION))
        .unwrap_or_else(|| panic!("a {REGION} site: {net}"));
    let field = |v: &serde_json::Value| v.as_str().unwrap_or_else(|| panic!("{site}")).to_string();
    Site {
        id: field(&site["id"]),
        allocation_id: field(&site["outputs"]["AllocationId"]),
        public_ip: field(&site["outputs"]["PublicIp"]),
    }
}

/// One HA member's instance and its primary interface.
/// The running instance of the site's `member` ('a' or 'b').
async fn member(c: &Customer, site_id: &str, member: &str) -> Instance {
    let found: Vec<Instance> = running_instances(c, REGION, member.chars().next())
        .await
        .into_iter()
        .filter(|i| i.site == site_id)
        .collect();
    assert_eq!(found.len(), 1, "one running member {member}: {found:?}");
    let m = found.into_iter().next().expect("checked above");
    assert!(
        m.interface_id.starts_with("eni-"),
        "moto names the primary interface: {m:?}"
    );
    m
}

/// The agent as an appliance in the customer's account runs it: the
/// instance role's credentials (here the customer's), against `endpoint`.
async fn agent(c: &Customer, endpoint: &str) -> SiteAddress {
    let (key, secret, token) = c.credentials();
    SiteAddress::with_credentials(
        REGION,
        Some(endpoint),
        Credentials::new(key, secret, token, None, "test-appliance-role"),
    )
    .await
}

/// (instance, interface) the address points at, as the customer sees it.
async fn associated(c: &Customer, allocation_id: &str) -> (String, String) {
    let out = c
        .ec2(REGION)
        .describe_addresses()
        .allocation_ids(allocation_id)
        .send()
        .await
        .expect("DescribeAddresses");
    let a = out.addresses().first().expect("the address");
    (
        a.instance_id().unwrap_or_default().to_string(),
        a.network_interface_id().unwrap_or_default().to_string(),
    )
}

async fn public_ip_of(c: &Customer, instance: &str) -> String {
    let out = c
        .ec2(REGION)
        .describe_instances()
        .instance_ids(instance)
        .send()
        .await
        .expect("DescribeInstances");
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .find_map(|i| i.public_ip_address())
        .unwrap_or_default()
        .to_string()
}

/// The interface's source/destination check and the instance it is attached to.
async fn interface(c: &Customer, eni: &str) -> (Option<bool>, String) {
    let out = c
        .ec2(REGION)
        .describe_network_interfaces()
        .network_interface_ids(eni)
        .send()
        .await
        .expect("DescribeNetworkInterfaces");
    let n = out.network_interfaces().first().expect("the interface");
    (
        n.source_dest_check(),
        n.attachment()
            .and_then(|a| a.instance_id())
            .unwrap_or_default()
            .to_string(),
    )
}

#[tokio::test]
async fn member_a_takes_the_site_address_and_forwards_and_a_repeat_changes_nothing() {
    let (w, network) = ready_east_west("address-a").await;
    let site = east_site(&w, &network).await;
    let a = member(&w.customer, &site.id, "a").await;
    let agent = agent(&w.customer, &moto().await.url).await;

    assert_eq!(agent.holder(&site.allocation_id).await, Ok(None));
    assert_eq!(
        interface(&w.customer, &a.interface_id).await.0,
        Some(true),
        "EC2's default"
    );

    let took = agent
        .take_over(&site.allocation_id, &a.id, Some(&a.interface_id))
        .await
        .expect("take over");
    assert_eq!(took, TakeOver::Moved { from: None });
    let check = agent
        .disable_source_dest_check(&a.id, Some(&a.interface_id))
        .await
        .expect("source/dest check off");
    assert_eq!(check, SourceDestCheck::TurnedOff);

    let (_, eni) = associated(&w.customer, &site.allocation_id).await;
    assert_eq!(
        eni, a.interface_id,
        "the site's address is on A's interface"
    );
    assert_eq!(interface(&w.customer, &eni).await.1, a.id, "which is A's");
    assert_eq!(public_ip_of(&w.customer, &a.id).await, site.public_ip);
    assert_eq!(interface(&w.customer, &a.interface_id).await.0, Some(false));
    assert_eq!(
        agent.holder(&site.allocation_id).await,
        Ok(Some(a.id.clone()))
    );

    // The reconciler runs this on every turn: the second time is a no-op.
    assert_eq!(
        agent
            .take_over(&site.allocation_id, &a.id, Some(&a.interface_id))
            .await,
        Ok(TakeOver::AlreadyOurs)
    );
    assert_eq!(
        agent
            .disable_source_dest_check(&a.id, Some(&a.interface_id))
            .await,
        Ok(SourceDestCheck::AlreadyOff)
    );
    assert_eq!(
        associated(&w.customer, &site.allocation_id).await.1,
        a.interface_id
    );
}

#[tokio::test]
async fn member_b_takes_the_address_over_from_a_and_ec2_names_b_the_holder() {
    let (w, network) = ready_east_west("address-b").await;
    let site = east_site(&w, &network).await;
    let a = member(&w.customer, &site.id, "a").await;
    let b = member(&w.customer, &site.id, "b").await;
    assert_ne!(a.id, b.id);
    let agent = agent(&w.customer, &moto().await.url).await;
    agent
        .take_over(&site.allocation_id, &a.id, Some(&a.interface_id))
        .await
        .expect("A takes the address");

    let took = agent
        .take_over(&site.allocation_id, &b.id, Some(&b.interface_id))
        .await
        .expect("B takes over");
    assert_eq!(
        took,
        TakeOver::Moved {
            from: Some(a.id.clone())
        }
    );
    assert_eq!(
        associated(&w.customer, &site.allocation_id).await.1,
        b.interface_id
    );
    assert_eq!(public_ip_of(&w.customer, &b.id).await, site.public_ip);
    assert_eq!(
        agent.holder(&site.allocation_id).await,
        Ok(Some(b.id.clone()))
    );
    // B forwards too; A's interface was never touched.
    assert_eq!(
        agent.disable_source_dest_check(&b.id, None).await,
        Ok(SourceDestCheck::TurnedOff),
        "found through B's primary interface"
    );
    assert_eq!(interface(&w.customer, &b.interface_id).await.0, Some(false));
    assert_eq!(interface(&w.customer, &a.interface_id).await.0, Some(true));

    // Without a known interface the instance is the target.
    assert_eq!(
        agent.take_over(&site.allocation_id, &a.id, None).await,
        Ok(TakeOver::Moved {
            from: Some(b.id.clone())
        })
    );
    assert_eq!(associated(&w.customer, &site.allocation_id).await.0, a.id);
    assert_eq!(
        agent.holder(&site.allocation_id).await,
        Ok(Some(a.id.clone()))
    );
    assert_eq!(
        agent.take_over(&site.allocation_id, &a.id, None).await,
        Ok(TakeOver::AlreadyOurs)
    );
}

/// An instance and an unassociated Elastic IP made directly in the
/// customer's account (no network needed).
struct Bare {
    id: String,
    interface_id: String,
}

async fn bare_instance_and_address(c: &Customer) -> (Bare, String) {
    let ec2 = c.ec2(REGION);
    let vpc = c.vpc(REGION, "10.77.0.0/16").await;
    let (id, interface_id) = c.untagged_instance(REGION, &vpc.id).await;
    let m = Bare { id, interface_id };
    let eip = ec2
        .allocate_address()
        .domain(aws_sdk_ec2::types::DomainType::Vpc)
        .send()
        .await
        .expect("AllocateAddress");
    (m, eip.allocation_id().expect("allocation").to_string())
}

#[tokio::test]
async fn throttled_takeovers_are_retried_with_backoff_until_ec2_lets_them_through() {
    let c = moto().await.customer().await;
    let (m, allocation_id) = bare_instance_and_address(&c).await;
    let proxy = ThrottlingProxy::start(&moto().await.url, "Action=AssociateAddress", 3).await;
    let agent = agent(&c, &proxy.url).await.retrying(Retry {
        attempts: 5,
        first_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
    });
    let took = agent
        .take_over(&allocation_id, &m.id, Some(&m.interface_id))
        .await
        .expect("gets through after 3 throttled attempts");
    assert_eq!(took, TakeOver::Moved { from: None });
    assert_eq!(proxy.throttled.load(Ordering::SeqCst), 3);
    assert_eq!(proxy.forwarded_matching.load(Ordering::SeqCst), 1);
    assert_eq!(associated(&c, &allocation_id).await.1, m.interface_id);
}

#[tokio::test]
async fn a_takeover_still_throttled_after_its_last_attempt_fails_as_retryable() {
    let c = moto().await.customer().await;
    let (m, allocation_id) = bare_instance_and_address(&c).await;
    let proxy = ThrottlingProxy::start(&moto().await.url, "Action=AssociateAddress", 10).await;
    let agent = agent(&c, &proxy.url).await.retrying(Retry {
        attempts: 2,
        first_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(10),
    });
    let err = agent
        .take_over(&allocation_id, &m.id, Some(&m.interface_id))
        .await
        .expect_err("throttled throughout");
    assert!(matches!(err, AddressError::Throttled { .. }), "{err:?}");
    assert!(err.is_retryable());
    // Exactly our two attempts reached EC2's door: the SDK adds none.
    assert_eq!(proxy.throttled.load(Ordering::SeqCst), 2);
    assert_eq!(
        associated(&c, &allocation_id).await,
        (String::new(), String::new())
    );
}

#[tokio::test]
async fn an_address_that_does_not_exist_is_not_found_and_not_retried() {
    let c = moto().await.customer().await;
    let (m, _) = bare_instance_and_address(&c).await;
    let agent = agent(&c, &moto().await.url).await;
    let err = agent
        .take_over("eipalloc-0000000000000000f", &m.id, Some(&m.interface_id))
        .await
        .expect_err("no such address");
    assert!(matches!(err, AddressError::NotFound { .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert!(
        err.to_string().contains("eipalloc-0000000000000000f"),
        "{err}"
    );
    let err = agent
        .disable_source_dest_check("i-0000000000000000f", None)
        .await
        .expect_err("no such instance");
    assert!(matches!(err, AddressError::NotFound { .. }), "{err:?}");
}
