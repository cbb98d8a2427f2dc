//! The EC2 instance metadata service (IMDSv2): what the agent learns about
//! its own instance, and a local emulator of it for the lab and tests.

mod client;
pub mod emulator;
mod facts;
pub mod paths;

pub use client::{Imds, ImdsError, DEFAULT_URL, MAX_ANSWER};
pub use emulator::{EmulatedInstance, ImdsCounters, ImdsEmulator};
pub use facts::{region_of_zone, IdentityDocument, InstanceFacts, SpotAction, SpotActionKind};

#[cfg(test)]
mod tests;
