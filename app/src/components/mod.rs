//! Pieces shared by pages: the signed-in layout and error display.

mod error_panel;
mod layout;

pub use error_panel::{set_http_status, ErrorPanel};
pub use layout::ConsoleLayout;
