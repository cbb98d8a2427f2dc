//! vpcmesh appliance agent. `protocol` is the wire protocol shared with the
//! server (always built); everything else is the agent and its data plane
//! (feature `agent`).

pub mod protocol;

#[cfg(feature = "agent")]
pub mod address;
#[cfg(feature = "agent")]
pub mod aws;
#[cfg(feature = "agent")]
pub mod config;
#[cfg(feature = "agent")]
pub mod dataplane;
#[cfg(feature = "agent")]
pub mod ha;
#[cfg(feature = "agent")]
pub mod imds;
#[cfg(feature = "agent")]
pub mod kms;
#[cfg(feature = "agent")]
pub mod local;
#[cfg(feature = "agent")]
pub mod metrics;
#[cfg(feature = "agent")]
pub mod netlink;
#[cfg(feature = "agent")]
pub mod probe;
#[cfg(feature = "agent")]
pub mod route;
#[cfg(feature = "routes")]
pub mod route_owner;
#[cfg(feature = "agent")]
pub mod state_file;
#[cfg(feature = "agent")]
pub mod sync;
#[cfg(feature = "agent")]
pub mod vpc_routes;
#[cfg(feature = "agent")]
pub mod xfrm;
