//! Integration tests.

mod cli;
mod docs;
mod pace;
mod sim_http;
mod sweep;
mod truth;
mod workflow;
