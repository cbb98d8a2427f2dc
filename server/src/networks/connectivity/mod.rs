//! Connectivity checks, the console's side: a member asks, every live
//! appliance pings its peer sites' appliances through the tunnels (the
//! server pings nothing; see `appliances::probe` for the appliances' side),
//! and the latest check reads as pairs of sites with loss and round-trip
//! times.

mod check;
mod pairs;
pub mod store;

pub use check::{latest, latest_of, request, ECHOES, INTERVAL_MS};
pub use pairs::{pairs, SiteName};
