//! Data disks: the simulator's inventory and rules, and the disk deletion driver under paused
//! tokio time (detaching disks, 8434, faults, a disk attached between look and Delete).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use compshare_teardown::api::{Attachment, DiskCloud, DiskRow, DiskTarget, describe_disks_all};
use compshare_teardown::sim::{Faults, Scenario, ScenarioDisk, SimHandle, SimState};
use compshare_teardown::workflow::disks::{DiskControls, DiskSettings, delete_disks};
use compshare_teardown::workflow::{Controls, Outcome, Report, TargetKind};

use crate::workflow::{settings, teardown};

mod cli;
mod journal;

fn disk(id: &str, zone: &str) -> ScenarioDisk {
    ScenarioDisk {
        disk_id: id.into(),
        name: format!("name-{id}"),
        size_gb: 200,
        zone: zone.into(),
        ..ScenarioDisk::default()
    }
}

fn disk_settings() -> DiskSettings {
    DiskSettings {
        jitter_seed: Some(3),
        rate: 0,
        poll_interval: Duration::from_secs(1),
        ..DiskSettings::default()
    }
}

async fn delete(sim: &SimHandle, rows: Vec<DiskRow>, settings: DiskSettings) -> Report {
    delete_disks(Arc::new(sim.clone()), rows, settings, DiskControls::default()).await
}

/// The disk invariants: no violation, Deletes only for the selection, at most one accepted
/// Delete per disk, and every disk reported deleted is gone from the world.
fn assert_disks_safe(state: &SimState, selected: &[String], report: &Report) {
    assert!(state.violations.is_empty(), "violations: {:#?}", state.violations);
    let mut accepted: HashMap<&str, usize> = HashMap::new();
    for call in state.calls.iter().filter(|c| c.action == "DeleteCompshareDisk") {
        for id in &call.ids {
            assert!(selected.contains(id), "Delete of unselected {id}");
        }
        if call.ret_code == Some(0) {
            *accepted.entry(call.ids[0].as_str()).or_default() += 1;
        }
    }
    assert!(accepted.values().all(|&n| n == 1), "{accepted:?}");
    let listed: Vec<&str> = state.disks.iter().filter_map(|d| d["ResourceId"].as_str()).collect();
    for row in &report.instances {
        assert_eq!(row.kind, TargetKind::Disk);
        if row.outcome == (Outcome::Deleted { confirmed: true }) {
            assert!(
                !listed.contains(&row.uhost_id.as_str()),
                "{} reported deleted, still listed",
                row.uhost_id
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn instances_data_disks_are_listed_attached_and_free_standing_ones_free() {
    let mut s = Scenario::generated(6, 11);
    s.disks = vec![disk("bsi-free1", "cn-wlcb-01")];
    let sim = SimHandle::new(s);
    let rows = describe_disks_all(&sim, None).await.unwrap();
    let free: Vec<&DiskRow> = rows.iter().filter(|r| r.is_free()).collect();
    assert_eq!(free.len(), 1);
    assert_eq!(free[0].disk_id, "bsi-free1");
    assert_eq!(free[0].home_region(), "cn-wlcb");
    // Every other row is an instance's data disk, attached to it.
    let snap = sim.snapshot();
    let ids: Vec<String> = snap
        .instances
        .iter()
        .map(|i| i["UHostId"].as_str().unwrap().to_owned())
        .collect();
    assert!(rows.len() > 1);
    assert!(
        rows.iter()
            .filter(|r| !r.is_free())
            .all(|r| ids.contains(&r.mount_instance))
    );
    // Only the free-standing disk is an orphan so far.
    assert_eq!(snap.orphan_disks.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn terminate_without_release_detaches_and_delete_waits_through_8434() {
    let mut s = Scenario::generated(4, 5);
    if let Some(g) = s.generate.as_mut() {
        g.mix = [("Stopped".to_owned(), 1.0)].into_iter().collect();
    }
    s.latency.detach_secs = 30.0;
    // Every detach shows "Available" for its second half while Delete still answers 8434.
    s.faults.detach_shows_free = 1.0;
    let sim = SimHandle::new(s);
    let before = describe_disks_all(&sim, None).await.unwrap();
    let ids = sim.ids();
    let report = teardown(&sim, ids.clone(), settings(), Controls::default()).await;
    assert!(report.all_ok());
    let rows = describe_disks_all(&sim, None).await.unwrap();
    assert_eq!(rows.len(), before.len(), "kept disks stay");
    assert!(
        rows.iter()
            .all(|r| matches!(r.attachment(), Attachment::Detaching | Attachment::Free)),
        "{rows:#?}"
    );
    assert!(rows.iter().any(|r| r.attachment() == Attachment::Detaching));
    let orphans = sim.snapshot().orphan_disks;
    assert_eq!(orphans.len(), before.len());
    assert!(orphans.iter().all(|d| ids.contains(&d.from_uhost_id)));
    // Delete them all right away: still detaching, so the driver waits, and once the listing
    // runs ahead of the backend, rides out 8434.
    let selected: Vec<String> = rows.iter().map(|r| r.disk_id.clone()).collect();
    let report = delete(&sim, rows, disk_settings()).await;
    let state = sim.snapshot();
    assert_disks_safe(&state, &selected, &report);
    assert!(report.all_ok(), "{:#?}", report.instances);
    assert_eq!(report.summary.deleted, selected.len());
    assert!(state.disks.is_empty() && state.orphan_disks.is_empty());
    let refused_8434 = state
        .calls
        .iter()
        .filter(|c| c.action == "DeleteCompshareDisk" && c.ret_code == Some(8434))
        .count();
    assert!(
        refused_8434 > 0,
        "the listing ran ahead of the detach: 8434 must have been seen"
    );
}

#[tokio::test(start_paused = true)]
async fn release_udisk_takes_the_disks_with_the_instances() {
    let mut s = Scenario::generated(4, 5);
    if let Some(g) = s.generate.as_mut() {
        g.mix = [("Stopped".to_owned(), 1.0)].into_iter().collect();
    }
    let sim = SimHandle::new(s);
    let mut st = settings();
    st.release_udisk = true;
    let report = teardown(&sim, sim.ids(), st, Controls::default()).await;
    assert!(report.all_ok());
    assert!(describe_disks_all(&sim, None).await.unwrap().is_empty());
    assert!(sim.snapshot().orphan_disks.is_empty());
}

#[tokio::test(start_paused = true)]
async fn attached_disks_are_never_deleted_even_if_attached_after_selection() {
    let mut s = Scenario::generated(2, 8);
    s.disks = vec![disk("bsi-a", "cn-sh2-02"), disk("bsi-b", "cn-sh2-02")];
    let sim = SimHandle::new(s);
    let rows = describe_disks_all(&sim, None).await.unwrap();
    let host = sim.ids()[0].clone();
    let attached = rows.iter().find(|r| !r.is_free()).unwrap().clone();
    let chosen: Vec<DiskRow> = rows
        .iter()
        .filter(|r| r.is_free())
        .cloned()
        .chain(std::iter::once(attached.clone()))
        .collect();
    // Someone attaches bsi-a after the selection listing: the fresh look sees it.
    sim.attach_disk("bsi-a", &host);
    let selected: Vec<String> = chosen.iter().map(|r| r.disk_id.clone()).collect();
    let report = delete(&sim, chosen, disk_settings()).await;
    let state = sim.snapshot();
    assert_disks_safe(&state, &selected, &report);
    let outcome = |id: &str| {
        report
            .instances
            .iter()
            .find(|r| r.uhost_id == id)
            .unwrap()
            .outcome
            .clone()
    };
    assert!(matches!(outcome("bsi-a"), Outcome::Skipped { reason } if reason.contains(&host)));
    assert!(matches!(outcome(&attached.disk_id), Outcome::Skipped { .. }));
    assert_eq!(outcome("bsi-b"), Outcome::Deleted { confirmed: true });
    assert!(
        !state
            .calls
            .iter()
            .any(|c| c.action == "DeleteCompshareDisk" && c.ids[0] != "bsi-b"),
        "no Delete for an attached disk"
    );
}

#[tokio::test(start_paused = true)]
async fn the_simulator_flags_a_delete_without_a_fresh_free_look() {
    let sim = SimHandle::new(Scenario {
        disks: vec![disk("bsi-a", "cn-sh2-02")],
        ..Scenario::default()
    });
    let target = DiskTarget {
        disk_id: "bsi-a".into(),
        region: "cn-sh2".into(),
        zone: "cn-sh2-02".into(),
    };
    sim.delete_disk(&target).await.unwrap();
    let v = sim.snapshot().violations;
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].rule, "disk-delete-not-seen-free");
    // A second Delete of a deleted disk is a violation too.
    sim.delete_disk(&target).await.unwrap_err();
    assert_eq!(sim.snapshot().violations[1].rule, "disk-delete-resent");
}

/// Found by the sweep (seed 966): a Delete answered slowly, while other tasks' listings look
/// at the same disk, must still count the look that licensed it (the simulator once kept
/// only the last 8 looks per disk and took the Delete for one without a look).
#[tokio::test(start_paused = true)]
async fn a_slow_delete_keeps_the_look_that_licensed_it() {
    let sim = SimHandle::new(Scenario {
        disks: vec![disk("bsi-a", "cn-sh2-02")],
        ..Scenario::default()
    });
    sim.set_faults(Faults {
        slow: 1.0,
        slow_secs: 5.0,
        ..Faults::default()
    });
    // Twenty listings sent a second after the look, answered before the Delete is processed.
    let mut listings = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let other = sim.clone();
        listings.spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            describe_disks_all(&other, None).await.unwrap();
        });
    }
    let rows = describe_disks_all(&sim, None).await.unwrap();
    assert!(rows[0].is_free());
    sim.delete_disk(&DiskTarget::of(&rows[0])).await.unwrap();
    while listings.join_next().await.is_some() {}
    assert!(sim.snapshot().violations.is_empty(), "{:#?}", sim.snapshot().violations);
}

#[tokio::test(start_paused = true)]
async fn faults_are_ridden_out_and_every_disk_ends_with_an_outcome() {
    for seed in 0..12 {
        let mut s = Scenario::generated(3, seed);
        if let Some(g) = s.generate.as_mut() {
            g.detached_disks = 12;
        }
        let sim = SimHandle::new(s);
        let rows: Vec<DiskRow> = describe_disks_all(&sim, None)
            .await
            .unwrap()
            .into_iter()
            .filter(DiskRow::is_free)
            .collect();
        assert_eq!(rows.len(), 12);
        sim.set_faults(Faults {
            http_502: 0.05,
            http_503: 0.05,
            drop: 0.05,
            lost_response: 0.1,
            throttle: 0.05,
            applied_then_502: 0.1,
            retcode_as_string: 0.1,
            null_lists: 0.1,
            ..Faults::default()
        });
        let selected: Vec<String> = rows.iter().map(|r| r.disk_id.clone()).collect();
        let report = delete(&sim, rows, disk_settings()).await;
        let state = sim.snapshot();
        assert_disks_safe(&state, &selected, &report);
        assert_eq!(report.instances.len(), 12, "seed {seed}");
        assert!(report.all_ok(), "seed {seed}: {:#?}", report.instances);
    }
}
