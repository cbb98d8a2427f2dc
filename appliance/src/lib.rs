//! vpcmesh appliance agent and its data plane. The wire
//! protocol it shares with the server is the `vpcmesh-protocol` crate,
//! re-exported here as `protocol` (and its VPC route rule as `route_owner`).

pub use vpcmesh_protocol as protocol;
pub use vpcmesh_protocol::route_owner;

pub mod address;
pub mod aws;
pub mod config;
pub mod dataplane;
pub mod ha;
pub mod imds;
pub mod kms;
pub mod local;
pub mod metrics;
pub mod netlink;
pub mod probe;
pub mod route;
pub mod state_file;
pub mod sync;
pub mod vpc_routes;
pub mod xfrm;
