//! The batch driver: brings every selected instance to "gone" at once.
//!
//! One task owns all per-instance state and is the only code that awaits; API calls run as
//! spawned tasks whose answers come back to it. Cost model, for N instances:
//! - Describe: one call per poll tick for up to 100 waiting instances (never one per
//!   instance); an instance is looked at again after a gap that grows with the time it has
//!   spent in its phase (a sixth of it, between `min_poll` and `poll_interval`), so a change
//!   is noticed within about 17% of the time it took, and a tick that is due anyway fills
//!   its last chunk with instances that are nearly due.
//! - Stop and Terminate: one each per instance when nothing goes wrong, bounded by
//!   `--concurrency` in flight and by the global request pace.
//!
//! Safety: a decision is only taken on an observation from a Describe *sent after* the
//! instance's last call was answered, so Terminate always follows a fresh `Stopped`.

mod calls;
mod ends;
mod looks;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Semaphore;
use tokio::task::{Id as TaskId, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Settings;
use super::absence::{self, Evidence, Verdict};
use super::journal::{Entry, JOURNAL_VERSION, Journal, Resume};
use super::machine::{Call, Decision, Effect, Memory, Observation, Phase, after_call, decide};
use super::outcome::{InstanceReport, Outcome, Report};
use super::pace::Pace;
use super::recheck::Recheck;
use super::retry::{Episode, Next, Policy};
use crate::api::{
    ApiError, Cloud, DESCRIBE_MAX, DescribeQuery, Instance, RetryClass, State, Target, TerminateAck, classify,
};

/// What an instance is doing, for progress displays.
#[derive(Debug, Clone, PartialEq)]
pub enum Activity {
    /// Waiting for a settled state; `state` is the last one seen.
    Waiting { state: String, what: &'static str },
    /// A call is in flight.
    Calling(Call),
    /// The operation lock is held; next attempt after `retry_in`.
    Locked { retry_in: Duration },
    /// Throttled or a transient error; next attempt after `retry_in`.
    Backoff { reason: String, retry_in: Duration },
}

/// Receives progress; the CLI draws bars from it.
pub trait Observer: Send {
    fn activity(&mut self, id: &str, activity: &Activity);
    fn finished(&mut self, id: &str, outcome: &Outcome);
}

/// An observer that ignores everything.
pub struct NoObserver;

impl Observer for NoObserver {
    fn activity(&mut self, _: &str, _: &Activity) {}
    fn finished(&mut self, _: &str, _: &Outcome) {}
}

/// A last check on each instance, run on the observation that leads to its first call: a
/// reason returned here skips the instance (protected, drifted from the saved plan, ...).
pub type Guard = Box<dyn Fn(&Instance) -> Option<String> + Send + Sync>;

/// Run-time companions of a batch.
pub struct Controls {
    pub journal: Option<Journal>,
    pub resume: Option<Resume>,
    pub guard: Option<Guard>,
    pub observer: Box<dyn Observer>,
    /// Cancelled on the first Ctrl-C / SIGTERM: start nothing new, let calls finish.
    pub cancel: CancellationToken,
    /// Rows from the selection step, used only to name instances in the report.
    pub known: Vec<Instance>,
}

impl Default for Controls {
    fn default() -> Self {
        Controls {
            journal: None,
            resume: None,
            guard: None,
            observer: Box::new(NoObserver),
            cancel: CancellationToken::new(),
            known: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Status {
    /// Needs a look at or after `due`; only a Describe sent at or after `fresh_after` counts.
    /// A `parked` instance (backing off from a lock, throttling or an error) is never looked
    /// at early by filling a Describe chunk: a look leads to a call, and its retry time is
    /// what keeps the lock budget honest.
    Observe {
        due: Instant,
        fresh_after: Instant,
        describing: bool,
        parked: bool,
    },
    Calling,
    Done,
}

struct Tracker {
    id: String,
    row: Option<Instance>,
    mem: Memory,
    status: Status,
    /// When our last call on it was answered (run start before any).
    last_answer: Instant,
    /// When it entered its current phase, for the adaptive poll gap.
    phase_since: Instant,
    calls: u32,
    /// Lock refusals in a row (see [`Policy::lock`]).
    lock_backoff: Option<Episode>,
    /// Transient errors of calls in a row (see [`Policy::transient`]).
    retry_backoff: Option<Episode>,
    /// When the Describe behind the latest observation was sent.
    seen_at: Instant,
    /// Failed Describes of this instance in a row (see `on_describe_error`).
    look_backoff: Option<Episode>,
    in_recycle: Option<String>,
    outcome: Option<(Outcome, Instant)>,
    /// The state the call in flight (or last sent) was decided on.
    decided_on: Option<State>,
    /// A refusal waiting for one more look before it fails the instance.
    refused: Option<ApiError>,
    /// Whether that one more look was already spent since the last accepted call.
    rechecked: bool,
    /// A call was sent (or queued) for it in this run: the guard ran. A resumed instance may
    /// have calls from before the crash, but its first call in this run is guarded all the same.
    acted: bool,
    /// Absent looks in a row, and when the first of them was sent (see [`absence`]).
    absent_looks: u32,
    absent_since: Instant,
    /// Since when its call or look has waited in the tool's own queue (a slot, the pace), and
    /// how long its calls and looks have waited there in all: that time does not count
    /// against the instance's `--instance-timeout` (see [`Runner::limit`]).
    waiting_since: Option<Instant>,
    queued: Duration,
}

/// What became of a queued call.
enum Sent {
    /// It went out at this instant; this is the answer.
    Answer(Result<Option<TerminateAck>, ApiError>, Instant),
    /// The run halted while it waited for a slot: it never left.
    Halted,
    /// A Terminate waited so long for its slot that the look it was decided on went stale,
    /// and a fresh look no longer says `Stopped` (or the look failed): it never left.
    Stale(String),
}

enum Event {
    /// `total`: the answer's `TotalCount`, if it gave one.
    Described {
        idxs: Vec<usize>,
        sent_at: Instant,
        result: Result<(Vec<Instance>, Option<usize>), ApiError>,
    },
    Called {
        idx: usize,
        call: Call,
        sent: Sent,
    },
    /// A look that never left: the run halted while it waited for the pace.
    Unsent {
        idxs: Vec<usize>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Halt {
    Interrupted,
    Deadline,
    JournalFailed,
}

struct Runner<C> {
    cloud: Arc<C>,
    settings: Settings,
    rules: super::machine::Rules,
    trackers: Vec<Tracker>,
    tasks: JoinSet<Event>,
    slots: Arc<Semaphore>,
    pace: Arc<Pace>,
    recheck: Arc<Recheck<C>>,
    ctl: Controls,
    rng: StdRng,
    started: Instant,
    api_calls: BTreeMap<String, u32>,
    throttled: u32,
    halt: Option<Halt>,
    /// Cancelled when the run halts: calls still queued for a slot are then not sent.
    stop_sending: CancellationToken,
    journal_error: Option<String>,
    /// Which instances each running task works for, so a task that panics fails them instead
    /// of leaving them "calling" forever.
    owners: HashMap<TaskId, Vec<usize>>,
    /// What the run has seen of the gateway's consistency (see [`absence`]).
    evidence: Evidence,
}

/// Tear down `ids` (already validated and de-duplicated by the caller). Every id ends in the
/// report with an outcome.
pub async fn run<C: Cloud + 'static>(cloud: Arc<C>, ids: Vec<String>, settings: Settings, ctl: Controls) -> Report {
    let now = Instant::now();
    let known: HashMap<&str, &Instance> = ctl.known.iter().map(|i| (i.uhost_id.as_str(), i)).collect();
    let resume = ctl.resume.clone().unwrap_or_default();
    let trackers = ids
        .iter()
        .map(|id| Tracker {
            id: id.clone(),
            row: known.get(id.as_str()).map(|i| (*i).clone()),
            mem: resume.memory.get(id).copied().unwrap_or_default(),
            status: Status::Observe {
                due: now,
                fresh_after: now,
                describing: false,
                parked: false,
            },
            last_answer: now,
            phase_since: now,
            calls: resume.calls.get(id).copied().unwrap_or_default(),
            lock_backoff: None,
            retry_backoff: None,
            look_backoff: None,
            seen_at: now,
            in_recycle: None,
            outcome: None,
            decided_on: None,
            refused: None,
            rechecked: false,
            acted: false,
            absent_looks: 0,
            absent_since: now,
            waiting_since: None,
            queued: Duration::ZERO,
        })
        .collect();
    let seed = settings.jitter_seed.unwrap_or_else(rand::random);
    let pace = Arc::new(Pace::new(settings.rate));
    let recheck = Recheck::new(
        Arc::clone(&cloud),
        Arc::clone(&pace),
        settings.describe_region.clone(),
        settings.lock_codes.clone(),
    );
    let mut runner = Runner {
        cloud,
        rules: settings.rules(),
        slots: Arc::new(Semaphore::new(settings.concurrency.max(1))),
        pace,
        recheck: Arc::new(recheck),
        settings,
        trackers,
        tasks: JoinSet::new(),
        ctl,
        rng: StdRng::seed_from_u64(seed),
        started: now,
        api_calls: BTreeMap::new(),
        throttled: 0,
        halt: None,
        stop_sending: CancellationToken::new(),
        journal_error: None,
        owners: HashMap::new(),
        evidence: Evidence::default(),
    };
    runner.journal(&Entry::Start {
        version: JOURNAL_VERSION,
        ids,
        release_udisk: runner.settings.release_udisk,
        force_stop: runner.settings.force_stop,
        resumed: runner.ctl.resume.is_some(),
    });
    runner.main_loop().await;
    runner.report()
}

impl<C: Cloud + 'static> Runner<C> {
    async fn main_loop(&mut self) {
        let cancel = self.ctl.cancel.clone();
        loop {
            let now = Instant::now();
            self.expire(now);
            if self.halt.is_some() {
                if self.tasks.is_empty() {
                    return;
                }
            } else if self.trackers.iter().all(|t| t.status == Status::Done) {
                return;
            } else {
                self.start_polls(now);
            }
            if self.halt.is_some() {
                self.stop_sending.cancel();
            }
            let wake = self.next_wake(now);
            tokio::select! {
                biased;
                () = cancel.cancelled(), if self.halt.is_none() => {
                    tracing::warn!("interrupted: starting nothing new; waiting for calls in flight");
                    self.halt = Some(Halt::Interrupted);
                }
                Some(joined) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    match joined {
                        Ok((id, event)) => {
                            self.owners.remove(&id);
                            match event {
                                Event::Described { idxs, sent_at, result } => self.on_described(&idxs, sent_at, result),
                                Event::Called { idx, call, sent } => self.on_called(idx, call, sent),
                                Event::Unsent { idxs } => self.on_unsent(&idxs),
                            }
                        }
                        Err(e) => self.on_task_lost(e),
                    }
                }
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// Run `task` for the instances `idxs`.
    fn spawn(&mut self, idxs: Vec<usize>, task: impl Future<Output = Event> + Send + 'static) {
        let handle = self.tasks.spawn(task);
        self.owners.insert(handle.id(), idxs);
        // Nothing else is kept about a task, so its instances are known even if it panics.
    }

    /// A task died (a panic: a bug, ours or a library's): its instances end as failed with
    /// the panic message, so the run still finishes and reports them.
    fn on_task_lost(&mut self, e: tokio::task::JoinError) {
        let idxs = self.owners.remove(&e.id()).unwrap_or_default();
        let why = if e.is_panic() {
            let payload = e.into_panic();
            let text = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".to_owned());
            format!("internal error: an API task panicked: {text}")
        } else {
            "internal error: an API task was cancelled".to_owned()
        };
        tracing::error!("{why}");
        for i in idxs {
            if self.trackers[i].status != Status::Done {
                // A call may or may not have left: a resume reads its unanswered intent in
                // the journal as unsure, and never repeats an accepted Terminate blindly.
                self.fail(i, why.clone(), None);
            }
        }
    }

    fn journal(&mut self, entry: &Entry) {
        let Some(j) = self.ctl.journal.as_mut() else { return };
        if let Err(e) = j.write(entry) {
            // Without a journal, a resume could repeat a call: stop starting new ones.
            tracing::error!("{e}; stopping the run");
            self.journal_error = Some(e.to_string());
            self.halt.get_or_insert(Halt::JournalFailed);
        }
    }

    fn count(&mut self, action: &str) {
        *self.api_calls.entry(action.to_owned()).or_default() += 1;
    }

    /// Deadlines, per-instance timeouts and halts.
    fn expire(&mut self, now: Instant) {
        if self.halt.is_none() && self.settings.deadline.is_some_and(|d| now >= self.started + d) {
            tracing::warn!("deadline reached: starting nothing new");
            self.halt = Some(Halt::Deadline);
        }
        for i in 0..self.trackers.len() {
            let t = &self.trackers[i];
            if !matches!(t.status, Status::Observe { .. }) {
                continue;
            }
            let phase = t.mem.phase;
            // A look still on its way is let finish: how long it queued is known with its answer.
            let timed_out = t.waiting_since.is_none() && now >= self.limit(i);
            match self.halted(phase) {
                Some(outcome) => self.finish(i, outcome),
                None if timed_out => self.finish(i, Outcome::TimedOut { phase }),
                None => {}
            }
        }
    }

    /// When instance `i` times out: `--instance-timeout` after the run started, plus the time
    /// its calls and looks waited in the tool's own queue (a free slot, the request pace).
    /// Every instance is watched from the start, so without a queue this is the same limit
    /// for all; with one (a large batch under a low rate limit) the last in line still get
    /// the whole timeout for the platform's part of the work.
    fn limit(&self, i: usize) -> Instant {
        self.started + self.settings.instance_timeout + self.trackers[i].queued
    }

    /// Instance `i`'s call or look has left the queue at `left` (or never will: `left` is now).
    fn left_queue(&mut self, i: usize, left: Instant) {
        let t = &mut self.trackers[i];
        if let Some(since) = t.waiting_since.take() {
            t.queued += left.saturating_duration_since(since);
        }
    }

    fn next_wake(&self, now: Instant) -> Instant {
        let mut wake = now + Duration::from_secs(3600);
        for t in &self.trackers {
            if let Status::Observe {
                due, describing: false, ..
            } = t.status
            {
                wake = wake.min(due);
            }
        }
        // Only limits still ahead: once one has passed, what remains is calls in flight, and
        // their answers wake the loop (a past limit here would wake it at once, forever).
        let deadline = self.settings.deadline.map(|d| self.started + d);
        let timeouts = (0..self.trackers.len())
            .filter(|&i| {
                let t = &self.trackers[i];
                matches!(t.status, Status::Observe { .. }) && t.waiting_since.is_none()
            })
            .map(|i| self.limit(i));
        for at in deadline.into_iter().chain(timeouts) {
            if at > now {
                wake = wake.min(at);
            }
        }
        wake.max(now)
    }
}

/// The gap before a throttled request is tried again: 1-2 s, jittered so the retries do not
/// come back together. The pace, not this gap, slows the run down.
fn throttle_gap(rng: &mut StdRng) -> Duration {
    Duration::from_secs_f64(rng.random_range(1.0..2.0))
}

/// Round a duration to milliseconds for display.
fn round(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests;
