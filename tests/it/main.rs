//! Integration tests.

mod cli;
mod docs;
mod freshness;
mod pace;
mod sim_http;
mod sweep;
mod truth;
mod workflow;
