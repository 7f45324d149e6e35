//! One run of the scheduled job over a selection already read and judged by `selection`:
//! look at the GPUs, decide per instance ([`super::decide`]), write the step, act on what is
//! due through the teardown engine, write what happened, deliver the notices.
//!
//! The order is the crash-safety argument. Each numbered write is one transaction:
//! 1. marks, unmarks, samples, what was seen, the notices of those changes, and `acting_since`
//!    on every mark about to be acted on: written before any call that changes anything;
//! 2. after the engine: history rows, the outcome notices, marks cleared;
//! 3. which notices were delivered.
//!
//! A job killed between 1 and 2 finds its marks `acting` on the next run and finishes or
//! re-judges them (see `decide`); between 2 and 3 it sends the undelivered notices again
//! with the same event IDs. A notice is only ever written together with the change it tells
//! of, so none is sent for something that did not happen.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::decide::{Decision, Judgement, Listed, Policy, decide};
use crate::api::{Instance, Transport};
use crate::monitor::IdleRule;
use crate::notice::{EventKind, Notifier};
use crate::selection::Candidate;
use crate::state::{Changes, Kind, Mark, StateError, Store};
use crate::workflow::disks::{DiskControls, delete_disks};
use crate::workflow::{self, Controls, Known, Outcome, Report, Settings};

mod disks;
mod judge;
mod writes;
pub use disks::{DiskEntry, Disks};
use judge::{Judged, Rows, judge_all, listed};
use writes::{deliver, event_for, history, instance_target, new_mark, new_mark_at, outcomes, pending, price};

/// What the job does when an instance is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Stop, then terminate (data disks kept unless `--release-udisk`).
    Terminate,
    /// Stop and leave stopped: a postpay instance stops billing for its GPUs and CPU (its
    /// disks keep billing), and its owner can start it again in the morning.
    Stop,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Terminate => "terminate",
            Action::Stop => "stop",
        }
    }
}

/// A scheduled job's settings, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub rule: IdleRule,
    /// Between the mark and the teardown.
    pub grace: Duration,
    pub action: Action,
    /// When the job may act; `None`: any time. Marks and notices happen at any time.
    pub hours: Option<super::ActingHours>,
    /// Refuse to act on more than this many in one run (marks are still written).
    pub max_count: usize,
    /// The engine's settings for the teardown.
    pub settings: Settings,
    /// How long the run may spend delivering notices at its end.
    pub notice_deadline: Duration,
    /// `Account::slug()`: names the account in notices and event IDs.
    pub account: String,
    /// Decide and show, change nothing, send nothing.
    pub dry_run: bool,
}

/// One instance's line in the job's report.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub uhost_id: String,
    pub name: String,
    pub state: String,
    /// The hourly price Describe gave, if any: what a teardown frees.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price_per_hour: Option<f64>,
    #[serde(flatten)]
    pub judgement: Judgement,
    #[serde(flatten)]
    pub decision: Decision,
    /// The engine's outcome, for an instance acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
}

/// What one run did.
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    pub at: i64,
    pub dry_run: bool,
    pub entries: Vec<Entry>,
    pub marked: usize,
    pub unmarked: usize,
    /// Marks whose grace has ended: acted on, or waiting (fresh data, acting hours).
    pub due: usize,
    /// Marks left waiting (grace, no fresh data, acting hours).
    pub waiting: usize,
    pub kept: usize,
    pub acted: usize,
    pub notices_sent: usize,
    pub notices_failed: usize,
    /// The engine's report for the instances acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub teardown: Option<Report>,
    /// The data disks looked at (`watch --disks`): the detached ones, and every marked one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskEntry>,
    /// The deletion driver's report for the disks acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_deletion: Option<Report>,
}

/// What one run looks at: the instance selection's verdicts (with rows), and the data disks
/// when the job watches them too.
pub struct Targets {
    pub instances: Vec<Candidate>,
    pub disks: Option<Disks>,
}

impl From<Vec<Candidate>> for Targets {
    fn from(instances: Vec<Candidate>) -> Targets {
        Targets { instances, disks: None }
    }
}

/// Why a run stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The store could not be written: the run halts like a failed journal write.
    #[error(transparent)]
    State(#[from] StateError),
    #[error(
        "{due} instances and disks are due, more than --max-count {max}; marks were written, nothing was torn down"
    )]
    TooMany { due: usize, max: usize },
}

/// Run the job once at `now` over `targets` (the selection's verdicts, with rows; the disk
/// listing if disks are watched). Instances marked earlier but absent from the selection are
/// looked up by ID; disks marked earlier but absent from the listing are gone.
pub async fn run_once<T: Transport + 'static>(
    cloud: Arc<T>,
    store: &mut Store,
    notifier: Option<&Notifier>,
    cfg: &Config,
    now: i64,
    targets: Targets,
    ctl: Controls,
) -> Result<JobReport, JobError> {
    let all_marks = store.marks()?;
    let all_keeps = store.keeps()?;
    let marks_of = |kind: Kind| -> HashMap<String, Mark> {
        all_marks
            .iter()
            .filter(|m| m.kind == kind)
            .map(|m| (m.id.clone(), m.clone()))
            .collect()
    };
    // A keep holds by ID whatever kind it was recorded as: IDs do not repeat across kinds,
    // and a person typing `keep ID` need not say which kind it is.
    let keeps: HashMap<String, i64> = all_keeps
        .iter()
        .filter(|k| k.until_at > now)
        .map(|k| (k.id.clone(), k.until_at))
        .collect();
    let marks = marks_of(Kind::Instance);
    let seen = store.seen()?;

    let rows = listed(cloud.as_ref(), targets.instances, &marks).await;
    let judged = judge_all(cloud.as_ref(), store, cfg, now, &rows, &seen).await?;
    let mut report = JobReport {
        at: now,
        dry_run: cfg.dry_run,
        entries: Vec::new(),
        marked: 0,
        unmarked: 0,
        due: 0,
        waiting: 0,
        kept: 0,
        acted: 0,
        notices_sent: 0,
        notices_failed: 0,
        teardown: None,
        disks: Vec::new(),
        disk_deletion: None,
    };
    let (mut changes, acting) = step(cfg, now, &rows, judged, &marks, &keeps, &mut report);
    // Disk marks are left alone by a run that does not watch disks.
    let disk_marks = marks_of(Kind::Disk);
    let acting_disks = match &targets.disks {
        Some(d) => {
            let since = disks::detached_since(store, cfg.dry_run, now, &d.rows)?;
            disks::step(cfg, now, d, &since, &disk_marks, &keeps, &mut changes, &mut report)
        }
        None => Vec::new(),
    };
    let due = acting.len() + acting_disks.len();
    if due > cfg.max_count {
        // The marks are safe to keep; acting on more than the job's bound is not.
        for m in &mut changes.marks {
            m.acting_since = None;
        }
        if !cfg.dry_run {
            store.apply(&changes)?;
            // The marks and unmarks just written are news whatever the bound says: a job
            // held over its bound run after run must still tell people (and catch up on
            // earlier runs' notices), or no notice would go out until someone intervened.
            let told: Vec<String> = changes.notices.iter().map(|p| p.event_id.clone()).collect();
            deliver(store, notifier, cfg, now, &told, &mut report).await?;
        }
        return Err(JobError::TooMany {
            due,
            max: cfg.max_count,
        });
    }
    if cfg.dry_run {
        report.acted = due;
        return Ok(report);
    }
    store.apply(&changes)?;
    let mut told: Vec<String> = changes.notices.iter().map(|p| p.event_id.clone()).collect();

    let cancel = ctl.cancel.clone();
    if !acting.is_empty() {
        let teardown = act(Arc::clone(&cloud), cfg, acting, ctl).await;
        let after = outcomes(cfg, now, &marks, &teardown, &mut report);
        store.apply(&after)?;
        told.extend(after.notices.iter().map(|p| p.event_id.clone()));
        report.teardown = Some(teardown);
    }
    // After the instances, not beside them: two drivers at once would each pace themselves
    // to the whole limit of the API.
    if let Some(d) = targets.disks
        && !acting_disks.is_empty()
    {
        let ctl = DiskControls {
            guard: d.guard,
            cancel,
            ..DiskControls::default()
        };
        let deletion = delete_disks(cloud, acting_disks, d.settings, ctl).await;
        let after = disks::outcomes(cfg, now, &disk_marks, &deletion, d.detached_for, &mut report);
        store.apply(&after)?;
        told.extend(after.notices.iter().map(|p| p.event_id.clone()));
        report.disk_deletion = Some(deletion);
    }
    deliver(store, notifier, cfg, now, &told, &mut report).await?;
    Ok(report)
}

/// The first write's changes, and the instances to act on: every listed instance decided.
#[expect(
    clippy::too_many_lines,
    reason = "one arm per decision, each writing its own changes"
)]
fn step(
    cfg: &Config,
    now: i64,
    rows: &Rows,
    mut judged: Judged,
    marks: &HashMap<String, Mark>,
    keeps: &HashMap<String, i64>,
    report: &mut JobReport,
) -> (Changes, Vec<Instance>) {
    let mut changes = Changes {
        prune_samples_before: Some(now - secs(cfg.rule.window) - secs(cfg.rule.max_gap)),
        ..Changes::default()
    };
    let policy = Policy {
        grace: secs(cfg.grace),
        in_hours: cfg.hours.as_ref().is_none_or(|h| h.contains(now)),
    };
    let mut acting: Vec<Instance> = Vec::new();
    for (id, (listed, row)) in rows {
        let (judgement, samples, seen_now) = judged.remove(id).unwrap_or((Judgement::NotJudged, Vec::new(), None));
        let mark = marks.get(id);
        let keep = keeps.get(id).map(|until| crate::state::Keep {
            kind: Kind::Instance,
            id: id.clone(),
            until_at: *until,
            reason: String::new(),
            created_at: 0,
        });
        let decision = decide(now, mark, keep.as_ref(), *listed, &judgement, policy);
        if let Some(s) = seen_now {
            changes.seen.push(s);
        }
        if !samples.is_empty() {
            changes.samples.push((id.clone(), samples));
        }
        let name = row
            .as_ref()
            .map_or_else(|| mark.map(|m| m.name.clone()).unwrap_or_default(), |r| r.name.clone());
        let event = |kind: EventKind, key: &str, reason: String, due: Option<i64>, details: Map<String, Value>| {
            let target = instance_target(id, &name, row.as_ref());
            event_for(cfg, now, kind, key, target, reason, due, details)
        };
        match &decision {
            Decision::Nothing | Decision::Kept { .. } => {
                report.kept += usize::from(matches!(decision, Decision::Kept { .. }));
            }
            Decision::Mark { due_at } => {
                report.marked += 1;
                let m = new_mark(id, &name, now, *due_at, cfg);
                let e = event(
                    EventKind::Marked,
                    &m.marked_at.to_string(),
                    m.reason.clone(),
                    Some(*due_at),
                    price(row.as_ref()),
                );
                changes.marks.push(m);
                changes.notices.push(pending(&e, now));
            }
            Decision::Wait { due_at, .. } => {
                report.waiting += 1;
                report.due += usize::from(*due_at <= now);
                // A teardown begun by a run that died, on an instance still running: it did
                // not happen. Waiting (no fresh evidence, outside the hours), the mark is no
                // longer "acting", or a person's later stop would read as our own half-done
                // teardown and be finished with a Terminate.
                if let Some(m) = mark.filter(|m| m.acting_since.is_some() && *listed == Listed::Running) {
                    changes.marks.push(Mark {
                        acting_since: None,
                        ..m.clone()
                    });
                }
            }
            Decision::Unmark { why } => {
                report.unmarked += 1;
                let m = mark.expect("decide unmarks only a mark");
                let mut details = Map::new();
                if let Judgement::Busy { at } = judgement {
                    details.insert("last_busy_at".into(), json!(at));
                }
                let e = event(
                    EventKind::Unmarked,
                    &m.marked_at.to_string(),
                    why.clone(),
                    None,
                    details,
                );
                changes.unmarks.push((Kind::Instance, id.clone()));
                changes.notices.push(pending(&e, now));
            }
            Decision::Act { new_mark } => {
                report.due += 1;
                let mut m = mark.cloned().unwrap_or_else(|| new_mark_at(id, &name, now, cfg));
                if *new_mark {
                    report.marked += 1;
                    let e = event(
                        EventKind::Marked,
                        &m.marked_at.to_string(),
                        m.reason.clone(),
                        Some(now),
                        price(row.as_ref()),
                    );
                    changes.notices.push(pending(&e, now));
                }
                m.acting_since = Some(now);
                changes.marks.push(m);
                if let Some(r) = row {
                    acting.push(r.clone());
                }
            }
            Decision::Finished => {
                let m = mark.expect("decide finishes only a mark");
                changes.unmarks.push((Kind::Instance, id.clone()));
                // Gone after our teardown began: ours, when we terminate; someone else's, when
                // we only stop.
                let e = if cfg.action == Action::Terminate {
                    changes.history.push(history(
                        now,
                        cfg.action,
                        id,
                        &name,
                        "terminated (an earlier run began it)",
                        None,
                        "",
                    ));
                    let why = "begun by an earlier run that was interrupted".into();
                    event(EventKind::TornDown, &m.marked_at.to_string(), why, None, Map::new())
                } else {
                    let why = "deleted by someone else".into();
                    event(EventKind::Unmarked, &m.marked_at.to_string(), why, None, Map::new())
                };
                changes.notices.push(pending(&e, now));
            }
        }
        report.entries.push(Entry {
            uhost_id: id.clone(),
            name,
            state: row
                .as_ref()
                .map_or_else(|| "absent".to_owned(), |r| r.state.as_str().to_owned()),
            price_per_hour: row.as_ref().map(|r| r.instance_price).filter(|p| *p > 0.0),
            judgement,
            decision,
            outcome: None,
        });
    }
    (changes, acting)
}

/// Hand the due instances to the engine: every guard rail of `run` holds (the guard checks
/// the protections on the fresh row before the first call; Terminate only on `Stopped`).
async fn act<T: Transport + 'static>(cloud: Arc<T>, cfg: &Config, acting: Vec<Instance>, mut ctl: Controls) -> Report {
    let ids = acting.iter().map(|r| r.uhost_id.clone()).collect();
    ctl.known = acting.into_iter().map(Known::from).collect();
    let settings = Settings {
        stop_only: cfg.action == Action::Stop,
        ..cfg.settings.clone()
    };
    workflow::run(cloud, ids, settings, ctl).await
}

pub(super) fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}
