//! How instances end: scheduling after an answer, halting, failing, finishing, and the report.

use super::{Cloud, Duration, Entry, Halt, InstanceReport, Instant, Outcome, Phase, Report, Runner, Status};

impl<C: Cloud + 'static> Runner<C> {
    /// After an answer: observe again at `due` (`parked`: not earlier), unless the run is halting.
    ///
    /// A retry planned past the instance timeout is brought forward to just before it, so the
    /// budget the user gave ends with a last attempt rather than with a wait. "Just before"
    /// leaves a second (or `min_poll`, if longer) for the look and the call: a look answered
    /// after the limit starts no call (see `observe`).
    pub(super) fn after_answer(&mut self, i: usize, due: Instant, parked: bool) {
        let limit = self.limit(i);
        let margin = self.settings.min_poll().max(Duration::from_secs(1));
        let last_chance = limit.checked_sub(margin).unwrap_or(limit);
        // Only once: an attempt already at (or past) the last chance waits out the timeout.
        let due = if due > last_chance && last_chance > Instant::now() {
            last_chance
        } else {
            due
        };
        let phase = self.trackers[i].mem.phase;
        match self.halted(phase) {
            Some(outcome) => self.finish(i, outcome),
            None if parked => self.park(i, due),
            None => self.schedule(i, due),
        }
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

    pub(super) fn finish(&mut self, i: usize, outcome: Outcome) {
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

    pub(super) fn report(self) -> Report {
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
