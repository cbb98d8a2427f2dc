//! Sign-in and sessions: password hashing, rate limiting, the session layer
//! and the CSRF check on state-changing requests.

pub mod csrf;
pub mod password;
pub mod rate_limit;
pub mod session;
