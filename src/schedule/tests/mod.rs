//! A simulated week of the scheduled job, every 15 minutes, against the simulator's GPU load
//! profiles, on paused time: the job tears down exactly the instances idle for longer than
//! the window plus the grace, never one with a busy sample, a gap or missing data in its
//! window, never before its grace ended or while kept; each mark's notice is written once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::api::{self, State};
use crate::credentials::Account;
use crate::monitor::IdleRule;
use crate::notice::{Event, EventKind};
use crate::schedule::ActingHours;
use crate::selection::{self, Filters, Protections};
use crate::sim::{GpuLoad, Scenario, ScenarioInstance, SimHandle};
use crate::state::{Changes, Keep, Kind, Store};
use crate::workflow::{Controls, Settings};

const EPOCH: i64 = 1_800_000_000;
const HOUR: i64 = 3600;
const DAY: i64 = 24 * HOUR;

fn row(id: &str, gpus: i64, load: GpuLoad) -> ScenarioInstance {
    let mut r: ScenarioInstance = serde_json::from_value(json!({
        "UHostId": id, "Name": id, "State": "Running", "Region": "cn-wlcb", "Zone": "cn-wlcb-01",
        "GPU": gpus, "CreateTime": EPOCH - DAY, "InstancePrice": 2.5,
    }))
    .unwrap();
    r.gpu_load = Some(load);
    r
}

#[expect(clippy::cast_precision_loss, reason = "seconds of a week, far below 2^52")]
fn nominal(secs: i64) -> f64 {
    secs as f64
}

fn config(account: &Account) -> Config {
    Config {
        rule: IdleRule::default(),
        grace: Duration::from_secs(HOUR as u64),
        action: Action::Terminate,
        hours: None,
        max_count: 20,
        settings: Settings {
            jitter_seed: Some(1),
            ..Settings::default()
        },
        notice_deadline: Duration::from_secs(5),
        account: account.slug(),
        dry_run: false,
    }
}

async fn once(sim: &SimHandle, store: &mut Store, cfg: &Config) -> JobReport {
    let now = sim.unix_now();
    let rows = api::describe_all(sim, None, None).await.unwrap();
    let cands = selection::select(rows.clone(), None, &Filters::default(), &Protections::default(), now);
    run_once(
        Arc::new(sim.clone()),
        store,
        None,
        cfg,
        now,
        cands.into(),
        Controls::default(),
    )
    .await
    .unwrap()
}

/// The nominal second (since the world's zero) of each instance's first Stop.
fn first_stops(sim: &SimHandle) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for c in sim.snapshot().calls {
        if c.action == "StopCompShareInstance" && c.ret_code == Some(0) {
            for id in c.ids {
                out.entry(id).or_insert(c.at_secs);
            }
        }
    }
    out
}

fn events(store: &Store) -> Vec<Event> {
    store
        .pending_notices()
        .unwrap()
        .iter()
        .map(|p| serde_json::from_str(&p.body).unwrap())
        .collect()
}

fn week_world() -> SimHandle {
    let epochs = GpuLoad::Epochs {
        busy_secs: 2400.0,
        pause_secs: 1500.0,
        release_memory: true,
    };
    let scenario = Scenario {
        epoch: Some(EPOCH),
        instances: vec![
            row("uhost-busy", 2, GpuLoad::Busy),
            row("uhost-idle", 1, GpuLoad::Idle),
            row("uhost-idle8", 8, GpuLoad::Idle),
            row("uhost-epochs", 4, epochs),
            row(
                "uhost-later",
                1,
                GpuLoad::IdleAfter {
                    secs: nominal(DAY + 5 * HOUR),
                },
            ),
            // Idle, marked at 1h15, then busy again at 1h30, before its grace ends: unmarked,
            // never touched.
            row(
                "uhost-back",
                1,
                GpuLoad::BusyAfter {
                    secs: nominal(HOUR + 30 * 60),
                },
            ),
            row("uhost-nodata", 1, GpuLoad::NoData),
            row("uhost-kept", 1, GpuLoad::Idle),
            row("uhost-restarted", 1, GpuLoad::Idle),
            row("uhost-nogpu", 0, GpuLoad::Idle),
        ],
        ..Scenario::default()
    };
    scenario.validate().unwrap();
    SimHandle::new(scenario)
}

#[tokio::test(start_paused = true)]
async fn a_simulated_week_tears_down_exactly_the_idle_instances() {
    let sim = week_world();
    let account = Account::new(&"http://sim.invalid".parse().unwrap(), None, "sim-public-key");
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("state.sqlite3"), &account).unwrap();
    let cfg = config(&account);
    store
        .apply(&Changes {
            keeps: vec![Keep {
                kind: Kind::Instance,
                id: "uhost-kept".into(),
                until_at: EPOCH + 2 * DAY,
                reason: "demo on Wednesday".into(),
                created_at: EPOCH,
            }],
            ..Changes::default()
        })
        .unwrap();

    let mut acted_at: BTreeMap<String, i64> = BTreeMap::new();
    let mut marked_at: HashMap<String, i64> = HashMap::new();
    let mut unmarked: Vec<String> = Vec::new();
    for run in 0..(7 * 24 * 4) {
        let t = i64::from(run) * 15 * 60;
        // Someone stops uhost-restarted at 1h30 and starts it again at 1h45: its idle time
        // counts from the restart.
        if t == HOUR + 30 * 60 {
            sim.set_state("uhost-restarted", State::Stopped);
        }
        if t == HOUR + 45 * 60 {
            sim.set_state("uhost-restarted", State::Running);
        }
        // A new idle instance on day 3.
        if t == 2 * DAY {
            let r = row("uhost-new", 2, GpuLoad::Idle);
            let mut i = r.instance().unwrap();
            i.create_time = sim.unix_now();
            sim.insert(i);
            sim.set_gpu_load("uhost-new", GpuLoad::Idle);
        }
        let report = once(&sim, &mut store, &cfg).await;
        for e in &report.entries {
            match &e.decision {
                Decision::Mark { .. } => {
                    marked_at.entry(e.uhost_id.clone()).or_insert(report.at);
                }
                Decision::Act { .. } => {
                    assert_eq!(e.judgement, Judgement::Idle, "{e:?}");
                    acted_at.insert(e.uhost_id.clone(), report.at);
                }
                Decision::Unmark { .. } => unmarked.push(e.uhost_id.clone()),
                _ => {}
            }
        }
        // The next run 15 minutes after this one started.
        let next = EPOCH + t + 15 * 60;
        let wait = u64::try_from(next - sim.unix_now()).unwrap_or(0);
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }

    let expect: Vec<&str> = vec![
        "uhost-idle",
        "uhost-idle8",
        "uhost-kept",
        "uhost-later",
        "uhost-new",
        "uhost-restarted",
    ];
    assert_eq!(acted_at.keys().map(String::as_str).collect::<Vec<_>>(), expect);
    let state = sim.snapshot();
    assert!(state.violations.is_empty(), "{:?}", state.violations);
    let gone = sim.ids();
    for id in &expect {
        assert!(!gone.contains(&(*id).to_owned()), "{id} still listed");
    }
    // When each was acted on: after D of idleness (less the tolerated gap at the window's
    // start) plus the grace, and not long after that (the first run that could).
    let window = 2 * HOUR - 20 * 60;
    let warm = 5 * 60;
    // Rows running at the world's zero have been running since long before: the first answer
    // already reaches back its 30 minutes.
    let reach = 30 * 60;
    let idle_since: HashMap<&str, i64> = [
        ("uhost-idle", EPOCH - reach),
        ("uhost-idle8", EPOCH - reach),
        // Marked only when its keep ends.
        ("uhost-kept", EPOCH + 2 * DAY - window),
        ("uhost-later", EPOCH + DAY + 5 * HOUR),
        ("uhost-new", EPOCH + 2 * DAY + warm),
        ("uhost-restarted", EPOCH + HOUR + 45 * 60 + warm),
    ]
    .into_iter()
    .collect();
    for (id, at) in &acted_at {
        let since = idle_since[id.as_str()];
        let earliest = since + window + HOUR;
        assert!(*at >= earliest, "{id} acted at {at}, before {earliest}");
        assert!(*at <= earliest + HOUR, "{id} acted at {at}, long after {earliest}");
        if id == "uhost-kept" {
            assert!(*at >= EPOCH + 2 * DAY, "kept until day 3, acted at {at}");
        }
    }
    // The stops the sim saw agree with the job's own account.
    let stops = first_stops(&sim);
    assert_eq!(stops.len(), expect.len());
    assert!(unmarked.contains(&"uhost-back".to_owned()), "{unmarked:?}");
    assert!(!acted_at.contains_key("uhost-back"));
    check_notices(&store, &expect);
    assert!(store.marks().unwrap().is_empty(), "{:?}", store.marks().unwrap());
    assert_eq!(store.history(0).unwrap().len(), expect.len());
}

/// One `marked` and one `torn_down` notice per teardown, one `marked` and one `unmarked` for
/// the instance that came back; nothing for the instances never idle.
fn check_notices(store: &Store, expect: &[&str]) {
    let evs = events(store);
    let count = |kind: EventKind, id: &str| {
        evs.iter()
            .filter(|e| e.kind == kind && e.target.as_ref().is_some_and(|t| t.id == id))
            .count()
    };
    for id in expect {
        // uhost-restarted was marked before its restart, unmarked when seen stopped, and
        // marked again two hours after it came back.
        let marks = if *id == "uhost-restarted" { 2 } else { 1 };
        assert_eq!(count(EventKind::Marked, id), marks, "{id}");
        assert_eq!(count(EventKind::Unmarked, id), marks - 1, "{id}");
        assert_eq!(count(EventKind::TornDown, id), 1, "{id}");
    }
    assert_eq!(
        (
            count(EventKind::Marked, "uhost-back"),
            count(EventKind::Unmarked, "uhost-back")
        ),
        (1, 1)
    );
    for id in ["uhost-busy", "uhost-epochs", "uhost-nodata", "uhost-nogpu"] {
        assert!(evs.iter().all(|e| e.target.as_ref().is_none_or(|t| t.id != id)), "{id}");
    }
}

/// Two runs within one second (cron's next run, a person's manual one) each tell their own
/// summary: the second is not taken for a resend of the first and dropped.
#[tokio::test(start_paused = true)]
async fn two_runs_in_one_second_each_write_their_summary() {
    let scenario = Scenario {
        epoch: Some(EPOCH),
        monitor: crate::sim::Monitoring {
            warmup_secs: 0.0,
            ..crate::sim::Monitoring::default()
        },
        instances: vec![row("uhost-idle", 1, GpuLoad::Idle)],
        ..Scenario::default()
    };
    let sim = SimHandle::new(scenario);
    let account = Account::new(&"http://sim.invalid".parse().unwrap(), None, "sim-public-key");
    let mut store = Store::in_memory(&account).unwrap();
    let cfg = Config {
        rule: IdleRule {
            window: Duration::from_secs(600),
            max_gap: Duration::from_secs(300),
            ..IdleRule::default()
        },
        ..config(&account)
    };
    // Nothing listens there: every notice stays in the outbox, where the test reads it.
    let notifier = crate::notice::Notifier::new(
        crate::notice::NoticeConfig::new(Some("http://127.0.0.1:9/hook"), None, Duration::from_secs(1)).unwrap(),
    );
    let now = sim.unix_now();
    let rows = api::describe_all(&sim, None, None).await.unwrap();
    let cands = || selection::select(rows.clone(), None, &Filters::default(), &Protections::default(), now);
    let first = run_once(
        Arc::new(sim.clone()),
        &mut store,
        Some(&notifier),
        &cfg,
        now,
        cands().into(),
        Controls::default(),
    )
    .await
    .unwrap();
    assert_eq!(first.marked, 1);
    sim.set_gpu_load("uhost-idle", GpuLoad::Busy);
    let second = run_once(
        Arc::new(sim.clone()),
        &mut store,
        Some(&notifier),
        &cfg,
        now,
        cands().into(),
        Controls::default(),
    )
    .await
    .unwrap();
    assert_eq!(second.unmarked, 1);
    let summaries: Vec<Event> = events(&store)
        .into_iter()
        .filter(|e| e.kind == EventKind::Summary)
        .collect();
    assert_eq!(summaries.len(), 2, "{summaries:#?}");
    assert!(
        summaries.iter().any(|e| e.reason.contains("1 unmarked")),
        "{summaries:#?}"
    );
}

/// `--action stop`: an idle instance past its grace is stopped and left in place, never
/// terminated; its mark ends with a `stopped` notice and a `stop` history row; started again
/// in the morning, it is judged afresh (not acted on before a new window and grace).
#[tokio::test(start_paused = true)]
async fn stop_mode_stops_and_never_terminates() {
    let scenario = Scenario {
        epoch: Some(EPOCH),
        instances: vec![row("uhost-dev", 1, GpuLoad::Idle), row("uhost-busy", 1, GpuLoad::Busy)],
        ..Scenario::default()
    };
    let sim = SimHandle::new(scenario);
    let account = Account::new(&"http://sim.invalid".parse().unwrap(), None, "sim-public-key");
    let mut store = Store::in_memory(&account).unwrap();
    // A 30-minute window: the monitor's answer alone covers it.
    let cfg = Config {
        action: Action::Stop,
        grace: Duration::ZERO,
        rule: IdleRule {
            window: Duration::from_secs(1800),
            max_gap: Duration::from_secs(300),
            ..IdleRule::default()
        },
        ..config(&account)
    };
    let report = once(&sim, &mut store, &cfg).await;
    assert_eq!(report.acted, 1, "{report:?}");
    let dev = report.entries.iter().find(|e| e.uhost_id == "uhost-dev").unwrap();
    assert_eq!(dev.outcome, Some(crate::workflow::Outcome::Stopped));
    let state = sim.snapshot();
    assert!(state.violations.is_empty(), "{:?}", state.violations);
    assert!(state.calls.iter().all(|c| c.action != "TerminateCompShareInstance"));
    assert!(sim.ids().contains(&"uhost-dev".to_owned()), "a stopped instance stays");
    let h = store.history(0).unwrap();
    assert_eq!(
        (h.len(), h[0].action.as_str(), h[0].outcome.as_str()),
        (1, "stop", "stopped")
    );
    assert!(store.marks().unwrap().is_empty());
    let kinds: Vec<EventKind> = events(&store).iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EventKind::Marked, EventKind::Stopped]);
    // Stopped overnight; the next runs leave it alone and say nothing.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(900)).await;
        let r = once(&sim, &mut store, &cfg).await;
        assert_eq!((r.marked, r.unmarked, r.acted), (0, 0, 0), "{r:?}");
    }
    // Started again in the morning: a new window (30m) and the grace (0) before any act.
    sim.set_state("uhost-dev", State::Running);
    let restarted = sim.unix_now();
    let mut acted_again = None;
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_secs(900)).await;
        let r = once(&sim, &mut store, &cfg).await;
        if r.acted > 0 {
            acted_again = Some(r.at);
            break;
        }
    }
    let at = acted_again.expect("stopped again once idle for the window");
    assert!(at >= restarted + 1800, "acted {}s after the restart", at - restarted);
}

/// Acting hours: found idle at night, an instance is marked (and its owner told) at once, but
/// torn down only when the window opens; outside it the due mark waits.
#[tokio::test(start_paused = true)]
async fn outside_the_acting_hours_a_due_mark_waits_for_the_window() {
    // EPOCH (1_800_000_000) is 2027-01-15 08:00 UTC; a window from 09:00 UTC.
    let scenario = Scenario {
        epoch: Some(EPOCH),
        instances: vec![row("uhost-idle", 1, GpuLoad::Idle)],
        ..Scenario::default()
    };
    let sim = SimHandle::new(scenario);
    let account = Account::new(&"http://sim.invalid".parse().unwrap(), None, "sim-public-key");
    let mut store = Store::in_memory(&account).unwrap();
    let cfg = Config {
        grace: Duration::ZERO,
        rule: IdleRule {
            window: Duration::from_secs(1800),
            max_gap: Duration::from_secs(300),
            ..IdleRule::default()
        },
        hours: Some(ActingHours::parse("09:00-17:00", Some("UTC"), &[]).unwrap()),
        ..config(&account)
    };
    let first = once(&sim, &mut store, &cfg).await;
    assert_eq!((first.marked, first.acted), (1, 0), "{first:?}");
    let mut acted_at = None;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_secs(900)).await;
        let r = once(&sim, &mut store, &cfg).await;
        if r.acted > 0 {
            acted_at = Some(r.at);
            break;
        }
        assert_eq!(r.due, 1, "due and waiting: {r:?}");
    }
    let at = acted_at.expect("acted once the window opened");
    assert!(
        (EPOCH + HOUR..EPOCH + HOUR + 900).contains(&at),
        "acted at {}",
        at - EPOCH
    );
}

/// A run with more instances due than `--max-count` acts on none, and still delivers the
/// notices of the marks it wrote (found by the scheduled sweep: such a run returned before
/// delivering, so a job held over its bound told nobody, run after run).
#[cfg(feature = "sweep")]
#[tokio::test(start_paused = true)]
async fn a_run_over_its_bound_still_delivers_its_notices() {
    let scenario = Scenario {
        epoch: Some(EPOCH),
        monitor: crate::sim::Monitoring {
            warmup_secs: 0.0,
            ..crate::sim::Monitoring::default()
        },
        instances: vec![row("uhost-a", 1, GpuLoad::Idle), row("uhost-b", 1, GpuLoad::Idle)],
        ..Scenario::default()
    };
    let sim = SimHandle::new(scenario);
    let account = Account::new(&"http://sim.invalid".parse().unwrap(), None, "sim-public-key");
    let mut store = Store::in_memory(&account).unwrap();
    let cfg = Config {
        rule: IdleRule {
            window: Duration::from_secs(600),
            max_gap: Duration::from_secs(300),
            ..IdleRule::default()
        },
        grace: Duration::ZERO,
        max_count: 1,
        ..config(&account)
    };
    let inbox = crate::notice::Inbox::new();
    let notifier = crate::notice::Notifier::new(
        crate::notice::NoticeConfig::new(None, None, Duration::from_secs(1))
            .unwrap()
            .with_inbox(inbox.clone()),
    );
    let now = sim.unix_now();
    let rows = api::describe_all(&sim, None, None).await.unwrap();
    let cands = selection::select(rows.clone(), None, &Filters::default(), &Protections::default(), now);
    let result = run_once(
        Arc::new(sim.clone()),
        &mut store,
        Some(&notifier),
        &cfg,
        now,
        cands.into(),
        Controls::default(),
    )
    .await;
    assert!(
        matches!(result, Err(JobError::TooMany { due: 2, max: 1 })),
        "{result:?}"
    );
    assert!(sim.snapshot().calls.iter().all(|c| !c.action.starts_with("Stop")));
    let kinds: Vec<String> = inbox
        .received()
        .iter()
        .map(|p| p["kind"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(kinds.iter().filter(|k| *k == "marked").count(), 2, "{kinds:?}");
    assert!(store.pending_notices().unwrap().is_empty());
}

mod acting;
mod disks;
