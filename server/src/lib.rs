//! vpcmesh control plane: serves the console (SSR + hydration), its server
//! functions and the JSON API, on top of Postgres.

pub mod accounts;
pub mod appliances;
pub mod audit;
pub mod auth;
pub mod aws;
pub mod config;
pub mod console;
pub mod db;
pub mod demo;
pub mod failover;
pub mod http;
pub mod identity;
pub mod internal;
pub mod metrics;
pub mod networks;
pub mod provisioning;
pub mod run;
pub mod state;
pub mod topology;

pub use config::{Config, Settings};
pub use state::AppState;
