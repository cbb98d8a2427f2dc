//! The provisioning engine: plans turned into durable jobs of steps in
//! Postgres, leased with `FOR UPDATE SKIP LOCKED` by any server replica, each
//! step idempotent (deterministic stack names, a ClientRequestToken per step)
//! so crashes and retries never duplicate anything.

pub mod engine;
pub mod jobs;
pub mod retry;
pub mod steps;
pub mod templates;
pub mod vpc_routes;
