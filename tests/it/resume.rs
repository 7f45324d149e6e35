//! What a resumed run believes of its journal, and what its report counts: only this
//! process's calls as its own (an earlier process's apart, `calls_before_resume`), an
//! instance or disk gone before the resume with no call of ours `already_gone`; a resumed
//! disk deletion looks before resending an unanswered Delete and only confirms an accepted
//! one. Paused time, the in-memory simulator.

use std::collections::BTreeMap;
use std::sync::Arc;

use compshare_teardown::api::{Cloud, DiskCloud, DiskRow, DiskTarget, Instance, State, Target, describe_disks_all};
use compshare_teardown::sim::{Faults, Scenario, ScenarioDisk, SimHandle, SimState};
use compshare_teardown::workflow::disks::{DiskControls, DiskSettings, delete_disks};
use compshare_teardown::workflow::journal::{self, Entry, JOURNAL_VERSION, Journal, JournalKind};
use compshare_teardown::workflow::machine::{Call, Effect};
use compshare_teardown::workflow::{self, Controls, Outcome, Report};

use crate::workflow::{settings, world};

fn start(kind: JournalKind, ids: &[String]) -> Entry {
    Entry::Start {
        version: JOURNAL_VERSION,
        kind,
        ids: ids.to_vec(),
        release_udisk: false,
        force_stop: false,
        resumed: false,
    }
}

/// The calls the simulator received from `from` on, by action.
fn ledger(state: &SimState, from: usize) -> BTreeMap<String, u32> {
    let mut by = BTreeMap::new();
    for c in &state.calls[from..] {
        *by.entry(c.action.clone()).or_default() += 1;
    }
    by
}

/// A row's outcome, `calls` and `calls_before_resume`.
fn row(report: &Report, id: &str) -> (Outcome, u32, u32) {
    let r = report.instances.iter().find(|i| i.uhost_id == id).unwrap();
    (r.outcome.clone(), r.calls, r.calls_before_resume)
}

/// An instance the crashed run stopped is terminated with one call of this process (its Stop
/// reported apart); one whose only journaled call never left, gone before the resume, is
/// `already_gone`; the report's call counts are exactly the calls this process sent.
#[tokio::test(start_paused = true)]
async fn a_resumed_run_counts_its_own_calls_and_knows_what_was_gone_before_it() {
    let sim = world(3, 41, Faults::default());
    let ids = sim.ids();
    for id in &ids {
        sim.set_state(id, State::Running);
    }
    let rows: Vec<Instance> = sim
        .snapshot()
        .instances
        .into_iter()
        .map(|r| serde_json::from_value(r).unwrap())
        .collect();
    let target = |id: &str| Target::of(rows.iter().find(|r| r.uhost_id == id).unwrap());
    let (stopped, unsent) = (ids[0].clone(), ids[1].clone());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let mut j = Journal::open(&path).unwrap();
    j.write(&start(JournalKind::Instance, &ids)).unwrap();
    let call = |id: &str, call| Entry::Call {
        id: id.to_owned(),
        call,
        region: target(id).region,
        zone: target(id).zone,
    };
    // The crashed process: a Stop sent and accepted; a Stop journaled, then not sent.
    j.write(&call(&stopped, Call::Stop)).unwrap();
    sim.stop(&target(&stopped), false).await.unwrap();
    j.write(&Entry::Result {
        id: stopped.clone(),
        call: Call::Stop,
        effect: Effect::Accepted,
        error: None,
    })
    .unwrap();
    j.write(&call(&unsent, Call::Stop)).unwrap();
    j.write(&Entry::Result {
        id: unsent.clone(),
        call: Call::Stop,
        effect: Effect::NotApplied,
        error: Some("not sent: the run is stopping".into()),
    })
    .unwrap();
    drop(j);
    // Someone else deletes the instance the crashed run never sent a call to.
    sim.set_state(&unsent, State::Stopped);
    sim.terminate(&target(&unsent), false).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(120)).await;
    assert!(!sim.ids().contains(&unsent));
    let from = sim.snapshot().calls.len();
    let ctl = Controls {
        journal: Some(Journal::open(&path).unwrap()),
        resume: Some(journal::replay(&path).unwrap()),
        ..Controls::default()
    };
    let report = workflow::run(Arc::new(sim.clone()), ids.clone(), settings(), ctl).await;
    assert_eq!(row(&report, &unsent), (Outcome::AlreadyGone, 0, 0), "{report:#?}");
    let s = row(&report, &stopped);
    assert!(matches!(s.0, Outcome::Terminated { confirmed: true, .. }), "{s:?}");
    assert_eq!((s.1, s.2), (1, 1), "{s:?}");
    assert_eq!(
        report.summary.calls_before_resume,
        BTreeMap::from([("StopCompShareInstance".to_owned(), 1)])
    );
    // The report's counts are the simulator's ledger of this process's calls.
    let state = sim.snapshot();
    assert_eq!(report.summary.api_calls, ledger(&state, from), "{report:#?}");
    let mutating: u32 = ledger(&state, from)
        .iter()
        .filter(|(a, _)| !a.starts_with("Describe"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(report.instances.iter().map(|i| i.calls).sum::<u32>(), mutating);
}

fn disk(id: &str) -> ScenarioDisk {
    ScenarioDisk {
        disk_id: id.into(),
        name: format!("name-{id}"),
        size_gb: 100,
        zone: "cn-wlcb-01".into(),
        ..ScenarioDisk::default()
    }
}

/// The journal of a crashed disk deletion: a Delete written but never sent (the disk is
/// still free), one sent and applied but unanswered, one accepted (the disk still listed: the
/// simulator never got it), one refused; and a disk with no call that someone else deleted.
/// The resume deletes the first and the refused one once each, after a fresh look, sends
/// nothing to the others, and says which were gone before it.
#[tokio::test(start_paused = true)]
async fn a_resumed_disk_deletion_looks_first_and_never_repeats_an_accepted_delete() {
    let names = ["bsi-unsent", "bsi-applied", "bsi-accepted", "bsi-refused", "bsi-nocall"];
    let mut s = Scenario::generated(1, 12);
    s.disks = names.iter().map(|n| disk(n)).collect();
    let sim = SimHandle::new(s);
    let ids: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let listed = describe_disks_all(&sim, None).await.unwrap();
    let target = |id: &str| DiskTarget::of(listed.iter().find(|r| r.disk_id == id).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let mut j = Journal::open(&path).unwrap();
    j.write(&start(JournalKind::Disk, &ids)).unwrap();
    let intent = |id: &str| Entry::DiskCall {
        id: id.to_owned(),
        region: target(id).region,
        zone: target(id).zone,
    };
    let result = |id: &str, effect| Entry::DiskResult {
        id: id.to_owned(),
        effect,
        error: None,
    };
    j.write(&intent("bsi-unsent")).unwrap();
    j.write(&intent("bsi-applied")).unwrap();
    sim.delete_disk(&target("bsi-applied")).await.unwrap();
    j.write(&intent("bsi-accepted")).unwrap();
    j.write(&result("bsi-accepted", Effect::Accepted)).unwrap();
    j.write(&intent("bsi-refused")).unwrap();
    j.write(&result("bsi-refused", Effect::NotApplied)).unwrap();
    drop(j);
    sim.delete_disk(&target("bsi-nocall")).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(120)).await;
    let from = sim.snapshot().calls.len();
    // As `disks delete --resume` hands them over: the listed rows, a bare ID for the others.
    let now = describe_disks_all(&sim, None).await.unwrap();
    let rows: Vec<DiskRow> = ids
        .iter()
        .map(|id| {
            now.iter().find(|r| &r.disk_id == id).cloned().unwrap_or(DiskRow {
                disk_id: id.clone(),
                ..DiskRow::default()
            })
        })
        .collect();
    let from_resume = sim.snapshot().calls.len();
    let ctl = DiskControls {
        journal: Some(Journal::open(&path).unwrap()),
        resume: Some(journal::replay_disks(&path).unwrap()),
        ..DiskControls::default()
    };
    let settings = DiskSettings {
        jitter_seed: Some(5),
        rate: 0,
        poll_interval: std::time::Duration::from_secs(1),
        ..DiskSettings::default()
    };
    let report = delete_disks(Arc::new(sim.clone()), rows, settings, ctl).await;
    let state = sim.snapshot();
    assert!(state.violations.is_empty(), "{:#?}", state.violations);
    let deletes: Vec<&str> = state.calls[from..]
        .iter()
        .filter(|c| c.action == "DeleteCompshareDisk")
        .map(|c| c.ids[0].as_str())
        .collect();
    assert_eq!(deletes.len(), 2, "{deletes:?}");
    assert!(
        deletes.contains(&"bsi-unsent") && deletes.contains(&"bsi-refused"),
        "{deletes:?}"
    );
    let want = [
        ("bsi-unsent", Outcome::Deleted { confirmed: true }, 1, 1),
        ("bsi-applied", Outcome::Deleted { confirmed: true }, 0, 1),
        ("bsi-accepted", Outcome::Deleted { confirmed: false }, 0, 1),
        ("bsi-refused", Outcome::Deleted { confirmed: true }, 1, 1),
        ("bsi-nocall", Outcome::AlreadyGone, 0, 0),
    ];
    for (id, outcome, calls, before) in want {
        assert_eq!(row(&report, id), (outcome, calls, before), "{id}");
    }
    assert_eq!(
        report.summary.calls_before_resume,
        BTreeMap::from([("DeleteCompshareDisk".to_owned(), 4)])
    );
    assert_eq!(report.summary.api_calls, ledger(&state, from_resume), "{report:#?}");
    // The disk accepted before the crash is still listed (the simulator never got that
    // Delete): it was never sent another.
    assert!(state.disks.iter().any(|d| d["ResourceId"] == "bsi-accepted"));
}
