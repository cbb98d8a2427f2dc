//! The vpcmesh lab: the whole system on one machine, for real. A runner
//! mirrors what the AWS emulator holds into a real network inside a
//! User-Mode Linux guest (this host kernel has no ESP) and keeps mirroring
//! it: a namespace per running vpcmesh instance that boots from its own
//! user data, a router per VPC with its route tables, Elastic IPs on a WAN,
//! Transit Gateways, and a test host on every VPC CIDR.

pub mod bench;
pub mod cloud;
pub mod forward;
pub mod guest;
pub mod instance;
pub mod model;
pub mod netns;
pub mod runner;
pub mod stall;
pub mod timeline;

pub use runner::{Lab, LabConfig, LabError};
