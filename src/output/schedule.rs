//! Tables of the scheduled job: a run's decisions, the marks and keeps, the history.

use std::collections::HashMap;

use serde::Serialize;

use super::{CELL_CHARS, NAME_CHARS, cell, price, table};
use crate::schedule::{Decision, JobReport, Judgement};
use crate::state::{HistoryRow, Keep, Mark, Seen};

/// A unix time as UTC, `2026-12-04 21:03Z`; `-` for none.
pub fn when(t: i64) -> String {
    u64::try_from(t).map_or_else(
        |_| "-".into(),
        |s| {
            let text = humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s))
                .to_string();
            // 2026-12-04T21:03:00Z -> 2026-12-04 21:03Z
            format!("{} {}Z", &text[..10], &text[11..16])
        },
    )
}

/// `watch` as a table: one line per instance with something to say, and a headline.
pub fn watch_table(r: &JobReport) -> String {
    let mut t = table(&["ID", "NAME", "STATE", "IDLE", "DECISION", "DUE", "OUTCOME"]);
    let outcome = |o: Option<&crate::workflow::Outcome>| o.map_or_else(|| "-".to_owned(), |o| o.word().to_owned());
    for e in &r.entries {
        if matches!(e.decision, Decision::Nothing) && !matches!(e.judgement, Judgement::Unknown { .. }) {
            continue;
        }
        let gpu = match &e.judgement {
            Judgement::Idle => "idle".to_owned(),
            Judgement::Busy { at } => format!("busy at {}", when(*at)),
            Judgement::StartedAgain => "started recently".to_owned(),
            Judgement::Unknown { why } => format!("unknown: {why}"),
            Judgement::NotJudged => "-".to_owned(),
        };
        let (decision, due) = decision_cells(&e.decision, r.dry_run, ("tear down", "teardown"));
        t.add_row(vec![
            cell(&e.uhost_id, NAME_CHARS),
            cell(&e.name, NAME_CHARS),
            cell(&e.state, NAME_CHARS),
            cell(&gpu, CELL_CHARS),
            cell(&decision, CELL_CHARS),
            due,
            outcome(e.outcome.as_ref()),
        ]);
    }
    for d in &r.disks {
        let idle = d
            .detached_since
            .map_or_else(|| "attached".to_owned(), |t| format!("detached since {}", when(t)));
        let (decision, due) = decision_cells(&d.decision, r.dry_run, ("delete", "deletion"));
        t.add_row(vec![
            cell(&d.disk_id, NAME_CHARS),
            cell(&d.name, NAME_CHARS),
            cell(&d.status, NAME_CHARS),
            cell(&idle, CELL_CHARS),
            cell(&decision, CELL_CHARS),
            due,
            outcome(d.outcome.as_ref()),
        ]);
    }
    let verb = if r.dry_run { "would act on" } else { "acted on" };
    let disks = if r.disks.is_empty() {
        String::new()
    } else {
        format!(" and {} disk(s)", r.disks.len())
    };
    format!(
        "{t}\n{} instance(s){disks} looked at: {} marked, {} unmarked, {} waiting ({} due), {} kept, {verb} {}; notices: {} sent, {} failed\n",
        r.entries.len(),
        r.marked,
        r.unmarked,
        r.waiting,
        r.due,
        r.kept,
        r.acted,
        r.notices_sent,
        r.notices_failed
    )
}

/// A decision and its due time in words; `verb` and `noun` say what acting does.
fn decision_cells(d: &Decision, dry_run: bool, (verb, noun): (&str, &str)) -> (String, String) {
    match d {
        Decision::Nothing => ("-".to_owned(), "-".to_owned()),
        Decision::Mark { due_at } => ("marked".to_owned(), when(*due_at)),
        Decision::Wait { due_at, why } => (format!("waiting: {why}"), when(*due_at)),
        Decision::Act { .. } if dry_run => (format!("would {verb}"), "now".to_owned()),
        Decision::Act { .. } => (verb.to_owned(), "now".to_owned()),
        Decision::Unmark { why } => (format!("unmarked: {why}"), "-".to_owned()),
        Decision::Kept { until_at } => ("kept".to_owned(), format!("kept until {}", when(*until_at))),
        Decision::Finished => (format!("finished earlier {noun}"), "-".to_owned()),
    }
}

/// What `marks` shows.
#[derive(Debug, Serialize)]
pub struct MarksView {
    pub now: i64,
    pub marks: Vec<Mark>,
    pub keeps: Vec<Keep>,
    #[serde(skip)]
    pub seen: HashMap<String, Seen>,
}

/// `marks` as a table: marks (with their due time and last busy sample), then keeps.
pub fn marks_table(v: &MarksView) -> String {
    let mut t = table(&["ID", "NAME", "MARKED", "DUE", "LAST BUSY", "STATUS"]);
    for m in &v.marks {
        let last_busy = v
            .seen
            .get(&m.id)
            .and_then(|s| s.last_busy_at)
            .map_or_else(|| "-".into(), when);
        let status = if m.acting_since.is_some() && m.kind == crate::state::Kind::Disk {
            "deletion begun"
        } else if m.acting_since.is_some() {
            "teardown begun"
        } else if m.due_at <= v.now {
            "due"
        } else {
            "grace"
        };
        t.add_row(vec![
            cell(&m.id, NAME_CHARS),
            cell(&m.name, NAME_CHARS),
            when(m.marked_at),
            when(m.due_at),
            last_busy,
            status.to_owned(),
        ]);
    }
    let mut k = table(&["KEPT ID", "UNTIL", "REASON"]);
    for keep in v.keeps.iter().filter(|k| k.until_at > v.now) {
        k.add_row(vec![
            cell(&keep.id, NAME_CHARS),
            when(keep.until_at),
            cell(&keep.reason, CELL_CHARS),
        ]);
    }
    format!(
        "{t}\n{k}\n{} marked, {} kept\n",
        v.marks.len(),
        v.keeps.iter().filter(|k| k.until_at > v.now).count()
    )
}

/// `history` as a table, with what the teardowns freed per hour.
pub fn history_table(rows: &[HistoryRow]) -> String {
    let mut t = table(&["WHEN", "ID", "NAME", "ACTION", "OUTCOME", "PRICE/H"]);
    let mut freed = 0.0;
    for h in rows {
        if h.outcome.starts_with("terminated") || h.outcome == "stopped" {
            freed += h.price_per_hour.unwrap_or(0.0);
        }
        t.add_row(vec![
            when(h.at),
            cell(&h.id, NAME_CHARS),
            cell(&h.name, NAME_CHARS),
            h.action.clone(),
            cell(&h.outcome, CELL_CHARS),
            price(h.price_per_hour.unwrap_or(0.0)),
        ]);
    }
    let disks = rows.iter().filter(|r| r.kind == crate::state::Kind::Disk).count();
    let deletions = if disks == 0 {
        String::new()
    } else {
        format!(", {disks} disk deletion(s)")
    };
    format!(
        "{t}\n{} teardowns{deletions}; hourly price freed: {}\n",
        rows.len() - disks,
        price(freed)
    )
}
