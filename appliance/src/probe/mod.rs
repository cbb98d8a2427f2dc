//! Connectivity checks: an appliance pings its peer sites' appliances
//! through the tunnels, from its own inside address, and reports loss and
//! round-trip times (the server never pings anything itself).

mod echo;
pub mod icmp;
mod runner;

pub use echo::{ping, summarize, EchoError};
pub use runner::Probes;
