//! The default of every `run` setting, defined once. `workflow::Settings::default` is built
//! from these, the flags' help in `cli` shows them (and so do the reference pages `reference`
//! generates from it), and `app` falls back to them when neither a flag nor the config file
//! sets a value: the documented default is the one a run uses.
//!
//! A leaf module, so that every layer may read it.

use std::time::Duration;

/// Mutating calls in flight at once. Each call is answered in well under a second, so 64 in
/// flight carry several hundred calls a second: more than any account's limit we have seen,
/// so the pace, not this bound, slows a throttled run down.
pub const CONCURRENCY: usize = 64;

/// No ceiling on requests per second: below a ceiling the pace finds the account's rate limit
/// by itself.
pub const RATE: u32 = 0;

/// The longest gap between two looks at a waiting instance (right after a change, looks come
/// sooner: see `Settings::min_poll`).
pub const POLL_INTERVAL: Duration = Duration::from_secs(3);

/// How long to retry through `InstanceOperationInProgress`: the documented lock TTL is 10
/// minutes; 11 leaves a margin for a lock taken just before our first attempt.
pub const LOCK_WAIT: Duration = Duration::from_secs(11 * 60);

/// The per-instance time limit: room for a stop, the whole [`LOCK_WAIT`] and the whole
/// [`CONFIRM_TIMEOUT`] one after another, with time to spare.
pub const INSTANCE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// How long a terminated instance may stay listed before it is reported as terminated but
/// unconfirmed (exit 1).
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(3 * 60);

/// After a Terminate whose answer was lost, how long the instance must stay listed before
/// Terminate is sent again. A deleting instance may stay listed as `Stopped` for a while, and
/// a second Terminate would act on a deleted instance: so a minute.
pub const SETTLE: Duration = Duration::from_secs(60);

/// Re-stops allowed for an instance someone keeps starting, before giving up on it.
pub const MAX_RESTARTS: u32 = 3;

/// `--max-count`: a run refuses to act on more instances than this unless told otherwise, so
/// a filter that matches far more than meant stops before anything is touched.
pub const MAX_COUNT: usize = 20;
