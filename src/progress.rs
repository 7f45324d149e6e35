//! Progress bars for people: an overall bar (gone / failed / remaining, elapsed, ETA) and a
//! line per active instance with its phase and how long it has been in it. Drawn on stderr,
//! and only when stderr is a terminal (and not `--quiet`); otherwise every call is a no-op and
//! the logs carry the story.

use std::collections::HashMap;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::workflow::machine::Call;
use crate::workflow::{Activity, Observer, Outcome};

/// At most this many per-instance lines; the rest are summed up in the overall bar.
const MAX_LINES: usize = 8;

/// The shared bar area; logs are printed above it through [`crate::logging`].
pub fn area(visible: bool) -> MultiProgress {
    let target = if visible {
        ProgressDrawTarget::stderr_with_hz(8)
    } else {
        ProgressDrawTarget::hidden()
    };
    MultiProgress::with_draw_target(target)
}

/// The bars of one run.
pub struct Bars {
    multi: MultiProgress,
    overall: ProgressBar,
    lines: HashMap<String, ProgressBar>,
    total: usize,
    gone: usize,
    failed: usize,
}

impl Bars {
    pub fn new(multi: &MultiProgress, total: usize) -> Bars {
        let overall = multi.add(ProgressBar::new(total as u64));
        overall.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] [{bar:30}] {pos}/{len} gone · {msg} · ETA {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        if !multi.is_hidden() {
            overall.enable_steady_tick(Duration::from_millis(125));
        }
        let bars = Bars {
            multi: multi.clone(),
            overall,
            lines: HashMap::new(),
            total,
            gone: 0,
            failed: 0,
        };
        bars.refresh();
        bars
    }

    fn refresh(&self) {
        let remaining = self.total.saturating_sub(self.gone + self.failed);
        self.overall
            .set_message(format!("{} failed · {remaining} remaining", self.failed));
    }

    fn line(&mut self, id: &str) -> Option<&ProgressBar> {
        if !self.lines.contains_key(id) {
            if self.lines.len() >= MAX_LINES || self.multi.is_hidden() {
                return None;
            }
            let pb = self.multi.add(ProgressBar::new_spinner());
            pb.set_style(ProgressStyle::with_template("  {prefix:<22} {msg} {elapsed}").expect("valid template"));
            pb.set_prefix(id.to_owned());
            self.lines.insert(id.to_owned(), pb);
        }
        self.lines.get(id)
    }

    /// Clear the bars (before the final report is printed).
    pub fn finish(&self) {
        for pb in self.lines.values() {
            pb.finish_and_clear();
        }
        self.overall.finish_and_clear();
    }
}

/// How an activity reads on its line.
pub fn describe(activity: &Activity) -> String {
    match activity {
        Activity::Waiting { state: None, .. } => "waiting".to_owned(),
        Activity::Waiting { state: Some(state), .. } if state.as_str().is_empty() => "waiting".to_owned(),
        Activity::Waiting { state: Some(state), .. } => state.as_str().to_lowercase(),
        Activity::Calling(Call::Stop) => "sending stop".to_owned(),
        Activity::Calling(Call::Terminate) => "terminating".to_owned(),
        Activity::Locked { retry_in } => format!("locked, retry in {}s", retry_in.as_secs()),
        Activity::Backoff { retry_in, .. } => format!("backing off, retry in {}s", retry_in.as_secs()),
    }
}

impl Observer for Bars {
    fn activity(&mut self, id: &str, activity: &Activity) {
        // "stopping 12s" counts time in the phase; "locked, retry in 40s" already says when.
        let counts_time = matches!(activity, Activity::Waiting { .. } | Activity::Calling(_));
        if let Some(pb) = self.line(id) {
            // Only for a drawn line: hidden bars (`--quiet`, no terminal) and the instances
            // beyond the shown lines get an activity per look, and make no text of it.
            let text = describe(activity);
            // Reset the clock only when the text changes.
            if pb.message() != text {
                let template = if counts_time {
                    "  {prefix:<22} {msg} {elapsed}"
                } else {
                    "  {prefix:<22} {msg}"
                };
                pb.set_style(ProgressStyle::with_template(template).expect("valid template"));
                pb.set_message(text);
                pb.reset_elapsed();
            }
            pb.tick();
        }
    }

    fn finished(&mut self, id: &str, outcome: &Outcome) {
        if let Some(pb) = self.lines.remove(id) {
            pb.finish_and_clear();
            self.multi.remove(&pb);
        }
        if outcome.is_gone() || matches!(outcome, Outcome::Skipped { .. }) {
            self.gone += 1;
            self.overall.inc(1);
        } else {
            self.failed += 1;
        }
        self.refresh();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_labels() {
        let w = Activity::Waiting {
            state: Some(crate::api::State::Stopping),
            what: "",
        };
        assert_eq!(describe(&w), "stopping");
        assert_eq!(
            describe(&Activity::Locked {
                retry_in: Duration::from_secs(40)
            }),
            "locked, retry in 40s"
        );
        assert_eq!(describe(&Activity::Calling(Call::Terminate)), "terminating");
    }

    #[test]
    fn hidden_bars_count_without_drawing() {
        let multi = area(false);
        let mut bars = Bars::new(&multi, 3);
        bars.activity("a", &Activity::Calling(Call::Stop));
        bars.finished("a", &Outcome::AlreadyGone);
        bars.finished(
            "b",
            &Outcome::TimedOut {
                phase: crate::workflow::machine::Phase::StopSent,
            },
        );
        assert_eq!((bars.gone, bars.failed), (1, 1));
        assert!(bars.lines.is_empty());
    }
}
