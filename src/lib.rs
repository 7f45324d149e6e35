//! compshare-teardown: safely tear down batches of UCloud CompShare GPU instances.
//!
//! Module map (data flows top to bottom):
//! - [`cli`]: command-line arguments (clap data only); `config`: the TOML job file.
//! - [`app`]: one room per command (list, plan, run, demo, sim, man), the settings they are
//!   resolved into, the terminal (stdout, prompt, signals); exit codes.
//! - `selection`: ID checks, filters, exclusions, protections; `plan`: what `run` will do.
//! - [`workflow`]: the teardown state machine and the batch driver (pace, journal, outcomes).
//! - [`api`]: signing, wire model, errors and their retry classes, the HTTP client.
//! - [`monitor`]: GPU samples from `GetCompShareInstanceMonitor` and the pure idle rule.
//! - [`credentials`]: where keys and the endpoint come from; the redacting key type.
//! - `defaults`: the default of every `run` setting, defined once (help, docs and runs read it).
//! - [`sim`]: a faithful CompShare simulator (HTTP server and in-memory world).
//! - `sweep` (feature `sweep`, on in tests and examples only): the seed sweep, deterministic
//!   simulation testing of the whole engine.
//! - `output`, `progress`, `logging`, `metrics`: what people and cron see.
//! - `runlock`, `pathset`, `textfile`: the files a run locks, writes and reads, guarded.
//! - [`reference`]: the flag/config reference and man pages, generated from [`cli`].

// Public: what the binary, the integration tests, the bench and the examples use. Everything
// else is private, so the compiler's `dead_code` lint sees what nothing uses.
pub mod api;
pub mod app;
pub mod cli;
mod config;
pub mod credentials;
mod defaults;
mod logging;
mod metrics;
pub mod monitor;
mod output;
mod pathset;
pub mod plan;
mod progress;
pub mod reference;
mod runlock;
mod selection;
pub mod sim;
pub mod state;
#[cfg(feature = "sweep")]
pub mod sweep;
mod textfile;
pub mod workflow;
