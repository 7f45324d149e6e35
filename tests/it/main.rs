//! Integration tests.

mod cli;
mod sim_http;
mod sweep;
mod workflow;
