//! What a member owns in EC2 with its instance role: source/destination
//! check off on its own interface (EC2 drops forwarded packets otherwise;
//! both members turn it off, so a takeover needs one call less), and, while
//! it is active, the VPC's routes to the remote CIDRs (`crate::vpc_routes`),
//! kept pointing here for as long as EC2 says the site's address is on this
//! instance. The address itself is moved by the HA task (`super::run`).

use crate::address::{AddressError, SiteAddress, SourceDestCheck};
use crate::sync::backoff::Backoff;
use crate::sync::Identity;
use crate::vpc_routes::{Owner, RemoteCidrs, VpcRoutes};
use std::time::Duration;
use tokio::sync::watch;

/// How often the active appliance reads the VPC's routes again (one
/// `DescribeRouteTables`) to repair drift.
pub const ROUTES_RECHECK: Duration = Duration::from_secs(30);

/// Turns the source/destination check off on this instance's interface,
/// retrying with backoff until EC2 confirms.
pub async fn forwarding_on(ec2: &SiteAddress, identity: &Identity) {
    let eni = identity.interface_id.as_deref();
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
    loop {
        match ec2
            .disable_source_dest_check(&identity.instance_id, eni)
            .await
        {
            Ok(SourceDestCheck::AlreadyOff) => return,
            Ok(SourceDestCheck::TurnedOff) => {
                tracing::info!(instance = %identity.instance_id, "source/destination check turned off");
                return;
            }
            Err(e) => {
                let wait = backoff.next_wait();
                log_failure(&e, wait, "forwarding");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// The VPC's routes to the remote CIDRs, owned while this member is active.
pub struct RouteOwner {
    pub ec2: SiteAddress,
    pub identity: Identity,
    /// The site's Elastic IP (from the bootstrap file): routes are taken
    /// only while EC2 shows it on this instance.
    pub allocation_id: Option<String>,
    /// See [`ROUTES_RECHECK`]; tests use less.
    pub recheck: Duration,
}

impl RouteOwner {
    /// While `active` says so, the routes to `remote` (the applied config's
    /// remote CIDRs) point here: a pass at once when this member becomes
    /// active or the CIDRs change, then every `recheck`, with backoff after
    /// a failure. Ends when either sender is dropped.
    pub async fn run(
        self,
        mut active: watch::Receiver<bool>,
        mut remote: watch::Receiver<RemoteCidrs>,
    ) {
        let routes = VpcRoutes::new(self.ec2.clone());
        let mut owner: Option<Owner> = None;
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        // What the last pass found, so the log says it once per change.
        let mut last: Option<Pass> = None;
        loop {
            let cidrs = remote.borrow_and_update().clone();
            let is_active = *active.borrow_and_update();
            // Passive, or no config applied yet: nothing to route here. A
            // passive member reads who it is and its site's hosts now, so a
            // takeover spends no EC2 call on them (a failure is retried
            // at the takeover).
            let wait = if cidrs.is_empty() || !is_active {
                if owner.is_none() && !cidrs.is_empty() {
                    match routes
                        .owner(
                            &self.identity.instance_id,
                            self.identity.interface_id.as_deref(),
                        )
                        .await
                    {
                        Ok(me) => owner = Some(me),
                        Err(e) => {
                            tracing::debug!(error = %e, "this instance's VPC and site not read yet")
                        }
                    }
                }
                last = None;
                None
            } else {
                match self.routes_pass(&routes, &mut owner, &cidrs).await {
                    Ok(pass) => {
                        backoff.reset();
                        if last.as_ref() != Some(&pass) {
                            pass.log();
                            last = Some(pass);
                        }
                        Some(self.recheck)
                    }
                    Err(e) => {
                        let wait = backoff.next_wait();
                        log_failure(&e, wait, "vpc_routes");
                        Some(wait)
                    }
                }
            };
            let pause = async {
                match wait {
                    Some(w) => tokio::time::sleep(w).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = remote.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                changed = active.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = pause => {}
            }
        }
    }

    /// One pass, or the first error of any route. EC2 is the arbiter: only
    /// the instance the site's Elastic IP points at owns the routes, so an
    /// old instance still running beside its replacement stops fighting
    /// over them once the replacement has taken the address.
    async fn routes_pass(
        &self,
        routes: &VpcRoutes,
        owner: &mut Option<Owner>,
        cidrs: &RemoteCidrs,
    ) -> Result<Pass, AddressError> {
        if let Some(alloc) = &self.allocation_id {
            let holder = self.ec2.holder(alloc).await?;
            if holder.as_deref() != Some(self.identity.instance_id.as_str()) {
                return Ok(Pass::Yielded { holder });
            }
        }
        let me = match owner {
            Some(me) => me,
            None => owner.insert(
                routes
                    .owner(
                        &self.identity.instance_id,
                        self.identity.interface_id.as_deref(),
                    )
                    .await?,
            ),
        };
        let report = routes.take_over(me, cidrs).await?;
        for r in &report.foreign {
            tracing::warn!(
                route_table = %r.table_id,
                destination = ?r.destination,
                target = %r.target,
                "a VPC route to a remote CIDR names a host that is not this site's appliance: left alone (remove it, or the site's traffic to that CIDR goes there)"
            );
        }
        tracing::debug!(
            vpc_id = %me.vpc_id,
            remote_cidrs = cidrs.len(),
            remote_routes = report.remote_routes,
            replaced = report.replaced.len(),
            failed = report.failed.len(),
            foreign = report.foreign.len(),
            "VPC routes checked"
        );
        let mut first = None;
        for (take, e) in report.failed {
            tracing::warn!(
                route_table = %take.table_id,
                destination = %take.destination,
                from = %take.from,
                error = %e,
                "EC2 did not replace a VPC route"
            );
            first.get_or_insert(e);
        }
        match first {
            Some(e) => Err(e),
            None => Ok(Pass::Owned {
                cidrs: cidrs.clone(),
                routes: report.remote_routes,
            }),
        }
    }
}

/// What a pass over the VPC's routes found.
#[derive(Debug, PartialEq, Eq)]
enum Pass {
    /// Every route to `cidrs` (`routes` of them) points here.
    Owned { cidrs: RemoteCidrs, routes: usize },
    /// The site's address points at `holder`: so do its routes.
    Yielded { holder: Option<String> },
}

impl Pass {
    fn log(&self) {
        match self {
            Pass::Owned { cidrs, routes } => tracing::info!(
                remote_cidrs = cidrs.len(),
                remote_routes = routes,
                "the VPC's routes to the remote CIDRs point at this appliance"
            ),
            Pass::Yielded { holder } => tracing::warn!(
                holder = holder.as_deref(),
                "the site's Elastic IP is not on this instance; its VPC routes are left alone"
            ),
        }
    }
}

/// `step`: what is not done yet (`address`, `vpc_routes`).
fn log_failure(e: &AddressError, wait: Duration, step: &'static str) {
    if e.is_retryable() {
        tracing::warn!(step, error = %e, wait_ms = wait.as_millis() as u64, "EC2 did not take the change yet; retrying");
    } else {
        tracing::error!(step, error = %e, wait_ms = wait.as_millis() as u64, "EC2 refused; retrying later");
    }
}
