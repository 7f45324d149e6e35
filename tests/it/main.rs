//! Integration tests.

mod answers;
mod cli;
mod disks;
mod docs;
mod freshness;
mod manifest;
mod pace;
mod sim_http;
mod sweep;
mod truth;
mod workflow;
