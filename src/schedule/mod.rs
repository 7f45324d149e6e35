//! Scheduled teardown: find the GPU instances nobody is using, tell their owners, give them a
//! grace period, look again, then tear down through the engine everyone already trusts.
//!
//! - [`decide`]: the pure decision per instance (mark, unmark, wait, keep, act), table-tested.
//! - [`job`]: one run of the job: judge on fresh samples, write the step to the state store,
//!   act on what is due, record it, deliver the notices.
//!
//! `schedule` sits beside `plan` above `workflow`: it imports `state`, `monitor`, `notice`,
//! `selection` and `workflow`; nothing below imports it, and the engine never learns why an
//! instance was selected.

pub mod decide;
pub mod hours;
pub mod job;

pub use decide::{Decision, DiskListed, Judgement, Listed, Policy, decide, decide_disk};
pub use hours::{ActingHours, HoursError};
pub use job::{Action, Config, DiskEntry, Disks, Entry, JobError, JobReport, Targets, run_once};

#[cfg(test)]
mod tests;
