//! HTTP: the router with its layers, and the handlers for pages, server
//! functions, the JSON API and health checks.

pub mod api;
pub mod client_ip;
pub mod error;
pub mod health;
pub mod pages;
pub mod router;
pub mod security_headers;

pub use router::router;
