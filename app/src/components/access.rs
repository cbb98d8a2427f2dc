//! Whether the signed-in user may do something, for deciding which controls
//! a page shows. The server checks every operation again against the same
//! table ([`crate::api::Action`]).

use crate::api::{Action, Viewer};
use leptos::prelude::use_context;

pub fn viewer_may(action: Action) -> bool {
    use_context::<Viewer>().is_some_and(|v| v.may(action))
}
