//! The teardown workflow: stop → wait for `Stopped` → terminate → confirm gone, for whole
//! batches at once.
//!
//! - [`machine`]: the pure per-instance state machine (`decide`, `after_call`).
//! - [`absence`]: the pure rule for when an instance missing from Describe is gone.
//! - [`batch`]: the async driver: batched polling, calls under a concurrency bound and a
//!   request pace, lock and retry backoff, deadlines, interruption, the journal.
//! - [`pace`]: the global request rate: a slow start and no rate limit until the API
//!   throttles, then adaptive.
//! - [`retry`]: retry budgets in time (pure: when to try again, when to give up).
//! - [`recheck`]: the shared last look before a delayed Terminate.
//! - [`disks`]: the data disk deletion driver (a look, one Delete, confirm), on the same
//!   pace, retry budgets, outcomes and report.
//! - [`journal`]: append-only JSON lines and resume.
//! - [`outcome`]: outcomes and the report, as data.

pub(crate) mod absence;
pub(crate) mod batch;
pub mod disks;
pub mod journal;
pub mod machine;
pub(crate) mod outcome;
pub(crate) mod pace;
pub(crate) mod recheck;
pub(crate) mod retry;

use std::time::Duration;

use crate::api::LockCodes;
use crate::defaults;

#[cfg(feature = "sweep")]
pub(crate) use batch::NoObserver;
pub(crate) use batch::{Activity, Guard, Observer};
pub use batch::{Controls, Known, run};
pub(crate) use outcome::InstanceReport;
pub use outcome::{KeptDisk, Outcome, Report, TargetKind};

/// Everything that shapes a run, validated (the CLI builds it from flags and config).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Send `ReleaseUDisk=true`: delete data disks with the instances.
    pub release_udisk: bool,
    /// Allow `Force=true` on spot instances.
    pub force_stop: bool,
    /// Stop the instances and leave them stopped: never send Terminate.
    pub stop_only: bool,
    /// Mutating calls in flight at once. High enough by default never to be the bottleneck
    /// below an account's rate limit: the pace, not this bound, slows a throttled run down.
    pub concurrency: usize,
    /// A hard ceiling on requests per second across the run (0 = none). Below it the pace
    /// finds the account's rate limit by itself (see [`pace`]).
    pub rate: u32,
    /// The longest gap between two looks at a waiting instance (polls come sooner right after
    /// a change, see [`Settings::min_poll`]).
    pub poll_interval: Duration,
    /// How long to keep retrying through `InstanceOperationInProgress`. The documented lock TTL
    /// is 10 minutes; 11 leaves a margin for a lock taken just before our first attempt.
    pub lock_wait: Duration,
    /// Per-instance time limit, from the run start plus the time the instance's calls and
    /// looks waited for a slot and the pace.
    pub instance_timeout: Duration,
    /// Whole-run time limit.
    pub deadline: Option<Duration>,
    /// How long to wait for a terminated instance to leave Describe.
    pub confirm_timeout: Duration,
    /// After a Terminate whose answer was lost, how long the instance must stay listed before
    /// Terminate is sent again. A deleting instance may stay listed as `Stopped` for a while,
    /// and a second Terminate would act on a deleted instance: so a minute by default.
    pub terminate_settle: Duration,
    /// Re-stops allowed for an instance someone keeps starting.
    pub max_restarts: u32,
    /// RetCodes that mean the operation lock is held.
    pub lock_codes: LockCodes,
    /// Fixed seed for poll and backoff jitter (tests); `None` = random.
    pub jitter_seed: Option<u64>,
    /// Send this `Region` with every Describe (the user's `--region`); `None`: all regions.
    pub describe_region: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            release_udisk: false,
            force_stop: false,
            stop_only: false,
            // One definition per default (the flags' help and the reference show the same).
            concurrency: defaults::CONCURRENCY,
            rate: defaults::RATE,
            poll_interval: defaults::POLL_INTERVAL,
            lock_wait: defaults::LOCK_WAIT,
            instance_timeout: defaults::INSTANCE_TIMEOUT,
            deadline: None,
            confirm_timeout: defaults::CONFIRM_TIMEOUT,
            terminate_settle: defaults::SETTLE,
            max_restarts: defaults::MAX_RESTARTS,
            lock_codes: LockCodes::default(),
            jitter_seed: None,
            describe_region: None,
        }
    }
}

impl Settings {
    /// The shortest gap between looks at an instance: a twelfth of the poll interval (250 ms
    /// at the default 3 s), so a state change right after a call is seen quickly.
    pub(crate) fn min_poll(&self) -> Duration {
        (self.poll_interval / 12).max(Duration::from_millis(5))
    }

    /// The machine's rules derived from these settings. The stop grace scales with the poll
    /// interval ("a few looks"); the terminate settle does not (see `terminate_settle`).
    pub(crate) fn rules(&self) -> machine::Rules {
        machine::Rules {
            force_stop: self.force_stop,
            stop_only: self.stop_only,
            max_restarts: self.max_restarts,
            stop_grace: self.poll_interval * 3,
            terminate_settle: self.terminate_settle,
            confirm_timeout: self.confirm_timeout,
        }
    }
}
