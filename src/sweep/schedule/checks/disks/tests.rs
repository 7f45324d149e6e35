//! The disk checks on hand-made evidence: a Delete that keeps every rule passes, and each
//! rule broken on its own fails its invariant (the sweep's own proof that D1-D3 can fail,
//! besides the job broken on purpose in docs/reliability.md).

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::super::{Evidence, notices};
use super::{check, name};
use crate::notice::Event;
use crate::sim::{CallRecord, DeletedDisk, SimState};
use crate::state::Store;
use crate::sweep::schedule::disks::WorldDisk;
use crate::sweep::schedule::{EPOCH, Options, RunLog, Served, Stats, World};

const HOUR: i64 = 3_600;

/// Whole seconds as the ledger's seconds.
fn as_secs(s: i64) -> f64 {
    f64::from(u32::try_from(s).expect("a few hours"))
}

/// A world whose job watches disks with a window of 1 h and a grace of 1 h, and two
/// free-standing disks of its own: `bsi-a` and the protected `bsi-p`.
fn world() -> World {
    let mut w = World::build(1, Options::default());
    w.grace = HOUR;
    w.disks.watch = true;
    w.disks.detached_for = HOUR;
    w.disks.rows.clear();
    for (id, name, protected) in [("bsi-a", "scratch-1", false), ("bsi-p", "scratch-keep-2", true)] {
        w.disks.rows.insert(
            id.into(),
            WorldDisk {
                name: name.into(),
                host: String::new(),
                protected,
            },
        );
    }
    w
}

fn notice(w: &World, kind: &str, id: &str, key: i64, at: i64) -> Value {
    json!({
        "id": Event::stable_id(&[kind, &w.account.slug(), id, &key.to_string()]),
        "kind": kind, "at": at, "target": {"kind": "disk", "id": id},
    })
}

fn delete(id: &str, at_secs: f64) -> CallRecord {
    CallRecord {
        at_secs,
        action: "DeleteCompshareDisk".into(),
        ids: vec![id.into()],
        ret_code: Some(0),
        http_status: 200,
        fault: None,
        public_key: String::new(),
    }
}

/// The invariants the disk checks name for `bsi-a` deleted at `at` hours (decided by a run
/// then), marked at `marked` hours, with `inbox` besides, `keeps` and extra Delete calls.
fn failures(
    at: i64,
    marked: i64,
    extra: &[CallRecord],
    keeps: &[(String, i64, i64)],
    told: bool,
) -> BTreeSet<&'static str> {
    let w = world();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.sqlite3"), &w.account).unwrap();
    let (t, m) = (EPOCH + at * HOUR, EPOCH + marked * HOUR);
    let secs = as_secs(at * HOUR);
    let mut state = SimState::default();
    state.deleted_disks.push(DeletedDisk {
        disk_id: "bsi-a".into(),
        at_secs: secs,
    });
    state.calls.push(delete("bsi-a", secs));
    state.calls.extend(extra.iter().cloned());
    let runs: Vec<RunLog> = (0..=12)
        .map(|h| RunLog {
            now: EPOCH + h * HOUR,
            start_secs: as_secs(h * HOUR),
            disturbed: false,
            delivered: 0..0,
        })
        .collect();
    let mut inbox = vec![notice(&w, "marked", "bsi-a", m, m)];
    if told {
        inbox.push(notice(&w, "torn_down", "bsi-a", m, t));
    }
    let served = Served::new();
    let marks = BTreeSet::new();
    let e = Evidence {
        world: &w,
        state: &state,
        served: &served,
        runs: &runs,
        keeps,
        attached: &[],
        disk_marks: &marks,
        inbox: &inbox,
        store: &store,
    };
    let got = notices(&inbox);
    check(&e, &got, &mut Stats::default())
        .into_iter()
        .map(|f| f.invariant)
        .collect()
}

#[test]
fn a_delete_after_the_window_and_the_grace_passes() {
    // Free since the world began; marked at 1 h (the window), deleted at 2 h (the grace).
    assert_eq!(failures(2, 1, &[], &[], true), BTreeSet::new());
}

#[test]
fn a_delete_before_the_window_or_the_grace_fails_d1() {
    // Marked at once, deleted after the grace: the window was not waited.
    assert_eq!(failures(1, 0, &[], &[], true), BTreeSet::from([name::DISK_WINDOW]));
    // Marked after the window, deleted before its grace ended.
    assert_eq!(failures(1, 1, &[], &[], true), BTreeSet::from([name::DISK_WINDOW]));
}

#[test]
fn a_delete_of_a_kept_protected_or_unknown_disk_fails_d2() {
    let kept = [("bsi-a".to_owned(), EPOCH + HOUR, EPOCH + 3 * HOUR)];
    assert_eq!(failures(2, 1, &[], &kept, true), BTreeSet::from([name::DISK_FORBIDDEN]));
    for id in ["bsi-p", "bsi-nope"] {
        let refused = CallRecord {
            ret_code: Some(8_000),
            ..delete(id, 3.0 * 3_600.0)
        };
        assert_eq!(
            failures(2, 1, &[refused], &[], true),
            BTreeSet::from([name::DISK_FORBIDDEN]),
            "{id}"
        );
    }
}

#[test]
fn an_untold_delete_fails_d3() {
    assert_eq!(failures(2, 1, &[], &[], false), BTreeSet::from([name::DISK_NOTICE]));
}
