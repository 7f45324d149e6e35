//! Per-instance records and the indexes over them.
//!
//! A [`Tracker`] is what the driver knows of one instance; its [`Status`] says what the
//! instance is doing, as an enum whose variants carry exactly the data that status needs, so
//! a combination the code must never produce (an outcome on an instance still being watched,
//! a pending refusal on one being called, a queue time on one that waits for nothing) cannot
//! be built. [`Trackers`] owns them all and is the only code that changes a status: it keeps
//! two ordered indexes over the instances waiting for a look (by when the look is due, and by
//! when the instance times out) in step with every change, so each tick costs in proportion
//! to the instances due in it, not to the batch.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use super::super::machine::{Decision, Memory, Phase};
use super::super::outcome::Outcome;
use super::super::retry::Episode;
use crate::api::{ApiError, DESCRIBE_MAX, State};

mod seen;
pub(super) use seen::Seen;

/// What an instance is doing.
#[derive(Debug)]
pub(super) enum Status {
    /// Waiting for a look at `at`. A `parked` instance (backing off from a lock, throttling
    /// or an error) is never looked at early by filling a Describe chunk: a look leads to a
    /// call, and its retry time is what keeps the lock budget honest.
    Due { at: Instant, parked: bool, watch: Watch },
    /// In a Describe since `since` (waiting for the pace, or on its way).
    /// `planned`: when its look was due; later than `since` for a look taken early (due
    /// within the tick's horizon, or filling a Describe's last chunk: see
    /// [`Trackers::due_looks`]).
    Looking {
        since: Instant,
        planned: Instant,
        watch: Watch,
    },
    /// A call decided on the state `decided_on`, queued (a slot, the pace) or on its way
    /// since `since`.
    Calling { decided_on: State, since: Instant },
    /// Finished, with its outcome, at `at`.
    Done { outcome: Outcome, at: Instant },
}

/// What an instance being watched (due or looking) carries from one look to the next.
#[derive(Debug)]
pub(super) struct Watch {
    /// Only a Describe sent at or after this counts: it is when the instance's last change
    /// (our call's answer) was known, and an older look would decide on a stale state.
    pub fresh_after: Instant,
    /// A refused call waiting for its one more look (see `machine::after_refusal`). Boxed:
    /// rare, and an `ApiError` inline made every instance's status 70 bytes larger.
    pub refused: Option<Box<Refused>>,
}

/// A call the API refused, and the state it had been decided on.
#[derive(Debug)]
pub(super) struct Refused {
    pub error: ApiError,
    pub decided_on: State,
}

/// Absent looks in a row, and when the first of them was sent (see `absence`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Absent {
    pub looks: u32,
    pub since: Instant,
}

/// What the driver knows of one instance.
#[derive(Debug)]
pub(super) struct Tracker {
    pub id: String,
    /// What the latest row Describe gave for it said (or the selection's).
    pub row: Option<Seen>,
    pub mem: Memory,
    /// Private: only [`Trackers`] changes it, keeping its indexes in step.
    status: Status,
    /// When our last call on it was answered (run start before any).
    pub last_answer: Instant,
    /// When it entered its current phase, for the adaptive poll gap.
    pub phase_since: Instant,
    /// Calls sent for it (including a resumed run's earlier ones).
    pub calls: u32,
    /// Lock refusals in a row (see `Policy::lock`).
    pub lock_backoff: Option<Episode>,
    /// Transient errors of calls in a row (see `Policy::transient`).
    pub retry_backoff: Option<Episode>,
    /// Failed Describes of this instance in a row.
    pub look_backoff: Option<Episode>,
    /// When the Describe behind the latest observation was sent.
    pub seen_at: Instant,
    /// What the accepted Terminate's answer said about the recycle bin.
    pub in_recycle: Option<String>,
    /// A call was sent (or queued) for it in this run: the guard ran. A resumed instance may
    /// have calls from before the crash, but its first call in this run is guarded all the same.
    pub acted: bool,
    pub absent: Absent,
    /// The last decision journaled for it (state seen, phase, decision).
    /// Boxed and kept only with a journal: 48 bytes per instance otherwise.
    pub last_decision: Option<Box<(Option<String>, Phase, Decision)>>,
    /// How long its calls and looks have waited in the tool's own queue (a slot, the pace):
    /// that time does not count against its `--instance-timeout` (see [`Trackers::limit`]).
    pub queued: Duration,
}

impl Tracker {
    pub(super) fn new(id: String, row: Option<Seen>, mem: Memory, calls: u32, now: Instant) -> Tracker {
        Tracker {
            id,
            row,
            mem,
            status: Status::Due {
                at: now,
                parked: false,
                watch: Watch {
                    fresh_after: now,
                    refused: None,
                },
            },
            last_answer: now,
            phase_since: now,
            calls,
            lock_backoff: None,
            retry_backoff: None,
            look_backoff: None,
            seen_at: now,
            in_recycle: None,
            acted: false,
            absent: Absent { looks: 0, since: now },
            last_decision: None,
            queued: Duration::ZERO,
        }
    }

    pub(super) fn is_done(&self) -> bool {
        matches!(self.status, Status::Done { .. })
    }

    /// Due or looking: watched, with no call in flight and no outcome yet.
    pub(super) fn is_watched(&self) -> bool {
        matches!(self.status, Status::Due { .. } | Status::Looking { .. })
    }

    /// Its outcome and when it came, once done.
    pub(super) fn outcome(&self) -> Option<(&Outcome, Instant)> {
        match &self.status {
            Status::Done { outcome, at } => Some((outcome, *at)),
            _ => None,
        }
    }
}

/// Every instance of a run, with the indexes the tick loop reads.
pub(super) struct Trackers {
    all: Vec<Tracker>,
    /// Due instances by the time of their next look.
    by_due: BTreeSet<(Instant, usize)>,
    /// Due instances by the time they time out.
    by_limit: BTreeSet<(Instant, usize)>,
    /// Instances not done yet.
    open: usize,
    /// Run start plus `--instance-timeout`: each instance's limit before its queue time.
    base_limit: Instant,
}

impl std::ops::Index<usize> for Trackers {
    type Output = Tracker;
    fn index(&self, i: usize) -> &Tracker {
        &self.all[i]
    }
}

impl Trackers {
    pub(super) fn new(all: Vec<Tracker>, base_limit: Instant) -> Trackers {
        let mut t = Trackers {
            open: 0,
            by_due: BTreeSet::new(),
            by_limit: BTreeSet::new(),
            base_limit,
            all: Vec::with_capacity(all.len()),
        };
        for tracker in all {
            let i = t.all.len();
            t.all.push(tracker);
            t.open += 1;
            t.index(i);
        }
        t
    }

    /// Change anything but the status.
    pub(super) fn get_mut(&mut self, i: usize) -> &mut Tracker {
        &mut self.all[i]
    }

    /// Every instance has an outcome.
    pub(super) fn all_done(&self) -> bool {
        self.open == 0
    }

    pub(super) fn into_vec(self) -> Vec<Tracker> {
        self.all
    }

    /// When instance `i` times out: `--instance-timeout` after the run started, plus the time
    /// its calls and looks waited in the tool's own queue (a free slot, the request pace).
    /// Every instance is watched from the start, so without a queue this is the same limit
    /// for all; with one (a large batch under a low rate limit) the last in line still get
    /// the whole timeout for the platform's part of the work.
    pub(super) fn limit(&self, i: usize) -> Instant {
        self.base_limit + self.all[i].queued
    }

    /// The one place a status changes; the indexes follow.
    fn set(&mut self, i: usize, status: Status) -> Status {
        self.unindex(i);
        let old = std::mem::replace(&mut self.all[i].status, status);
        match (matches!(old, Status::Done { .. }), self.all[i].is_done()) {
            (false, true) => self.open -= 1,
            (true, false) => self.open += 1,
            _ => {}
        }
        self.index(i);
        old
    }

    fn index(&mut self, i: usize) {
        if let Status::Due { at, .. } = self.all[i].status {
            self.by_due.insert((at, i));
            self.by_limit.insert((self.limit(i), i));
        }
    }

    fn unindex(&mut self, i: usize) {
        if let Status::Due { at, .. } = self.all[i].status {
            self.by_due.remove(&(at, i));
            self.by_limit.remove(&(self.limit(i), i));
        }
    }

    /// The watch an instance carries on: its pending refusal while it is watched, none
    /// after a call or an outcome.
    fn take_watch(&mut self, i: usize, fresh_after: Instant) -> Watch {
        Watch {
            fresh_after,
            refused: self.take_refused(i),
        }
    }

    /// The watch of a watched instance, unchanged (`fresh_after` for one that is not).
    fn keep_watch(&mut self, i: usize, fresh_after: Instant) -> Watch {
        let fresh_after = match &self.all[i].status {
            Status::Due { watch, .. } | Status::Looking { watch, .. } => watch.fresh_after,
            _ => fresh_after,
        };
        self.take_watch(i, fresh_after)
    }

    /// Look at `i` at `at` (`parked`: not earlier); only a look sent from now on counts.
    pub(super) fn schedule(&mut self, i: usize, at: Instant, parked: bool, now: Instant) {
        let watch = self.take_watch(i, now);
        self.set(i, Status::Due { at, parked, watch });
    }

    /// Move `i`'s next look to `at` and park it there, keeping what it waits for.
    pub(super) fn postpone(&mut self, i: usize, at: Instant) {
        if self.all[i].is_watched() {
            let watch = self.keep_watch(i, at);
            self.set(
                i,
                Status::Due {
                    at,
                    parked: true,
                    watch,
                },
            );
        }
    }

    /// A call on `i` was refused: look once more at `at` before judging it.
    pub(super) fn refused(&mut self, i: usize, refused: Refused, at: Instant, now: Instant) {
        let watch = Watch {
            fresh_after: now,
            refused: Some(Box::new(refused)),
        };
        self.set(
            i,
            Status::Due {
                at,
                parked: false,
                watch,
            },
        );
    }

    /// The pending refusal of `i`, taken for judging on a fresh look.
    pub(super) fn take_refused(&mut self, i: usize) -> Option<Box<Refused>> {
        match &mut self.all[i].status {
            Status::Due { watch, .. } | Status::Looking { watch, .. } => watch.refused.take(),
            _ => None,
        }
    }

    /// `i` goes into a Describe now.
    pub(super) fn start_look(&mut self, i: usize, now: Instant) {
        let planned = match self.all[i].status {
            Status::Due { at, .. } => at,
            _ => now,
        };
        let watch = self.keep_watch(i, now);
        self.set(
            i,
            Status::Looking {
                since: now,
                planned,
                watch,
            },
        );
    }

    /// `i`'s look is over: it left the tool's queue at `left`. Until the answer is read it is
    /// due again at once, or when its look was planned if it was taken early; returns when a counting look must have been sent (`None` if the
    /// instance was not looking, e.g. it was ended by a halt meanwhile).
    pub(super) fn end_look(&mut self, i: usize, left: Instant) -> Option<Instant> {
        let Status::Looking { since, planned, watch } = &self.all[i].status else {
            return None;
        };
        let (since, planned, fresh_after) = (*since, *planned, watch.fresh_after);
        self.all[i].queued += left.saturating_duration_since(since);
        let watch = self.keep_watch(i, left);
        self.set(
            i,
            Status::Due {
                // Due again at once, or when it was planned if it was looked at early.
                at: left.max(planned),
                parked: false,
                watch,
            },
        );
        Some(fresh_after)
    }

    /// When `i`'s next look is due, if it waits for one.
    pub(super) fn due_at(&self, i: usize) -> Option<Instant> {
        match self.all[i].status {
            Status::Due { at, .. } => Some(at),
            _ => None,
        }
    }

    /// Whether a call is decided for `i` and not yet answered.
    pub(super) fn is_calling(&self, i: usize) -> bool {
        matches!(self.all[i].status, Status::Calling { .. })
    }

    /// `i` gets a call, decided on `decided_on`, queued from `now`.
    pub(super) fn start_call(&mut self, i: usize, decided_on: State, now: Instant) {
        self.set(i, Status::Calling { decided_on, since: now });
    }

    /// `i`'s call is over: it left the tool's queue at `left`. Returns the state it was
    /// decided on (`None` if `i` was not calling). The caller gives it its next status.
    pub(super) fn end_call(&mut self, i: usize, left: Instant) -> Option<State> {
        let Status::Calling { since, .. } = &self.all[i].status else {
            return None;
        };
        let since = *since;
        self.all[i].queued += left.saturating_duration_since(since);
        let old = self.set(
            i,
            Status::Due {
                at: left,
                parked: false,
                watch: Watch {
                    fresh_after: left,
                    refused: None,
                },
            },
        );
        match old {
            Status::Calling { decided_on, .. } => Some(decided_on),
            _ => None,
        }
    }

    /// `i` is done (once: a later outcome is ignored).
    pub(super) fn finish(&mut self, i: usize, outcome: Outcome, now: Instant) -> bool {
        if self.all[i].is_done() {
            return false;
        }
        self.set(i, Status::Done { outcome, at: now });
        true
    }

    /// The instances to look at now: every unparked one due by `horizon` and every parked
    /// one due by `now`, soonest first; the last chunk of 100 filled with the unparked ones
    /// due soonest after them (a free look: the Describe goes out anyway). Empty if none is
    /// due. Cost: the instances taken, plus parked ones due within the horizon.
    pub(super) fn due_looks(&self, now: Instant, horizon: Instant) -> Vec<usize> {
        let mut due = Vec::new();
        let mut entries = self.by_due.iter();
        let mut next = None;
        for &(at, i) in entries.by_ref() {
            if at > horizon {
                next = Some((at, i));
                break;
            }
            let parked = matches!(self.all[i].status, Status::Due { parked: true, .. });
            if !parked || at <= now {
                due.push(i);
            }
        }
        if due.is_empty() {
            return due;
        }
        let room = (DESCRIBE_MAX - due.len() % DESCRIBE_MAX) % DESCRIBE_MAX;
        let later = next.into_iter().chain(entries.copied());
        let free = later
            .filter(|&(_, i)| matches!(self.all[i].status, Status::Due { parked: false, .. }))
            .take(room)
            .map(|(_, i)| i);
        due.extend(free);
        due
    }

    /// Due instances whose time ran out by `now`.
    pub(super) fn timed_out(&self, now: Instant) -> Vec<usize> {
        self.by_limit
            .iter()
            .take_while(|&&(at, _)| at <= now)
            .map(|&(_, i)| i)
            .collect()
    }

    /// The next instant something is due: a look or an instance's time limit.
    pub(super) fn next_due(&self) -> Option<Instant> {
        let look = self.by_due.first().map(|&(at, _)| at);
        let limit = self.by_limit.first().map(|&(at, _)| at);
        look.into_iter().chain(limit).min()
    }

    /// Watched instances (due or looking): what a halt ends. Costs the whole batch; only
    /// read while halting.
    pub(super) fn watched(&self) -> Vec<usize> {
        (0..self.all.len()).filter(|&i| self.all[i].is_watched()).collect()
    }
}

#[cfg(test)]
mod tests;
