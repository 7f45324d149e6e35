//! The seed sweep: deterministic simulation testing of the whole engine, in the spirit of
//! `FoundationDB`'s simulation tests and `TigerBeetle`'s VOPR. For each seed: build a random world
//! ([`world`]), run the real [`workflow::run`] against the in-memory simulator on paused tokio
//! time with a journal, kill it at random virtual times (dropping the run like `kill -9`) and
//! resume from the journal as `run --resume` does, then check the [`invariants`] against the
//! simulator's ground truth. Used by the `sweep` integration test and `examples/sweep.rs`;
//! `docs/reliability.md` describes the worlds and the invariants.

pub mod disks;
pub mod invariants;
pub mod schedule;
mod stats;
pub mod world;

pub use stats::Stats;

use std::fmt::Write as _;
use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::Instance;
use crate::app::{Exit, exit_for};
use crate::credentials::{Credentials, PrivateKey};
use crate::workflow::journal::{self, Journal};
use crate::workflow::{self, Controls, Guard, Known, NoObserver, Report};
use world::{DEADLINE_GRACE, World};

/// What varies between sweeps (everything else comes from the seed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Worlds may drop rows from Describe answers and omit `TotalCount` (`drop_row`,
    /// `omit_total_count`). The other dice are drawn the same either way, so a seed's world
    /// differs only by these two faults.
    pub eventual_consistency: bool,
    /// The largest world ([`world::MAX_INSTANCES`] by default). Sizes stay log-uniform below
    /// it; a smaller cap makes a sweep cheaper (the CI test uses one), the dice are the same.
    pub max_instances: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            eventual_consistency: true,
            max_instances: world::MAX_INSTANCES,
        }
    }
}

impl Options {
    /// The command that replays `seed` with these options.
    pub fn replay_command(&self, seed: u64) -> String {
        let ec = if self.eventual_consistency {
            ""
        } else {
            " --no-eventual-consistency"
        };
        let max = if self.max_instances == world::MAX_INSTANCES {
            String::new()
        } else {
            format!(" --max-instances {}", self.max_instances)
        };
        format!("cargo run --release --example sweep -- --seed {seed}{ec}{max}")
    }
}

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// One of [`invariants::name`].
    pub invariant: &'static str,
    pub uhost_id: Option<String>,
    pub detail: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.uhost_id {
            Some(id) => write!(f, "{}: {id}: {}", self.invariant, self.detail),
            None => write!(f, "{}: {}", self.invariant, self.detail),
        }
    }
}

/// The verdict on one seed.
#[derive(Debug, Clone)]
pub struct SeedRun {
    pub seed: u64,
    pub failures: Vec<Failure>,
    pub stats: Stats,
}

impl SeedRun {
    /// The lines printed for a failing seed: the replay command, then one line per failure.
    pub fn diagnosis(&self, opts: Options) -> String {
        let mut s = format!(
            "seed {} failed {} invariant check(s); replay: {}\n",
            self.seed,
            self.failures.len(),
            opts.replay_command(self.seed)
        );
        for f in &self.failures {
            let _ = writeln!(s, "  {f}");
        }
        s
    }
}

/// A log sink shared with the scoped subscriber.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Run one seed on its own paused current-thread runtime, with every log line of the run
/// captured (at debug level) for the private-key check. Blocking; never sleeps for real.
pub fn run_seed(seed: u64, opts: Options) -> SeedRun {
    run_seed_logged(seed, opts).0
}

/// [`run_seed`], and the run's log at debug level (to see what a failing seed did).
pub fn run_seed_logged(seed: u64, opts: Options) -> (SeedRun, String) {
    let capture = Capture::default();
    let sink = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime builds");
    let mut run = tracing::subscriber::with_default(subscriber, || rt.block_on(run_world(seed, opts)));
    let logs = String::from_utf8_lossy(&capture.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned();
    if logs.contains(&run.1) {
        run.0.failures.push(Failure {
            invariant: invariants::name::SECRET,
            uhost_id: None,
            detail: "in the log".into(),
        });
    }
    (run.0, logs)
}

/// The selection listing of `run --all`, retried as `app::candidates` does (a few times a
/// second apart, the largest count seen kept as the floor).
async fn list_all(cloud: &impl crate::api::Cloud) -> Result<Vec<Instance>, crate::api::ListingError> {
    let floor = std::sync::atomic::AtomicUsize::new(0);
    let mut tries = 0;
    loop {
        match crate::api::describe_all_above(cloud, None, None, &floor).await {
            Ok(rows) => return Ok(rows),
            // Four reads in all, as the command's selection makes.
            Err(e) if tries == 3 => return Err(e),
            Err(_) => tries += 1,
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Yields after a kill: one turn of the current-thread scheduler drops every aborted task
/// (each was scheduled by its abort); a few more cost nothing.
const ABORT_SETTLE_YIELDS: usize = 4;

/// Wakeups allowed to one run segment at a single virtual instant. Paused time only
/// advances when every task waits, so a loop that keeps waking without waiting (a timer set
/// in the past, say) stops the virtual clock and hangs the sweep out of reach of any timeout;
/// counting its wakeups catches it deterministically. Even the largest worlds wake at most a
/// few hundred times at one instant (one per answer that lands then).
const MAX_WAKEUPS_AT_ONE_INSTANT: u64 = 2_000;

/// `fut`, or `None` once it has been polled [`MAX_WAKEUPS_AT_ONE_INSTANT`] times in a row
/// without virtual time passing.
pub(crate) async fn within_wakeups<F: Future>(fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut at = Instant::now();
    let mut wakeups = 0u64;
    std::future::poll_fn(|cx| {
        let now = Instant::now();
        if now == at {
            wakeups += 1;
            if wakeups > MAX_WAKEUPS_AT_ONE_INSTANT {
                return std::task::Poll::Ready(None);
            }
        } else {
            (at, wakeups) = (now, 0);
        }
        fut.as_mut().poll(cx).map(Some)
    })
    .await
}

/// The run and its checks; returns the verdict and the private key (for the log check).
#[expect(
    clippy::too_many_lines,
    reason = "run, kill, resume and collect the evidence of one seed, in the order they happen"
)]
async fn run_world(seed: u64, opts: Options) -> (SeedRun, String) {
    let world = World::build(seed, opts);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("journal.jsonl");
    let credentials = Credentials {
        public_key: world.sim.public_key(),
        private_key: PrivateKey::new(world.private_key.clone()),
        source: "sweep".into(),
    };
    let cloud = Arc::new(world.sim.signed(credentials));
    let started = Instant::now();
    let mut stats = Stats {
        seeds: 1,
        instances: world.rows.len() as u64,
        selected: world.selected.len() as u64,
        ..Stats::default()
    };
    let mut failures = Vec::new();
    let cap = world.settings.deadline.unwrap_or_default() + DEADLINE_GRACE;
    let mut report: Option<Report> = None;
    let mut segment = 0usize;
    let mut segment_from = 0usize;
    let mut first_from: Option<usize> = None;
    // `run --all`: the selection is what a listing reads; one that cannot be read completely
    // ends the run before any call (exit 4).
    let listing = if world.lists {
        Some(list_all(cloud.as_ref()).await.map(|rows| {
            rows.into_iter()
                .map(|r| r.uhost_id)
                .filter(|id| !world.refused.contains(id))
                .collect::<Vec<String>>()
        }))
    } else {
        None
    };
    if let Some(Err(_)) = &listing {
        stats.listings_refused += 1;
    }
    loop {
        if let Some(Err(_)) = &listing {
            break;
        }
        let resume = if segment == 0 {
            None
        } else {
            match journal::replay(&path) {
                Ok(r) => Some(r),
                Err(e) => {
                    failures.push(Failure {
                        invariant: invariants::name::REPORT,
                        uhost_id: None,
                        detail: format!("resume {segment}: {e}"),
                    });
                    break;
                }
            }
        };
        // As `run --resume` does: the journal fixes the selection, the protections still
        // apply, and instances are named by ID only.
        let first = match &listing {
            Some(Ok(ids)) => ids.clone(),
            _ => world.ids.clone(),
        };
        let ids = resume.as_ref().map_or(first, |r| r.ids.clone());
        let known: Vec<Known> = if resume.is_some() {
            ids.iter()
                .map(|id| Known {
                    id: id.clone(),
                    ..Known::default()
                })
                .collect()
        } else {
            world
                .rows
                .iter()
                .filter(|r| ids.contains(&r.uhost_id))
                .map(|r| Known {
                    id: r.uhost_id.clone(),
                    name: r.name.clone(),
                    region: r.region.clone(),
                    zone: r.zone.clone(),
                    ..Known::default()
                })
                .collect()
        };
        let protections = world.protections.clone();
        let guard: Guard = Box::new(move |row| protections.refuse(row));
        let ctl = Controls {
            journal: Some(Journal::open(&path).expect("the journal opens").sync_in_place()),
            resume,
            guard: Some(guard),
            observer: Box::new(NoObserver),
            cancel: CancellationToken::new(),
            known,
        };
        let mut settings = world.settings.clone();
        if let Some(r) = &ctl.resume {
            (settings.release_udisk, settings.force_stop) = (r.release_udisk, r.force_stop);
        }
        // Where this process's calls begin in the simulator's ledger.
        segment_from = world.sim.snapshot().calls.len();
        first_from.get_or_insert(segment_from);
        let kill = world.kills.get(segment).copied();
        let limit = kill.unwrap_or(cap).min(cap);
        let run = workflow::run(cloud.clone(), ids, settings, ctl);
        match tokio::time::timeout(limit, within_wakeups(run)).await {
            Ok(Some(r)) => {
                report = Some(r);
                break;
            }
            Ok(None) => {
                failures.push(Failure {
                    invariant: invariants::name::HANG,
                    uhost_id: None,
                    detail: format!(
                        "segment {segment} woke {MAX_WAKEUPS_AT_ONE_INSTANT} times at {:.1}s of virtual time \
                         without time passing (the run loop spins)",
                        started.elapsed().as_secs_f64()
                    ),
                });
                break;
            }
            Err(_) if kill.is_some() => {
                // Dropped mid-run: calls in flight are aborted, like kill -9. The aborted tasks
                // are dropped when the runtime next gets to them: let it, so the calls they
                // held are in the ledger before the next process's share of it begins.
                for _ in 0..ABORT_SETTLE_YIELDS {
                    tokio::task::yield_now().await;
                }
                stats.kills += 1;
                stats.resumes += 1;
                segment += 1;
            }
            Err(_) => {
                failures.push(Failure {
                    invariant: invariants::name::HANG,
                    uhost_id: None,
                    detail: format!(
                        "segment {segment} still running {:.0}s after its start (deadline {:.0}s + {:.0}s grace)",
                        limit.as_secs_f64(),
                        world.settings.deadline.unwrap_or_default().as_secs_f64(),
                        DEADLINE_GRACE.as_secs_f64()
                    ),
                });
                break;
            }
        }
    }
    // The disk pass, once the instance run has ended: its own dice, the same signed cloud.
    let disk_run = if report.is_some() {
        let ledger = || world.sim.snapshot().calls.len();
        Some(disks::DiskWorld::draw(seed).run(seed, cloud.clone(), ledger).await)
    } else {
        None
    };
    stats.virtual_time = started.elapsed();
    let state = world.sim.snapshot();
    if let Some(d) = &disk_run {
        stats.disks_selected = d.selected.len() as u64;
        stats.disks_deleted = state.deleted_disks.len() as u64;
        stats.disk_8434 = state
            .calls
            .iter()
            .filter(|c| {
                c.action == crate::api::disk::DELETE_DISK && c.ret_code == Some(crate::api::disk::STILL_DETACHING)
            })
            .count() as u64;
        failures.extend(disks::check(&state, d));
        if let (Some(r), Some(from)) = (&d.report, d.ledger_from) {
            let ours = &state.calls[from..from + d.ledger_len];
            failures.extend(invariants::call_counts(r, ours, &[]));
        }
    }
    // The instance report is the last process's: its calls run from its segment's start to
    // the disk pass (or the end); the killed processes' before it.
    if let Some(r) = &report {
        let end = disk_run
            .as_ref()
            .and_then(|d| d.listing_from)
            .unwrap_or(state.calls.len());
        let first = first_from.unwrap_or(segment_from);
        failures.extend(invariants::call_counts(
            r,
            &state.calls[segment_from..end],
            &state.calls[first..segment_from],
        ));
    }
    stats.calls = state.calls.len() as u64;
    stats.faults = state.calls.iter().filter(|c| c.fault.is_some()).count() as u64;
    stats.eventual = state
        .calls
        .iter()
        .filter(|c| {
            matches!(
                c.fault.as_deref(),
                Some("drop_row" | "omit_total_count" | "lagging_replica")
            )
        })
        .count() as u64;
    stats.races = state.races.len() as u64;
    stats.after_delete = state
        .violations
        .iter()
        .filter(|v| v.rule == crate::sim::rule::AFTER_DELETE)
        .count() as u64;
    let exit = match &listing {
        Some(Err(_)) => Some(Exit::Unavailable),
        _ => report.as_ref().map(exit_for),
    };
    match exit {
        Some(Exit::Ok) => stats.exit_ok += 1,
        Some(Exit::Interrupted) => stats.exit_interrupted += 1,
        Some(_) => stats.exit_failed += 1,
        None => {}
    }
    let mut outputs: Vec<(&'static str, String)> =
        vec![("journal", std::fs::read_to_string(&path).unwrap_or_default())];
    if let Some(r) = &report {
        outputs.push(("JSON report", crate::app::json(r)));
        outputs.push(("report table", crate::output::report_table(r)));
        outputs.push(("report Debug", format!("{r:?}")));
    }
    if let Some(r) = disk_run.as_ref().and_then(|d| d.report.as_ref()) {
        outputs.push(("disk JSON report", crate::app::json(r)));
    }
    outputs.push(("cloud Debug", format!("{cloud:?}")));
    failures.extend(invariants::check(&invariants::Evidence {
        world: &world,
        state: &state,
        report: report.as_ref(),
        exit,
        outputs: &outputs,
        listed: listing.as_ref().map(|l| l.as_deref().map_err(ToString::to_string)),
    }));
    (SeedRun { seed, failures, stats }, world.private_key.clone())
}
