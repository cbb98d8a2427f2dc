//! Integration tests: the real router against a real Postgres (a private
//! cluster the harness starts), driven request by request.

mod moto;
mod support;

mod accounts;
mod appliances;

mod cluster;
mod demo;
mod hardening;
mod isolation;
mod networks;
mod pages;
mod replicas;
mod roles;
mod sessions;
mod sign_in;
