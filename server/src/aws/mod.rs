//! AWS: identifiers as customers type them (checked before any call), the
//! client layer with its assumed-role cache, and the calls vpcmesh makes.

mod client;
pub mod discovery;
mod error;
mod identifiers;
pub mod instances;
pub mod kms;

pub use client::{http_client, AccountAccess, Aws};
pub use error::AwsError;
pub use identifiers::{AccountId, IdentifierError, KmsKeyArn, RoleArn};
