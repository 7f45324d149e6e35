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
mod tracker;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::{AbortHandle, Id as TaskId, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::calls::Calls;
use self::ends::Ends;
use self::looks::Looks;
use self::tracker::{Seen, Tracker, Trackers};
use super::Settings;
use super::journal::{Entry, JOURNAL_VERSION, Journal, Resume};
use super::machine::Call;
use super::outcome::{Outcome, Report};
use super::pace::Pace;
use crate::api::{ApiError, Cloud, Instance, Looked, State, TerminateAck};

/// What an instance is doing, for progress displays.
#[derive(Debug, Clone, PartialEq)]
pub enum Activity {
    /// Waiting for a settled state; `state` is the last one seen (`None`: not listed).
    Waiting { state: Option<State>, what: &'static str },
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
/// reason returned here skips the instance (protected, drifted from the saved plan, ...). The
/// row is a look's (`Cloud::look`): only the fields `api::look::LookRow` reads are filled
/// (`LookRow::to_instance`).
pub type Guard = Box<dyn Fn(&Instance) -> Option<String> + Send + Sync>;

/// Run-time companions of a batch.
pub struct Controls {
    pub journal: Option<Journal>,
    pub resume: Option<Resume>,
    pub guard: Option<Guard>,
    pub observer: Box<dyn Observer>,
    /// Cancelled on the first Ctrl-C / SIGTERM: start nothing new, let calls finish.
    pub cancel: CancellationToken,
    /// What the selection knew of each instance: its name, where the first looks go (an
    /// instance of unknown region is looked for everywhere) and its state until a look says
    /// more (the report's last state for one never looked at).
    pub known: Vec<Known>,
}

/// What the selection knew of an instance: its name and where it lives, until a look says
/// more. A whole row per instance is several times this, at the batch's peak of memory.
#[derive(Debug, Clone, Default)]
pub struct Known {
    pub id: String,
    pub name: String,
    pub region: String,
    pub zone: String,
    pub state: State,
}

impl From<Instance> for Known {
    /// A row's strings moved in.
    fn from(row: Instance) -> Known {
        Known {
            id: row.uhost_id,
            name: row.name,
            region: row.region,
            zone: row.zone,
            state: row.state,
        }
    }
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

/// What became of a queued call.
enum Sent {
    /// It went out at this instant; this is the answer.
    Answer(Result<Option<TerminateAck>, ApiError>, Instant),
    /// The run halted while it waited for a slot: it never left.
    Halted,
    /// A Terminate waited so long for its slot that the look it was decided on went stale,
    /// and a fresh look no longer says `Stopped` (or the look failed): it never left.
    Stale(String),
    /// Its intent could not be synced to the journal: it never left (a resume would not
    /// know of it).
    Unjournaled(String),
}

enum Event {
    /// A look's answer, read by the driver (`Runner::on_described`), and the Describe slot
    /// it holds until then.
    Described {
        idxs: Vec<usize>,
        sent_at: Instant,
        result: Result<Looked, ApiError>,
        slot: Option<tokio::sync::OwnedSemaphorePermit>,
    },
    Called {
        idx: usize,
        call: Call,
        sent: Sent,
    },
    /// A look that never left (the run halted while it waited for the pace), or that a halt
    /// dropped on its way.
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
    settings: Settings,
    rules: super::machine::Rules,
    trackers: Trackers,
    tasks: Tasks,
    looks: Looks<C>,
    calls: Calls<C>,
    ends: Ends,
    pace: Arc<Pace>,
    ctl: Controls,
    rng: StdRng,
    started: Instant,
}

/// The API tasks in flight, and which instances each works for, so a task that panics fails
/// them instead of leaving them "calling" forever.
struct Tasks {
    set: JoinSet<Event>,
    owners: HashMap<TaskId, Vec<usize>>,
    /// The Describe tasks among them: read-only, so a halt drops them rather than wait up to
    /// a request timeout for answers nobody reads.
    looks: HashMap<TaskId, AbortHandle>,
}

impl Tasks {
    fn spawn(&mut self, idxs: Vec<usize>, task: impl Future<Output = Event> + Send + 'static) {
        let handle = self.set.spawn(task);
        self.owners.insert(handle.id(), idxs);
    }

    /// Call (Stop/Terminate) tasks alive: every task but the looks (an aborted look stays in
    /// `looks` until it is joined).
    fn calls(&self) -> usize {
        self.owners.len() - self.looks.len()
    }

    fn spawn_look(&mut self, idxs: Vec<usize>, task: impl Future<Output = Event> + Send + 'static) {
        let handle = self.set.spawn(task);
        self.owners.insert(handle.id(), idxs);
        self.looks.insert(handle.id(), handle);
    }

    /// Drop every look in flight (a halt: their instances are ended where they stand).
    fn abort_looks(&mut self) {
        // Kept in `looks` until joined, so an aborted look is told from a lost call.
        for look in self.looks.values() {
            look.abort();
        }
    }

    fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// The next task to end: its event, or the instances of a task that died and why.
    async fn next(&mut self) -> Option<Result<Event, (Vec<usize>, String)>> {
        let joined = self.set.join_next_with_id().await?;
        Some(match joined {
            Ok((id, event)) => {
                self.owners.remove(&id);
                self.looks.remove(&id);
                Ok(event)
            }
            Err(e) => {
                let idxs = self.owners.remove(&e.id()).unwrap_or_default();
                let look = self.looks.remove(&e.id()).is_some();
                if look && e.is_cancelled() {
                    return Some(Ok(Event::Unsent { idxs })); // dropped by a halt
                }
                Err((idxs, lost_why(e)))
            }
        })
    }
}

/// Why a task died (a panic: a bug, ours or a library's).
fn lost_why(e: tokio::task::JoinError) -> String {
    if e.is_panic() {
        let payload = e.into_panic();
        let text = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_owned());
        format!("internal error: an API task panicked: {text}")
    } else {
        "internal error: an API task was cancelled".to_owned()
    }
}

/// Tear down `ids` (already validated and de-duplicated by the caller). Every id ends in the
/// report with an outcome.
pub async fn run<C: Cloud + 'static>(cloud: Arc<C>, ids: Vec<String>, settings: Settings, mut ctl: Controls) -> Report {
    let now = Instant::now();
    // The selection's records name the instances until their first look; their strings move
    // into the trackers.
    // (Found through an index of positions, not a map of the records: at the start of a
    // 100,000 batch a second copy of them was part of the run's peak of memory.)
    let mut known = std::mem::take(&mut ctl.known);
    let mut at: HashMap<String, usize> = HashMap::with_capacity(known.len());
    for (n, k) in known.iter_mut().enumerate() {
        at.insert(std::mem::take(&mut k.id), n);
    }
    let memory = ctl.resume.as_ref().map(|r| &r.memory);
    let all = ids
        .iter()
        .map(|id| {
            let row = at
                .remove(id.as_str())
                .map(|n| Seen::known(std::mem::take(&mut known[n])));
            let mem = memory.and_then(|m| m.get(id)).copied().unwrap_or_default();
            // This process's calls: an earlier one's are reported apart (`calls_before_resume`).
            Tracker::new(id.clone(), row, mem, 0, now)
        })
        .collect();
    drop((known, at));
    let seed = settings.jitter_seed.unwrap_or_else(rand::random);
    let pace = Arc::new(Pace::new(settings.rate));
    let stop_sending = CancellationToken::new();
    let mut runner = Runner {
        looks: Looks::new(
            Arc::clone(&cloud),
            Arc::clone(&pace),
            stop_sending.clone(),
            looks::looks_in_flight(settings.concurrency),
        ),
        calls: Calls::new(cloud, Arc::clone(&pace), stop_sending, &settings),
        pace,
        rules: settings.rules(),
        trackers: Trackers::new(all, now + settings.instance_timeout),
        settings,
        tasks: Tasks {
            set: JoinSet::new(),
            owners: HashMap::new(),
            looks: HashMap::new(),
        },
        ends: Ends::default(),
        ctl,
        rng: StdRng::seed_from_u64(seed),
        started: now,
    };
    runner.journal(&Entry::Start {
        version: JOURNAL_VERSION,
        kind: crate::workflow::journal::JournalKind::Instance,
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
            if self.ends.halt.is_some() {
                self.drain_calls();
                if self.tasks.is_empty() {
                    return;
                }
                self.calls.stop_sending();
                self.tasks.abort_looks();
            } else if self.trackers.all_done() {
                return;
            } else {
                // After any event, not only an answer: a call task that died (a panic) frees
                // its place for a queued call as well.
                self.spawn_calls();
                self.start_polls(now);
            }
            let wake = self.next_wake(now);
            tokio::select! {
                biased;
                () = cancel.cancelled(), if self.ends.halt.is_none() => {
                    tracing::warn!("interrupted: starting nothing new; waiting for calls in flight");
                    self.ends.halt(Halt::Interrupted);
                }
                Some(next) = self.tasks.next(), if !self.tasks.is_empty() => match next {
                    Ok(Event::Described {
                        idxs,
                        sent_at,
                        result,
                        slot,
                    }) => {
                        self.on_described(&idxs, sent_at, result);
                        drop(slot);
                    }
                    Ok(Event::Called { idx, call, sent }) => self.on_called(idx, call, sent),
                    Ok(Event::Unsent { idxs }) => self.on_unsent(&idxs),
                    Err((idxs, why)) => self.on_task_lost(&idxs, &why),
                },
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// A task died (a panic: a bug, ours or a library's): its instances end as failed with
    /// the panic message, so the run still finishes and reports them.
    fn on_task_lost(&mut self, idxs: &[usize], why: &str) {
        tracing::error!("{why}");
        for &i in idxs {
            // A call may or may not have left: a resume reads its unanswered intent in the
            // journal as unsure, and never repeats an accepted Terminate blindly.
            self.fail(i, why.to_owned(), None);
        }
    }

    fn journal(&mut self, entry: &Entry) {
        let Some(j) = self.ctl.journal.as_mut() else { return };
        if let Err(e) = j.write(entry) {
            self.journal_error(&e.to_string());
        }
    }

    /// A call's intent, its sync to disk under way off the runtime thread (`None`: no
    /// journal, or the write failed and the run halts).
    fn journal_intent(&mut self, entry: &Entry) -> Option<super::journal::Synced> {
        let j = self.ctl.journal.as_mut()?;
        match j.write_intent(entry) {
            Ok(synced) => Some(synced),
            Err(e) => {
                self.journal_error(&e.to_string());
                None
            }
        }
    }

    fn journal_error(&mut self, error: &str) {
        // Without a journal, a resume could repeat a call: stop starting new ones.
        tracing::error!("{error}; stopping the run");
        self.ends.journal_failed(error.to_owned());
    }

    /// Deadlines, per-instance timeouts and halts.
    fn expire(&mut self, now: Instant) {
        if self.ends.halt.is_none() && self.settings.deadline.is_some_and(|d| now >= self.started + d) {
            tracing::warn!("deadline reached: starting nothing new");
            self.ends.halt(Halt::Deadline);
        }
        if self.ends.halt.is_some() {
            // Every watched instance ends where it stands; calls in flight end with their answers.
            for i in self.trackers.watched() {
                if let Some(outcome) = self.ends.halted(self.trackers[i].mem.phase) {
                    self.finish(i, outcome);
                }
            }
            return;
        }
        // A look still on its way is let finish: how long it queued is known with its answer.
        for i in self.trackers.timed_out(now) {
            let phase = self.trackers[i].mem.phase;
            self.finish(i, Outcome::TimedOut { phase });
        }
    }

    /// When the loop must wake if no answer comes: the next look or time limit due, or the
    /// deadline.
    fn next_wake(&self, now: Instant) -> Instant {
        let mut wake = now + Duration::from_secs(3600);
        if let Some(at) = self.trackers.next_due() {
            wake = wake.min(at);
        }
        // Only a deadline still ahead: once it has passed, what remains is calls in flight,
        // and their answers wake the loop (a past limit here would wake it at once, forever).
        if let Some(at) = self.settings.deadline.map(|d| self.started + d)
            && at > now
        {
            wake = wake.min(at);
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
