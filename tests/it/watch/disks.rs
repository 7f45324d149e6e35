//! `watch --disks` end to end: the real binary marks, tells of and deletes a data disk only
//! once its own state store has seen it detached for the window, never a protected, attached
//! or recently detached one, and the dry run changes nothing.
//!
//! The binary reads the real clock, so "an hour later" is made by moving the store's
//! first-seen-detached times an hour back, exactly what an hour of waiting would have left
//! there.

use super::*;

fn disk(id: &str, name: &str, protected: bool) -> ScenarioDisk {
    ScenarioDisk {
        disk_id: id.into(),
        name: name.into(),
        size_gb: 500,
        zone: "cn-wlcb-01".into(),
        region: String::new(),
        disk_type: "CLOUD_SSD".into(),
        protected,
    }
}

/// The store's record of these disks, as if first seen detached an hour earlier.
fn an_hour_ago(store: &Path, ids: &[&str]) {
    let db = rusqlite::Connection::open(store).unwrap();
    for id in ids {
        let n = db
            .execute(
                "UPDATE disks SET detached_since = detached_since - 3600 WHERE id = ?1",
                [id],
            )
            .unwrap();
        assert_eq!(n, 1, "{id} was recorded by the first run");
    }
}

fn disk_decisions(report: &Value) -> BTreeSet<(String, String)> {
    report["disks"]
        .as_array()
        .unwrap_or_else(|| panic!("no disks: {report}"))
        .iter()
        .map(|d| {
            (
                d["disk_id"].as_str().unwrap().to_owned(),
                d["decision"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
#[expect(clippy::too_many_lines, reason = "one story, in the order it happens")]
fn a_disk_is_deleted_only_after_the_store_saw_it_detached_for_the_window() {
    let w = World::with_disks(vec![
        disk("bsi-old", "data-old", false),
        disk("bsi-fresh", "data-fresh", false),
        disk("bsi-prod", "prod-db", true),
        disk("bsi-used", "data-used", false),
    ]);
    w.server.handle.attach_disk("bsi-used", BUSY);
    let hook = Receiver::start(200);
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "--disks",
            "--disk-detached-for",
            "30m",
            "--protect-name",
            "prod-*",
            "--output",
            "json",
            "--notify-webhook",
            hook.url.as_str(),
        ]
        .map(str::to_owned)
        .to_vec();
        v.extend(extra.iter().map(|s| (*s).to_owned()));
        v
    };
    let watch = |extra: &[&str]| {
        let a = args(extra);
        w.watch(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };

    // First look: every free disk is first seen detached now; none is marked.
    let out = watch(&["--yes"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let report = out.json();
    assert_eq!(
        disk_decisions(&report),
        pairs(&[("bsi-old", "nothing"), ("bsi-fresh", "nothing")]),
        "{report}"
    );
    assert!(w.snapshot().deleted_disks.is_empty());

    // An hour later for two of them (the store's clock moved back, as waiting would have).
    an_hour_ago(&w.default_store(), &["bsi-old", "bsi-prod"]);

    // The dry run shows the deletion and changes nothing.
    let calls = w.snapshot().calls.len();
    let out = watch(&["--dry-run", "--grace", "0"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(disk_decisions(&out.json()).contains(&("bsi-old".to_owned(), "act".to_owned())));
    let deletes = |w: &World| {
        w.snapshot()
            .calls
            .iter()
            .filter(|c| c.action == "DeleteCompshareDisk")
            .count()
    };
    assert_eq!(deletes(&w), 0);
    assert!(w.snapshot().calls.len() > calls, "the dry run looks");

    let before = hook.events().len();
    let metrics = w.path("watch.prom");
    let out = watch(&["--yes", "--grace", "0", "--metrics-file", metrics.to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{out:?}");
    out.masked();
    let report = out.json();
    assert_eq!(
        disk_decisions(&report),
        pairs(&[("bsi-old", "act"), ("bsi-fresh", "nothing")]),
        "{report}"
    );
    let deleted: Vec<String> = w.snapshot().deleted_disks.iter().map(|d| d.disk_id.clone()).collect();
    assert_eq!(deleted, vec!["bsi-old".to_owned()]);
    assert_eq!(deletes(&w), 1, "one Delete, for the one disk due");
    assert!(w.snapshot().violations.is_empty(), "{:?}", w.snapshot().violations);
    let old = report["disks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["disk_id"] == "bsi-old")
        .unwrap()
        .clone();
    assert_eq!(old["outcome"]["kind"], "deleted", "{old}");
    let prom = std::fs::read_to_string(&metrics).unwrap();
    assert_eq!(
        gauge(&prom, "compshare_teardown_last_watch_disks{decision=\"acted\"}"),
        Some(1.0),
        "{prom}"
    );
    assert_eq!(
        gauge(&prom, "compshare_teardown_last_watch_disks{decision=\"marked\"}"),
        Some(1.0),
        "{prom}"
    );

    // Told: marked and deleted, as a disk.
    let events = hook.events()[before..].to_vec();
    let disk_events: BTreeSet<(String, String)> = kinds(&events)
        .into_iter()
        .filter(|(_, id)| id.starts_with("bsi-"))
        .collect();
    assert_eq!(
        disk_events,
        pairs(&[("marked", "bsi-old"), ("torn_down", "bsi-old")]),
        "{events:#?}"
    );
    assert!(
        events.iter().any(|e| e["text"]
            .as_str()
            .is_some_and(|t| t.contains("disk bsi-old") && t.contains("deleted"))),
        "{events:#?}"
    );

    // `history` has the deletion; no disk mark is left.
    let out = w.view(&["history"]);
    let rows = out.json();
    let disk_rows: Vec<&Value> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "disk")
        .collect();
    assert_eq!(disk_rows.len(), 1, "{rows}");
    assert_eq!(disk_rows[0]["id"], "bsi-old");
    assert_eq!(disk_rows[0]["action"], "delete");
    let view = w.view(&["marks"]).json();
    assert!(
        view["marks"].as_array().unwrap().iter().all(|m| m["kind"] != "disk"),
        "{view}"
    );
}
