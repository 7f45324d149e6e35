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
        let timed_out = now >= self.started + self.settings.instance_timeout;
        for i in 0..self.trackers.len() {
            let t = &self.trackers[i];
            if !matches!(t.status, Status::Observe { .. }) {
                continue;
            }
            let phase = t.mem.phase;
            match self.halted(phase) {
                Some(outcome) => self.finish(i, outcome),
                None if timed_out => self.finish(i, Outcome::TimedOut { phase }),
                None => {}
            }
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
        let limits = [
            self.settings.deadline.map(|d| self.started + d),
            Some(self.started + self.settings.instance_timeout),
        ];
        for at in limits.into_iter().flatten() {
            if at > now {
                wake = wake.min(at);
            }
        }
        wake.max(now)
    }

    /// Start Describe calls for every instance that is due, in chunks of 100.
    fn start_polls(&mut self, now: Instant) {
        let horizon = now + self.settings.min_poll() / 2;
        let mut due: Vec<(Instant, usize)> = Vec::new();
        let mut later: Vec<(Instant, usize)> = Vec::new();
        for (i, t) in self.trackers.iter().enumerate() {
            if let Status::Observe {
                due: d,
                describing: false,
                parked,
                ..
            } = t.status
            {
                if parked && d > now {
                    continue;
                }
                if d <= horizon {
                    due.push((d, i));
                } else {
                    later.push((d, i));
                }
            }
        }
        if due.is_empty() {
            return;
        }
        due.sort_unstable();
        later.sort_unstable();
        // Fill the last chunk with the instances due soonest: a free look.
        let room = (DESCRIBE_MAX - due.len() % DESCRIBE_MAX) % DESCRIBE_MAX;
        due.extend(later.into_iter().take(room));
        let idxs: Vec<usize> = due.into_iter().map(|(_, i)| i).collect();
        // With `--region`, an instance whose region we have not seen (a named ID missing from
        // every answer so far) is looked for everywhere: its absence from one region's answer
        // would prove nothing.
        let scope = self.settings.describe_region.clone();
        let (scoped, everywhere): (Vec<usize>, Vec<usize>) = idxs
            .into_iter()
            .partition(|&i| scope.is_none() || self.trackers[i].row.as_ref().is_some_and(|r| !r.region.is_empty()));
        for chunk in scoped.chunks(DESCRIBE_MAX) {
            self.describe(chunk.to_vec(), scope.clone());
        }
        for chunk in everywhere.chunks(DESCRIBE_MAX) {
            self.describe(chunk.to_vec(), None);
        }
    }

    /// One ID-filtered Describe for up to 100 instances.
    fn describe(&mut self, idxs: Vec<usize>, region: Option<String>) {
        let ids: Vec<String> = idxs.iter().map(|&i| self.trackers[i].id.clone()).collect();
        for &i in &idxs {
            if let Status::Observe { describing, .. } = &mut self.trackers[i].status {
                *describing = true;
            }
        }
        self.count("DescribeCompShareInstance");
        let cloud = Arc::clone(&self.cloud);
        let pace = Arc::clone(&self.pace);
        let owned = idxs.clone();
        self.spawn(owned, async move {
            pace.ready().await;
            let sent_at = Instant::now();
            let limit = u32::try_from(ids.len()).unwrap_or(100);
            let query = DescribeQuery {
                region,
                ids,
                limit,
                ..DescribeQuery::default()
            };
            let result = cloud.describe(&query).await.map(|p| {
                let total = p.total_count.map(|t| usize::try_from(t.max(0)).unwrap_or(usize::MAX));
                (p.uhost_set, total)
            });
            Event::Described { idxs, sent_at, result }
        });
    }

    fn on_described(
        &mut self,
        idxs: &[usize],
        sent_at: Instant,
        result: Result<(Vec<Instance>, Option<usize>), ApiError>,
    ) {
        let now = Instant::now();
        for &i in idxs {
            if let Status::Observe { describing, .. } = &mut self.trackers[i].status {
                *describing = false;
            }
        }
        let (rows, total) = match result {
            Ok(answer) => answer,
            Err(e) => return self.on_describe_error(idxs, &e, now, sent_at),
        };
        self.pace.succeeded(sent_at);
        // An answer that matched more rows than it carries admits it left some out: absence
        // from it proves nothing (and says the gateway drops rows; see `absence`).
        let missing = total.map_or(0, |t| t.saturating_sub(rows.len()));
        if missing > 0 {
            self.evidence.phantom += missing as u64;
            tracing::debug!(carried = rows.len(), total = ?total, "a Describe answer left rows out");
        }
        let mut by_id: HashMap<String, Instance> = rows.into_iter().map(|r| (r.uhost_id.clone(), r)).collect();
        for &i in idxs {
            let Status::Observe { fresh_after, .. } = self.trackers[i].status else {
                continue;
            };
            if sent_at < fresh_after {
                continue; // older than the instance's last change: does not count
            }
            let row = by_id.remove(&self.trackers[i].id);
            self.trackers[i].look_backoff = None;
            if row.is_none() && missing > 0 {
                // Not a look at all: ask again soon.
                let gap = self.settings.min_poll();
                self.schedule(i, now + gap);
                continue;
            }
            // The look is as old as the Describe's sending, not its processing.
            self.trackers[i].seen_at = sent_at;
            self.observe(i, row, now);
        }
    }

    /// Count one look at instance `i` towards the absence rule; `true` if it is now
    /// confirmed gone (or was listed), `false` if it needs another look first (scheduled).
    fn absence_confirmed(&mut self, i: usize, listed: bool, now: Instant) -> bool {
        let t = &mut self.trackers[i];
        if listed {
            if t.absent_looks > 0 {
                // It was there all along: those answers lied.
                self.evidence.phantom += u64::from(t.absent_looks);
                tracing::debug!(id = %t.id, looks = t.absent_looks, "listed again after answers without it");
                t.absent_looks = 0;
            }
            self.evidence.present += 1;
            return true;
        }
        t.absent_looks += 1;
        if t.absent_looks == 1 {
            t.absent_since = t.seen_at;
        }
        let expected = t.mem.phase == Phase::TerminateSent;
        let span = t.seen_at.duration_since(t.absent_since);
        let timing = absence::Timing {
            min_poll: self.settings.min_poll(),
            poll_interval: self.settings.poll_interval,
        };
        match absence::judge(expected, t.absent_looks, span, self.evidence, timing) {
            Verdict::Gone => true,
            Verdict::LookAgain(gap) => {
                let looks = t.absent_looks;
                let id = t.id.clone();
                tracing::debug!(id = %id, looks, "not listed; confirming it is gone");
                self.schedule(i, now + gap);
                let activity = Activity::Waiting {
                    state: String::new(),
                    what: "not listed; confirming it is gone",
                };
                self.ctl.observer.activity(&id, &activity);
                false
            }
        }
    }

    fn on_describe_error(&mut self, idxs: &[usize], e: &ApiError, now: Instant, sent_at: Instant) {
        let class = classify(e, &self.settings.lock_codes);
        if class == RetryClass::Throttled {
            self.pace.throttled(sent_at);
            self.throttled += 1;
        } else {
            self.pace.succeeded(sent_at);
        }
        // Each instance has its own budget of failed looks (reset by a good one): a burst of
        // failures across many small Describes must not use up everyone's retries at once.
        let mut logged = false;
        for &i in idxs {
            if !matches!(self.trackers[i].status, Status::Observe { .. }) {
                continue;
            }
            let next = if class == RetryClass::Fatal {
                Next::GiveUp { waited: Duration::ZERO }
            } else if class == RetryClass::Throttled {
                // Throttling says "slower", not "broken": the pace takes care of that, so look
                // again in 1-2 s without spending the instance's failure budget (a Describe
                // carries up to 100 instances; one throttled answer must not count against
                // each of them). The instance timeout still bounds the wait.
                Next::Retry(throttle_gap(&mut self.rng))
            } else {
                let episode = Episode::refused(&mut self.trackers[i].look_backoff, now);
                Policy::transient(self.settings.poll_interval).next(episode, now, self.rng.random())
            };
            match next {
                Next::Retry(d) => {
                    if !logged {
                        tracing::warn!("{e}; looking again in {}", humantime::format_duration(round(d)));
                        logged = true;
                    }
                    if let Status::Observe { due, .. } = &mut self.trackers[i].status {
                        *due = now + d;
                    }
                }
                Next::GiveUp { waited } => {
                    tracing::error!(id = %self.trackers[i].id, "{e}");
                    let error = if class == RetryClass::Fatal {
                        e.to_string()
                    } else {
                        format!(
                            "gave up after {} of failed looks: {e}",
                            humantime::format_duration(round(waited))
                        )
                    };
                    self.fail(i, error, e.request_id());
                }
            }
        }
    }

    fn observe(&mut self, i: usize, row: Option<Instance>, now: Instant) {
        // Absence is confirmed, never assumed: until then the instance is still watched.
        if !self.absence_confirmed(i, row.is_some(), now) {
            return;
        }
        if let (Some(r), Some(scope)) = (&row, &self.settings.describe_region)
            && !r.region.is_empty()
            && r.region != *scope
        {
            // A named ID the selection could not see turned up in another region: the user's
            // scope says not to touch it, and reporting it gone would be a lie.
            let error = format!(
                "it is in {} ({}), outside --region {scope}: not touched",
                r.region, r.zone
            );
            self.trackers[i].row = Some(r.clone());
            return self.fail(i, error, None);
        }
        let obs = match &row {
            None => Observation::Absent,
            Some(r) => Observation::Present {
                state: r.state.clone(),
                spot: r.is_spot(),
            },
        };
        let t = &mut self.trackers[i];
        if let Some(refusal) = t.refused.take() {
            let unchanged = match (&obs, &t.decided_on) {
                (Observation::Present { state, .. }, Some(before)) => state == before,
                _ => false,
            };
            if unchanged {
                tracing::error!(id = %t.id, "{refusal}");
                return self.fail(i, refusal.to_string(), refusal.request_id());
            }
        }
        // The guard runs before the first call of *this* run, even for an instance a crashed
        // run had already called: protections may have changed since.
        let first_call = !t.acted;
        if let Some(r) = row {
            t.row = Some(r);
        }
        let since = now.duration_since(t.last_answer);
        let before = t.mem.phase;
        let (mem, decision) = decide(t.mem, &obs, since, &self.rules);
        t.mem = mem;
        let state = match &obs {
            Observation::Absent => None,
            Observation::Present { state, .. } => Some(state.as_str().to_owned()),
        };
        tracing::debug!(id = %t.id, state = state.as_deref().unwrap_or("absent"), ?decision, "observed");
        let entry = Entry::Decision {
            id: t.id.clone(),
            state: state.clone(),
            phase: before,
            decision: format!("{decision:?}"),
        };
        self.journal(&entry);
        match decision {
            Decision::Stop { .. } | Decision::Terminate if self.halt.is_some() => {
                let phase = self.trackers[i].mem.phase;
                self.finish(i, Outcome::Interrupted { phase });
            }
            Decision::Stop { force } => {
                if first_call && let Some(reason) = self.guard_refuses(i) {
                    return self.finish(i, Outcome::Skipped { reason });
                }
                self.send(i, Call::Stop, force);
            }
            Decision::Terminate => {
                if first_call && let Some(reason) = self.guard_refuses(i) {
                    return self.finish(i, Outcome::Skipped { reason });
                }
                self.send(i, Call::Terminate, false);
            }
            Decision::Wait(what) => {
                let age = now.duration_since(self.trackers[i].phase_since);
                let gap = self.poll_gap(age);
                self.schedule(i, now + gap);
                let activity = Activity::Waiting {
                    state: state.unwrap_or_default(),
                    what,
                };
                let id = self.trackers[i].id.clone();
                self.ctl.observer.activity(&id, &activity);
            }
            Decision::Done(gone) => {
                let mut outcome = Outcome::from(gone);
                if let Outcome::Terminated { in_recycle, .. } = &mut outcome {
                    in_recycle.clone_from(&self.trackers[i].in_recycle);
                }
                self.finish(i, outcome);
            }
            Decision::Fail(refusal) => self.fail(i, refusal.to_string(), None),
        }
    }

    fn guard_refuses(&self, i: usize) -> Option<String> {
        let guard = self.ctl.guard.as_ref()?;
        self.trackers[i].row.as_ref().and_then(guard)
    }

    /// A sixth of the time spent in the phase, between `min_poll` and `poll_interval`, ±10%.
    fn poll_gap(&mut self, age: Duration) -> Duration {
        let base = (age / 6).clamp(self.settings.min_poll(), self.settings.poll_interval);
        base.mul_f64(self.rng.random_range(0.9..1.1))
    }

    fn schedule(&mut self, i: usize, due: Instant) {
        self.trackers[i].status = Status::Observe {
            due,
            fresh_after: Instant::now(),
            describing: false,
            parked: false,
        };
    }

    /// Like `schedule`, for a retry time that must be respected (see [`Status::Observe`]).
    fn park(&mut self, i: usize, due: Instant) {
        self.trackers[i].status = Status::Observe {
            due,
            fresh_after: Instant::now(),
            describing: false,
            parked: true,
        };
    }

    fn send(&mut self, i: usize, call: Call, force: bool) {
        let Some(row) = self.trackers[i].row.as_ref() else {
            // Unreachable: a call is only decided on a present row.
            return self.fail(i, "internal: no row to act on".to_owned(), None);
        };
        // Belt and braces for the first safety rule: never Terminate unless the row we just
        // looked at says Stopped (or Install Fail, which the platform may refuse).
        if call == Call::Terminate && !matches!(row.state, State::Stopped | State::InstallFail) {
            let error = format!("internal: refused to terminate from state {}", row.state);
            return self.fail(i, error, None);
        }
        let target = Target::of(row);
        let decided_on = row.state.clone();
        let id = self.trackers[i].id.clone();
        self.journal(&Entry::Call {
            id: id.clone(),
            call,
            region: target.region.clone(),
            zone: target.zone.clone(),
        });
        if self.halt == Some(Halt::JournalFailed) {
            // The intent could not be recorded: do not send what a resume would not know of.
            let phase = self.trackers[i].mem.phase;
            if let Some(outcome) = self.halted(phase) {
                return self.finish(i, outcome);
            }
        }
        self.trackers[i].status = Status::Calling;
        self.trackers[i].decided_on = Some(decided_on);
        self.trackers[i].acted = true;
        tracing::info!(id = %id, region = %target.region, zone = %target.zone, "{}", call.action());
        self.ctl.observer.activity(&id, &Activity::Calling(call));
        let cloud = Arc::clone(&self.cloud);
        let pace = Arc::clone(&self.pace);
        let recheck = Arc::clone(&self.recheck);
        let slots = Arc::clone(&self.slots);
        let release = self.settings.release_udisk;
        let stop_sending = self.stop_sending.clone();
        let decided_at = self.trackers[i].seen_at;
        let stale_after = self
            .settings
            .min_poll()
            .clamp(Duration::from_millis(50), Duration::from_secs(1));
        self.spawn(vec![i], async move {
            // Wait for a slot and the pace, unless the run halts meanwhile: then the call
            // never leaves, which is what "start nothing new" means.
            let ready = async {
                let slot = slots.acquire_owned().await;
                pace.ready().await;
                slot
            };
            let _slot = tokio::select! {
                slot = ready => slot,
                () = stop_sending.cancelled() => return Event::Called { idx: i, call, sent: Sent::Halted },
            };
            if call == Call::Terminate && decided_at.elapsed() > stale_after {
                // Queued long enough for the world to move: look again right before sending,
                // so Terminate still follows a fresh `Stopped`. The look is shared with the
                // other Terminates in the same situation (one Describe for up to 100).
                if let Err(why) = recheck.still_stopped(&target.uhost_id, stale_after).await {
                    return Event::Called {
                        idx: i,
                        call,
                        sent: Sent::Stale(why),
                    };
                }
            }
            let sent_at = Instant::now();
            let result = match call {
                Call::Stop => cloud.stop(&target, force).await.map(|()| None),
                Call::Terminate => cloud.terminate(&target, release).await.map(Some),
            };
            Event::Called {
                idx: i,
                call,
                sent: Sent::Answer(result, sent_at),
            }
        });
    }

    #[expect(
        clippy::too_many_lines,
        reason = "one answer, every class of it; to be split with the batch driver (issue 9, item 2)"
    )]
    fn on_called(&mut self, i: usize, call: Call, sent: Sent) {
        let now = Instant::now();
        let (result, sent_at) = match sent {
            Sent::Answer(result, sent_at) => {
                self.trackers[i].calls += 1;
                self.count(call.action());
                (result, sent_at)
            }
            Sent::Halted | Sent::Stale(_) => {
                let error = match sent {
                    Sent::Stale(why) => format!("not sent: {why}"),
                    _ => "not sent: the run is stopping".to_owned(),
                };
                let id = self.trackers[i].id.clone();
                tracing::info!(id = %id, "{} {error}", call.action());
                self.journal(&Entry::Result {
                    id,
                    call,
                    effect: Effect::NotApplied,
                    error: Some(error),
                });
                // Look again now (the halt, if any, turns this into the instance's outcome).
                return self.after_answer(i, now, false);
            }
        };
        let class = result.as_ref().err().map(|e| classify(e, &self.settings.lock_codes));
        if class == Some(RetryClass::Throttled) {
            self.pace.throttled(sent_at);
            self.throttled += 1;
        } else {
            self.pace.succeeded(sent_at);
        }
        let effect = match class {
            None => Effect::Accepted,
            Some(RetryClass::Ambiguous) => Effect::Unsure,
            Some(_) => Effect::NotApplied,
        };
        let id = self.trackers[i].id.clone();
        let error = result.as_ref().err().map(ToString::to_string);
        self.journal(&Entry::Result {
            id: id.clone(),
            call,
            effect,
            error,
        });
        let t = &mut self.trackers[i];
        t.last_answer = now;
        t.mem = after_call(t.mem, call, effect);
        let e = match result {
            Ok(ack) => {
                tracing::info!(id = %id, "{} accepted", call.action());
                if let Some(ack) = ack {
                    t.in_recycle = Some(ack.in_recycle).filter(|s| !s.is_empty());
                }
                t.lock_backoff = None;
                t.retry_backoff = None;
                t.rechecked = false;
                t.phase_since = now;
                let gap = self.settings.min_poll();
                return self.after_answer(i, now + gap, false);
            }
            Err(e) => e,
        };
        if self.halt.is_some() && effect == Effect::NotApplied {
            // Halting: no retry; the instance ends interrupted (or timed out) where it stands.
            return self.after_answer(i, now, false);
        }
        let jitter: f64 = self.rng.random();
        let t = &mut self.trackers[i];
        match class.unwrap_or(RetryClass::Fatal) {
            RetryClass::Locked => {
                let episode = Episode::refused(&mut t.lock_backoff, now);
                match Policy::lock(self.settings.lock_wait).next(episode, now, jitter) {
                    Next::Retry(d) => {
                        tracing::info!(id = %id, "operation lock held; looking again in {}", humantime::format_duration(round(d)));
                        self.ctl.observer.activity(&id, &Activity::Locked { retry_in: d });
                        self.after_answer(i, now + d, true);
                    }
                    Next::GiveUp { waited } => {
                        let error = format!(
                            "operation lock still held after {} (--lock-wait {}): {e}",
                            humantime::format_duration(round(waited)),
                            humantime::format_duration(self.settings.lock_wait)
                        );
                        self.fail(i, error, e.request_id());
                    }
                }
            }
            RetryClass::Throttled => {
                // "Slower", not "broken": the pace was told and queues calls accordingly, so
                // this does not spend the instance's error budget; the instance timeout still
                // bounds the wait.
                let d = throttle_gap(&mut self.rng);
                tracing::debug!(id = %id, "{e}; retrying in {}", humantime::format_duration(round(d)));
                let activity = Activity::Backoff {
                    reason: e.to_string(),
                    retry_in: d,
                };
                self.ctl.observer.activity(&id, &activity);
                self.after_answer(i, now + d, true);
            }
            RetryClass::Transient => {
                let episode = Episode::refused(&mut t.retry_backoff, now);
                match Policy::transient(self.settings.poll_interval).next(episode, now, jitter) {
                    Next::Retry(d) => {
                        tracing::warn!(id = %id, "{e}; retrying in {}", humantime::format_duration(round(d)));
                        let activity = Activity::Backoff {
                            reason: e.to_string(),
                            retry_in: d,
                        };
                        self.ctl.observer.activity(&id, &activity);
                        self.after_answer(i, now + d, true);
                    }
                    Next::GiveUp { waited } => {
                        let error = format!(
                            "gave up after {} of retries: {e}",
                            humantime::format_duration(round(waited))
                        );
                        self.fail(i, error, e.request_id());
                    }
                }
            }
            RetryClass::Ambiguous => {
                // Maybe it happened, maybe not: look before doing anything else.
                tracing::warn!(id = %id, "{e}; checking what happened before going on");
                let gap = self.settings.min_poll();
                self.after_answer(i, now + gap, false);
            }
            RetryClass::Fatal if !t.rechecked => {
                // A refusal (e.g. "state Running does not allow Terminate") may only mean the
                // instance moved between our look and the call, say someone restarted it:
                // look once more, and fail only if nothing changed.
                tracing::warn!(id = %id, "{e}; looking again before giving up");
                t.rechecked = true;
                t.refused = Some(e);
                self.after_answer(i, now, false);
            }
            RetryClass::Fatal => {
                tracing::error!(id = %id, "{e}");
                self.fail(i, e.to_string(), e.request_id());
            }
        }
    }

    /// After an answer: observe again at `due` (`parked`: not earlier), unless the run is halting.
    fn after_answer(&mut self, i: usize, due: Instant, parked: bool) {
        let phase = self.trackers[i].mem.phase;
        match self.halted(phase) {
            Some(outcome) => self.finish(i, outcome),
            None if parked => self.park(i, due),
            None => self.schedule(i, due),
        }
    }

    /// The outcome of an unfinished instance in `phase` when the run is halting.
    fn halted(&self, phase: Phase) -> Option<Outcome> {
        Some(match self.halt? {
            Halt::Interrupted => Outcome::Interrupted { phase },
            Halt::Deadline => Outcome::TimedOut { phase },
            Halt::JournalFailed => Outcome::Failed {
                phase,
                error: format!(
                    "journal write failed: {}",
                    self.journal_error.clone().unwrap_or_default()
                ),
                request_id: None,
            },
        })
    }

    /// End an instance as failed where it stands, with the error and the API's request id.
    fn fail(&mut self, i: usize, error: String, request_id: Option<&str>) {
        let phase = self.trackers[i].mem.phase;
        self.finish(
            i,
            Outcome::Failed {
                phase,
                error,
                request_id: request_id.map(str::to_owned),
            },
        );
    }

    fn finish(&mut self, i: usize, outcome: Outcome) {
        let now = Instant::now();
        let id = self.trackers[i].id.clone();
        match &outcome {
            o if o.is_ok() => tracing::info!(id = %id, "{}", o.word()),
            o => tracing::warn!(id = %id, "{}: {}", o.word(), o.detail()),
        }
        self.journal(&Entry::Outcome {
            id: id.clone(),
            outcome: outcome.clone(),
        });
        self.ctl.observer.finished(&id, &outcome);
        let t = &mut self.trackers[i];
        t.status = Status::Done;
        t.outcome = Some((outcome, now));
    }

    fn report(self) -> Report {
        let release_udisk = self.settings.release_udisk;
        let started = self.started;
        let end = Instant::now();
        let instances = self
            .trackers
            .into_iter()
            .map(|t| {
                let (outcome, at) = t.outcome.unwrap_or((Outcome::Interrupted { phase: t.mem.phase }, end));
                let row = t.row.unwrap_or_default();
                InstanceReport {
                    uhost_id: t.id,
                    name: row.name,
                    region: row.region,
                    zone: row.zone,
                    last_state: row.state.as_str().to_owned(),
                    outcome,
                    seconds: at.duration_since(started).as_secs_f64(),
                    calls: t.calls,
                    release_udisk,
                }
            })
            .collect();
        let mut api_calls = self.api_calls;
        let looks = self.recheck.describes();
        if looks > 0 {
            *api_calls.entry("DescribeCompShareInstance".to_owned()).or_default() += looks;
        }
        let mut report = Report::new(
            instances,
            end.duration_since(started).as_secs_f64(),
            api_calls,
            self.throttled,
        );
        report.summary.pace = self.pace.summary();
        report
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
