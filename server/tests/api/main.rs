//! Integration tests: the real router against a real Postgres (a private
//! cluster the harness starts), driven request by request.

mod moto;
mod support;

mod accounts;
mod address;
mod appliances;

mod cluster;
mod demo;
mod hardening;
mod installer;
mod isolation;
mod lab;
mod lifecycle;
mod mirror;
mod networks;
mod pages;
mod replicas;
mod roles;
mod rotation;
mod sessions;
mod sign_in;

// The UML guest and data-plane lab helpers have one owner, the appliance's
// test support; the end-to-end lab test here shares them.
#[allow(dead_code)]
#[path = "../../../appliance/tests/support/uml.rs"]
mod uml;
#[allow(dead_code)]
#[path = "../../../appliance/tests/support/lab.rs"]
mod uml_lab;
