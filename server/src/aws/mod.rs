//! AWS: identifiers as customers type them, checked before any call is made.
//! (Clients, the assume-role cache and the provisioning calls build on these.)

mod identifiers;

pub use identifiers::{AccountId, IdentifierError, RoleArn};
