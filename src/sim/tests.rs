//! World semantics under paused tokio time, driven through the in-memory `Cloud` impl.

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
            rule::AFTER_TERMINATE,
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
async fn describe_paging_filters_and_limits() {
    let sim = SimHandle::new(Scenario::generated(250, 3));
    let all = describe_all(&sim, None, None).await.unwrap();
    assert_eq!(all.len(), 250);
    let ids = sim.ids();
    assert_eq!(all.iter().map(|i| i.uhost_id.clone()).collect::<Vec<_>>(), ids);
    let wlcb = describe_all(&sim, Some("cn-wlcb"), None).await.unwrap();
    assert!(!wlcb.is_empty() && wlcb.len() < 250 && wlcb.iter().all(|i| i.region == "cn-wlcb"));
    let mut wanted: Vec<String> = ids.iter().take(130).cloned().collect();
    wanted.push("uhost-doesnotexist".into());
    assert_eq!(describe_ids(&sim, &wanted).await.unwrap().len(), 130);
    let q = |limit, offset, n: usize| DescribeQuery {
        ids: ids.iter().take(n).cloned().collect(),
        limit,
        offset,
        ..DescribeQuery::default()
    };
    assert_eq!(code_of(sim.describe(&q(101, 0, 0)).await), code::BAD_PARAM);
    assert_eq!(code_of(sim.describe(&q(10, 0, 101)).await), code::BAD_PARAM);
    assert_eq!(code_of(sim.describe(&q(10, 251, 0)).await), code::BAD_PARAM);
    assert!(sim.describe(&q(10, 250, 0)).await.unwrap().uhost_set.is_empty());
    let page = sim.describe(&q(0, 0, 0)).await.unwrap();
    assert_eq!(
        (page.total_count, page.uhost_set.len()),
        (Some(250), 20),
        "Limit defaults to 20"
    );
    let region = DescribeQuery {
        region: Some("xx-nowhere".into()),
        limit: 10,
        ..DescribeQuery::default()
    };
    assert_eq!(code_of(sim.describe(&region).await), code::BAD_PARAM);
}

#[tokio::test(start_paused = true)]
async fn same_seed_same_world() {
    let a = SimHandle::new(Scenario::generated(50, 11)).snapshot();
    let b = SimHandle::new(Scenario::generated(50, 11)).snapshot();
    let c = SimHandle::new(Scenario::generated(50, 12)).snapshot();
    assert_eq!(a.instances, b.instances);
    assert_ne!(a.instances, c.instances);
}

#[tokio::test(start_paused = true)]
async fn faults_map_to_what_a_client_sees() {
    let sim = world(&[("uhost-a", "Running"), ("uhost-b", "Running")]);
    let one = |f: &str| {
        let mut faults = Faults::default();
        match f {
            "http_502" => faults.http_502 = 1.0,
            "http_503" => faults.http_503 = 1.0,
            "drop" => faults.drop = 1.0,
            "lost_response" => faults.lost_response = 1.0,
            "throttle" => faults.throttle = 1.0,
            "unavailable" => faults.unavailable = 1.0,
            _ => unreachable!(),
        }
        faults
    };
    sim.set_faults(one("http_502"));
    assert!(matches!(
        sim.stop(&target("uhost-a"), false).await,
        Err(ApiError::Http { status: 502, .. })
    ));
    sim.set_faults(one("http_503"));
    assert!(matches!(
        sim.stop(&target("uhost-a"), false).await,
        Err(ApiError::Http { status: 503, .. })
    ));
    sim.set_faults(one("throttle"));
    assert_eq!(code_of(sim.stop(&target("uhost-a"), false).await), 153);
    sim.set_faults(one("unavailable"));
    assert_eq!(code_of(sim.stop(&target("uhost-a"), false).await), 150);
    sim.set_faults(one("drop"));
    let e = sim.stop(&target("uhost-a"), false).await.unwrap_err();
    assert!(matches!(
        e,
        ApiError::Transport {
            kind: TransportKind::Closed,
            ..
        }
    ));
    sim.set_faults(Faults::default());
    assert_eq!(
        state_of(&sim, "uhost-a").await,
        Some(State::Running),
        "drop applies nothing"
    );
    sim.set_faults(one("lost_response"));
    assert!(matches!(
        sim.stop(&target("uhost-b"), false).await,
        Err(ApiError::Transport { .. })
    ));
    sim.set_faults(Faults::default());
    assert_eq!(
        state_of(&sim, "uhost-b").await,
        Some(State::Stopping),
        "lost response was applied"
    );
    let faults: Vec<Option<String>> = sim.snapshot().calls.into_iter().map(|c| c.fault).collect();
    assert_eq!(faults[0].as_deref(), Some("http_502"));
    assert!(faults.contains(&Some("lost_response".into())));
}

#[tokio::test(start_paused = true)]
async fn slow_answers_take_slow_secs_scaled() {
    let sim = world(&[("uhost-a", "Running")]);
    sim.set_faults(Faults {
        slow: 1.0,
        slow_secs: 7.0,
        ..Faults::default()
    });
    let t0 = tokio::time::Instant::now();
    sim.stop(&target("uhost-a"), false).await.unwrap();
    assert_eq!(t0.elapsed(), Duration::from_secs(7));
}

#[tokio::test(start_paused = true)]
async fn rate_limit_throttles_per_key() {
    let mut scenario = Scenario::generated(5, 1);
    scenario.rate_limit_per_sec = 3;
    let sim = SimHandle::new(scenario);
    let q = DescribeQuery {
        limit: 10,
        ..DescribeQuery::default()
    };
    for _ in 0..3 {
        sim.describe(&q).await.unwrap();
    }
    let e = sim.describe(&q).await.unwrap_err();
    assert_eq!(e.code(), Some(153));
    assert_eq!(classify(&e, &LockCodes::default()), RetryClass::Throttled);
    advance(Duration::from_secs(1)).await;
    sim.describe(&q).await.unwrap();
}

/// Calls admitted until the first 153.
async fn admitted(sim: &SimHandle, q: &DescribeQuery) -> u32 {
    let mut n = 0;
    while sim.describe(q).await.is_ok() {
        n += 1;
    }
    n
}

#[tokio::test(start_paused = true)]
async fn rate_limit_has_a_burst_and_changes_mid_run() {
    let mut scenario = Scenario::generated(5, 1);
    scenario.rate_limit_per_sec = 10;
    scenario.rate_limit_burst = 2;
    let sim = SimHandle::new(scenario);
    let q = DescribeQuery {
        limit: 10,
        ..DescribeQuery::default()
    };
    // A full bucket lets the burst through, then one call per 100 ms.
    assert_eq!(admitted(&sim, &q).await, 2);
    advance(Duration::from_millis(100)).await;
    assert_eq!(admitted(&sim, &q).await, 1);
    // Raised: a fresh, bigger bucket from now on.
    sim.set_rate_limit(100, 50);
    assert_eq!(admitted(&sim, &q).await, 50);
    advance(Duration::from_millis(100)).await;
    assert_eq!(admitted(&sim, &q).await, 10);
    sim.set_rate_limit(0, 0);
    for _ in 0..500 {
        sim.describe(&q).await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn retcode_as_string_and_null_lists_still_decode() {
    let sim = world(&[]);
    sim.set_faults(Faults {
        retcode_as_string: 1.0,
        null_lists: 1.0,
        ..Faults::default()
    });
    let page = sim
        .describe(&DescribeQuery {
            ids: vec!["uhost-none".into()],
            limit: 10,
            ..DescribeQuery::default()
        })
        .await
        .unwrap();
    assert!(page.uhost_set.is_empty());
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
async fn describe_rows_carry_extra_real_fields() {
    let sim = SimHandle::new(Scenario::generated(3, 5));
    let snap = sim.snapshot();
    for row in &snap.instances {
        for key in [
            "UHostId",
            "GraphicsMemory",
            "OsName",
            "CpuArch",
            "AutoRenew",
            "DiskSet",
            "IPSet",
            "Region",
        ] {
            assert!(row.get(key).is_some(), "{key} missing in {row}");
        }
    }
}

/// Raw Describe bodies, before the client's lenient decoding.
async fn raw_describe(sim: &SimHandle, ids: &[&str]) -> serde_json::Value {
    use crate::api::Transport;
    let mut p = crate::api::sign::Params::new();
    p.insert("Limit".into(), "100".into());
    for (i, id) in ids.iter().enumerate() {
        p.insert(format!("UHostIds.{i}"), (*id).to_owned());
    }
    sim.call("DescribeCompShareInstance", p).await.unwrap()
}

fn listed(body: &serde_json::Value) -> Vec<String> {
    body["UHostSet"]
        .as_array()
        .map(|rows| rows.iter().map(|r| r["UHostId"].as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

#[tokio::test(start_paused = true)]
async fn dropped_rows_still_exist_and_are_still_counted() {
    let sim = world(&[("uhost-a", "Running"), ("uhost-b", "Stopped")]);
    sim.set_faults(Faults {
        drop_row: 1.0,
        ..Faults::default()
    });
    let body = raw_describe(&sim, &["uhost-a", "uhost-b"]).await;
    assert!(listed(&body).is_empty(), "{body}");
    assert_eq!(body["TotalCount"], 2, "TotalCount counts the rows that really matched");
    // Ground truth is untouched, and Stop still finds the row the answer left out.
    assert_eq!(sim.ids(), vec!["uhost-a", "uhost-b"]);
    sim.stop(&target("uhost-a"), false).await.unwrap();
    let calls = sim.snapshot().calls;
    assert_eq!(calls[0].fault.as_deref(), Some("drop_row"));
    assert_eq!(calls[1].fault, None);

    // At a partial rate some answers miss a row and some do not, the same way for the same seed.
    let pattern = || async {
        let sim = world(&[("uhost-a", "Running"), ("uhost-b", "Running")]);
        sim.set_faults(Faults {
            drop_row: 0.3,
            ..Faults::default()
        });
        let mut seen = Vec::new();
        for _ in 0..40 {
            seen.push(listed(&raw_describe(&sim, &["uhost-a", "uhost-b"]).await));
        }
        seen
    };
    let (a, b) = (pattern().await, pattern().await);
    assert_eq!(a, b);
    assert!(a.iter().any(|l| l.len() == 2) && a.iter().any(|l| l.len() < 2));
}

#[tokio::test(start_paused = true)]
async fn omitted_total_count_is_absent_from_the_body() {
    let sim = world(&[("uhost-a", "Running")]);
    sim.set_faults(Faults {
        omit_total_count: 1.0,
        ..Faults::default()
    });
    let body = raw_describe(&sim, &["uhost-a"]).await;
    assert!(body.get("TotalCount").is_none(), "{body}");
    assert_eq!(listed(&body), vec!["uhost-a"]);
    assert_eq!(sim.snapshot().calls[0].fault.as_deref(), Some("omit_total_count"));
    sim.set_faults(Faults::default());
    assert_eq!(raw_describe(&sim, &["uhost-a"]).await["TotalCount"], 1);
}

#[tokio::test(start_paused = true)]
async fn eventual_consistency_dice_do_not_shift_the_other_faults() {
    // The same seed, answers listing 1 row or 30: every other fault lands on the same calls,
    // because the per-row dice come from their own stream.
    let faults_seen = |rows: usize| async move {
        let sim = SimHandle::new(Scenario::generated(30, 5));
        sim.set_faults(Faults {
            http_502: 0.3,
            drop_row: 0.5,
            omit_total_count: 0.5,
            ..Faults::default()
        });
        let ids: Vec<String> = sim.ids().into_iter().take(rows).collect();
        // One call each (`describe_ids` would read incomplete answers again).
        let query = DescribeQuery {
            ids,
            limit: 100,
            ..DescribeQuery::default()
        };
        for _ in 0..30 {
            let _ = sim.describe(&query).await;
        }
        sim.snapshot()
            .calls
            .into_iter()
            .map(|c| c.fault.filter(|f| f == "http_502"))
            .collect::<Vec<_>>()
    };
    let (one, thirty) = (faults_seen(1).await, faults_seen(30).await);
    assert!(one.iter().flatten().count() > 0);
    assert_eq!(one, thirty);
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
