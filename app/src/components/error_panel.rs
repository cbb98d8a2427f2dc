use crate::api::ConsoleError;
use leptos::prelude::*;

/// An error in words a user understands, with the next step where there is one.
#[component]
pub fn ErrorPanel(error: ConsoleError) -> impl IntoView {
    set_http_status(error.status());
    let hint = match &error {
        ConsoleError::Forbidden { .. } => Some("Ask an admin of your organization for access."),
        ConsoleError::Unauthenticated => Some("Your session ended. Sign in again."),
        ConsoleError::Internal => Some("The details are in the server log."),
        _ => None,
    };
    view! {
        <div class="notice notice-error" role="alert">
            <strong>{error.to_string()}</strong>
            {hint.map(|h| view! { <p>{h}</p> })}
        </div>
    }
}

/// Sets the HTTP status of a server-rendered page; a no-op in the browser.
pub fn set_http_status(status: u16) {
    #[cfg(feature = "ssr")]
    if let (Some(options), Ok(code)) = (
        use_context::<leptos_axum::ResponseOptions>(),
        http::StatusCode::from_u16(status),
    ) {
        options.set_status(code);
    }
    #[cfg(not(feature = "ssr"))]
    let _ = status;
}
