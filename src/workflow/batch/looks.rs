//! Looking at instances: batched Describes (one per tick for up to 100 due instances), their
//! answers, the absence rule, and the decision each fresh look leads to.
//!
//! [`Looks`] owns what the looks share: the Describe task (paced, dropped by a halt) and the
//! run's evidence of how consistent the gateway's answers are. The decisions themselves are
//! the machine's (`machine::decide`, `machine::recheck`); this file feeds them fresh looks.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rand::Rng;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::super::absence::{self, Evidence, Verdict};
use super::super::journal::Entry;
use super::super::machine::{Call, Decision, Observation, Phase, Recheck, decide, recheck};
use super::super::outcome::Outcome;
use super::super::pace::Pace;
use super::super::retry::{Episode, Next, Policy};
use super::tracker::Seen;
use super::{Activity, Event, Runner, round, throttle_gap};
use crate::api::look::LookRow;
use crate::api::{ApiError, Cloud, DESCRIBE_MAX, DescribeQuery, Looked, RetryClass, State, classify};

/// The Describe side of a run.
pub(super) struct Looks<C> {
    cloud: Arc<C>,
    pace: Arc<Pace>,
    /// Cancelled when the run halts: looks still waiting for the pace are then not sent.
    stop_sending: CancellationToken,
    /// What the run has seen of the gateway's consistency (see [`absence`]).
    pub evidence: Evidence,
    /// Describes sent (past the pace; a look a halt kept waiting is not one).
    sent: Arc<AtomicU32>,
    /// Describes in flight at once (see [`looks_in_flight`]).
    slots: Arc<Semaphore>,
}

/// Describes in flight at once: a quarter of `--concurrency` (16 by default), at least 4.
/// Each carries up to 100 instances, so 16 cover 1,600 instances a round trip; without a
/// bound a tick of 10,000 due instances sent 100 at once, each answer a 200 KiB page held
/// in a connection's buffer (see `api::Client`), for a server that answers them in turn.
pub(super) fn looks_in_flight(concurrency: usize) -> usize {
    (concurrency / 4).max(4)
}

impl<C: Cloud + 'static> Looks<C> {
    pub(super) fn new(cloud: Arc<C>, pace: Arc<Pace>, stop_sending: CancellationToken, in_flight: usize) -> Looks<C> {
        Looks {
            cloud,
            pace,
            stop_sending,
            evidence: Evidence::default(),
            sent: Arc::new(AtomicU32::new(0)),
            slots: Arc::new(Semaphore::new(in_flight)),
        }
    }

    /// One ID-filtered Describe for `idxs` (up to 100), as a task to spawn.
    fn task(&self, idxs: Vec<usize>, ids: Vec<String>, region: Option<String>) -> impl Future<Output = Event> + use<C> {
        let cloud = Arc::clone(&self.cloud);
        let pace = Arc::clone(&self.pace);
        let stop_sending = self.stop_sending.clone();
        let sent = Arc::clone(&self.sent);
        let slots = Arc::clone(&self.slots);
        async move {
            // A look still waiting for a slot or the pace when the run halts is not sent: the
            // halt has ended its instances, and a throttled pace (half a request a second at
            // worst) could hold the run long past its deadline for answers nobody reads.
            let ready = async {
                let slot = slots.acquire_owned().await;
                pace.ready().await;
                slot
            };
            let slot = tokio::select! {
                slot = ready => slot.ok(),
                () = stop_sending.cancelled() => return Event::Unsent { idxs },
            };
            let sent_at = Instant::now();
            sent.fetch_add(1, Ordering::Relaxed);
            let limit = u32::try_from(ids.len()).unwrap_or(100);
            let query = DescribeQuery {
                region,
                ids,
                limit,
                ..DescribeQuery::default()
            };
            let result = cloud.look(query).await;
            // The slot goes with the answer: it is held until the driver has read it, so the
            // bodies waiting to be read are bounded by the slots too.
            Event::Described {
                idxs,
                sent_at,
                result,
                slot,
            }
        }
    }

    /// Describes sent so far.
    pub(super) fn sent(&self) -> u32 {
        self.sent.load(Ordering::Relaxed)
    }
}

impl<C: Cloud + 'static> Runner<C> {
    /// Start Describe calls for every instance that is due, in chunks of 100.
    pub(super) fn start_polls(&mut self, now: Instant) {
        // Instances due within half a `min_poll` ride in the same Describe; under a request
        // pace, those due before the next request could leave anyway, too (at one request a
        // second, one Describe then carries what would have been several).
        let spacing = self.pace.current().map_or(Duration::ZERO, |rate| {
            Duration::from_secs_f64(1.0 / rate.max(0.1)).min(self.settings.poll_interval)
        });
        let horizon = now + (self.settings.min_poll() / 2).max(spacing);
        let idxs = self.trackers.due_looks(now, horizon);
        if idxs.is_empty() {
            return;
        }
        // With `--region`, an instance whose region we have not seen (a named ID missing from
        // every answer so far) is looked for everywhere: its absence from one region's answer
        // would prove nothing.
        let scope = self.settings.describe_region.clone();
        let (scoped, everywhere): (Vec<usize>, Vec<usize>) = idxs
            .into_iter()
            .partition(|&i| scope.is_none() || self.trackers[i].row.as_ref().is_some_and(|r| !r.region.is_empty()));
        for chunk in scoped.chunks(DESCRIBE_MAX) {
            self.describe(chunk.to_vec(), scope.clone(), now);
        }
        for chunk in everywhere.chunks(DESCRIBE_MAX) {
            self.describe(chunk.to_vec(), None, now);
        }
    }

    /// One ID-filtered Describe for up to 100 instances.
    fn describe(&mut self, idxs: Vec<usize>, region: Option<String>, now: Instant) {
        let ids: Vec<String> = idxs.iter().map(|&i| self.trackers[i].id.clone()).collect();
        for &i in &idxs {
            self.trackers.start_look(i, now);
        }
        let task = self.looks.task(idxs.clone(), ids, region);
        self.tasks.spawn_look(idxs, task);
    }

    /// A look the halt kept from leaving: its instances are (or will be) ended by the halt.
    pub(super) fn on_unsent(&mut self, idxs: &[usize]) {
        let now = Instant::now();
        for &i in idxs {
            self.trackers.end_look(i, now);
        }
    }

    pub(super) fn on_described(&mut self, idxs: &[usize], sent_at: Instant, result: Result<Looked, ApiError>) {
        let now = Instant::now();
        // The fresh-after mark of each instance that was still looking (a halt may have ended
        // some meanwhile: their answer is not read).
        let looking: Vec<(usize, Instant)> = idxs
            .iter()
            .filter_map(|&i| self.trackers.end_look(i, sent_at).map(|fresh_after| (i, fresh_after)))
            .collect();
        // Read here, not in the task: the rows borrow their strings from the answer, and
        // the engine copies only what changed.
        let answer = match result {
            Ok(answer) => answer,
            Err(e) => return self.on_describe_error(&looking, &e, now, sent_at),
        };
        let page = match answer.page() {
            Ok(page) => page,
            Err(e) => return self.on_describe_error(&looking, &e, now, sent_at),
        };
        let total = page
            .total_count
            .map(|t| usize::try_from(t.max(0)).unwrap_or(usize::MAX));
        let rows = page.uhost_set;
        self.pace.succeeded(sent_at);
        // An answer that matched more rows than it carries admits it left some out: absence
        // from it proves nothing (and says the gateway drops rows; see `absence`).
        let missing = total.map_or(0, |t| t.saturating_sub(rows.len()));
        if missing > 0 {
            self.looks.evidence.phantom += missing as u64;
            tracing::debug!(carried = rows.len(), total = ?total, "a Describe answer left rows out");
        }
        // Borrowed, not cloned: IDs in a batch are unique, so each row is read at most once.
        let by_id: HashMap<&str, &LookRow> = rows.iter().map(|r| (&*r.uhost_id, r)).collect();
        for (i, fresh_after) in looking {
            if sent_at < fresh_after {
                continue; // older than the instance's last change: does not count (due again now)
            }
            let row = by_id.get(self.trackers[i].id.as_str()).copied();
            self.trackers.get_mut(i).look_backoff = None;
            if row.is_none() && missing > 0 {
                // Not a look at all: ask again soon.
                let gap = self.settings.min_poll();
                self.schedule(i, now + gap);
                continue;
            }
            // The look is as old as the Describe's sending, not its processing.
            self.trackers.get_mut(i).seen_at = sent_at;
            self.observe(i, row, now);
        }
    }

    /// Count one look at instance `i` towards the absence rule; `true` if it is now
    /// confirmed gone (or was listed), `false` if it needs another look first (scheduled).
    pub(super) fn absence_confirmed(&mut self, i: usize, listed: bool, now: Instant) -> bool {
        let evidence = &mut self.looks.evidence;
        let t = self.trackers.get_mut(i);
        if listed {
            if t.absent.looks > 0 {
                // It was there all along: those answers lied.
                evidence.phantom += u64::from(t.absent.looks);
                tracing::debug!(id = %t.id, looks = t.absent.looks, "listed again after answers without it");
                t.absent.looks = 0;
            }
            evidence.present += 1;
            return true;
        }
        t.absent.looks += 1;
        if t.absent.looks == 1 {
            t.absent.since = t.seen_at;
        }
        let expected = t.mem.phase == Phase::TerminateSent;
        let span = t.seen_at.duration_since(t.absent.since);
        let timing = absence::Timing {
            min_poll: self.settings.min_poll(),
            poll_interval: self.settings.poll_interval,
        };
        match absence::judge(expected, t.absent.looks, span, *evidence, timing) {
            Verdict::Gone => true,
            Verdict::LookAgain(gap) => {
                tracing::debug!(id = %t.id, looks = t.absent.looks, "not listed; confirming it is gone");
                // Not parked: the next look may ride early in a Describe leaving anyway. One
                // that falls short of the rule's span costs a third look, which rides too;
                // held back to the span instead, they cost their own Describes under a request
                // pace, where Describes are what the limit counts (40 instead of 34 for the 60
                // queued Terminates of `queued_terminates_share_their_last_look`).
                self.schedule(i, now + gap);
                let activity = Activity::Waiting {
                    state: None,
                    what: "not listed; confirming it is gone",
                };
                self.ctl.observer.activity(&self.trackers[i].id, &activity);
                false
            }
        }
    }

    /// A Describe of the instances `looking` failed: each backs off on its own budget.
    fn on_describe_error(&mut self, looking: &[(usize, Instant)], e: &ApiError, now: Instant, sent_at: Instant) {
        let class = classify(e, &self.settings.lock_codes);
        if class == RetryClass::Throttled {
            self.pace.throttled(sent_at);
            self.ends.throttled += 1;
        } else {
            self.pace.succeeded(sent_at);
        }
        // Each instance has its own budget of failed looks (reset by a good one): a burst of
        // failures across many small Describes must not use up everyone's retries at once.
        let mut logged = false;
        for &(i, _) in looking {
            let next = if class == RetryClass::Fatal {
                Next::GiveUp { waited: Duration::ZERO }
            } else if class == RetryClass::Throttled {
                // Throttling says "slower", not "broken": the pace takes care of that, so look
                // again in 1-2 s without spending the instance's failure budget (a Describe
                // carries up to 100 instances; one throttled answer must not count against
                // each of them). The instance timeout still bounds the wait.
                Next::Retry(throttle_gap(&mut self.rng))
            } else {
                let episode = Episode::refused(&mut self.trackers.get_mut(i).look_backoff, now);
                Policy::transient(self.settings.poll_interval).next(episode, now, self.rng.random())
            };
            match next {
                Next::Retry(d) => {
                    if !logged {
                        tracing::warn!("{e}; looking again in {}", humantime::format_duration(round(d)));
                        logged = true;
                    }
                    // Parked: a backoff is not pulled forward by a free early look.
                    self.trackers.postpone(i, now + d);
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

    pub(super) fn observe(&mut self, i: usize, row: Option<&LookRow>, now: Instant) {
        // Absence is confirmed, never assumed: until then the instance is still watched.
        if !self.absence_confirmed(i, row.is_some(), now) {
            return;
        }
        if let (Some(r), Some(scope)) = (row, &self.settings.describe_region)
            && !r.home_region().is_empty()
            && r.home_region() != scope
        {
            // A named ID the selection could not see turned up in another region: the user's
            // scope says not to touch it, and reporting it gone would be a lie.
            let error = format!(
                "it is in {} ({}), outside --region {scope}: not touched",
                r.home_region(),
                r.zone
            );
            self.trackers.get_mut(i).row = Some(Seen::of(r));
            return self.fail(i, error, None);
        }
        let obs = match row {
            None => Observation::Absent,
            Some(r) => Observation::Present {
                state: r.state.clone(),
                spot: r.is_spot(),
            },
        };
        if let Some(refused) = self.trackers.take_refused(i)
            && recheck(&refused.decided_on, &obs) == Recheck::Refused
        {
            // The one more look after a refusal found the instance where the refused call
            // found it: the refusal stands.
            let error = refused.error;
            tracing::error!(id = %self.trackers[i].id, "{error}");
            return self.fail(i, error.to_string(), error.request_id());
        }
        let t = self.trackers.get_mut(i);
        // The guard runs before the first call of *this* run, even for an instance a crashed
        // run had already called: protections may have changed since.
        let first_call = !t.acted;
        if let Some(r) = row {
            Seen::update(&mut t.row, r);
        }
        let since = now.duration_since(t.last_answer);
        let before = t.mem.phase;
        let (mem, decision) = decide(t.mem, &obs, since, &self.rules);
        t.mem = mem;
        if matches!(decision, Decision::Wait(_)) || mem.phase != before {
            // An error budget belongs to one episode of errors: once the instance waits on
            // the platform or moves on, a later error starts a new one (a 503 on Stop must
            // not spend the budget of a Terminate minutes later).
            t.retry_backoff = None;
            t.lock_backoff = None;
        }
        let state = match &obs {
            Observation::Absent => None,
            Observation::Present { state, .. } => Some(state),
        };
        tracing::debug!(id = %t.id, state = state.map_or("absent", State::as_str), ?decision, "observed");
        // A decision is journaled when it changes, not on every look: a long wait must not
        // grow the journal past what `--resume` reads. (Compared in place: most looks change
        // nothing, and cost no copies.)
        let changed = t
            .last_decision
            .as_deref()
            .is_none_or(|(s, p, d)| s.as_deref() != state.map(State::as_str) || *p != before || *d != decision);
        if changed && self.ctl.journal.is_some() {
            let state = state.map(|s| s.as_str().to_owned());
            t.last_decision = Some(Box::new((state.clone(), before, decision.clone())));
            let entry = Entry::Decision {
                id: t.id.clone(),
                state,
                phase: before,
                decision: (&decision).into(),
            };
            self.journal(&entry);
        }
        let state = state.cloned();
        match decision {
            Decision::Stop { .. } | Decision::Terminate if let Some(outcome) = self.ends.halted(mem.phase) => {
                // Halting starts nothing new; the outcome says why (an interrupt, the
                // deadline, a failed journal write).
                self.finish(i, outcome);
            }
            // A look answered after the instance's time ran out (it was on its way at the
            // limit) starts no new call; news that it is gone is still taken.
            Decision::Stop { .. } | Decision::Terminate if now >= self.trackers.limit(i) => {
                let phase = self.trackers[i].mem.phase;
                self.finish(i, Outcome::TimedOut { phase });
            }
            Decision::Stop { force } => {
                if first_call && let Some(reason) = self.guard_refuses(row) {
                    return self.finish(i, Outcome::Skipped { reason });
                }
                self.send(i, Call::Stop, force);
            }
            Decision::Terminate => {
                if first_call && let Some(reason) = self.guard_refuses(row) {
                    return self.finish(i, Outcome::Skipped { reason });
                }
                self.send(i, Call::Terminate, false);
            }
            Decision::Wait(what) => {
                let next = self.next_look(i, now, mem.phase == before);
                self.schedule(i, next);
                let activity = Activity::Waiting { state, what };
                self.ctl.observer.activity(&self.trackers[i].id, &activity);
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

    /// The guard's verdict on the fresh row a first call was decided on.
    fn guard_refuses(&self, row: Option<&LookRow>) -> Option<String> {
        let guard = self.ctl.guard.as_ref()?;
        // Built for an instance's first call only: the guard reads a row as the selection did.
        guard(&row?.to_instance())
    }

    /// When to look at `i` again after a look at `now` that found nothing to do (`same_phase`:
    /// and nothing new). A look taken early, because it rode in a Describe that was leaving
    /// anyway, does not move the schedule earlier: each early look would otherwise pull every
    /// later one forward (at 10,000 instances, ticks every few milliseconds took each look up
    /// to half a `min_poll` early, and a third more looks were sent). One due within a gap of
    /// the look goes on from when it was planned; one that filled a chunk from further ahead
    /// keeps its planned look.
    fn next_look(&mut self, i: usize, now: Instant, same_phase: bool) -> Instant {
        let gap = self.poll_gap(now.duration_since(self.trackers[i].phase_since));
        let sent_at = self.trackers[i].seen_at;
        match self.trackers.due_at(i).filter(|_| same_phase) {
            Some(planned) if planned > sent_at && planned <= sent_at + gap => planned + gap,
            Some(planned) => (now + gap).max(planned),
            None => now + gap,
        }
    }

    /// A sixth of the time spent in the phase, between `min_poll` and `poll_interval`, ±10%.
    pub(super) fn poll_gap(&mut self, age: Duration) -> Duration {
        let base = (age / 6).clamp(self.settings.min_poll(), self.settings.poll_interval);
        base.mul_f64(self.rng.random_range(0.9..1.1))
    }

    /// Look at `i` again at `due`.
    pub(super) fn schedule(&mut self, i: usize, due: Instant) {
        self.trackers.schedule(i, due, false, Instant::now());
    }

    /// Like `schedule`, for a retry time that must be respected (see `tracker::Status::Due`).
    pub(super) fn park(&mut self, i: usize, due: Instant) {
        self.trackers.schedule(i, due, true, Instant::now());
    }
}
