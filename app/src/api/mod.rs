//! What the console asks of the server: shared types, the error type, and the
//! server functions (bodies run on the server, stubs are compiled into the client).

mod access;
mod accounts;
mod auth;
pub mod cidr;
mod cloud;
mod connectivity;
mod error;
mod failover;
mod networks;
mod regions;
mod types;
mod users;

pub use access::Action;
pub use accounts::*;
pub use auth::*;
pub use cloud::*;
pub use connectivity::*;
pub use error::{ConsoleError, OrgChoice};
pub use failover::*;
pub use networks::*;
pub use regions::{is_known_region, REGIONS};
pub use types::*;
pub use users::*;
