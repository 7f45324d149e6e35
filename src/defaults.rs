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

/// The idle rule's window: an instance is idle only after this long with every GPU at or under
/// the thresholds. Training pauses between epochs, for evaluation, checkpoints and data
/// loading for minutes, sometimes most of an hour; two hours outlasts those pauses, so a live
/// training run is never judged idle by one quiet spell.
pub const IDLE_WINDOW: Duration = Duration::from_secs(2 * 60 * 60);

/// Utilisation (percent) at or under which a GPU sample counts as idle. Not 0: an idle GPU
/// reports a small floor (0-2% from drivers and monitoring agents), and "exactly 0" would
/// never see it idle; 5% stays far below any real work.
pub const IDLE_UTIL_MAX: f64 = 5.0;

/// GPU memory use (percent) at or under which a sample counts as idle. A process holding a
/// model in GPU memory (a notebook between cells, a server between requests) is somebody's
/// work even at 0% utilisation; an empty GPU uses a few percent for the driver's context.
pub const IDLE_MEM_MAX: f64 = 10.0;

/// The longest gap between two samples of one GPU that still counts as covered. The series'
/// period is unknown (the simulator uses a minute); 20 minutes forgives a few lost samples but
/// not a blind spot long enough to hide a short job.
pub const IDLE_MAX_GAP: Duration = Duration::from_secs(20 * 60);

/// Between marking an idle instance and tearing it down: an hour for its owner to answer the
/// notice (keep it, or start using it again). With the two-hour idle window that is three
/// idle hours before anything is changed, and four looks by a job run every 15 minutes.
pub const GRACE: Duration = Duration::from_secs(60 * 60);

/// How long `watch --disks` waits, after it first sees a data disk attached to no instance,
/// before it marks the disk (the grace then follows). A week: deleting a disk loses its data
/// for good, and an owner who parks a disk on a Friday to attach it to a new instance after a
/// long weekend or a short holiday must find it there; a week of an idle disk's bill is the
/// smaller loss. Measured by the state store, so the clock starts at the job's first look.
pub const DISK_DETACHED_FOR: Duration = Duration::from_secs(7 * 86_400);

/// How long one notice delivery (a webhook request, a command) may take before it counts as
/// failed and is retried.
pub const NOTICE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a scheduled run spends delivering notices at its end: what is not delivered by
/// then is retried by the next run, so a dead receiver never holds a cron job for long.
pub const NOTICE_DEADLINE: Duration = Duration::from_secs(60);
