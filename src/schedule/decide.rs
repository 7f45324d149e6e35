//! The pure decision for one selected instance in one scheduled run: from its mark and keep in
//! the store, the fresh listing and the idle judgement, what to do (mark, unmark, wait, act).
//! No I/O, no clock: `now` comes in. Table-tested in `tests.rs`, like the engine's machine.
//!
//! Safety rules that live here:
//! - Nothing is acted on unless the judgement made on this run's fresh samples says idle, the
//!   mark's grace has ended, no keep holds, and (if set) it is inside the acting hours. A
//!   missing sample, a gap or a monitoring error is never idleness.
//! - A mark is dropped (and the owner told) as soon as the instance is seen busy, started
//!   again, stopped or deleted by someone, kept, or no longer selected (renamed or re-tagged
//!   into a protection, or out of the filters).
//! - A teardown that had begun when a job died is finished on the next run only while the
//!   instance is not running again: a running instance is judged afresh (and the job clears
//!   the `acting` flag of a mark that waits, so a person's later stop is not taken for ours).

use serde::Serialize;

use crate::state::{Keep, Mark};

/// What the fresh listing says about a marked or selected instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listed {
    /// Selected and running.
    Running,
    /// Selected and not running (stopping, stopped, starting, ...).
    NotRunning,
    /// Listed, but the selection refuses it now (protected, excluded, out of the filters).
    NotSelected,
    /// Not listed at all.
    Gone,
}

/// The idle rule's answer on fresh data, as far as the decision needs it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "judgement", rename_all = "snake_case")]
pub enum Judgement {
    /// Every GPU at or under the thresholds for the whole window.
    Idle,
    /// A sample over a threshold in the window.
    Busy { at: i64 },
    /// Started (again) less than the window ago.
    StartedAgain,
    /// Not known to be idle: no data, a gap, an error. Never acted on.
    Unknown { why: String },
    /// Not judged (not running, no GPU, not selected).
    NotJudged,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Not marked and not idle: nothing to do.
    Nothing,
    /// Found idle for the first time: mark it, due at `due_at`, and tell the owner.
    Mark { due_at: i64 },
    /// Marked and waiting: `why` (grace not over, no fresh idle data, outside acting hours).
    Wait { due_at: i64, why: String },
    /// Tear it down (or stop it) now. `new_mark`: marked in this same run (grace 0).
    Act { new_mark: bool },
    /// Drop the mark and tell the owner why.
    Unmark { why: String },
    /// A keep holds until `until_at`: left alone (a mark it had is dropped).
    Kept { until_at: i64 },
    /// A teardown begun by an earlier run is over: the instance is gone.
    Finished,
}

/// The knobs of the decision.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Seconds between the mark and the teardown; 0 acts on the run that finds it idle.
    pub grace: i64,
    /// Whether `now` is inside the acting hours (always true without them).
    pub in_hours: bool,
}

/// Decide for one instance. `keep` is only passed while it holds (`until_at > now`).
pub fn decide(
    now: i64,
    mark: Option<&Mark>,
    keep: Option<&Keep>,
    listed: Listed,
    judgement: &Judgement,
    policy: Policy,
) -> Decision {
    let unmark = |why: &str| unmark(mark, why);
    let acting = mark.is_some_and(|m| m.acting_since.is_some());
    match listed {
        Listed::Gone if acting => return Decision::Finished,
        Listed::Gone => return unmark("deleted by someone else"),
        Listed::NotSelected => return unmark("no longer selected (protected, excluded or filtered out)"),
        Listed::NotRunning | Listed::Running => {}
    }
    if let Some(k) = keep {
        return kept(mark, k);
    }
    if listed == Listed::NotRunning {
        // Our own teardown stopped it before the job died: finish it. Anyone else's stop
        // ends the mark (the GPU is no longer billed by the hour).
        return if acting {
            finish_or_wait(mark, policy)
        } else {
            unmark("no longer running")
        };
    }
    match judgement {
        Judgement::Busy { .. } => unmark("busy again"),
        Judgement::StartedAgain => unmark("started again"),
        Judgement::Unknown { why } => match mark {
            // Keep the mark but never act without fresh evidence of idleness.
            Some(m) => Decision::Wait {
                due_at: m.due_at,
                why: format!("not known to be idle: {why}"),
            },
            None => Decision::Nothing,
        },
        Judgement::NotJudged => unmark("not judged"),
        Judgement::Idle => idle(now, mark, policy),
    }
}

/// What the fresh disk listing says about a marked or selected data disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskListed {
    /// Selected and attached to no instance (free or detaching), first seen so since `since`
    /// by the state store.
    Detached { since: i64 },
    /// Selected and attached to an instance (or in a status no rule knows).
    Attached,
    /// Listed, but the selection refuses it now (protected, excluded, out of scope).
    NotSelected,
    /// Not listed at all.
    Gone,
}

/// Decide for one data disk. The disk's "idle" is "detached for at least `detached_for`
/// seconds, as measured by the store"; the rest (keep, grace, acting hours, a deletion begun
/// by a job that died) is the instance rule. A disk seen attached loses its mark at once,
/// acting or not: the deletion driver never deletes an attached disk, and a disk someone
/// attached again is in use.
pub fn decide_disk(
    now: i64,
    mark: Option<&Mark>,
    keep: Option<&Keep>,
    listed: DiskListed,
    detached_for: i64,
    policy: Policy,
) -> Decision {
    let unmark = |why: &str| unmark(mark, why);
    let acting = mark.is_some_and(|m| m.acting_since.is_some());
    let since = match listed {
        DiskListed::Gone if acting => return Decision::Finished,
        DiskListed::Gone => return unmark("deleted by someone else"),
        DiskListed::NotSelected => return unmark("no longer selected (protected, excluded or out of scope)"),
        DiskListed::Attached => None,
        DiskListed::Detached { since } => Some(since),
    };
    if let Some(k) = keep {
        return kept(mark, k);
    }
    match since {
        None => unmark("attached again"),
        // Marked, yet detached for less than the window now: the store saw it attached in
        // between (its clock started over), so it was in use again.
        Some(since) if now.saturating_sub(since) < detached_for => unmark("attached again since it was marked"),
        Some(_) => idle(now, mark, policy),
    }
}

/// Drop the mark, if there is one, saying why.
fn unmark(mark: Option<&Mark>, why: &str) -> Decision {
    match mark {
        Some(_) => Decision::Unmark { why: why.to_owned() },
        None => Decision::Nothing,
    }
}

/// A keep holds: it drops a mark, or is shown as the reason nothing happens.
fn kept(mark: Option<&Mark>, k: &Keep) -> Decision {
    match mark {
        Some(_) => Decision::Unmark {
            why: format!("kept until {}", rfc3339(k.until_at)),
        },
        None => Decision::Kept { until_at: k.until_at },
    }
}

/// Idle (or detached for long enough): mark it, wait out the grace, then act (in hours).
fn idle(now: i64, mark: Option<&Mark>, policy: Policy) -> Decision {
    match mark {
        None if policy.grace == 0 && policy.in_hours => Decision::Act { new_mark: true },
        None => Decision::Mark {
            due_at: now.saturating_add(policy.grace),
        },
        Some(m) if m.due_at > now => Decision::Wait {
            due_at: m.due_at,
            why: "grace period".into(),
        },
        Some(_) => finish_or_wait(mark, policy),
    }
}

/// A unix time as RFC 3339 UTC, for people reading a notice.
fn rfc3339(t: i64) -> String {
    u64::try_from(t).map_or_else(
        |_| t.to_string(),
        |s| humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s)).to_string(),
    )
}

/// A due mark: act now, or wait for the acting hours.
fn finish_or_wait(mark: Option<&Mark>, policy: Policy) -> Decision {
    if policy.in_hours {
        Decision::Act { new_mark: false }
    } else {
        Decision::Wait {
            due_at: mark.map_or(0, |m| m.due_at),
            why: "outside the acting hours".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Kind;

    fn mark(due_at: i64, acting: bool) -> Mark {
        Mark {
            kind: Kind::Instance,
            id: "uhost-1".into(),
            name: "n".into(),
            marked_at: 0,
            due_at,
            reason: "idle".into(),
            acting_since: acting.then_some(due_at),
        }
    }

    type Row<'j> = (Option<Mark>, bool, Listed, &'j Judgement, bool, Decision);

    /// Every listing × judgement × mark × keep × hours case that matters, one row each.
    #[test]
    fn decision_table() {
        use Decision as D;
        use Judgement as J;
        use Listed as L;
        let keep = Keep {
            kind: Kind::Instance,
            id: "uhost-1".into(),
            until_at: 900,
            reason: String::new(),
            created_at: 0,
        };
        let idle = J::Idle;
        let busy = J::Busy { at: 90 };
        let unknown = J::Unknown { why: "a gap".into() };
        let unmark = |why: &str| D::Unmark { why: why.into() };
        let wait = |due: i64, why: &str| D::Wait {
            due_at: due,
            why: why.into(),
        };
        let (now, grace) = (100, 60);
        #[rustfmt::skip]
        let table: Vec<Row<'_>> = vec![
            // mark                keep   listed         judgement  in hours  decision
            (None,                 false, L::Running,    &idle,     true,  D::Mark { due_at: 160 }),
            (None,                 false, L::Running,    &idle,     false, D::Mark { due_at: 160 }),
            (None,                 false, L::Running,    &busy,     true,  D::Nothing),
            (None,                 false, L::Running,    &unknown,  true,  D::Nothing),
            (None,                 false, L::Running,    &J::StartedAgain, true, D::Nothing),
            (None,                 false, L::NotRunning, &J::NotJudged, true, D::Nothing),
            (None,                 false, L::Gone,       &J::NotJudged, true, D::Nothing),
            (None,                 true,  L::Running,    &idle,     true,  D::Kept { until_at: 900 }),
            (Some(mark(150, false)), false, L::Running,  &idle,     true,  wait(150, "grace period")),
            (Some(mark(100, false)), false, L::Running,  &idle,     true,  D::Act { new_mark: false }),
            (Some(mark(50, false)),  false, L::Running,  &idle,     false, wait(50, "outside the acting hours")),
            (Some(mark(50, false)),  false, L::Running,  &busy,     true,  unmark("busy again")),
            (Some(mark(50, false)),  false, L::Running,  &J::StartedAgain, true, unmark("started again")),
            (Some(mark(50, false)),  false, L::Running,  &unknown,  true,  wait(50, "not known to be idle: a gap")),
            (Some(mark(50, false)),  true,  L::Running,  &idle,     true,  unmark("kept until 1970-01-01T00:15:00Z")),
            (Some(mark(50, false)),  false, L::NotRunning, &J::NotJudged, true, unmark("no longer running")),
            (Some(mark(50, false)),  false, L::NotSelected, &idle,  true,  unmark("no longer selected (protected, excluded or filtered out)")),
            (Some(mark(50, false)),  false, L::Gone,     &J::NotJudged, true, unmark("deleted by someone else")),
            // A teardown begun by a job that died.
            (Some(mark(50, true)),   false, L::Gone,     &J::NotJudged, true, D::Finished),
            (Some(mark(50, true)),   false, L::NotRunning, &J::NotJudged, true, D::Act { new_mark: false }),
            (Some(mark(50, true)),   false, L::NotRunning, &J::NotJudged, false, wait(50, "outside the acting hours")),
            (Some(mark(50, true)),   false, L::Running,  &busy,     true,  unmark("busy again")),
            (Some(mark(50, true)),   false, L::Running,  &J::StartedAgain, true, unmark("started again")),
            (Some(mark(50, true)),   true,  L::NotRunning, &J::NotJudged, true, unmark("kept until 1970-01-01T00:15:00Z")),
        ];
        for (i, (m, kept, listed, judgement, in_hours, want)) in table.into_iter().enumerate() {
            let policy = Policy { grace, in_hours };
            let got = decide(now, m.as_ref(), kept.then_some(&keep), listed, judgement, policy);
            assert_eq!(got, want, "row {i}");
        }
    }

    #[test]
    fn grace_zero_acts_on_the_run_that_finds_it_idle_but_only_in_hours() {
        let p = |in_hours| Policy { grace: 0, in_hours };
        assert_eq!(
            decide(5, None, None, Listed::Running, &Judgement::Idle, p(true)),
            Decision::Act { new_mark: true }
        );
        assert_eq!(
            decide(5, None, None, Listed::Running, &Judgement::Idle, p(false)),
            Decision::Mark { due_at: 5 }
        );
        // Busy or unknown is never acted on, whatever the grace.
        for j in [Judgement::Busy { at: 4 }, Judgement::Unknown { why: "x".into() }] {
            assert_eq!(decide(5, None, None, Listed::Running, &j, p(true)), Decision::Nothing);
        }
    }

    /// A disk is "idle" once detached for the window; attached again ends its mark.
    #[test]
    fn disk_decision_table() {
        use Decision as D;
        use DiskListed as L;
        let keep = Keep {
            kind: Kind::Disk,
            id: "bsi-1".into(),
            until_at: 900,
            reason: String::new(),
            created_at: 0,
        };
        let unmark = |why: &str| D::Unmark { why: why.into() };
        let (now, grace, window) = (1000, 60, 500);
        let old = L::Detached { since: 400 };
        let young = L::Detached { since: 600 };
        #[rustfmt::skip]
        let table: Vec<(Option<Mark>, bool, L, bool, D)> = vec![
            // mark                 keep   listed          in hours decision
            (None,                  false, old,            true,  D::Mark { due_at: 1060 }),
            (None,                  false, young,          true,  D::Nothing),
            (None,                  false, L::Attached,    true,  D::Nothing),
            (None,                  false, L::NotSelected, true,  D::Nothing),
            (None,                  false, L::Gone,        true,  D::Nothing),
            (None,                  true,  old,            true,  D::Kept { until_at: 900 }),
            (Some(mark(1050, false)), false, old,          true,  D::Wait { due_at: 1050, why: "grace period".into() }),
            (Some(mark(1000, false)), false, old,          true,  D::Act { new_mark: false }),
            (Some(mark(900, false)),  false, old,          false, D::Wait { due_at: 900, why: "outside the acting hours".into() }),
            (Some(mark(900, false)),  false, young,        true,  unmark("attached again since it was marked")),
            (Some(mark(900, false)),  false, L::Attached,  true,  unmark("attached again")),
            (Some(mark(900, false)),  true,  old,          true,  unmark("kept until 1970-01-01T00:15:00Z")),
            (Some(mark(900, false)),  false, L::NotSelected, true, unmark("no longer selected (protected, excluded or out of scope)")),
            (Some(mark(900, false)),  false, L::Gone,      true,  unmark("deleted by someone else")),
            // A deletion begun by a job that died.
            (Some(mark(900, true)),   false, L::Gone,      true,  D::Finished),
            (Some(mark(900, true)),   false, old,          true,  D::Act { new_mark: false }),
            (Some(mark(900, true)),   false, L::Attached,  true,  unmark("attached again")),
        ];
        for (i, (m, kept, listed, in_hours, want)) in table.into_iter().enumerate() {
            let policy = Policy { grace, in_hours };
            let got = decide_disk(now, m.as_ref(), kept.then_some(&keep), listed, window, policy);
            assert_eq!(got, want, "row {i}");
        }
        // Grace 0 deletes on the run that finds it detached for long enough, in hours only.
        let p = |in_hours| Policy { grace: 0, in_hours };
        assert_eq!(
            decide_disk(now, None, None, old, window, p(true)),
            D::Act { new_mark: true }
        );
        assert_eq!(
            decide_disk(now, None, None, old, window, p(false)),
            D::Mark { due_at: now }
        );
    }
}
