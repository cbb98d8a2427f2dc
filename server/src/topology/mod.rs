//! The topology compiler: a pure, deterministic function from a network's
//! sites to what every site's appliances must program (tunnels with stable
//! SPIs and selectors) and what every VPC must route. No I/O: the same input
//! always gives the same output, so reconciles downstream are diffs.

mod compile;
mod regions;
mod spec;
mod validate;

pub use compile::{compile, RouteTarget, SitePlan, TunnelEnd};
pub use regions::is_known_region;
pub use spec::{HaMember, Network, Site, SiteId, SiteKind, Topology};
pub use validate::{validate, TopologyError};

#[cfg(test)]
mod tests;
