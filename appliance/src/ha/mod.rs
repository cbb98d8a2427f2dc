//! The site's HA pair: heartbeats between the two members
//! (`heartbeat`), who is active (`decide`), and the task that runs both
//! against the kernel, EC2 and IMDS (`run`), and what a member remembers
//! across a restart (`remembered`), and the goodbye on SIGTERM (`stopping`).

pub mod decide;
pub mod heartbeat;
pub mod remembered;
pub mod routes;
pub mod run;
pub mod stopping;

pub use routes::{RouteOwner, ROUTES_RECHECK};
pub use run::{HaInputs, HaTask, HaView};
pub use stopping::Stopping;
