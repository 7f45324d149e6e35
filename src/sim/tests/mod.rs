//! World semantics under paused tokio time, driven through the in-memory `Cloud` impl: the
//! actions, the lock, violations and interference here; what the gateway answers in
//! `gateway.rs`.

use std::time::Duration;

use serde_json::json;
use tokio::time::advance;

use super::*;
use crate::api::error::LOCK_MARKER;
use crate::api::{Cloud, DescribeQuery, LockCodes, RetryClass, Target, classify, describe_all, describe_ids};

/// One instance per requested state, unjittered, at real timings (stop 3 s, start 3 s,
/// terminate 1 s, lock TTL 600 s).
fn world(rows: &[(&str, &str)]) -> SimHandle {
    let instances = rows
        .iter()
        .map(|(id, state)| {
            serde_json::from_value(json!({
                "UHostId": id, "State": state, "Region": "cn-wlcb", "Zone": "cn-wlcb-01", "ChargeType": "Postpay",
                "DiskSet": [
                    {"DiskId": format!("bsi-boot-{id}"), "IsBoot": "True", "Size": 100},
                    {"DiskId": format!("bsi-data-{id}"), "IsBoot": "False", "Size": 500},
                ],
            }))
            .unwrap()
        })
        .collect();
    SimHandle::new(Scenario {
        latency: Latency {
            jitter: 0.0,
            ..Latency::default()
        },
        instances,
        ..Scenario::default()
    })
}

fn target(id: &str) -> Target {
    Target {
        uhost_id: id.into(),
        region: "cn-wlcb".into(),
        zone: "cn-wlcb-01".into(),
    }
}

async fn state_of(sim: &SimHandle, id: &str) -> Option<State> {
    describe_ids(sim, &[id.to_owned()])
        .await
        .unwrap()
        .first()
        .map(|i| i.state.clone())
}

fn code_of(r: Result<impl std::fmt::Debug, ApiError>) -> i64 {
    r.unwrap_err().code().expect("a RetCode error")
}

fn rules(sim: &SimHandle) -> Vec<String> {
    sim.snapshot().violations.into_iter().map(|v| v.rule).collect()
}

#[tokio::test(start_paused = true)]
async fn stop_then_terminate_happy_path_with_disk_release() {
    let sim = world(&[("uhost-a", "Running"), ("uhost-b", "Stopped")]);
    sim.stop(&target("uhost-a"), false).await.unwrap();
    assert_eq!(state_of(&sim, "uhost-a").await, Some(State::Stopping));
    advance(Duration::from_millis(2_900)).await;
    assert_eq!(state_of(&sim, "uhost-a").await, Some(State::Stopping));
    advance(Duration::from_millis(200)).await;
    assert_eq!(state_of(&sim, "uhost-a").await, Some(State::Stopped));
    let ack = sim.terminate(&target("uhost-a"), true).await.unwrap();
    assert_eq!(ack.in_recycle, "Yes");
    assert_eq!(ack.uhost_id, "uhost-a");
    // Still listed with its last state until the terminate latency has passed.
    assert_eq!(state_of(&sim, "uhost-a").await, Some(State::Stopped));
    advance(Duration::from_millis(1_100)).await;
    assert_eq!(state_of(&sim, "uhost-a").await, None);
    // ReleaseUDisk=false keeps the data disk (not the boot disk) as an orphan.
    sim.terminate(&target("uhost-b"), false).await.unwrap();
    let snap = sim.snapshot();
    assert_eq!(snap.orphan_disks.len(), 1);
    assert_eq!(snap.orphan_disks[0].disk_id, "bsi-data-uhost-b");
    assert_eq!(snap.terminated.len(), 2);
    assert!(snap.terminated[0].release_udisk && !snap.terminated[1].release_udisk);
    assert!(snap.violations.is_empty());
}

/// A Terminate finds the host's disks by an index, not a scan of every disk: a disk attached
/// later (by someone else) is in it too, and goes with the instance like its own.
#[tokio::test(start_paused = true)]
async fn a_disk_attached_later_goes_with_its_new_host() {
    let sim = world(&[("uhost-a", "Stopped"), ("uhost-b", "Stopped")]);
    sim.terminate(&target("uhost-b"), false).await.unwrap();
    advance(Duration::from_secs(10)).await; // the detach (5 s) is over: the disk is free
    let orphans = |sim: &SimHandle| {
        let mut ids: Vec<String> = sim.snapshot().orphan_disks.into_iter().map(|d| d.disk_id).collect();
        ids.sort();
        ids
    };
    assert_eq!(orphans(&sim), ["bsi-data-uhost-b"]);
    sim.attach_disk("bsi-data-uhost-b", "uhost-a");
    assert!(orphans(&sim).is_empty());
    // Kept with the instance: both of its data disks are left behind, detached.
    sim.terminate(&target("uhost-a"), false).await.unwrap();
    assert_eq!(orphans(&sim), ["bsi-data-uhost-a", "bsi-data-uhost-b"]);
}

#[tokio::test(start_paused = true)]
async fn start_goes_starting_then_running() {
    let sim = world(&[("uhost-a", "Stopped")]);
    sim.start(&target("uhost-a")).await.unwrap();
    assert_eq!(state_of(&sim, "uhost-a").await, Some(State::Starting));
    advance(Duration::from_secs(4)).await;
    assert_eq!(state_of(&sim, "uhost-a").await, Some(State::Running));
}

#[tokio::test(start_paused = true)]
async fn state_rules_have_distinct_fatal_codes() {
    let sim = world(&[
        ("uhost-r", "Running"),
        ("uhost-s", "Stopped"),
        ("uhost-f", "Install Fail"),
    ]);
    assert_eq!(code_of(sim.stop(&target("uhost-s"), false).await), code::BAD_STATE);
    assert_eq!(code_of(sim.start(&target("uhost-r")).await), code::BAD_STATE);
    let e = sim.terminate(&target("uhost-r"), true).await.unwrap_err();
    assert_eq!(e.code(), Some(code::BAD_STATE));
    assert!(e.to_string().contains("Running"), "{e}");
    assert_eq!(classify(&e, &LockCodes::default()), RetryClass::Fatal);
    // Refused, but recorded: the client sent Terminate to a Running instance.
    assert_eq!(rules(&sim), vec![rule::TERMINATE_NOT_STOPPED]);
    // Install Fail may be terminated and is not a violation.
    sim.terminate(&target("uhost-f"), true).await.unwrap();
    assert_eq!(rules(&sim).len(), 1);
    assert_eq!(code_of(sim.stop(&target("uhost-nope"), false).await), code::NOT_FOUND);
}

#[tokio::test(start_paused = true)]
async fn spot_needs_force() {
    let sim = world(&[]);
    sim.insert(Instance {
        uhost_id: "uhost-spot".into(),
        state: State::Running,
        region: "cn-wlcb".into(),
        zone: "cn-wlcb-01".into(),
        charge_type: "Spot".into(),
        ..Instance::default()
    });
    assert_eq!(
        code_of(sim.stop(&target("uhost-spot"), false).await),
        code::SPOT_NEEDS_FORCE
    );
    sim.stop(&target("uhost-spot"), true).await.unwrap();
    assert_eq!(state_of(&sim, "uhost-spot").await, Some(State::Stopping));
}

#[tokio::test(start_paused = true)]
async fn wrong_zone_is_not_found_and_missing_params_are_named() {
    let sim = world(&[("uhost-a", "Running")]);
    let mut t = target("uhost-a");
    t.zone = "cn-wlcb-02".into();
    assert_eq!(code_of(sim.stop(&t, false).await), code::NOT_FOUND);
    t.region = "cn-nowhere".into();
    assert_eq!(code_of(sim.stop(&t, false).await), code::BAD_PARAM);
    let mut t = target("uhost-a");
    t.uhost_id = String::new();
    let e = sim.stop(&t, false).await.unwrap_err();
    assert_eq!(e.code(), Some(code::MISSING_PARAM));
    assert!(e.to_string().contains("[UHostId]"), "{e}");
    assert_eq!(state_of(&sim, "uhost-a").await, Some(State::Running));
}

#[tokio::test(start_paused = true)]
async fn lock_until_complete_blocks_repeats_then_releases() {
    let sim = world(&[("uhost-a", "Running")]);
    sim.stop(&target("uhost-a"), false).await.unwrap();
    let e = sim.stop(&target("uhost-a"), false).await.unwrap_err();
    assert_eq!(e.code(), Some(8903));
    assert!(e.to_string().contains(LOCK_MARKER));
    assert_eq!(classify(&e, &LockCodes::default()), RetryClass::Locked);
    // Terminate during Stopping is locked too (and a violation: not Stopped yet).
    assert_eq!(code_of(sim.terminate(&target("uhost-a"), true).await), 8903);
    assert_eq!(rules(&sim), vec![rule::TERMINATE_NOT_STOPPED]);
    advance(Duration::from_secs(4)).await;
    sim.terminate(&target("uhost-a"), true).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn lock_full_ttl_outlives_the_transition() {
    let mut scenario = Scenario::default();
    scenario.lock.hold = LockHold::FullTtl;
    scenario.lock.ret_code = 8999;
    scenario.latency.jitter = 0.0;
    scenario.time_scale = 0.01; // TTL 6 s, stop 30 ms
    scenario.instances = vec![
        serde_json::from_value(
            json!({"UHostId": "uhost-a", "State": "Running", "Region": "cn-wlcb", "Zone": "cn-wlcb-01"}),
        )
        .unwrap(),
    ];
    let sim = SimHandle::new(scenario);
    sim.stop(&target("uhost-a"), false).await.unwrap();
    advance(Duration::from_millis(100)).await;
    assert_eq!(state_of(&sim, "uhost-a").await, Some(State::Stopped));
    let e = sim.terminate(&target("uhost-a"), true).await.unwrap_err();
    assert_eq!(e.code(), Some(8999));
    assert_eq!(
        classify(&e, &LockCodes::default()),
        RetryClass::Locked,
        "matched by message"
    );
    advance(Duration::from_millis(5_800)).await;
    assert_eq!(code_of(sim.terminate(&target("uhost-a"), true).await), 8999);
    advance(Duration::from_millis(200)).await;
    sim.terminate(&target("uhost-a"), true).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn locks_held_by_another_operation() {
    let scenario = Scenario {
        time_scale: 0.1,
        instances: vec![
            serde_json::from_value(json!({"UHostId": "uhost-a", "State": "Running", "Region": "cn-wlcb",
            "Zone": "cn-wlcb-01", "locked_for_secs": 100.0}))
            .unwrap(),
            serde_json::from_value(
                json!({"UHostId": "uhost-b", "State": "Running", "Region": "cn-wlcb", "Zone": "cn-wlcb-01"}),
            )
            .unwrap(),
        ],
        ..Scenario::default()
    };
    let sim = SimHandle::new(scenario);
    // Scenario lock: 100 s nominal = 10 s scaled.
    assert_eq!(code_of(sim.stop(&target("uhost-a"), false).await), 8903);
    advance(Duration::from_millis(10_100)).await;
    sim.stop(&target("uhost-a"), false).await.unwrap();
    // hold_lock is not scaled.
    sim.hold_lock("uhost-b", Duration::from_secs(2));
    assert_eq!(code_of(sim.stop(&target("uhost-b"), false).await), 8903);
    assert!(
        sim.snapshot()
            .locks
            .iter()
            .any(|l| l.uhost_id == "uhost-b" && l.by_other)
    );
    advance(Duration::from_millis(2_100)).await;
    sim.stop(&target("uhost-b"), false).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn calls_after_terminate_or_delete_and_on_protected_are_violations() {
    let sim = world(&[("uhost-a", "Stopped"), ("uhost-b", "Running"), ("uhost-p", "Running")]);
    sim.terminate(&target("uhost-a"), true).await.unwrap();
    // While disappearing: refused by the lock, recorded.
    assert!(sim.terminate(&target("uhost-a"), true).await.is_err());
    advance(Duration::from_secs(2)).await;
    assert_eq!(code_of(sim.start(&target("uhost-a")).await), code::NOT_FOUND);
    sim.delete_by_other("uhost-b");
    assert_eq!(code_of(sim.stop(&target("uhost-b"), false).await), code::NOT_FOUND);
    sim.set_protected("uhost-p", true);
    sim.stop(&target("uhost-p"), false).await.unwrap();
    assert_eq!(
        rules(&sim),
        vec![
            rule::TERMINATE_RESENT,
            rule::AFTER_TERMINATE,
            rule::AFTER_DELETE,
            rule::PROTECTED
        ]
    );
    // Describe never counts as a violation.
    describe_all(&sim, None, None).await.unwrap();
    assert_eq!(rules(&sim).len(), 4);
}

#[tokio::test(start_paused = true)]
async fn restart_interference_starts_a_stopped_instance_again() {
    let sim = world(&[("uhost-a", "Running")]);
    sim.set_faults(Faults {
        restart: 1.0,
        restart_after_secs: 2.0,
        ..Faults::default()
    });
    sim.stop(&target("uhost-a"), false).await.unwrap();
    advance(Duration::from_millis(3_500)).await;
    assert_eq!(state_of(&sim, "uhost-a").await, Some(State::Stopped));
    advance(Duration::from_secs(2)).await;
    assert_eq!(state_of(&sim, "uhost-a").await, Some(State::Starting));
    // The other party holds the lock while it starts the instance.
    assert_eq!(code_of(sim.stop(&target("uhost-a"), false).await), 8903);
    advance(Duration::from_secs(4)).await;
    assert_eq!(state_of(&sim, "uhost-a").await, Some(State::Running));
    // A terminate inside the window wins: no restart afterwards.
    let sim = world(&[("uhost-b", "Running")]);
    sim.set_faults(Faults {
        restart: 1.0,
        restart_after_secs: 2.0,
        ..Faults::default()
    });
    sim.stop(&target("uhost-b"), false).await.unwrap();
    advance(Duration::from_millis(3_500)).await;
    sim.terminate(&target("uhost-b"), true).await.unwrap();
    advance(Duration::from_secs(10)).await;
    assert_eq!(state_of(&sim, "uhost-b").await, None);
}

#[tokio::test(start_paused = true)]
async fn vanish_and_manual_interference() {
    let sim = world(&[("uhost-a", "Running"), ("uhost-b", "Stopped"), ("uhost-c", "Running")]);
    sim.set_faults(Faults {
        vanish: 1.0,
        vanish_within_secs: 1.0,
        ..Faults::default()
    });
    sim.stop(&target("uhost-a"), false).await.unwrap();
    advance(Duration::from_millis(1_100)).await;
    assert_eq!(state_of(&sim, "uhost-a").await, None);
    assert!(
        sim.snapshot()
            .terminated
            .iter()
            .any(|t| t.uhost_id == "uhost-a" && t.by_other)
    );
    sim.start_by_other("uhost-b");
    assert_eq!(state_of(&sim, "uhost-b").await, Some(State::Starting));
    sim.start_by_other("uhost-c"); // not Stopped: nothing happens
    assert_eq!(state_of(&sim, "uhost-c").await, Some(State::Running));
    sim.set_state("uhost-c", State::InstallFail);
    assert_eq!(state_of(&sim, "uhost-c").await, Some(State::InstallFail));
}

#[tokio::test(start_paused = true)]
async fn jittered_latency_stays_in_bounds_and_per_instance_overrides_apply() {
    let mut scenario = Scenario::default();
    scenario.latency.jitter = 0.2;
    scenario.instances = vec![
        serde_json::from_value(json!({"UHostId": "uhost-a", "State": "Running", "Region": "cn-wlcb",
            "Zone": "cn-wlcb-01", "stop_secs": 20.0}))
        .unwrap(),
    ];
    let sim = SimHandle::new(scenario);
    sim.stop(&target("uhost-a"), false).await.unwrap();
    advance(Duration::from_millis(15_900)).await;
    assert_eq!(state_of(&sim, "uhost-a").await, Some(State::Stopping));
    advance(Duration::from_millis(8_200)).await;
    assert_eq!(state_of(&sim, "uhost-a").await, Some(State::Stopped));
}

#[tokio::test(start_paused = true)]
async fn terminate_after_a_stopped_look_that_went_stale_is_a_race_not_a_violation() {
    let sim = world(&[("uhost-a", "Stopped"), ("uhost-b", "Stopped")]);
    // The client saw uhost-a Stopped; someone else starts it before the Terminate arrives.
    assert_eq!(state_of(&sim, "uhost-a").await, Some(State::Stopped));
    sim.start_by_other("uhost-a");
    // Refused (the starter holds the lock), and recorded as a race.
    assert!(sim.terminate(&target("uhost-a"), true).await.is_err());
    let snap = sim.snapshot();
    assert!(snap.violations.is_empty(), "{:?}", snap.violations);
    assert_eq!(snap.races.len(), 1);
    assert_eq!(snap.races[0].rule, rule::TERMINATE_RACED);
    // uhost-b was never seen Stopped by the client: terminating it while Starting is a violation,
    // and so is terminating uhost-a again now that the freshest look says Starting.
    sim.start_by_other("uhost-b");
    assert!(sim.terminate(&target("uhost-b"), true).await.is_err());
    assert_eq!(state_of(&sim, "uhost-a").await, Some(State::Starting));
    assert!(sim.terminate(&target("uhost-a"), true).await.is_err());
    assert_eq!(
        rules(&sim),
        vec![rule::TERMINATE_NOT_STOPPED, rule::TERMINATE_NOT_STOPPED]
    );
}

mod gateway;
mod monitor;
