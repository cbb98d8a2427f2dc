//! Turning failures the user cannot fix into [`ConsoleError::Internal`],
//! logged once with their cause.

use app::api::ConsoleError;
use std::fmt::Display;

pub trait OrInternal<T> {
    /// Logs the cause with `what` was being done and hides it from the user.
    fn or_internal(self, what: &'static str) -> Result<T, ConsoleError>;
}

impl<T, E: Display> OrInternal<T> for Result<T, E> {
    fn or_internal(self, what: &'static str) -> Result<T, ConsoleError> {
        self.map_err(|e| {
            tracing::error!(error = %e, what, "internal error");
            ConsoleError::Internal
        })
    }
}
