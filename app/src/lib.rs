#![recursion_limit = "256"]
//! The vpcmesh console: pages, components and the server functions they call.
//!
//! Compiled twice: with `ssr` into the server binary, with `hydrate` into the
//! WebAssembly bundle that makes the server-rendered pages interactive.

pub mod api;
#[cfg(feature = "ssr")]
pub mod backend;
pub mod components;
pub mod pages;
mod shell;

pub use shell::{shell, App};

/// Entry point of the WebAssembly bundle: attaches to the server-rendered DOM.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(App);
    // A marker for browser tests (and curious humans) that the page is live.
    if let Some(root) = leptos::prelude::document().document_element() {
        let _ = root.set_attribute("data-hydrated", "true");
    }
}
