//! `watch --disks` over simulated hours: a data disk is deleted only after the job has seen it
//! detached for the window and its grace has passed; one attached again, kept, protected or
//! attached all along is never deleted; each mark is told of once and its deletion once.

use std::collections::BTreeMap;

use super::*;
use crate::schedule::Disks;
use crate::sim::ScenarioDisk;
use crate::workflow::Outcome;
use crate::workflow::disks::DiskSettings;

fn free(id: &str, protected: bool) -> ScenarioDisk {
    ScenarioDisk {
        disk_id: id.into(),
        name: id.into(),
        size_gb: 200,
        zone: "cn-wlcb-01".into(),
        region: String::new(),
        disk_type: "CLOUD_SSD".into(),
        protected,
    }
}

fn with_disk(id: &str, load: GpuLoad, disk: &str) -> ScenarioInstance {
    let mut r = row(id, 1, load);
    r.row.insert(
        "DiskSet".into(),
        json!([
            {"DiskId": format!("{id}-boot"), "DiskType": "CLOUD_SSD", "IsBoot": "True", "Size": 40},
            {"DiskId": disk, "DiskType": "CLOUD_SSD", "IsBoot": "False", "Name": disk, "Size": 100},
        ]),
    );
    r
}

fn world() -> SimHandle {
    let scenario = Scenario {
        epoch: Some(EPOCH),
        instances: vec![
            with_disk("uhost-idle", GpuLoad::Idle, "bsi-of-idle"),
            with_disk("uhost-busy", GpuLoad::Busy, "bsi-of-busy"),
        ],
        disks: vec![
            free("bsi-old", false),
            free("bsi-back", false),
            free("bsi-kept", false),
            free("bsi-prod", true),
        ],
        ..Scenario::default()
    };
    scenario.validate().unwrap();
    SimHandle::new(scenario)
}

/// The disk listing judged as `watch` judges it: the `prod` disk is protected.
async fn disks(sim: &SimHandle, window: i64) -> Disks {
    let rows = api::describe_disks_all(sim, None).await.unwrap();
    Disks {
        rows: rows
            .into_iter()
            .map(|r| {
                let v = if r.disk_id == "bsi-prod" {
                    selection::Verdict::Skip {
                        reason: "protected".into(),
                    }
                } else {
                    selection::Verdict::Act
                };
                (r, v)
            })
            .collect(),
        detached_for: Duration::from_secs(u64::try_from(window).unwrap()),
        settings: DiskSettings {
            jitter_seed: Some(3),
            ..DiskSettings::default()
        },
        guard: Some(Box::new(|r: &api::DiskRow| {
            (r.disk_id == "bsi-prod").then(|| "protected".to_owned())
        })),
    }
}

#[tokio::test(start_paused = true)]
#[expect(clippy::too_many_lines, reason = "one simulated day, then what it left")]
async fn disks_are_deleted_only_after_the_window_and_the_grace() {
    let sim = world();
    let account = Account::new(&"http://sim.invalid".parse().unwrap(), None, "sim-public-key");
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("state.sqlite3"), &account).unwrap();
    let cfg = config(&account);
    let window = 6 * HOUR;
    store
        .apply(&Changes {
            keeps: vec![Keep {
                kind: Kind::Instance,
                id: "bsi-kept".into(),
                until_at: EPOCH + 2 * DAY,
                reason: "a keep holds by ID, whatever kind it was recorded as".into(),
                created_at: EPOCH,
            }],
            ..Changes::default()
        })
        .unwrap();

    let mut marked: BTreeMap<String, i64> = BTreeMap::new();
    let mut acted: BTreeMap<String, i64> = BTreeMap::new();
    let mut unmarked: Vec<(String, String)> = Vec::new();
    for run in 0..(20 * 4) {
        let t = i64::from(run) * 15 * 60;
        // Marked at 6h (seen detached since 0h), due at 7h; someone attaches it at 6h30.
        if t == 6 * HOUR + 30 * 60 {
            sim.attach_disk("bsi-back", "uhost-busy");
        }
        let now = sim.unix_now();
        let rows = api::describe_all(&sim, None, None).await.unwrap();
        let cands = selection::select(rows.clone(), None, &Filters::default(), &Protections::default(), now);
        let targets = Targets {
            instances: cands,
            disks: Some(disks(&sim, window).await),
        };
        let report = run_once(
            Arc::new(sim.clone()),
            &mut store,
            None,
            &cfg,
            now,
            targets,
            Controls::default(),
        )
        .await
        .unwrap();
        for d in &report.disks {
            match &d.decision {
                Decision::Mark { .. } => {
                    assert!(marked.insert(d.disk_id.clone(), report.at).is_none(), "{d:?}");
                }
                Decision::Act { new_mark } => {
                    assert!(!new_mark);
                    acted.insert(d.disk_id.clone(), report.at);
                    assert!(matches!(d.outcome, Some(Outcome::Deleted { .. })), "{d:?}");
                }
                Decision::Unmark { why } => unmarked.push((d.disk_id.clone(), why.clone())),
                _ => {}
            }
        }
        let next = EPOCH + t + 15 * 60;
        let wait = u64::try_from(next - sim.unix_now()).unwrap_or(0);
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }

    // The free disk: seen detached from the first run, marked after the window, deleted
    // after the grace. The idle instance's disk: detached by its teardown (idle 2h, grace
    // 1h), then the same again from the first run that saw it detached.
    assert_eq!(
        acted.keys().map(String::as_str).collect::<Vec<_>>(),
        vec!["bsi-of-idle", "bsi-old"]
    );
    assert_eq!(marked["bsi-old"], EPOCH + window);
    assert_eq!(acted["bsi-old"], EPOCH + window + HOUR);
    let torn_down = store
        .history(0)
        .unwrap()
        .into_iter()
        .find(|h| h.id == "uhost-idle")
        .unwrap()
        .at;
    assert!(marked["bsi-of-idle"] >= torn_down + window, "{marked:?} {torn_down}");
    assert_eq!(acted["bsi-of-idle"], marked["bsi-of-idle"] + HOUR);
    // Attached again within its grace: unmarked, never deleted.
    assert_eq!(unmarked, vec![("bsi-back".to_owned(), "attached again".to_owned())]);

    let state = sim.snapshot();
    assert!(state.violations.is_empty(), "{:?}", state.violations);
    let deleted: Vec<&str> = state.deleted_disks.iter().map(|d| d.disk_id.as_str()).collect();
    assert_eq!(deleted.len(), 2, "{deleted:?}");
    assert!(deleted.contains(&"bsi-old") && deleted.contains(&"bsi-of-idle"));
    let listed: Vec<String> = api::describe_disks_all(&sim, None)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.disk_id)
        .collect();
    for id in ["bsi-back", "bsi-kept", "bsi-prod", "bsi-of-busy"] {
        assert!(listed.iter().any(|l| l == id), "{id} must still be there");
    }

    // Each mark told once, each deletion once, and history has the deletions.
    let events = events(&store);
    for id in ["bsi-old", "bsi-of-idle"] {
        let of = |kind: EventKind| {
            events
                .iter()
                .filter(|e| e.kind == kind && e.target.as_ref().is_some_and(|t| t.id == id && t.kind == "disk"))
                .count()
        };
        assert_eq!((of(EventKind::Marked), of(EventKind::TornDown)), (1, 1), "{id}");
    }
    let history: Vec<(String, String)> = store
        .history(0)
        .unwrap()
        .into_iter()
        .filter(|h| h.kind == Kind::Disk)
        .map(|h| (h.id, h.action))
        .collect();
    assert_eq!(history.len(), 2, "{history:?}");
    assert!(history.iter().all(|(_, a)| a == "delete"));
    assert!(store.marks().unwrap().iter().all(|m| m.kind != Kind::Disk));
}
