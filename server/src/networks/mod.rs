//! Networks: requests checked and discovered live, stored with their sites
//! and key epochs, planned and applied by the provisioning engine.

pub mod claims;
pub mod connectivity;
pub mod create;
pub mod data_keys;
pub mod keys;
pub mod model;
pub mod plan;
pub mod request;
pub mod schedule;
pub mod store;
pub mod view;
