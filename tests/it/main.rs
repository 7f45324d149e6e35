//! Integration tests.

mod cli;
mod docs;
mod sim_http;
mod truth;
mod workflow;
