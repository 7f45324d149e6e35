//! Integration tests.

mod cli;
mod docs;
mod manifest;
mod sim_http;
mod sweep;
mod truth;
mod workflow;
