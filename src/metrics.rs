//! Metrics for cron: `run --metrics-file PATH` writes the last run's figures in the
//! Prometheus text format at the end of every run, for `node_exporter`'s textfile collector.
//!
//! The file is replaced atomically (a temporary file in the same directory, synced, then
//! renamed over the old one), so the collector never reads half a file. The time of the last
//! successful run is carried over from the previous file, so "no successful run in 26 h" can
//! be alerted on even while every run fails.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use crate::schedule::Decision;
use crate::workflow::Report;

/// The metric name prefix.
const PREFIX: &str = "compshare_teardown";

/// What one run did, as far as it got.
#[derive(Debug, Clone, Default)]
pub struct RunMetrics {
    /// Unix seconds.
    pub started: f64,
    pub ended: f64,
    pub exit_code: u8,
    /// The report, when the run got that far (exit 2, 3: none).
    pub report: Option<Report>,
    /// What a `watch` run decided, when it got that far.
    pub watch: Option<WatchCounts>,
}

/// A `watch` run's counts for the metrics file: instances, and disks when it watched them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchCounts {
    pub instances: Decided,
    pub disks: Option<Decided>,
    pub notices_failed: usize,
}

/// How many of one kind got each decision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Decided {
    pub marked: usize,
    pub unmarked: usize,
    /// Marks whose grace has ended (acted on, or waiting for fresh data or acting hours).
    pub due: usize,
    pub waiting: usize,
    pub kept: usize,
    pub acted: usize,
}

impl Decided {
    fn of<'a>(at: i64, decisions: impl Iterator<Item = (&'a Decision, bool)>) -> Decided {
        let mut d = Decided::default();
        for (decision, outcome) in decisions {
            match decision {
                Decision::Mark { .. } => d.marked += 1,
                Decision::Unmark { .. } => d.unmarked += 1,
                Decision::Kept { .. } => d.kept += 1,
                Decision::Wait { due_at, .. } => {
                    d.waiting += 1;
                    d.due += usize::from(*due_at <= at);
                }
                Decision::Act { new_mark } => {
                    d.marked += usize::from(*new_mark);
                    d.due += 1;
                }
                Decision::Nothing | Decision::Finished => {}
            }
            d.acted += usize::from(outcome);
        }
        d
    }
}

impl WatchCounts {
    pub fn of(r: &crate::schedule::JobReport) -> WatchCounts {
        let instances = r.entries.iter().map(|e| (&e.decision, e.outcome.is_some()));
        let disks = r.disks.iter().map(|e| (&e.decision, e.outcome.is_some()));
        WatchCounts {
            instances: Decided::of(r.at, instances),
            disks: (!r.disks.is_empty() || r.disk_deletion.is_some()).then(|| Decided::of(r.at, disks)),
            notices_failed: r.notices_failed,
        }
    }
}

/// The text of the metrics file. `last_success` is the previous file's value, if any.
pub fn render(m: &RunMetrics, last_success: Option<f64>) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP {PREFIX}_{name} {help}");
        let _ = writeln!(out, "# TYPE {PREFIX}_{name} gauge");
        for (labels, v) in samples {
            let _ = writeln!(out, "{PREFIX}_{name}{labels} {v}");
        }
    };
    let one = |v: f64| vec![(String::new(), v)];
    gauge(
        "last_run_start_timestamp_seconds",
        "When the last run started (Unix time).",
        &one(m.started),
    );
    gauge(
        "last_run_end_timestamp_seconds",
        "When the last run ended (Unix time).",
        &one(m.ended),
    );
    gauge(
        "last_run_exit_code",
        "Exit code of the last run (0 all gone, 1 failures, 2 nothing changed, 3 locked, 130 interrupted).",
        &one(f64::from(m.exit_code)),
    );
    gauge(
        "last_run_duration_seconds",
        "Wall-clock duration of the last run.",
        &one((m.ended - m.started).max(0.0)),
    );
    let success = if m.exit_code == 0 { Some(m.ended) } else { last_success };
    if let Some(t) = success {
        gauge(
            "last_success_timestamp_seconds",
            "When a run last ended with exit code 0 (Unix time).",
            &one(t),
        );
    }
    let summary = m.report.as_ref().map(|r| r.summary.clone()).unwrap_or_default();
    let s = &summary;
    let kinds = [
        ("terminated", s.terminated),
        ("deleted", s.deleted),
        ("terminated_unconfirmed", s.unconfirmed),
        ("stopped", s.stopped),
        ("already_gone", s.already_gone),
        ("deleted_by_other", s.deleted_by_other),
        ("skipped", s.skipped),
        ("failed", s.failed),
        ("timed_out", s.timed_out),
        ("interrupted", s.interrupted),
    ];
    let outcomes: Vec<(String, f64)> = kinds
        .iter()
        .map(|(k, n)| (format!("{{outcome=\"{k}\"}}"), count(*n)))
        .collect();
    gauge("last_run_instances", "Instances of the last run by outcome.", &outcomes);
    gauge(
        "last_run_selected",
        "Instances selected by the last run.",
        &one(count(s.selected)),
    );
    let calls: Vec<(String, f64)> = s
        .api_calls
        .iter()
        .map(|(a, n)| (format!("{{action=\"{}\"}}", label(a)), count(*n)))
        .collect();
    gauge("last_run_api_calls", "API calls of the last run by action.", &calls);
    gauge(
        "last_run_throttled",
        "Throttled answers in the last run.",
        &one(count(s.throttled)),
    );
    if let Some(w) = &m.watch {
        gauge(
            "last_watch_instances",
            "Instances of the last scheduled run by decision.",
            &decided(&w.instances),
        );
        if let Some(d) = &w.disks {
            gauge(
                "last_watch_disks",
                "Data disks of the last scheduled run by decision (watch --disks).",
                &decided(d),
            );
        }
        gauge(
            "last_watch_notices_failed",
            "Notices the last scheduled run could not deliver (retried by the next run).",
            &one(count(w.notices_failed)),
        );
    }
    out
}

/// One sample per decision.
fn decided(d: &Decided) -> Vec<(String, f64)> {
    [
        ("marked", d.marked),
        ("unmarked", d.unmarked),
        ("due", d.due),
        ("waiting", d.waiting),
        ("kept", d.kept),
        ("acted", d.acted),
    ]
    .iter()
    .map(|(k, n)| (format!("{{decision=\"{k}\"}}"), count(*n)))
    .collect()
}

fn count(n: impl TryInto<u32>) -> f64 {
    f64::from(n.try_into().unwrap_or(u32::MAX))
}

/// A label value escaped for the text format.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The last-success time recorded in an existing metrics file.
fn previous_success(path: &Path) -> Option<f64> {
    let text = crate::textfile::read(path, crate::textfile::SMALL_FILE).ok()?;
    let name = format!("{PREFIX}_last_success_timestamp_seconds ");
    text.lines()
        .find_map(|l| l.strip_prefix(&name))
        .and_then(|v| v.trim().parse().ok())
}

/// 2020-01-01 in Unix seconds: no run of this tool succeeded before it.
const EARLIEST_SUCCESS: f64 = 1_577_836_800.0;

/// Whether a carried last-success time can be true: finite, not before the tool existed and
/// not after this run ended. Anything else (`NaN`, `inf`, negative, far future: an edited or
/// damaged file) would be copied forever and keep the "no success in 26 h" alert from ever
/// firing, so it is dropped and the gauge stays absent until the next success.
fn plausible(t: f64, now: f64) -> bool {
    t.is_finite() && t >= EARLIEST_SUCCESS && t <= now
}

/// Replace the metrics file atomically. Only a regular file is replaced: the rename would
/// otherwise turn a device node, a FIFO or a symbolic link into a regular file.
pub fn write(path: &Path, m: &RunMetrics) -> std::io::Result<()> {
    crate::pathset::writable("--metrics-file", path).map_err(std::io::Error::other)?;
    let text = render(m, previous_success(path).filter(|t| plausible(*t, m.ended)));
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".compshare-teardown-metrics")
        .tempfile_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    // The collector usually runs as another user: readable by all, like any .prom file.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_success_is_carried_over_failed_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.prom");
        let ok = RunMetrics {
            started: 1_700_000_100.0,
            ended: 1_700_000_160.0,
            exit_code: 0,
            report: None,
            watch: None,
        };
        write(&path, &ok).unwrap();
        let failed = RunMetrics {
            started: 1_700_000_200.0,
            ended: 1_700_000_210.0,
            exit_code: 1,
            report: None,
            watch: None,
        };
        write(&path, &failed).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("compshare_teardown_last_success_timestamp_seconds 1700000160\n"),
            "{text}"
        );
        assert!(text.contains("compshare_teardown_last_run_exit_code 1\n"), "{text}");
        // Only the metrics file is left: the temporary file was renamed over it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn an_impossible_last_success_is_not_carried() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.prom");
        let now = 1_800_000_000.0;
        let failed = RunMetrics {
            started: now - 10.0,
            ended: now,
            exit_code: 1,
            report: None,
            watch: None,
        };
        let name = "compshare_teardown_last_success_timestamp_seconds";
        for bad in ["NaN", "inf", "+Inf", "-5", "0", "1e300", "1800000999"] {
            std::fs::write(&path, format!("{name} {bad}\n")).unwrap();
            write(&path, &failed).unwrap();
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(!text.contains(name), "{bad} was carried:\n{text}");
        }
        std::fs::write(&path, format!("{name} 1799990000\n")).unwrap();
        write(&path, &failed).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(&format!("{name} 1799990000\n")), "{text}");
    }
}
