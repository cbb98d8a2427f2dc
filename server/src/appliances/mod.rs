//! The appliance API: instances register with their member's single-use
//! bootstrap token, then use a per-appliance credential to long-poll their
//! desired config and report status. Wire types: `appliance::protocol`.

mod config;
mod error;
mod http;
mod register;
mod status;
mod store;

pub use config::desired_config;
pub use error::ApplianceError;
pub use http::routes;
