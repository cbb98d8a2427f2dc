//! The appliance API: instances register with their member's single-use
//! bootstrap token, then use a per-appliance credential to long-poll their
//! desired config and report status. Wire types: `vpcmesh_protocol`.

pub mod agent_binary;
mod changes;
mod config;
mod credentials;
mod error;
mod http;
pub mod limits;
mod probe;
mod register;
pub mod rotation;
mod snapshots;
mod status;
mod store;

pub use changes::{listen as listen_for_changes, Change, Waiters};
pub use config::{desired_config, NetworkSnapshot};
pub use credentials::CredentialCache;
pub use error::ApplianceError;
pub use http::routes;
pub use snapshots::Snapshots;
pub use store::summaries;
