//! The seed sweep of scheduled teardown (issue 17, item 7): one seed names a world of GPU
//! instances with load profiles and data disks, people who restart, keep and protect them
//! and attach disks, a flaky monitor, a flaky gateway and a flaky notice receiver; the real
//! job ([`schedule::run_once`], watching disks in most worlds as `watch --disks`) runs
//! every 15 simulated minutes for one to three simulated days on paused tokio time, is killed
//! at random points (its future dropped, like `kill -9`, or its k-th store write failed) and
//! goes on with the next run on the same store file. The [`checks`] then hold the job's acts
//! and notices against what the simulator served and recorded. `docs/reliability.md`,
//! "Scheduled teardown", lists the worlds and the invariants.

mod checks;
mod disks;
mod people;
mod recorder;
mod world;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use super::Failure;
use crate::api;
use crate::credentials::Account;
use crate::notice::{Inbox, NoticeConfig, Notifier};
use crate::schedule::{self, Action, Config, JobError, Targets};
use crate::selection::{self, Filters};
use crate::sim::Faults;
use crate::state::{Kind, Store};
use crate::workflow::{Controls, Guard, Settings};
pub use disks::PROTECTED_DISK_GLOB;
use people::People;
pub(crate) use recorder::Served;
use recorder::{Recorder, served};
pub(crate) use world::World;

/// The world's wall clock at its time zero (a Tuesday in 2027).
pub const EPOCH: i64 = 1_800_000_000;
const MINUTE: i64 = 60;
const HOUR: i64 = 3_600;
/// The job's rhythm: every 15 minutes, as docs/scheduled.md recommends.
const EVERY: i64 = 15 * MINUTE;
/// The longest one run may take before it counts as hung: the engine's own deadline and
/// timeouts end a teardown within minutes; an hour of virtual time is far past any of them.
const RUN_CAP: Duration = Duration::from_secs(3_600);
/// The protected name pattern of every world.
pub const PROTECTED_GLOB: &str = "notebook-*";

/// What varies between sweeps (everything else comes from the seed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// The largest world: 5 to this many instances.
    pub max_instances: usize,
    /// How long the job runs, simulated hours: uniform in this range (1 to 3 days by
    /// default; the CI test runs shorter stretches, long enough for the longest window plus
    /// the longest grace several times over).
    pub hours: (u32, u32),
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_instances: 40,
            hours: (24, 72),
        }
    }
}

impl Options {
    /// The command that replays `seed` with these options.
    pub fn replay_command(&self, seed: u64) -> String {
        let d = Options::default();
        let mut s = format!("cargo run --release --example sweep -- --scheduled --seed {seed}");
        if self.max_instances != d.max_instances {
            let _ = write!(s, " --max-instances {}", self.max_instances);
        }
        if self.hours != d.hours {
            let _ = write!(s, " --hours {}-{}", self.hours.0, self.hours.1);
        }
        s
    }
}

/// Figures of one seed (summed over a sweep).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub seeds: u64,
    pub instances: u64,
    /// Runs of the job started (kills, crashes and the final catch-up runs included).
    pub runs: u64,
    /// Runs whose future was dropped mid-run.
    pub kills: u64,
    /// Runs halted by a failed store write (`Store::crash_after`).
    pub crashes: u64,
    /// Runs that could not read the listing (nothing done, as the command exits 4).
    pub listings_failed: u64,
    /// Stop and Terminate calls the simulator received.
    pub stops: u64,
    pub terminates: u64,
    /// Instances gone at the end.
    pub torn_down: u64,
    pub notices_delivered: u64,
    /// Notices received more than once (after a kill or a lost record of delivery).
    pub duplicates: u64,
    /// Delivery attempts the inbox refused.
    pub refused_deliveries: u64,
    pub monitor_calls: u64,
    /// Calls that met an injected fault (gateway or monitor).
    pub faults: u64,
    pub virtual_time: Duration,
    /// Data disks of the worlds (in instances' `DiskSet`s and free-standing).
    pub disks: u64,
    /// Worlds whose job watches disks (`watch --disks`).
    pub disk_worlds: u64,
    /// Disk Deletes the simulator accepted.
    pub disk_deletes: u64,
    /// Disks still there and attached to nothing at the end.
    pub disks_left_detached: u64,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.seeds += o.seeds;
        self.instances += o.instances;
        self.runs += o.runs;
        self.kills += o.kills;
        self.crashes += o.crashes;
        self.listings_failed += o.listings_failed;
        self.stops += o.stops;
        self.terminates += o.terminates;
        self.torn_down += o.torn_down;
        self.notices_delivered += o.notices_delivered;
        self.duplicates += o.duplicates;
        self.refused_deliveries += o.refused_deliveries;
        self.monitor_calls += o.monitor_calls;
        self.faults += o.faults;
        self.virtual_time += o.virtual_time;
        self.disks += o.disks;
        self.disk_worlds += o.disk_worlds;
        self.disk_deletes += o.disk_deletes;
        self.disks_left_detached += o.disks_left_detached;
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
            "scheduled seed {} failed {} invariant check(s); replay: {}\n",
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

/// How one run went.
#[derive(Debug, Clone)]
pub(crate) struct RunLog {
    /// The run's `now` (unix seconds) and its start in the simulator's seconds.
    pub now: i64,
    pub start_secs: f64,
    /// Dropped mid-run, or halted by a failed store write: its deliveries may be repeated.
    pub disturbed: bool,
    /// Indices into the inbox's payloads this run delivered.
    pub delivered: std::ops::Range<usize>,
}

/// Run one seed on its own paused current-thread runtime. Blocking; never sleeps for real.
pub fn run_seed(seed: u64, opts: Options) -> SeedRun {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime builds");
    rt.block_on(run_world(seed, opts))
}

fn config(w: &World, seed: u64) -> Config {
    Config {
        rule: w.rule,
        grace: Duration::from_secs(w.grace.unsigned_abs()),
        action: Action::Terminate,
        hours: None,
        max_count: w.max_count,
        settings: Settings {
            jitter_seed: Some(seed),
            ..Settings::default()
        },
        notice_deadline: Duration::from_secs(60),
        account: w.account.slug(),
        dry_run: false,
    }
}

/// The listing the command's selection reads (`watch --all`), retried as it is; `None` when
/// it cannot be read (the command exits 4 before any change).
async fn candidates(cloud: &Recorder, w: &World, now: i64) -> Option<Vec<selection::Candidate>> {
    for _ in 0..4 {
        if let Ok(rows) = api::describe_all(cloud, None, None).await {
            return Some(selection::select(rows, None, &Filters::default(), &w.protections, now));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    None
}

fn open(path: &std::path::Path, account: &Account) -> Store {
    Store::open(path, account).expect("the store reopens")
}

/// The world, its runs, and the checks.
#[expect(
    clippy::too_many_lines,
    reason = "people, the run, its kill or crash, the next process: one cron tick after another, in order"
)]
async fn run_world(seed: u64, opts: Options) -> SeedRun {
    let mut w = World::build(seed, opts);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("state.sqlite3");
    let cloud = Recorder {
        sim: w.sim.clone(),
        answers: Arc::default(),
    };
    let inbox = Inbox::new();
    let notices = NoticeConfig::new(None, None, Duration::from_secs(1))
        .and_then(|c| c.with_first_delay(Duration::from_millis(200)))
        .expect("valid notice settings")
        .with_inbox(inbox.clone());
    let notifier = Notifier::new(notices);
    let cfg = config(&w, seed);
    let started = Instant::now();
    let mut stats = Stats {
        seeds: 1,
        instances: w.rows.len() as u64,
        disks: w.disks.rows.len() as u64,
        disk_worlds: u64::from(w.disks.watch),
        ..Stats::default()
    };
    let mut failures = Vec::new();
    let mut runs: Vec<RunLog> = Vec::new();
    let mut people = People::default();
    // Every disk mark the store held after a run: each must be told.
    let mut disk_marks: BTreeSet<(String, i64)> = BTreeSet::new();
    let mut deeds = std::mem::take(&mut w.deeds).into_iter().peekable();
    let mut next = EPOCH;
    let mut finals = 0;
    // A new process opens the file after every kill or crash; between undisturbed runs the
    // store stays open (opening it costs a schema check, and adds nothing to check).
    let mut store = open(&path, &w.account);
    loop {
        // What people did since the last run.
        let now = w.sim.unix_now();
        while let Some((at, _)) = deeds.peek()
            && *at <= now
        {
            let (at, deed) = deeds.next().expect("peeked");
            people.act_out(&w, &mut store, deed, at.max(now));
        }
        let last = now >= w.end;
        if last {
            // The catch-up: a healthy gateway and receiver, no kill, until every notice is in.
            w.sim.set_faults(Faults::default());
            inbox.refuse_all(false);
            inbox.refuse_next(0);
            finals += 1;
        }
        let rng = &mut w.runs_rng;
        // A run that finds nothing to do ends at the instant it starts (paused time only moves
        // while it waits), so kills land in the first 20 s, where teardowns, retries and
        // notice backoffs wait; a crash on the k-th store write reaches every run.
        let kill = (!last && rng.random_bool(0.5)).then(|| Duration::from_millis(rng.random_range(1..20_000)));
        let crash = (!last && kill.is_none() && rng.random_bool(0.08)).then(|| rng.random_range(0..3u32));
        if !last {
            inbox.refuse_all(rng.random_bool(0.15));
            inbox.refuse_next(if rng.random_bool(0.15) {
                rng.random_range(1..6)
            } else {
                0
            });
        }
        let attempts = inbox.attempts();
        let before = inbox.received().len();
        let start_secs = started.elapsed().as_secs_f64();
        stats.runs += 1;
        let mut disturbed = false;
        let listed = match candidates(&cloud, &w, now).await {
            Some(cands) => disks::targets(&cloud, &w.disks, seed)
                .await
                .ok()
                .map(|disks| (cands, disks)),
            None => None,
        };
        match listed {
            None => stats.listings_failed += 1,
            Some((cands, disks)) => {
                if let Some(k) = crash {
                    store.crash_after(k);
                }
                let targets = Targets {
                    instances: cands,
                    disks,
                };
                let ended = job(&w, &cloud, &mut store, &notifier, &cfg, now, targets, kill).await;
                match ended {
                    Ended::Done => {}
                    Ended::Crashed if crash.is_some() => {
                        stats.crashes += 1;
                        disturbed = true;
                    }
                    Ended::Killed if kill.is_some() => {
                        stats.kills += 1;
                        disturbed = true;
                    }
                    Ended::Crashed | Ended::Killed => {}
                    Ended::Failed(f) => failures.push(f),
                }
                if disturbed || crash.is_some() {
                    // The next process opens what the dead one left; it must hold what the
                    // store promises. (A crash that did not come to pass is disarmed.)
                    drop(store);
                    store = open(&path, &w.account);
                    failures.extend(checks::store_after_kill(&w, &store, now));
                }
            }
        }
        stats.refused_deliveries += u64::from(inbox.attempts() - attempts) - (inbox.received().len() - before) as u64;
        runs.push(RunLog {
            now,
            start_secs,
            disturbed,
            delivered: before..inbox.received().len(),
        });
        disk_marks.extend(
            store
                .marks()
                .unwrap_or_default()
                .into_iter()
                .filter(|m| m.kind == Kind::Disk)
                .map(|m| (m.id, m.marked_at)),
        );
        if last && (store.pending_notices().is_ok_and(|p| p.is_empty()) || finals >= 3) {
            break;
        }
        // The next run 15 minutes after this one's slot, or right after it if it ran longer.
        next += EVERY;
        let wait = (next - w.sim.unix_now()).max(0);
        tokio::time::sleep(Duration::from_secs(wait.unsigned_abs())).await;
    }
    stats.virtual_time = started.elapsed();
    drop(store);
    let store = open(&path, &w.account);
    let state = w.sim.snapshot();
    // Only the instances some Stop or Terminate named need their windows read.
    let acted = state
        .calls
        .iter()
        .filter(|c| c.action.starts_with("Stop") || c.action.starts_with("Terminate"))
        .flat_map(|c| c.ids.iter().cloned())
        .collect();
    let served = served(&cloud.answers.lock().unwrap_or_else(PoisonError::into_inner), &acted);
    let evidence = checks::Evidence {
        world: &w,
        state: &state,
        served: &served,
        runs: &runs,
        keeps: &people.keeps,
        attached: &people.attached,
        disk_marks: &disk_marks,
        inbox: &inbox.received(),
        store: &store,
    };
    failures.extend(checks::check(&evidence, &mut stats));
    SeedRun { seed, failures, stats }
}

/// How one run of the job ended.
enum Ended {
    Done,
    /// Halted by a failed store write.
    Crashed,
    /// Dropped at its kill time.
    Killed,
    Failed(Failure),
}

/// One run of the job as `watch --all --yes` (with `--disks` when the world's job watches
/// them) makes it, dropped at `kill` if it is still running then.
#[expect(clippy::too_many_arguments, reason = "the run's parts, named at the one call site")]
async fn job(
    w: &World,
    cloud: &Recorder,
    store: &mut Store,
    notifier: &Notifier,
    cfg: &Config,
    now: i64,
    targets: Targets,
    kill: Option<Duration>,
) -> Ended {
    let protections = w.protections.clone();
    let guard: Guard = Box::new(move |row| protections.refuse(row));
    let ctl = Controls {
        guard: Some(guard),
        ..Controls::default()
    };
    let run = schedule::run_once(Arc::new(cloud.clone()), store, Some(notifier), cfg, now, targets, ctl);
    match tokio::time::timeout(kill.unwrap_or(RUN_CAP).min(RUN_CAP), run).await {
        Ok(Ok(_) | Err(JobError::TooMany { .. })) => Ended::Done,
        Ok(Err(JobError::State(e))) if e.to_string().contains("simulated crash") => Ended::Crashed,
        Ok(Err(e)) => Ended::Failed(Failure {
            invariant: checks::name::STORE,
            uhost_id: None,
            detail: format!("run at {now}: {e}"),
        }),
        Err(_) if kill.is_some() => Ended::Killed,
        Err(_) => Ended::Failed(Failure {
            invariant: checks::name::HANG,
            uhost_id: None,
            detail: format!("run at {now} still running after {}s", RUN_CAP.as_secs()),
        }),
    }
}
