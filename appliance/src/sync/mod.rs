//! The agent's side of the control channel: register once, then long-poll
//! the desired config, apply it, and report status; keep forwarding on the
//! last applied config whenever the server is away (fail static).

pub(crate) mod backoff;
mod boot;
mod cadence;
mod client;
mod drift;
mod generation;
mod run;
pub mod systemd;

pub use boot::{BootConfig, Identity, StoredCredential};
pub use client::{ControlPlane, SyncError};
pub use drift::CHECK_EVERY as DRIFT_CHECK_EVERY;
pub use run::run;
