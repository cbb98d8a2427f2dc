//! vpcmesh appliance agent. Registration, config sync and the XFRM/route
//! reconciler arrive with the appliance issue; today the crate holds the
//! agent's validated start-up configuration.

pub mod config;
