//! How instances end: scheduling after an answer, halting, failing, finishing, and the report.
//!
//! [`Ends`] owns what the run counts towards its report and why it halted (if it did); an
//! instance's outcome lives on its tracker (`tracker::Status::Done`), set once.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::super::journal::Entry;
use super::super::machine::Phase;
use super::super::outcome::{InstanceReport, Outcome, Report};
use super::tracker::Refused;
use super::{Halt, Runner};
use crate::api::Cloud;

/// Why the run halted, and what it counted.
#[derive(Debug, Default)]
pub(super) struct Ends {
    pub halt: Option<Halt>,
    journal_error: Option<String>,
    /// API calls sent, by action (looks a halt kept from leaving are not counted).
    api_calls: BTreeMap<String, u32>,
    /// Answers that were throttled.
    pub throttled: u32,
}

impl Ends {
    /// Halt the run (the first reason wins).
    pub(super) fn halt(&mut self, why: Halt) {
        self.halt.get_or_insert(why);
    }

    /// A journal write failed: halt, and say why in every outcome the halt gives.
    pub(super) fn journal_failed(&mut self, error: String) {
        self.journal_error.get_or_insert(error);
        self.halt(Halt::JournalFailed);
    }

    pub(super) fn count(&mut self, action: &str) {
        *self.api_calls.entry(action.to_owned()).or_default() += 1;
    }

    /// The outcome of an unfinished instance in `phase` when the run is halting.
    pub(super) fn halted(&self, phase: Phase) -> Option<Outcome> {
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
}

impl<C: Cloud + 'static> Runner<C> {
    /// After an answer: observe again at `due` (`parked`: not earlier), unless the run is halting.
    ///
    /// A retry planned past the instance timeout is brought forward to just before it, so the
    /// budget the user gave ends with a last attempt rather than with a wait. "Just before"
    /// leaves a second (or `min_poll`, if longer) for the look and the call: a look answered
    /// after the limit starts no call (see `observe`).
    pub(super) fn after_answer(&mut self, i: usize, due: Instant, parked: bool) {
        let limit = self.trackers.limit(i);
        let margin = self.settings.min_poll().max(Duration::from_secs(1));
        let last_chance = limit.checked_sub(margin).unwrap_or(limit);
        // Only once: an attempt already at (or past) the last chance waits out the timeout.
        let due = if due > last_chance && last_chance > Instant::now() {
            last_chance
        } else {
            due
        };
        let phase = self.trackers[i].mem.phase;
        match self.ends.halted(phase) {
            Some(outcome) => self.finish(i, outcome),
            None if parked => self.park(i, due),
            None => self.schedule(i, due),
        }
    }

    /// After a refused call: look once more now, unless the run is halting.
    pub(super) fn after_refusal(&mut self, i: usize, refused: Refused, now: Instant) {
        let phase = self.trackers[i].mem.phase;
        match self.ends.halted(phase) {
            Some(outcome) => self.finish(i, outcome),
            None => self.trackers.refused(i, refused, now, now),
        }
    }

    /// End an instance as failed where it stands, with the error and the API's request id.
    pub(super) fn fail(&mut self, i: usize, error: String, request_id: Option<&str>) {
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

    /// Give instance `i` its outcome (once; an instance already done keeps its own).
    pub(super) fn finish(&mut self, i: usize, outcome: Outcome) {
        if self.trackers[i].is_done() {
            return;
        }
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
        self.trackers.finish(i, outcome, Instant::now());
    }

    /// The report, built once at the end.
    pub(super) fn report(self) -> Report {
        let release_udisk = self.settings.release_udisk;
        let started = self.started;
        let end = Instant::now();
        let mut api_calls = self.ends.api_calls;
        let looks = self.looks.sent() + self.calls.recheck_describes();
        if looks > 0 {
            *api_calls.entry("DescribeCompShareInstance".to_owned()).or_default() += looks;
        }
        let pace = self.pace.summary();
        let resume = self.ctl.resume.unwrap_or_default();
        let before = &resume.calls;
        let instances = self
            .trackers
            .into_vec()
            .into_iter()
            .map(|t| {
                let (outcome, at) = match t.outcome() {
                    Some((o, at)) => (o.clone(), at),
                    None => (Outcome::Interrupted { phase: t.mem.phase }, end),
                };
                let row = t.row.unwrap_or_default();
                let calls_before_resume = before.get(&t.id).copied().unwrap_or_default();
                InstanceReport {
                    kind: crate::workflow::outcome::TargetKind::Instance,
                    uhost_id: t.id,
                    name: row.name,
                    region: row.region,
                    zone: row.zone,
                    last_state: row.state.as_str().to_owned(),
                    outcome,
                    seconds: at.duration_since(started).as_secs_f64(),
                    calls: t.calls,
                    calls_before_resume,
                    release_udisk,
                    size_gb: None,
                }
            })
            .collect();
        let mut report = Report::new(
            instances,
            end.duration_since(started).as_secs_f64(),
            api_calls,
            self.ends.throttled,
        );
        report.summary.pace = pace;
        report.summary.calls_before_resume = resume.calls_by_action;
        report
    }
}
