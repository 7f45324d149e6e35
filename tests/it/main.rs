//! Integration tests.

mod answers;
mod cli;
mod disks;
mod docs;
mod durability;
mod freshness;
mod manifest;
mod notice;
mod pace;
mod process;
mod resume;
mod scheduled_demo;
mod sim_http;
mod sweep;
mod truth;
mod watch;
mod workflow;
