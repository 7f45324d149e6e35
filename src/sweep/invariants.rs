//! The invariants one seed's run must keep, checked against the simulator's ground truth
//! (every call it received, the rules broken, the rows it still has) rather than against what
//! the engine believes.

use std::collections::{BTreeMap, BTreeSet};

use crate::app::Exit;
use crate::sim::{CallRecord, SimState, rule};
use crate::workflow::Report;

use super::Failure;
use super::world::World;

/// Invariant names, as printed for a failing seed.
pub mod name {
    /// The simulator recorded a rule the client broke (see [`crate::sim::rule`]); Terminate
    /// races are not counted (the simulator lists them apart).
    pub const SIM_VIOLATION: &str = "simulator violation";
    /// A mutating call on an ID nobody selected.
    pub const UNSELECTED: &str = "mutating call outside the selection";
    /// A mutating call on an excluded or protected instance, or on this machine.
    pub const REFUSED: &str = "mutating call on an excluded/protected/self instance";
    /// The tool never starts an instance.
    pub const START: &str = "Start sent";
    /// A second Terminate after one was applied, however it was answered (accepted, a lost
    /// answer, a 502 after the work: the call record keeps the RetCode the backend gave).
    pub const TERMINATE_TWICE: &str = "applied Terminate sent again";
    /// The report says gone (terminated, already gone, deleted by someone else) but the
    /// simulator still has the instance, with no Terminate accepted.
    pub const GONE: &str = "reported gone but still exists";
    /// Every selected ID ends in the report exactly once.
    pub const REPORT: &str = "report incomplete";
    /// Exit 0 while a selected, unprotected instance still exists and is not being deleted.
    pub const EXIT: &str = "exit code disagrees with the simulator";
    /// A run segment did not end within its deadline plus grace.
    pub const HANG: &str = "run did not end";
    /// The private key appeared in a log line, the journal, the report or its table.
    pub const SECRET: &str = "private key printed";
    /// A `run --all` acted on a listing that missed an instance of the account, or a listing
    /// that could not be read was followed by a call anyway (it must end with exit 4 before
    /// any change).
    pub const LISTING: &str = "listing the run acted on is incomplete";
    /// The report's call counts (`api_calls`, the rows' `calls`) are not the calls the
    /// simulator received from the process that wrote it, or its `calls_before_resume` is
    /// short of what earlier processes sent.
    pub const CALLS: &str = "report's call counts differ from the simulator's ledger";
}

const MUTATING: [&str; 3] = [
    "StopCompShareInstance",
    "StartCompShareInstance",
    "TerminateCompShareInstance",
];

/// What one seed left behind, for the checks.
pub(crate) struct Evidence<'a> {
    pub world: &'a World,
    pub state: &'a SimState,
    /// `None` when the last segment never ended.
    pub report: Option<&'a Report>,
    pub exit: Option<Exit>,
    /// Everything the run wrote where a person or a file could see it.
    pub outputs: &'a [(&'static str, String)],
    /// `run --all` worlds: the IDs the selection listing handed to the run, or why it could
    /// not be read.
    pub listed: Option<Result<&'a [String], String>>,
}

fn fail(out: &mut Vec<Failure>, invariant: &'static str, id: Option<&str>, detail: String) {
    out.push(Failure {
        invariant,
        uhost_id: id.map(str::to_owned),
        detail,
    });
}

#[expect(
    clippy::too_many_lines,
    reason = "one invariant after another, each a short block; the list reads best whole"
)]
pub(crate) fn check(e: &Evidence<'_>) -> Vec<Failure> {
    let mut out = Vec::new();
    let w = e.world;
    for v in &e.state.violations {
        // A call reaching an instance someone else deleted moments before is a race the
        // client cannot close (its last look showed the row); the simulator records it, the
        // sweep only counts it.
        if v.rule == rule::AFTER_DELETE {
            continue;
        }
        fail(
            &mut out,
            name::SIM_VIOLATION,
            Some(&v.uhost_id),
            format!("{} {} at {:.1}s: {}", v.rule, v.action, v.at_secs, v.detail),
        );
    }

    match &e.listed {
        Some(Ok(ids)) => {
            for row in w.rows.iter().filter(|r| !w.refused.contains(&r.uhost_id)) {
                if !ids.contains(&row.uhost_id) {
                    fail(
                        &mut out,
                        name::LISTING,
                        Some(&row.uhost_id),
                        format!(
                            "missing from a listing of {} rows; the account had {}",
                            ids.len(),
                            w.rows.len()
                        ),
                    );
                }
            }
        }
        Some(Err(why)) => {
            let sent = e
                .state
                .calls
                .iter()
                .filter(|c| MUTATING.contains(&c.action.as_str()))
                .count();
            if sent > 0 || e.report.is_some() {
                fail(
                    &mut out,
                    name::LISTING,
                    None,
                    format!("the listing failed ({why}), yet {sent} mutating call(s) were sent"),
                );
            }
        }
        None => {}
    }

    let mut accepted: BTreeMap<&str, f64> = BTreeMap::new();
    for call in e.state.calls.iter().filter(|c| MUTATING.contains(&c.action.as_str())) {
        for id in &call.ids {
            let at = format!("{} at {:.1}s", call.action, call.at_secs);
            if !w.selected.contains(id) {
                fail(&mut out, name::UNSELECTED, Some(id), at.clone());
            } else if w.refused.contains(id) {
                fail(&mut out, name::REFUSED, Some(id), at.clone());
            }
            if call.action == "StartCompShareInstance" {
                fail(&mut out, name::START, Some(id), at.clone());
            }
            if call.action == "TerminateCompShareInstance" {
                if let Some(first) = accepted.get(id.as_str()) {
                    fail(
                        &mut out,
                        name::TERMINATE_TWICE,
                        Some(id),
                        format!("{at}, first accepted at {first:.1}s"),
                    );
                } else if call.ret_code == Some(0) {
                    // Accepted, whether or not its answer reached the client.
                    accepted.insert(id, call.at_secs);
                }
            }
        }
    }

    // Ground truth: rows still listed, and those on their way out after an accepted
    // Terminate (they disappear by themselves).
    let listed: BTreeMap<String, String> = e
        .state
        .instances
        .iter()
        .filter_map(|v| {
            Some((
                v.get("UHostId")?.as_str()?.to_owned(),
                v.get("State").and_then(|s| s.as_str()).unwrap_or("").to_owned(),
            ))
        })
        .collect();
    let leaving: BTreeSet<&str> = e
        .state
        .terminated
        .iter()
        .filter(|t| !t.by_other)
        .map(|t| t.uhost_id.as_str())
        .collect();
    let alive = |id: &str| listed.contains_key(id) && !leaving.contains(id);

    if let Some(report) = e.report {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for i in &report.instances {
            *seen.entry(i.uhost_id.as_str()).or_default() += 1;
            if i.outcome.is_gone() && alive(&i.uhost_id) {
                fail(
                    &mut out,
                    name::GONE,
                    Some(&i.uhost_id),
                    format!(
                        "reported {}, the simulator lists it as {}",
                        i.outcome.word(),
                        listed[&i.uhost_id]
                    ),
                );
            }
        }
        for id in &w.ids {
            match seen.get(id.as_str()) {
                Some(1) => {}
                n => fail(
                    &mut out,
                    name::REPORT,
                    Some(id),
                    format!("{} outcome(s) in the report", n.copied().unwrap_or(0)),
                ),
            }
        }
        if e.exit == Some(Exit::Ok) {
            for id in w.selected.iter().filter(|id| !w.refused.contains(*id)) {
                if alive(id) {
                    let word = report
                        .instances
                        .iter()
                        .find(|i| &i.uhost_id == id)
                        .map_or("absent from the report", |i| i.outcome.word());
                    fail(
                        &mut out,
                        name::EXIT,
                        Some(id),
                        format!("exit 0, the simulator lists it as {} (report: {word})", listed[id]),
                    );
                }
            }
        }
    }

    for (what, text) in e.outputs {
        if text.contains(&w.private_key) {
            fail(&mut out, name::SECRET, None, format!("in the {what}"));
        }
    }
    out
}

/// The calls in `calls`, by action.
fn by_action(calls: &[CallRecord]) -> BTreeMap<String, u32> {
    let mut by = BTreeMap::new();
    for c in calls {
        *by.entry(c.action.clone()).or_default() += 1;
    }
    by
}

/// A report against the simulator's ledger: `ours` are the calls the process that wrote it
/// sent (its own segment), `earlier` those of the processes before it (killed, then resumed
/// by it). Its `api_calls` must be exactly `ours`, its rows' `calls` the mutating ones among
/// them; its `calls_before_resume` counts every journaled call of the earlier processes, so
/// it is at least what they sent (an intent whose process died before sending counts too).
pub(crate) fn call_counts(report: &Report, ours: &[CallRecord], earlier: &[CallRecord]) -> Vec<Failure> {
    let mut out = Vec::new();
    let ledger = by_action(ours);
    if report.summary.api_calls != ledger {
        fail(
            &mut out,
            name::CALLS,
            None,
            format!(
                "api_calls {:?}, the simulator received {ledger:?}",
                report.summary.api_calls
            ),
        );
    }
    let mutating = |a: &str| !a.starts_with("Describe");
    let sent: u32 = ledger.iter().filter(|(a, _)| mutating(a)).map(|(_, n)| n).sum();
    let rows: u32 = report.instances.iter().map(|i| i.calls).sum();
    if rows != sent {
        fail(
            &mut out,
            name::CALLS,
            None,
            format!("the rows count {rows} mutating calls, the simulator received {sent}"),
        );
    }
    for (action, n) in by_action(earlier).iter().filter(|(a, _)| mutating(a)) {
        let journaled = report.summary.calls_before_resume.get(action).copied().unwrap_or(0);
        if journaled < *n {
            fail(
                &mut out,
                name::CALLS,
                None,
                format!("calls_before_resume has {journaled} {action}, earlier processes sent {n}"),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::CallRecord;
    use crate::sweep::Options;

    /// The first seed whose world selects by listing.
    fn listing_world() -> World {
        // A fifth of the worlds list: the first hundred seeds hold some.
        (0..100)
            .map(|seed| {
                World::build(
                    seed,
                    Options {
                        max_instances: 20,
                        ..Options::default()
                    },
                )
            })
            .find(|w| w.lists && w.ids.len() >= 2)
            .expect("a fifth of the worlds list")
    }

    fn listing_failures(w: &World, state: &SimState, listed: Result<&[String], String>) -> Vec<Failure> {
        check(&Evidence {
            world: w,
            state,
            report: None,
            exit: None,
            outputs: &[],
            listed: Some(listed),
        })
        .into_iter()
        .filter(|f| f.invariant == name::LISTING)
        .collect()
    }

    #[test]
    fn a_listing_the_run_acted_on_must_hold_every_instance() {
        let w = listing_world();
        let state = SimState::default();
        assert!(listing_failures(&w, &state, Ok(&w.ids)).is_empty());
        let short = &w.ids[1..];
        let failures = listing_failures(&w, &state, Ok(short));
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].uhost_id.as_deref(), Some(w.ids[0].as_str()));
    }

    fn call(action: &str) -> CallRecord {
        CallRecord {
            at_secs: 0.0,
            action: action.into(),
            ids: vec!["uhost-a".into()],
            ret_code: Some(0),
            http_status: 200,
            fault: None,
            public_key: String::new(),
        }
    }

    /// The call counts bite: a report counting an earlier process's Stop as its own, or
    /// missing it from `calls_before_resume`, fails; the true one passes.
    #[test]
    fn a_report_counts_the_calls_of_its_own_process() {
        use crate::workflow::{InstanceReport, Outcome};
        let report = |calls: u32, api: &[(&str, u32)], before: &[(&str, u32)]| {
            let mut r = Report::new(
                vec![InstanceReport {
                    kind: crate::workflow::TargetKind::Instance,
                    uhost_id: "uhost-a".into(),
                    name: String::new(),
                    region: String::new(),
                    zone: String::new(),
                    last_state: String::new(),
                    outcome: Outcome::AlreadyGone,
                    seconds: 0.0,
                    calls,
                    calls_before_resume: 0,
                    release_udisk: false,
                    size_gb: None,
                }],
                0.0,
                api.iter().map(|(a, n)| ((*a).to_owned(), *n)).collect(),
                0,
            );
            r.summary.calls_before_resume = before.iter().map(|(a, n)| ((*a).to_owned(), *n)).collect();
            r
        };
        let earlier = [call("StopCompShareInstance")];
        let ours = [call("DescribeCompShareInstance"), call("TerminateCompShareInstance")];
        let honest = report(
            1,
            &[("DescribeCompShareInstance", 1), ("TerminateCompShareInstance", 1)],
            &[("StopCompShareInstance", 1)],
        );
        assert!(call_counts(&honest, &ours, &earlier).is_empty());
        let stop_as_ours = report(
            2,
            &[("DescribeCompShareInstance", 1), ("TerminateCompShareInstance", 1)],
            &[("StopCompShareInstance", 1)],
        );
        assert_eq!(call_counts(&stop_as_ours, &ours, &earlier).len(), 1);
        let unsent_look = report(
            1,
            &[("DescribeCompShareInstance", 2), ("TerminateCompShareInstance", 1)],
            &[("StopCompShareInstance", 1)],
        );
        assert_eq!(call_counts(&unsent_look, &ours, &earlier).len(), 1);
        let forgotten = report(
            1,
            &[("DescribeCompShareInstance", 1), ("TerminateCompShareInstance", 1)],
            &[],
        );
        assert_eq!(call_counts(&forgotten, &ours, &earlier).len(), 1);
    }

    #[test]
    fn a_listing_that_failed_allows_no_call() {
        let w = listing_world();
        let mut state = SimState::default();
        assert!(listing_failures(&w, &state, Err("incomplete".into())).is_empty());
        state.calls.push(CallRecord {
            at_secs: 0.0,
            action: "StopCompShareInstance".into(),
            ids: vec![w.ids[0].clone()],
            ret_code: Some(0),
            http_status: 200,
            fault: None,
            public_key: String::new(),
        });
        assert_eq!(listing_failures(&w, &state, Err("incomplete".into())).len(), 1);
    }
}
