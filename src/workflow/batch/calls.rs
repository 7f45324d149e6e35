//! Sending Stop and Terminate: the journaled intent, the slot and the pace, the shared last look
//! before a delayed Terminate, and what each answer means (accepted, locked, throttled,
//! transient, ambiguous, refused).
//!
//! [`Calls`] owns what the calls share: the concurrency slots, the shared last look
//! ([`Recheck`]), the queue of decided calls waiting for a task, and the call task. The per-instance retry budgets live on the instance's
//! tracker; whether a refusal earns one more look is the machine's (`after_refusal`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::super::Settings;
use super::super::journal::{Entry, Synced};
use super::super::machine::{AfterRefusal, Call, Effect, after_call, after_refusal};
use super::super::pace::Pace;
use super::super::recheck::Recheck;
use super::super::retry::{Episode, Next, Policy};
use super::tracker::Refused;
use super::{Activity, Event, Halt, Runner, Sent, round, throttle_gap};
use crate::api::{ApiError, Cloud, RetryClass, State, Target, TerminateAck, classify};

/// How long after the answer that showed `Stopped` a Terminate may still leave on it: one
/// that waited longer (for a slot, for the pace) looks again first. The window between that
/// answer and the Terminate is then the look's own round trip plus at most this: a
/// millisecond, so only a Terminate that did not wait at all skips the look (someone
/// restarting an instance 2 s after it stops, run at 1/100 time, leaves 20 ms; a wait of
/// 5 ms for the pace was seen to lose that race).
const FRESH: Duration = Duration::from_millis(1);

/// How long the first of several Terminates that must look again waits for others to join
/// its look when no request pace is in force: Terminates then wait only for a concurrency
/// slot, a few milliseconds, and they hold it while they look; a long gathering window would
/// make the slots, not the API, the limit (64 slots held 250 ms each carry 256 calls a
/// second). Under a pace the full window applies: Terminates arrive at the pace's rate, and
/// one look shared among them saves requests the limit counts.
const UNPACED_GATHER: Duration = Duration::from_millis(10);

/// Call tasks alive at once, as a multiple of `--concurrency`: enough that a slot freed by an
/// answer is taken at once by a task already waiting, and few enough that a batch of 100,000
/// does not hold a task (a few hundred bytes each, 7 MiB at 10,000) per decided call.
const SPAWNED_PER_SLOT: usize = 2;

/// A call decided (and its intent journaled) that has no task yet: what the task needs that
/// the tracker does not hold. Its target is read from the tracker when the task starts: a
/// calling instance is not looked at, so its row does not change meanwhile.
pub(super) struct Queued {
    i: usize,
    call: Call,
    force: bool,
    decided_at: Instant,
    synced: Option<Synced>,
}

/// The Stop/Terminate side of a run.
pub(super) struct Calls<C> {
    cloud: Arc<C>,
    pace: Arc<Pace>,
    slots: Arc<Semaphore>,
    recheck: Arc<Recheck<C>>,
    /// Cancelled when the run halts: calls still queued for a slot or the pace are not sent.
    stop_sending: CancellationToken,
    release_udisk: bool,
    /// How long the first of several Terminates that must look again waits for the others
    /// to join its look under a request pace: `min_poll`, clamped to 50 ms-1 s.
    gather: Duration,
    /// Calls decided, oldest first, waiting for a task (see [`SPAWNED_PER_SLOT`]).
    queue: VecDeque<Queued>,
    /// How many call tasks may be alive at once.
    max_spawned: usize,
}

impl<C: Cloud + 'static> Calls<C> {
    pub(super) fn new(
        cloud: Arc<C>,
        pace: Arc<Pace>,
        stop_sending: CancellationToken,
        settings: &Settings,
    ) -> Calls<C> {
        let recheck = Recheck::new(
            Arc::clone(&cloud),
            Arc::clone(&pace),
            settings.describe_region.clone(),
            settings.lock_codes.clone(),
        );
        Calls {
            cloud,
            pace,
            slots: Arc::new(Semaphore::new(settings.concurrency.max(1))),
            recheck: Arc::new(recheck),
            stop_sending,
            release_udisk: settings.release_udisk,
            gather: settings
                .min_poll()
                .clamp(Duration::from_millis(50), Duration::from_secs(1)),
            queue: VecDeque::new(),
            max_spawned: settings.concurrency.max(1) * SPAWNED_PER_SLOT,
        }
    }

    /// Start nothing new: calls and looks still queued are not sent.
    pub(super) fn stop_sending(&self) {
        self.stop_sending.cancel();
    }

    /// Describes sent by the shared last look.
    pub(super) fn recheck_describes(&self) -> u32 {
        self.recheck.describes()
    }

    /// The task that sends `call` for instance `i` once it has a slot and the pace allows,
    /// `answered_at` being when the look it was decided on was answered.
    fn task(
        &self,
        i: usize,
        call: Call,
        target: Target,
        force: bool,
        answered_at: Instant,
        synced: Option<Synced>,
    ) -> impl Future<Output = Event> + use<C> {
        let cloud = Arc::clone(&self.cloud);
        let pace = Arc::clone(&self.pace);
        let recheck = Arc::clone(&self.recheck);
        let slots = Arc::clone(&self.slots);
        let release = self.release_udisk;
        let stop_sending = self.stop_sending.clone();
        let paced_gather = self.gather;
        let gather = move |pace: &Pace| {
            if pace.current().is_some() {
                paced_gather
            } else {
                UNPACED_GATHER
            }
        };
        async move {
            // The intent is on disk before the call leaves (its sync runs off this thread).
            if let Some(synced) = synced
                && let Err(e) = synced.wait().await
            {
                return Event::Called {
                    idx: i,
                    call,
                    sent: Sent::Unjournaled(e.to_string()),
                };
            }
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
            if call == Call::Terminate && answered_at.elapsed() > FRESH {
                // Queued long enough for the world to move: look again right before sending,
                // so Terminate still follows a fresh `Stopped`. The look is shared with the
                // other Terminates in the same situation (one Describe for up to 100).
                // The look waits for the pace too: a halt meanwhile means the call is not sent.
                let looked = tokio::select! {
                    looked = Box::pin(recheck.still_stopped(&target.uhost_id, gather(&pace))) => looked,
                    () = stop_sending.cancelled() => return Event::Called { idx: i, call, sent: Sent::Halted },
                };
                if let Err(why) = looked {
                    return Event::Called {
                        idx: i,
                        call,
                        sent: Sent::Stale(why),
                    };
                }
            }
            let sent_at = Instant::now();
            // Boxed, so the request's own state (the HTTP exchange is kilobytes) is allocated
            // when it leaves, not held by every call still queued: a batch queues a call per
            // instance at once, and 10,000 queued tasks of that size were 15 MiB.
            let result = match call {
                Call::Stop => Box::pin(cloud.stop(&target, force)).await.map(|()| None),
                Call::Terminate => Box::pin(cloud.terminate(&target, release)).await.map(Some),
            };
            Event::Called {
                idx: i,
                call,
                sent: Sent::Answer(result, sent_at),
            }
        }
    }
}

impl<C: Cloud + 'static> Runner<C> {
    pub(super) fn send(&mut self, i: usize, call: Call, force: bool) {
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
        let decided_on = row.state.clone();
        let id = self.trackers[i].id.clone();
        // The intent line only with a journal: its copies of the target cost nothing then.
        let intent = self.ctl.journal.is_some().then(|| Entry::Call {
            id: id.clone(),
            call,
            region: row.region.clone(),
            zone: row.zone.clone(),
        });
        let synced = intent.and_then(|entry| self.journal_intent(&entry));
        if self.ends.halt == Some(Halt::JournalFailed) {
            // The intent could not be recorded: do not send what a resume would not know of.
            let phase = self.trackers[i].mem.phase;
            if let Some(outcome) = self.ends.halted(phase) {
                return self.finish(i, outcome);
            }
        }
        let now = Instant::now();
        self.trackers.start_call(i, decided_on, now);
        self.trackers.get_mut(i).acted = true;
        if let Some(row) = self.trackers[i].row.as_ref() {
            tracing::info!(id = %id, region = %row.region, zone = %row.zone, "{}", call.action());
        }
        self.ctl.observer.activity(&id, &Activity::Calling(call));
        self.calls.queue.push_back(Queued {
            i,
            call,
            force,
            decided_at: now,
            synced,
        });
        self.spawn_calls();
    }

    /// Give queued calls their tasks, oldest first, up to the bound. The slots and the pace
    /// still decide when each leaves; this only bounds how many wait for them.
    pub(super) fn spawn_calls(&mut self) {
        if self.ends.halt.is_some() {
            return; // the main loop drains the queue (see `drain_calls`)
        }
        while self.tasks.calls() < self.calls.max_spawned {
            let Some(q) = self.calls.queue.pop_front() else { return };
            if !self.trackers.is_calling(q.i) {
                continue; // ended while queued (a halt drains the queue first; see `drain_calls`)
            }
            let Some(row) = self.trackers[q.i].row.as_ref() else {
                // Unreachable: `send` queues only calls decided on a present row.
                self.fail(q.i, "internal: no row to act on".to_owned(), None);
                continue;
            };
            let target = row.target(&self.trackers[q.i].id);
            let task = self.calls.task(q.i, q.call, target, q.force, q.decided_at, q.synced);
            self.tasks.spawn(vec![q.i], task);
        }
    }

    /// A halt: every call still without a task never leaves, as if its task had found the
    /// run halting.
    pub(super) fn drain_calls(&mut self) {
        while let Some(q) = self.calls.queue.pop_front() {
            self.on_called(q.i, q.call, Sent::Halted);
        }
    }

    /// A call task came back: the call was answered, or never left.
    pub(super) fn on_called(&mut self, i: usize, call: Call, sent: Sent) {
        let now = Instant::now();
        // The wait for a slot and the pace is the tool's, not the instance's: it does not
        // count against the instance timeout (see `Runner::limit`).
        let left = match &sent {
            Sent::Answer(_, sent_at) => *sent_at,
            Sent::Halted | Sent::Stale(_) | Sent::Unjournaled(_) => now,
        };
        let Some(decided_on) = self.trackers.end_call(i, left) else {
            return; // ended meanwhile (a lost task is failed, not answered)
        };
        match sent {
            Sent::Answer(result, sent_at) => {
                self.trackers.get_mut(i).calls += 1;
                self.ends.count(call.action());
                self.on_answer(i, call, decided_on, result, sent_at);
            }
            Sent::Halted | Sent::Stale(_) | Sent::Unjournaled(_) => {
                let error = match sent {
                    Sent::Stale(why) => format!("not sent: {why}"),
                    Sent::Unjournaled(why) => {
                        self.journal_error(&why);
                        format!("not sent: {why}")
                    }
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
                self.after_answer(i, now, false);
            }
        }
    }

    /// The answer to a call that left at `sent_at`: tell the pace, journal the effect,
    /// update the instance's memory, then go on by the answer's class.
    fn on_answer(
        &mut self,
        i: usize,
        call: Call,
        decided_on: State,
        result: Result<Option<TerminateAck>, ApiError>,
        sent_at: Instant,
    ) {
        let now = Instant::now();
        let class = result.as_ref().err().map(|e| classify(e, &self.settings.lock_codes));
        if class == Some(RetryClass::Throttled) {
            self.pace.throttled(sent_at);
            self.ends.throttled += 1;
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
        let t = self.trackers.get_mut(i);
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
                t.phase_since = now;
                let gap = self.settings.min_poll();
                return self.after_answer(i, now + gap, false);
            }
            Err(e) => e,
        };
        if self.ends.halt.is_some() && effect == Effect::NotApplied {
            // Halting: no retry; the instance ends interrupted (or timed out) where it stands.
            return self.after_answer(i, now, false);
        }
        self.on_error(i, &id, e, class.unwrap_or(RetryClass::Fatal), decided_on);
    }

    /// A call that was not accepted, by class: when to try again, or why to give up.
    fn on_error(&mut self, i: usize, id: &str, e: ApiError, class: RetryClass, decided_on: State) {
        let now = Instant::now();
        let jitter: f64 = self.rng.random();
        let t = self.trackers.get_mut(i);
        match class {
            RetryClass::Locked => {
                let episode = Episode::refused(&mut t.lock_backoff, now);
                match Policy::lock(self.settings.lock_wait).next(episode, now, jitter) {
                    Next::Retry(d) => {
                        tracing::info!(id = %id, "operation lock held; looking again in {}", humantime::format_duration(round(d)));
                        self.ctl.observer.activity(id, &Activity::Locked { retry_in: d });
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
                self.ctl.observer.activity(id, &activity);
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
                        self.ctl.observer.activity(id, &activity);
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
            // `Detaching` is the disk delete's class; no instance call is ever given it.
            RetryClass::Fatal | RetryClass::Detaching => {
                let (mem, step) = after_refusal(t.mem);
                t.mem = mem;
                match step {
                    AfterRefusal::LookAgain => {
                        // A refusal (e.g. "state Running does not allow Terminate") may only
                        // mean the instance moved between our look and the call, say someone
                        // restarted it: look once more, and fail only if nothing changed.
                        tracing::warn!(id = %id, "{e}; looking again before giving up");
                        let refused = Refused { error: e, decided_on };
                        self.after_refusal(i, refused, now);
                    }
                    AfterRefusal::Fail => {
                        tracing::error!(id = %id, "{e}");
                        self.fail(i, e.to_string(), e.request_id());
                    }
                }
            }
        }
    }
}
