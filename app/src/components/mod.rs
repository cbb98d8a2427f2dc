//! Pieces shared by pages: the signed-in layout, error display and times.

mod access;
mod error_panel;
mod layout;
pub mod time;

pub use access::viewer_may;
pub use error_panel::{set_http_status, ErrorPanel};
pub use layout::ConsoleLayout;
