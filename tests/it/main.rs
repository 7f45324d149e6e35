//! Integration tests.

mod answers;
mod cli;
mod docs;
mod sim_http;
mod sweep;
mod truth;
mod workflow;
