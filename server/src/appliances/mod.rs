//! The appliance API: instances register with their member's single-use
//! bootstrap token, then use a per-appliance credential to long-poll their
//! desired config and report status. Wire types: `appliance::protocol`.

pub mod agent_binary;
mod changes;
mod config;
mod error;
mod http;
mod probe;
mod register;
pub mod rotation;
mod status;
mod store;

pub use changes::listen as listen_for_changes;
pub use config::desired_config;
pub use error::ApplianceError;
pub use http::routes;
pub use store::summaries;
