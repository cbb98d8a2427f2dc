//! Integration tests: the real router against a real Postgres (a private
//! cluster the harness starts), driven request by request.

mod faults;
mod moto;
mod support;

mod access;
mod accounts;
mod address;
mod appliances;

mod cluster;
mod connectivity;
mod corpus;
mod demo;
mod failover_api;
mod hardening;
mod iam_lint;
mod installer;
mod isolation;
mod kms_keys;
mod lifecycle;
mod live_lab;
mod metrics;
mod mirror;
mod networks;
mod pages;
mod people;
mod replicas;
mod retries;
mod roles;
mod rotation;
mod sessions;
mod sign_in;
mod stored_values;
mod tunnel_keys;
mod vpc_routes;

// The UML guest and data-plane lab helpers have one owner, the appliance's
// test support; the live lab and the mirror share them.
#[allow(dead_code)]
#[path = "../../../appliance/tests/support/uml.rs"]
mod uml;
#[allow(dead_code)]
#[path = "../../../appliance/tests/support/lab.rs"]
mod uml_lab;
