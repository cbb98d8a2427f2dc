//! Organizations (tenants) and their users. Every user query takes the
//! caller's organization id: rows of other organizations are unreachable.

pub mod orgs;
pub mod users;
pub mod validate;
