//! The disk half of a scheduled run (`watch --disks`): data disks attached to nothing for the
//! window are marked, told of, given their grace, looked at again and deleted through the disk
//! deletion driver, with the instance half's writes, notices, keeps and history.
//!
//! "Detached for D" is measured by the state store (when it first saw each disk detached; a
//! disk seen attached starts over), never guessed: the API does not say when a disk was
//! detached. The driver looks at each disk again right before its Delete and never deletes
//! one that look shows attached.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, json};

use super::writes::{event_for, pending};
use super::{Config, JobReport, secs};
use crate::api::{Attachment, DiskRow};
use crate::notice::{EventKind, Target};
use crate::schedule::decide::{Decision, DiskListed, Policy, decide_disk};
use crate::selection::Verdict;
use crate::state::{Changes, HistoryRow, Keep, Kind, Mark, StateError, Store};
use crate::workflow::disks::{DiskGuard, DiskSettings};
use crate::workflow::{Outcome, Report};

/// The disks a run looks at, as the caller listed and judged them.
pub struct Disks {
    /// Every disk the listing returned, with the selection's verdict: `Act` for a disk in
    /// scope, `Skip` for one refused (protected, excluded, this machine's, out of scope).
    pub rows: Vec<(DiskRow, Verdict)>,
    /// How long a disk must have been seen detached before it is marked.
    pub detached_for: Duration,
    pub settings: DiskSettings,
    /// Re-checked on each disk's fresh row right before its Delete.
    pub guard: Option<DiskGuard>,
}

/// One disk's line in the job's report.
#[derive(Debug, Clone, Serialize)]
pub struct DiskEntry {
    pub disk_id: String,
    pub name: String,
    /// `absent` when the listing no longer has it.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_gb: Option<i64>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub attached_to: String,
    /// When the state store first saw it detached (unix seconds), while it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detached_since: Option<i64>,
    #[serde(flatten)]
    pub decision: Decision,
    /// The deletion's outcome, for a disk acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
}

/// When each listed detached disk was first seen detached: recorded now (a real run), or read
/// (a dry run writes nothing; a disk the store does not know counts from now).
pub(super) fn detached_since(
    store: &mut Store,
    dry_run: bool,
    now: i64,
    rows: &[(DiskRow, Verdict)],
) -> Result<HashMap<String, i64>, StateError> {
    if dry_run {
        let known = store.detached_since()?;
        return Ok(rows
            .iter()
            .filter(|(r, _)| r.is_detached())
            .map(|(r, _)| {
                (
                    r.disk_id.clone(),
                    known.get(&r.disk_id).copied().unwrap_or(now).min(now),
                )
            })
            .collect());
    }
    let seen: Vec<(String, bool)> = rows
        .iter()
        .map(|(r, _)| (r.disk_id.clone(), !r.is_detached()))
        .collect();
    store.observe_disks(now, &seen)
}

/// The disks' part of the first write, and the disks to delete.
#[expect(clippy::too_many_arguments, reason = "the run's inputs, named at the one call site")]
pub(super) fn step(
    cfg: &Config,
    now: i64,
    disks: &Disks,
    since: &HashMap<String, i64>,
    marks: &HashMap<String, Mark>,
    keeps: &HashMap<String, i64>,
    changes: &mut Changes,
    report: &mut JobReport,
) -> Vec<DiskRow> {
    let policy = Policy {
        grace: secs(cfg.grace),
        in_hours: cfg.hours.as_ref().is_none_or(|h| h.contains(now)),
    };
    let window = secs(disks.detached_for);
    let mut acting = Vec::new();
    for (id, (l, row)) in listed(disks, since, marks, now) {
        let mark = marks.get(id);
        let keep = keeps.get(id).map(|until| Keep {
            kind: Kind::Disk,
            id: id.to_owned(),
            until_at: *until,
            reason: String::new(),
            created_at: 0,
        });
        // A disk neither marked nor detached nor kept is of no interest to the report.
        let decision = decide_disk(now, mark, keep.as_ref(), l, window, policy);
        let name = row.map_or_else(|| mark.map(|m| m.name.clone()).unwrap_or_default(), |r| r.name.clone());
        let target = target(id, &name, row);
        let key = mark.map_or_else(|| now.to_string(), |m| m.marked_at.to_string());
        let event = |kind, reason: String, due| {
            pending(
                &event_for(cfg, now, kind, &key, target.clone(), reason, due, size(row)),
                now,
            )
        };
        match &decision {
            Decision::Nothing if !matches!(l, DiskListed::Detached { .. }) => continue,
            Decision::Nothing => {}
            Decision::Kept { .. } => report.kept += 1,
            Decision::Mark { due_at } => {
                report.marked += 1;
                let m = disk_mark(id, &name, now, *due_at, disks.detached_for);
                changes
                    .notices
                    .push(event(EventKind::Marked, m.reason.clone(), Some(*due_at)));
                changes.marks.push(m);
            }
            Decision::Wait { due_at, .. } => {
                report.waiting += 1;
                report.due += usize::from(*due_at <= now);
                // Listed free after a deletion began: that Delete did not happen (an accepted
                // one lists the disk as deleting). Not "acting" while it waits, so its later
                // disappearance is not taken for our deletion.
                if let Some(m) = mark.filter(|m| m.acting_since.is_some()) {
                    changes.marks.push(Mark {
                        acting_since: None,
                        ..m.clone()
                    });
                }
            }
            Decision::Unmark { why } => {
                report.unmarked += 1;
                changes.unmarks.push((Kind::Disk, id.to_owned()));
                changes.notices.push(event(EventKind::Unmarked, why.clone(), None));
            }
            Decision::Act { new_mark } => {
                report.due += 1;
                let mut m = mark
                    .cloned()
                    .unwrap_or_else(|| disk_mark(id, &name, now, now, disks.detached_for));
                if *new_mark {
                    report.marked += 1;
                    changes
                        .notices
                        .push(event(EventKind::Marked, m.reason.clone(), Some(now)));
                }
                m.acting_since = Some(now);
                changes.marks.push(m);
                if let Some(r) = row {
                    acting.push(r.clone());
                }
            }
            Decision::Finished => {
                // Gone after our Delete began: ours.
                changes.unmarks.push((Kind::Disk, id.to_owned()));
                changes
                    .history
                    .push(history(now, id, &name, "deleted (an earlier run began it)", ""));
                let why = "begun by an earlier run that was interrupted".to_owned();
                changes.notices.push(event(EventKind::TornDown, why, None));
            }
        }
        report.disks.push(DiskEntry {
            disk_id: id.to_owned(),
            name,
            status: row.map_or_else(|| "absent".to_owned(), |r| r.status.clone()),
            size_gb: row.map(|r| r.size_gb),
            attached_to: row.map(|r| r.mount_instance.clone()).unwrap_or_default(),
            detached_since: match l {
                DiskListed::Detached { since } => Some(since),
                _ => None,
            },
            decision,
            outcome: None,
        });
    }
    acting
}

/// Where each listed or marked disk stands: a marked disk the listing lacks is gone.
fn listed<'a>(
    disks: &'a Disks,
    since: &HashMap<String, i64>,
    marks: &'a HashMap<String, Mark>,
    now: i64,
) -> BTreeMap<&'a str, (DiskListed, Option<&'a DiskRow>)> {
    let mut listed = BTreeMap::new();
    for (row, verdict) in &disks.rows {
        let l = match verdict {
            // Being deleted (ours, begun by a run that died, or someone else's): gone.
            _ if row.attachment() == Attachment::Deleting => DiskListed::Gone,
            Verdict::Act if row.is_detached() => DiskListed::Detached {
                since: since.get(&row.disk_id).copied().unwrap_or(now),
            },
            Verdict::Act => DiskListed::Attached,
            Verdict::Skip { .. } => DiskListed::NotSelected,
            Verdict::NotFound => DiskListed::Gone,
        };
        listed.insert(row.disk_id.as_str(), (l, Some(row)));
    }
    for id in marks.keys() {
        listed.entry(id.as_str()).or_insert((DiskListed::Gone, None));
    }
    listed
}

/// The second write's disk part: what the driver did to each disk acted on.
pub(super) fn outcomes(
    cfg: &Config,
    now: i64,
    marks: &HashMap<String, Mark>,
    deletion: &Report,
    window: Duration,
    report: &mut JobReport,
) -> Changes {
    let mut c = Changes::default();
    let by_id: HashMap<&str, &crate::workflow::InstanceReport> =
        deletion.instances.iter().map(|i| (i.uhost_id.as_str(), i)).collect();
    for entry in &mut report.disks {
        let Some(r) = by_id.get(entry.disk_id.as_str()) else {
            continue;
        };
        report.acted += 1;
        entry.outcome = Some(r.outcome.clone());
        let id = entry.disk_id.clone();
        let label = r.outcome.word();
        let (kind, reason) = match &r.outcome {
            Outcome::Deleted { .. } => (
                EventKind::TornDown,
                format!("detached until the end of its grace; {label}"),
            ),
            Outcome::AlreadyGone | Outcome::DeletedByOther => (EventKind::Unmarked, label.to_owned()),
            Outcome::Skipped { reason } => (EventKind::Unmarked, format!("not deleted: {reason}")),
            _ => (EventKind::Failed, label.to_owned()),
        };
        let mark = marks.get(&id).cloned();
        // Deleted, gone, or refused on its fresh look (attached, protected since): done with.
        // A failure keeps its mark for the next run to judge again.
        let done = r.outcome.is_gone() || matches!(r.outcome, Outcome::Skipped { .. });
        if done {
            c.unmarks.push((Kind::Disk, id.clone()));
        } else {
            let m = mark
                .clone()
                .unwrap_or_else(|| disk_mark(&id, &entry.name, now, now, window));
            c.marks.push(Mark {
                acting_since: None,
                ..m
            });
        }
        if matches!(kind, EventKind::TornDown | EventKind::Failed) {
            c.history
                .push(history(now, &id, &entry.name, label, &r.outcome.detail()));
        }
        let key = mark.map_or_else(|| now.to_string(), |m| m.marked_at.to_string());
        // A failure is its own event each time; the rest happen once per mark.
        let key = if kind == EventKind::Failed {
            format!("{key}/{now}")
        } else {
            key
        };
        let mut details = Map::new();
        details.insert("outcome".into(), json!(label));
        if let Some(gb) = entry.size_gb {
            details.insert("size_gb".into(), json!(gb));
        }
        let t = Target {
            kind: "disk".into(),
            id: id.clone(),
            name: entry.name.clone(),
            region: String::new(),
            zone: String::new(),
        };
        c.notices
            .push(pending(&event_for(cfg, now, kind, &key, t, reason, None, details), now));
    }
    c
}

/// A disk's notice target.
fn target(id: &str, name: &str, row: Option<&DiskRow>) -> Target {
    Target {
        kind: "disk".into(),
        id: id.to_owned(),
        name: name.to_owned(),
        region: row.map(|r| r.home_region().to_owned()).unwrap_or_default(),
        zone: row.map(|r| r.zone.clone()).unwrap_or_default(),
    }
}

fn size(row: Option<&DiskRow>) -> Map<String, serde_json::Value> {
    let mut m = Map::new();
    if let Some(r) = row {
        m.insert("size_gb".into(), json!(r.size_gb));
    }
    m
}

fn disk_mark(id: &str, name: &str, now: i64, due_at: i64, window: Duration) -> Mark {
    Mark {
        kind: Kind::Disk,
        id: id.to_owned(),
        name: name.to_owned(),
        marked_at: now,
        due_at,
        reason: format!(
            "attached to no instance for {} (as seen by this job)",
            humantime::format_duration(window)
        ),
        acting_since: None,
    }
}

fn history(now: i64, id: &str, name: &str, outcome: &str, detail: &str) -> HistoryRow {
    HistoryRow {
        at: now,
        kind: Kind::Disk,
        id: id.to_owned(),
        name: name.to_owned(),
        action: "delete".to_owned(),
        outcome: outcome.to_owned(),
        price_per_hour: None,
        detail: detail.to_owned(),
    }
}
