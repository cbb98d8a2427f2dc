//! Failover between the two members of a site, the server's side. The
//! members decide between themselves (heartbeats, with EC2's record of who
//! holds the Elastic IP as the arbiter); the server
//! - tells each member its partner, the heartbeat timing and any takeover
//!   it asks for (`config`),
//! - records why each member has its role and every failover (`status`),
//! - asks for a takeover when an admin says "Fail over now" (`request`) or
//!   when its health monitor sees an active that stopped reporting while
//!   its partner is alive (`monitor`),
//! - and shows all of it in the console (`view`).

pub mod config;
pub mod monitor;
pub mod request;
pub mod status;
mod store;
pub mod view;

pub use store::Source;
