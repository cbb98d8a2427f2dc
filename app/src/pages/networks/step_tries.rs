//! A provisioning step's failed tries, as the progress table shows them.
//! Waiting on AWS (a stack still creating) is healthy and never a try, so a
//! step that never failed shows nothing.

use leptos::prelude::*;

/// "1 failed try", "3 failed tries"; `None` when the step never failed.
pub fn failed_tries(failures: i32) -> Option<String> {
    match failures {
        n if n <= 0 => None,
        1 => Some("1 failed try".to_string()),
        n => Some(format!("{n} failed tries")),
    }
}

/// The tries cell: the count, with the latest failure on hover, and spelled
/// out once the step has recovered (while it is failing, the state column
/// already shows the error).
#[component]
pub fn StepTries(failures: i32, last_error: Option<String>, recovered: bool) -> impl IntoView {
    failed_tries(failures).map(|label| {
        let spelled = last_error.clone().filter(|_| recovered);
        view! {
            <span class="step-tries" title=last_error>{label}</span>
            {spelled.map(|e| view! { <br /><span class="small muted">{format!("last error: {e}")}</span> })}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::failed_tries;

    #[test]
    fn a_step_that_never_failed_shows_no_tries() {
        assert_eq!(failed_tries(0), None);
        assert_eq!(failed_tries(-1), None);
    }

    #[test]
    fn failed_tries_are_counted_in_words() {
        assert_eq!(failed_tries(1).as_deref(), Some("1 failed try"));
        assert_eq!(failed_tries(4).as_deref(), Some("4 failed tries"));
    }
}
