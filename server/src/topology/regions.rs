//! Regions are owned by the shared API crate (the console lists them too).

pub use app::api::is_known_region;
