//! Integration tests.

mod cli;
mod sim_http;
mod truth;
mod workflow;
