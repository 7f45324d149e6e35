//! The monitor: profiles to series, reach, warm-up, stopped instances, gaps and errors, the
//! transport quirk, and the idle rule over what the world reports.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use tokio::time::advance;

use super::{code_of, target};
use crate::api::{Cloud, Transport};
use crate::monitor::{self, IdleRule, Sample, Verdict, Why, gpu_samples, judge};
use crate::sim::{GpuLoad, Monitoring, Scenario, SimHandle, State};

/// A round unix time (a multiple of the 60 s period).
const EPOCH: i64 = 1_800_000_000;

/// Rows `(id, state, GPUs, load)` in cn-wlcb-01, at real time scale.
fn world_with(rows: &[(&str, &str, i64, GpuLoad)], monitor: Monitoring) -> SimHandle {
    let instances = rows
        .iter()
        .map(|(id, state, gpus, load)| {
            let mut row: crate::sim::ScenarioInstance = serde_json::from_value(json!({
                "UHostId": id, "State": state, "Region": "cn-wlcb", "Zone": "cn-wlcb-01", "GPU": gpus,
            }))
            .unwrap();
            row.gpu_load = Some(load.clone());
            row
        })
        .collect();
    let scenario = Scenario {
        epoch: Some(EPOCH),
        monitor,
        instances,
        ..Scenario::default()
    };
    scenario.validate().unwrap();
    SimHandle::new(scenario)
}

fn world(rows: &[(&str, &str, i64, GpuLoad)]) -> SimHandle {
    world_with(rows, Monitoring::default())
}

async fn samples(sim: &SimHandle, ids: &[&str]) -> HashMap<String, Vec<Sample>> {
    let ids: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
    gpu_samples(sim, "cn-wlcb", "cn-wlcb-01", &ids).await.unwrap()
}

fn times(s: &[Sample]) -> Vec<i64> {
    s.iter().map(|x| x.at).collect()
}

#[tokio::test(start_paused = true)]
async fn the_wall_clock_is_the_epoch_plus_nominal_time() {
    let sim = SimHandle::new(Scenario {
        epoch: Some(EPOCH),
        time_scale: 0.01,
        ..Scenario::default()
    });
    assert_eq!(sim.unix_now(), EPOCH);
    advance(Duration::from_secs(3)).await;
    assert_eq!(sim.unix_now(), EPOCH + 300);
    // A generated world without an epoch gets the fixed one.
    let generated = SimHandle::new(Scenario::generated(3, 1));
    assert_eq!(generated.unix_now(), crate::sim::scenario::EPOCH_NOW);
}

#[tokio::test(start_paused = true)]
async fn profiles_give_their_series_one_per_gpu_over_the_reach() {
    let sim = world(&[
        ("uhost-busy", "Running", 2, GpuLoad::Busy),
        ("uhost-idle", "Running", 1, GpuLoad::Idle),
        ("uhost-none", "Running", 1, GpuLoad::NoData),
        ("cpod-idle", "Running", 1, GpuLoad::Idle),
    ]);
    advance(Duration::from_secs(3_600)).await;
    let now = sim.unix_now();
    let got = samples(&sim, &["uhost-busy", "uhost-idle", "uhost-none", "cpod-idle"]).await;
    let busy = &got["uhost-busy"];
    assert_eq!(busy.len(), 60, "30 minutes of minutes, two GPUs");
    assert_eq!(busy[0].device, "0000:01:00.0");
    assert_eq!(busy[59].device, "0000:02:00.0");
    assert!(busy.iter().all(|s| s.util >= 60.0 && s.mem.is_some_and(|m| m >= 55.0)));
    let idle = &got["uhost-idle"];
    // Every minute of the last 30, the newest at now.
    let want: Vec<i64> = (0..30).map(|k| now - 29 * 60 + k * 60).collect();
    assert_eq!(times(idle), want);
    assert!(
        idle.iter()
            .all(|s| (0.0..=2.0).contains(&s.util) && s.mem.is_some_and(|m| m <= 3.0))
    );
    assert!(
        idle.iter().any(|s| s.util > 0.0),
        "an idle GPU reports a floor, not zeros"
    );
    assert_eq!(got["uhost-none"], []);
    assert_eq!(got["cpod-idle"].len(), 30, "containers come back under PodList");
}

#[tokio::test(start_paused = true)]
async fn the_reach_is_the_scenarios() {
    let sim = world_with(
        &[("uhost-a", "Running", 1, GpuLoad::Idle)],
        Monitoring {
            reach_secs: 600.0,
            period_secs: 120.0,
            ..Monitoring::default()
        },
    );
    advance(Duration::from_secs(7_200)).await;
    let now = sim.unix_now();
    let got = samples(&sim, &["uhost-a"]).await;
    assert_eq!(
        times(&got["uhost-a"]),
        [now - 480, now - 360, now - 240, now - 120, now]
    );
}

#[tokio::test(start_paused = true)]
async fn a_new_instance_has_no_data_until_warmed_up() {
    let sim = world(&[("uhost-old", "Running", 1, GpuLoad::Idle)]);
    advance(Duration::from_secs(600)).await;
    let born = sim.unix_now();
    let mut row = crate::api::Instance {
        uhost_id: "uhost-new".into(),
        state: State::Running,
        region: "cn-wlcb".into(),
        zone: "cn-wlcb-01".into(),
        gpu: 1,
        ..crate::api::Instance::default()
    };
    sim.insert(row.clone());
    sim.set_gpu_load("uhost-new", GpuLoad::Idle);
    advance(Duration::from_secs(299)).await;
    assert_eq!(samples(&sim, &["uhost-new"]).await["uhost-new"], []);
    advance(Duration::from_secs(121)).await;
    let got = samples(&sim, &["uhost-new"]).await;
    assert_eq!(times(&got["uhost-new"]), [born + 300, born + 360, born + 420]);
    // The rows the world began with were running long before: a full reach at once.
    assert_eq!(samples(&sim, &["uhost-old"]).await["uhost-old"].len(), 30);
    // Inserted in another state, it has no samples at all.
    row.uhost_id = "uhost-stopped".into();
    row.state = State::Stopped;
    sim.insert(row);
    advance(Duration::from_secs(900)).await;
    assert_eq!(samples(&sim, &["uhost-stopped"]).await["uhost-stopped"], []);
}

#[tokio::test(start_paused = true)]
async fn a_stopped_instance_has_no_new_samples_and_warms_up_again_after_a_start() {
    let sim = world(&[("uhost-a", "Running", 1, GpuLoad::Idle)]);
    advance(Duration::from_secs(600)).await;
    sim.stop(&target("uhost-a"), false).await.unwrap();
    let stopped_at = sim.unix_now();
    advance(Duration::from_secs(600)).await;
    let got = samples(&sim, &["uhost-a"]).await;
    let last = *times(&got["uhost-a"]).last().unwrap();
    assert!(last < stopped_at, "{last} >= {stopped_at}");
    // The answer reaches back to 10 minutes before the stop; it ran until then (exclusive).
    assert_eq!(
        times(&got["uhost-a"]),
        (0..19).map(|k| stopped_at - 1_140 + k * 60).collect::<Vec<_>>()
    );
    advance(Duration::from_secs(1_800)).await;
    assert_eq!(samples(&sim, &["uhost-a"]).await["uhost-a"], []);
    sim.start(&target("uhost-a")).await.unwrap();
    advance(Duration::from_secs(200)).await;
    assert_eq!(samples(&sim, &["uhost-a"]).await["uhost-a"], [], "warming up again");
    advance(Duration::from_secs(400)).await;
    assert!(!samples(&sim, &["uhost-a"]).await["uhost-a"].is_empty());
}

#[tokio::test(start_paused = true)]
async fn dropped_samples_make_the_same_gaps_every_time_and_errors_are_150() {
    let lossy = Monitoring {
        drop_sample: 0.3,
        ..Monitoring::default()
    };
    let a = world_with(&[("uhost-a", "Running", 4, GpuLoad::Idle)], lossy.clone());
    let b = world_with(&[("uhost-a", "Running", 4, GpuLoad::Idle)], lossy);
    advance(Duration::from_secs(3_600)).await;
    let (sa, sb) = (samples(&a, &["uhost-a"]).await, samples(&b, &["uhost-a"]).await);
    assert_eq!(sa, sb);
    let n = sa["uhost-a"].len();
    assert!((60..110).contains(&n), "about 70% of 120: {n}");
    let failing = world_with(
        &[("uhost-a", "Running", 1, GpuLoad::Idle)],
        Monitoring {
            error: 1.0,
            ..Monitoring::default()
        },
    );
    let e = gpu_samples(&failing, "cn-wlcb", "cn-wlcb-01", &["uhost-a".to_owned()])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(150));
    let calls = failing.snapshot().calls;
    assert_eq!(calls.last().unwrap().fault.as_deref(), Some("monitor_error"));
}

#[tokio::test(start_paused = true)]
async fn profiles_change_at_their_nominal_times() {
    let sim = world(&[
        ("uhost-ia", "Running", 1, GpuLoad::IdleAfter { secs: 3_600.0 }),
        ("uhost-ba", "Running", 1, GpuLoad::BusyAfter { secs: 3_600.0 }),
        (
            "uhost-ep",
            "Running",
            1,
            GpuLoad::Epochs {
                busy_secs: 1_200.0,
                pause_secs: 600.0,
                release_memory: false,
            },
        ),
    ]);
    advance(Duration::from_secs(3_600 + 1_800)).await;
    let got = samples(&sim, &["uhost-ia", "uhost-ba", "uhost-ep"]).await;
    let split = EPOCH + 3_600;
    for s in &got["uhost-ia"] {
        assert_eq!(s.util >= 60.0, s.at < split, "{s:?}");
    }
    for s in &got["uhost-ba"] {
        assert_eq!(s.util >= 60.0, s.at >= split, "{s:?}");
    }
    // 20 minutes of work, 10 of pause, from time zero; memory held through the pause.
    for s in &got["uhost-ep"] {
        let working = (s.at - EPOCH) % 1_800 < 1_200;
        assert_eq!(s.util >= 85.0, working, "{s:?}");
        assert!(working || s.util <= 1.0);
        assert!(s.mem.is_some_and(|m| m >= 70.0));
    }
    // A person changes what a GPU does.
    sim.set_gpu_load("uhost-ia", GpuLoad::Busy);
    advance(Duration::from_secs(60)).await;
    let got = samples(&sim, &["uhost-ia"]).await;
    assert!(got["uhost-ia"].last().unwrap().util >= 60.0);
}

#[tokio::test(start_paused = true)]
async fn the_transport_quirk_and_the_limits() {
    let sim = world(&[("uhost-a", "Running", 1, GpuLoad::Idle)]);
    // Form style: the gateway does not understand `UHostIds.0`.
    let mut form = crate::api::sign::Params::new();
    form.insert("Region".into(), "cn-wlcb".into());
    form.insert("Zone".into(), "cn-wlcb-01".into());
    form.insert("UHostIds.0".into(), "uhost-a".into());
    assert_eq!(code_of(sim.call(monitor::ACTION, form).await), 210);
    let body = |ids: serde_json::Value| {
        let serde_json::Value::Object(m) = json!({"Region": "cn-wlcb", "Zone": "cn-wlcb-01", "UHostIds": ids}) else {
            unreachable!()
        };
        m
    };
    let eleven: Vec<String> = (0..11).map(|i| format!("uhost-{i}")).collect();
    assert_eq!(code_of(sim.call_json(monitor::ACTION, body(json!(eleven))).await), 230);
    assert_eq!(code_of(sim.call_json(monitor::ACTION, body(json!([]))).await), 210);
    assert_eq!(code_of(sim.call_json(monitor::ACTION, body(json!([1, 2]))).await), 230);
    // An ID in another zone, or unknown, is not listed.
    let other = gpu_samples(&sim, "cn-wlcb", "cn-wlcb-02", &["uhost-a".to_owned()])
        .await
        .unwrap();
    assert_eq!(other["uhost-a"], []);
    // A monitor call is a read: it never counts against a mutating-call rule, and a proxy
    // failing after the work was done only happens to calls that change something.
    assert!(sim.snapshot().violations.is_empty());
    sim.set_faults(crate::sim::Faults {
        applied_then_502: 1.0,
        ..crate::sim::Faults::default()
    });
    let read = gpu_samples(&sim, "cn-wlcb", "cn-wlcb-01", &["uhost-a".to_owned()])
        .await
        .unwrap();
    assert_eq!(read["uhost-a"].len(), 30);
}

#[tokio::test(start_paused = true)]
async fn the_rule_needs_the_tools_own_history_to_see_idleness() {
    let sim = world(&[
        ("uhost-idle", "Running", 2, GpuLoad::Idle),
        ("uhost-busy", "Running", 1, GpuLoad::Busy),
    ]);
    let rule = IdleRule::default();
    let mut history: HashMap<String, Vec<Sample>> = HashMap::new();
    // A cron job every 15 minutes for two and a half hours, keeping what it saw.
    for round in 0..=10 {
        if round > 0 {
            advance(Duration::from_secs(900)).await;
        }
        for (id, s) in samples(&sim, &["uhost-idle", "uhost-busy"]).await {
            history.entry(id).or_default().extend(s);
        }
        if round == 0 {
            let now = sim.unix_now();
            let fresh = samples(&sim, &["uhost-idle"]).await;
            // One answer reaches 30 minutes back: never enough for two hours.
            assert!(matches!(
                judge(&rule, now, EPOCH - 86_400, Some(2), &fresh["uhost-idle"]),
                Verdict::Unknown(Why::NotCovered { .. })
            ));
        }
    }
    let now = sim.unix_now();
    let running_since = EPOCH - 86_400;
    assert!(matches!(
        judge(&rule, now, running_since, Some(2), &history["uhost-idle"]),
        Verdict::Idle { .. }
    ));
    assert!(matches!(
        judge(&rule, now, running_since, Some(1), &history["uhost-busy"]),
        Verdict::Busy { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn generated_worlds_mix_every_profile_the_same_way_per_seed() {
    let a = SimHandle::new(Scenario::generated(300, 11));
    let b = SimHandle::new(Scenario::generated(300, 11));
    advance(Duration::from_secs(600)).await;
    let running: Vec<String> = a
        .snapshot()
        .instances
        .iter()
        .filter(|r| r["State"] == "Running")
        .map(|r| r["UHostId"].as_str().unwrap().to_owned())
        .collect();
    let ids: Vec<String> = running.iter().take(40).cloned().collect();
    let by_zone = |sim: &SimHandle| {
        let sim = sim.clone();
        let ids = ids.clone();
        async move {
            let mut all = HashMap::new();
            for (region, zone) in crate::sim::DEFAULT_ZONES {
                all.extend(
                    gpu_samples(&sim, region, zone, &ids)
                        .await
                        .unwrap()
                        .into_iter()
                        .filter(|(_, v)| !v.is_empty()),
                );
            }
            all
        }
    };
    let (sa, sb) = (by_zone(&a).await, by_zone(&b).await);
    assert_eq!(sa, sb);
    let loads: Vec<GpuLoad> = a.ids().iter().filter_map(|id| a.gpu_load(id)).collect();
    for want in ["Busy", "Idle", "Epochs", "IdleAfter", "BusyAfter", "NoData"] {
        assert!(
            loads.iter().any(|l| format!("{l:?}").starts_with(want)),
            "no {want} in {loads:?}"
        );
    }
}
