//! From a validated config to the kernel: derive keys, compute the kernel
//! state the config asks for, diff it against what the kernel has and apply
//! only the difference.

mod desired;
mod keys;
pub mod nat_t;
mod reconcile;
mod status;

pub use desired::{desired_state, EpochKeys, KernelState, MissingKey, Underlay};
pub use keys::{direction_key, heartbeat_key, DataKey, HeartbeatKey};
pub use nat_t::{NatTSocket, NAT_T_PORT};
pub use reconcile::{
    diff, ChangeSet, Kernel, ObservedState, Plan, ReconcileError, ReconcileReport,
};
pub use status::{inbound_drops, status_report, tunnel_status};
