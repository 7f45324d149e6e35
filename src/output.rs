//! Rendering results for stdout: tables for people, JSON for programs. Pure functions from
//! data to text, so snapshot tests pin the output.
//!
//! Text from the API (names, tags, messages) reaches a terminal only through [`printable`]:
//! an escape sequence, carriage return or newline in an instance name could otherwise clear
//! the screen, hide a row or forge one in the table the operator confirms. JSON output keeps
//! the exact strings (JSON escapes them itself).

mod schedule;
pub use schedule::{MarksView, history_table, marks_table, watch_table, when};

use std::borrow::Cow;
use std::fmt::Write as _;

use comfy_table::{ContentArrangement, Table, TableComponent, presets};

use crate::api::Instance;
use crate::plan::Plan;
use crate::workflow::Report;

/// What stdout carries (`--output`, config `output`): a table for people or JSON for programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    Table,
    Json,
}

/// Characters a terminal acts on instead of showing: C0 and C1 controls (ESC, CR, LF, BS,
/// ...), and the bidirectional overrides and isolates that reorder what is shown.
fn acts_on_terminal(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `text` safe to put on a terminal: every character a terminal would act on, written as
/// its escape (`\n`, `\u{1b}`).
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(acts_on_terminal) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if acts_on_terminal(c) {
            // `\n`, `\u{1b}`; a mark that `escape_debug` would leave as it is, as `\u{..}`.
            let escaped = c.escape_debug();
            if escaped.len() > 1 {
                out.extend(escaped);
            } else {
                out.extend(c.escape_unicode());
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Characters of a name or tag shown in a table: a 50,000-character name would make every
/// row that wide. Names on CompShare are far shorter; JSON output keeps the whole name.
const NAME_CHARS: usize = 64;
/// Characters of any other cell (an error message in DETAIL, a reason): a line, not a page.
const CELL_CHARS: usize = 300;

/// A table cell: printable, and cut to `max` characters with the cut shown.
fn cell(text: &str, max: usize) -> String {
    let text = printable(text);
    if text.chars().count() <= max {
        return text.into_owned();
    }
    let head: String = text.chars().take(max - 1).collect();
    format!("{head}…")
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    // Lines above and below the header and at the end, none between rows: compact for 1000
    // rows, and still plain to read in a log.
    t.load_preset(presets::UTF8_HORIZONTAL_ONLY)
        .remove_style(TableComponent::HorizontalLines)
        .remove_style(TableComponent::MiddleIntersections)
        .remove_style(TableComponent::LeftBorderIntersections)
        .remove_style(TableComponent::RightBorderIntersections)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header);
    t
}

/// Age as a short human string ("3d 4h").
pub fn age(now_unix: i64, create_time: i64) -> String {
    if create_time <= 0 {
        return "?".into();
    }
    let secs = u64::try_from(now_unix.saturating_sub(create_time)).unwrap_or(0);
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else {
        format!("{m}m")
    }
}

fn price(p: f64) -> String {
    if p > 0.0 { format!("{p:.2}") } else { "-".into() }
}

/// `list` as a table.
pub fn list_table(rows: &[Instance], now_unix: i64) -> String {
    let mut t = table(&["ID", "NAME", "STATE", "ZONE", "GPU", "CHARGE", "TAG", "AGE", "PRICE/H"]);
    for r in rows {
        t.add_row(vec![
            cell(&r.uhost_id, CELL_CHARS),
            cell(&r.name, NAME_CHARS),
            cell(&r.state.to_string(), CELL_CHARS),
            cell(&r.zone, CELL_CHARS),
            if r.gpu > 0 {
                cell(&format!("{}x{}", r.gpu, r.gpu_type), CELL_CHARS)
            } else {
                "-".into()
            },
            cell(&r.charge_type, CELL_CHARS),
            cell(&r.tag, NAME_CHARS),
            age(now_unix, r.create_time),
            price(r.instance_price),
        ]);
    }
    format!("{t}\n{} instance(s)\n", rows.len())
}

/// What a teardown kept, and the command that deletes it later (empty when nothing was kept).
pub fn kept_disks_text(kept: &[crate::workflow::KeptDisk]) -> String {
    if kept.is_empty() {
        return String::new();
    }
    let gb: i64 = kept.iter().filter_map(|d| d.size_gb).sum();
    let size = if gb > 0 { format!(", {gb} GB") } else { String::new() };
    let ids: Vec<&str> = kept.iter().map(|d| d.disk_id.as_str()).collect();
    // Only IDs `disks delete` would accept go into a command line meant to be pasted: an
    // ID from the API with a shell character in it must not become part of a command.
    let safe: Vec<&str> = ids
        .iter()
        .copied()
        .filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        .collect();
    let command = if safe.len() == ids.len() {
        format!("compshare-teardown disks delete {}", safe.join(" "))
    } else {
        "compshare-teardown disks delete --all-detached (check the list first: disks list --detached)".to_owned()
    };
    format!(
        "{} data disk(s) kept{size} (no --release-udisk), billed until deleted: {}\n\
         delete them later with:\n  {command}\n",
        kept.len(),
        printable(&ids.join(", ")),
    )
}

/// Data disks as a table: one row per (ID, row if listed, note), then `summary`.
pub fn disk_table(rows: &[(&str, Option<&crate::api::DiskRow>, String)], summary: &str) -> String {
    let mut t = table(&["ID", "NAME", "SIZE", "STATUS", "ATTACHED TO", "ZONE", "NOTE"]);
    for (id, row, note) in rows {
        let dash = || "-".to_owned();
        t.add_row(vec![
            cell(id, CELL_CHARS),
            row.map_or_else(dash, |r| cell(&r.name, NAME_CHARS)),
            row.map_or_else(dash, |r| format!("{} GB", r.size_gb)),
            row.map_or_else(dash, |r| cell(&r.status, CELL_CHARS)),
            row.map_or_else(dash, |r| cell(&r.mount_instance, CELL_CHARS)),
            row.map_or_else(dash, |r| cell(&r.zone, CELL_CHARS)),
            cell(note, CELL_CHARS),
        ]);
    }
    format!("{t}\n{summary}\n")
}

/// `plan` as a table plus a summary.
pub fn plan_table(plan: &Plan) -> String {
    let mut t = table(&["ID", "NAME", "STATE", "ZONE", "ACTION", "DATA DISKS", "PRICE/H", "NOTE"]);
    for e in &plan.entries {
        let disks = if e.data_disks.is_empty() {
            "-".to_owned()
        } else {
            format!("{} {}", e.data_disks.len(), e.disks)
        };
        t.add_row(vec![
            cell(&e.uhost_id, CELL_CHARS),
            cell(&e.name, NAME_CHARS),
            if e.state.is_empty() {
                "-".into()
            } else {
                cell(&e.state, CELL_CHARS)
            },
            cell(&e.zone, CELL_CHARS),
            e.action.text().to_owned(),
            disks,
            price(e.price),
            cell(e.reason.as_deref().unwrap_or_default(), CELL_CHARS),
        ]);
    }
    format!("{t}\n{}\n", plan_summary(plan))
}

/// One line: what the plan does in total. The headline count is [`Plan::acting_ids`], the
/// same number the confirmation prompt asks for and `--max-count` limits; the parts in
/// brackets add up to it.
fn plan_summary(plan: &Plan) -> String {
    let acting = plan.acting_ids().len();
    let count = |a: crate::plan::Action| plan.entries.iter().filter(|e| e.action == a).count();
    let mut parts = vec![
        format!("{} stop+terminate", count(crate::plan::Action::StopThenTerminate)),
        format!("{} terminate", count(crate::plan::Action::TerminateOnly)),
        format!("{} wait+terminate", count(crate::plan::Action::WaitThenTerminate)),
    ];
    let gone = count(crate::plan::Action::AlreadyGone);
    if gone > 0 {
        parts.push(format!("{gone} not found, watched until confirmed gone"));
    }
    let spot = count(crate::plan::Action::NeedsForceStop);
    if spot > 0 {
        parts.push(format!("{spot} spot instance(s) that need --force-stop"));
    }
    let mut s = format!(
        "{acting} to tear down ({}); {} skipped",
        parts.join(", "),
        count(crate::plan::Action::Skip),
    );
    let disks: usize = plan
        .entries
        .iter()
        .filter(|e| e.action.acts())
        .map(|e| e.data_disks.len())
        .sum();
    if disks > 0 {
        let fate = if plan.release_udisk {
            "released (--release-udisk)"
        } else {
            "kept (pass --release-udisk to delete them)"
        };
        let _ = write!(s, "; {disks} data disk(s) {fate}");
    }
    let p = plan.hourly_price();
    if p > 0.0 {
        let _ = write!(s, "; frees {p:.2}/hour");
    }
    s
}

/// The final report as a table plus a summary.
pub fn report_table(report: &Report) -> String {
    let mut t = table(&["ID", "NAME", "OUTCOME", "TIME", "CALLS", "DETAIL"]);
    for i in &report.instances {
        t.add_row(vec![
            cell(&i.uhost_id, CELL_CHARS),
            cell(&i.name, NAME_CHARS),
            i.outcome.word().to_owned(),
            format!("{:.1}s", i.seconds),
            i.calls.to_string(),
            cell(&i.outcome.detail(), CELL_CHARS),
        ]);
    }
    let s = &report.summary;
    let counts: Vec<String> = [
        (s.terminated, "terminated"),
        (s.deleted, "deleted"),
        (s.unconfirmed, "terminated but unconfirmed"),
        (s.stopped, "stopped (stop-only)"),
        (s.already_gone, "already gone"),
        (s.deleted_by_other, "deleted by others"),
        (s.skipped, "skipped"),
        (s.failed, "failed"),
        (s.timed_out, "timed out"),
        (s.interrupted, "interrupted"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    let calls: Vec<String> = s
        .api_calls
        .iter()
        .map(|(a, n)| format!("{n} {}", a.replace("CompShareInstance", "")))
        .collect();
    format!(
        "{t}\n{} selected: {} in {:.1}s ({})\n",
        s.selected,
        if counts.is_empty() {
            "nothing to do".to_owned()
        } else {
            counts.join(", ")
        },
        s.seconds,
        if calls.is_empty() {
            "no API calls".to_owned()
        } else {
            format!("API calls: {}", calls.join(", "))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::Account;
    use crate::selection::{Candidate, Verdict};

    #[test]
    fn the_summary_headline_counts_what_the_run_works_on() {
        let cand = |id: &str, state, charge: &str, verdict| Candidate {
            id: id.into(),
            row: Some(Instance {
                uhost_id: id.into(),
                state,
                charge_type: charge.into(),
                ..Instance::default()
            }),
            verdict,
        };
        let plan = Plan::build(
            vec![
                cand("a-1", crate::api::State::Running, "Postpay", Verdict::Act),
                cand("a-2", crate::api::State::Running, "Spot", Verdict::Act),
                Candidate {
                    id: "a-3".into(),
                    row: None,
                    verdict: Verdict::NotFound,
                },
                cand(
                    "a-4",
                    crate::api::State::Running,
                    "Postpay",
                    Verdict::Skip {
                        reason: "protected".into(),
                    },
                ),
            ],
            &Account::default(),
            false,
            false,
        );
        let s = plan_summary(&plan);
        assert!(s.starts_with("3 to tear down ("), "{s}");
        assert!(
            s.contains("1 not found") && s.contains("1 spot") && s.contains("1 skipped"),
            "{s}"
        );
    }

    #[test]
    fn names_from_the_api_cannot_drive_the_terminal() {
        let forged = "ok\x1b[2J\r\nuhost-fake  forged row\u{202e}\u{9b}31m";
        let row = Instance {
            uhost_id: "uhost-1".into(),
            name: forged.into(),
            tag: "t\x07".into(),
            ..Instance::default()
        };
        let long = Instance {
            uhost_id: "uhost-2".into(),
            name: "n".repeat(50_000),
            ..Instance::default()
        };
        let text = list_table(&[row, long], 0);
        assert!(text.lines().all(|l| !l.chars().any(acts_on_terminal)), "{text:?}");
        assert!(
            text.contains("ok\\u{1b}[2J\\r\\nuhost-fake  forged row\\u{202e}\\u{9b}31m"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 7, "{text}");
        assert!(text.lines().all(|l| l.chars().count() < 200), "{text}");
        let cands = [Candidate {
            id: "uhost-1".into(),
            row: Some(Instance {
                uhost_id: "uhost-1".into(),
                name: forged.into(),
                ..Instance::default()
            }),
            verdict: Verdict::Skip {
                reason: "r\x1b]0;title\x07".into(),
            },
        }];
        let text = plan_table(&Plan::build(cands.to_vec(), &Account::default(), false, false));
        assert!(text.lines().all(|l| !l.chars().any(acts_on_terminal)), "{text:?}");
        assert_eq!(printable("plain"), Cow::Borrowed("plain"));
    }

    #[test]
    fn ages() {
        assert_eq!(age(100, 0), "?");
        assert_eq!(age(200, 80), "2m");
        assert_eq!(age(10_000, 1), "2h 46m");
        assert_eq!(age(200_000, 1), "2d 7h");
    }
}
