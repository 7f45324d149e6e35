//! Truthful outcomes against a gateway that misbehaves beyond the simulator's own faults: an
//! eventually consistent Describe (rows and `TotalCount` left out, with a count that agrees
//! with the short answer, so nothing admits it), Describes throttled for long stretches, a
//! call that panics, calls still in flight when the deadline passes. Paused time throughout;
//! runs that could hang without their fix are watched by a real-time watchdog.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use compshare_teardown::api::{
    ApiError, Cloud, DescribePage, DescribeQuery, ListingError, State, Target, TerminateAck, describe_all,
};
use compshare_teardown::sim::{Faults, SimHandle};
use compshare_teardown::workflow::journal::{self, Entry, JOURNAL_VERSION, Journal};
use compshare_teardown::workflow::machine::{Call, Effect};
use compshare_teardown::workflow::{self, Controls, Outcome, Report, Settings};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::workflow::{all_gone, assert_safe, locked_for_an_hour, settings, stop_times, world};

/// The simulator behind a misbehaving front.
struct Front {
    sim: SimHandle,
    rng: Mutex<StdRng>,
    /// Chance that an existing row is left out of a Describe answer.
    drop_row: f64,
    /// Chance that an answer carries no `TotalCount`.
    omit_total: f64,
    /// Throttle (RetCode 153) this many Describes before answering any.
    throttled_describes: AtomicUsize,
    /// A Stop of this instance panics inside the call.
    panic_on_stop: Option<String>,
    /// Every Stop takes this long to be answered.
    stop_delay: Duration,
}

impl Front {
    fn new(sim: &SimHandle, seed: u64) -> Front {
        Front {
            sim: sim.clone(),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            drop_row: 0.0,
            omit_total: 0.0,
            throttled_describes: AtomicUsize::new(0),
            panic_on_stop: None,
            stop_delay: Duration::ZERO,
        }
    }
}

impl Cloud for Front {
    async fn describe(&self, q: &DescribeQuery) -> Result<DescribePage, ApiError> {
        let throttle = self
            .throttled_describes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if throttle {
            return Err(ApiError::RetCode {
                action: "DescribeCompShareInstance".into(),
                code: 153,
                message: "API request throttled".into(),
                request_id: None,
            });
        }
        let mut page = self.sim.describe(q).await?;
        let mut rng = self.rng.lock().unwrap();
        let before = page.uhost_set.len();
        page.uhost_set.retain(|_| rng.random::<f64>() >= self.drop_row);
        let dropped = i64::try_from(before - page.uhost_set.len()).unwrap();
        // A replica that lacks rows counts without them too: nothing admits the gap.
        page.total_count = if rng.random::<f64>() < self.omit_total {
            None
        } else {
            page.total_count.map(|t| t - dropped)
        };
        Ok(page)
    }
    async fn stop(&self, t: &Target, force: bool) -> Result<(), ApiError> {
        tokio::time::sleep(self.stop_delay).await;
        assert!(
            self.panic_on_stop.as_ref() != Some(&t.uhost_id),
            "injected failure in Stop"
        );
        self.sim.stop(t, force).await
    }
    async fn terminate(&self, t: &Target, release: bool) -> Result<TerminateAck, ApiError> {
        self.sim.terminate(t, release).await
    }
}

/// Run `make()` on a paused-time runtime; fail if it has not finished after 60 real seconds
/// (a hang or a spin: virtual time never moves while a loop spins).
fn watched<T: Send + 'static, F: Future<Output = T> + 'static>(make: impl FnOnce() -> F + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let _ = tx.send(rt.block_on(make()));
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the run did not finish: it hangs or spins")
}

/// The report is true to the simulator: every instance it calls gone is gone, every
/// instance still there is reported as not gone, and success means nothing is left.
fn truthful(report: &Report, sim: &SimHandle) {
    let left = sim.ids();
    for i in &report.instances {
        let there = left.contains(&i.uhost_id);
        assert_eq!(
            i.outcome.is_gone(),
            !there,
            "{}: {:?}, there: {there}",
            i.uhost_id,
            i.outcome
        );
    }
    if report.all_ok() {
        assert!(left.is_empty(), "exit 0 with {left:?} left");
    }
}

fn flaky(count: usize, seed: u64) -> (SimHandle, Front) {
    let sim = world(count, seed, Faults::default());
    let mut front = Front::new(&sim, seed);
    front.drop_row = 0.08;
    front.omit_total = 0.2;
    (sim, front)
}

/// Rows left out of 8% of answers and `TotalCount` out of 20%: 40-instance teardowns leave
/// nothing running and say so truthfully, also when killed halfway and resumed.
#[tokio::test(start_paused = true)]
async fn an_inconsistent_gateway_never_makes_a_running_instance_gone() {
    for seed in 0..3 {
        let (sim, front) = flaky(40, 700 + seed);
        let ids = sim.ids();
        let report = workflow::run(Arc::new(front), ids.clone(), settings(), Controls::default()).await;
        truthful(&report, &sim);
        all_gone(&report, &sim);
        assert_safe(&sim.snapshot(), &ids);
    }
    let dir = tempfile::tempdir().unwrap();
    for (seed, cut) in [(710, 25), (711, 90)] {
        let (sim, front) = flaky(40, seed);
        let front = Arc::new(front);
        let ids = sim.ids();
        let path = dir.path().join(format!("j{seed}"));
        let ctl = Controls {
            journal: Some(Journal::open(&path).unwrap().fail_after(cut)),
            ..Controls::default()
        };
        let first = workflow::run(Arc::clone(&front), ids.clone(), settings(), ctl).await;
        truthful(&first, &sim);
        assert!(!first.all_ok(), "the cut at line {cut} halted the run");
        let ctl = Controls {
            journal: Some(Journal::open(&path).unwrap()),
            resume: Some(journal::replay(&path).unwrap()),
            ..Controls::default()
        };
        let second = workflow::run(front, ids.clone(), settings(), ctl).await;
        truthful(&second, &sim);
        all_gone(&second, &sim);
        assert_safe(&sim.snapshot(), &ids);
    }
}

/// `TotalCount` missing from half the pages and rows left out of some: every page is still
/// read, and an account whose answers never say how many there are is an error, not one page.
#[tokio::test(start_paused = true)]
async fn paging_reads_every_page_when_answers_leave_things_out() {
    let sim = world(250, 5, Faults::default());
    let mut front = Front::new(&sim, 5);
    front.omit_total = 0.5;
    let all = describe_all(&front, None, None).await.unwrap();
    assert_eq!(all.len(), 250);
    front.omit_total = 1.0;
    let e = describe_all(&front, None, None).await.unwrap_err();
    assert!(matches!(e, ListingError::Incomplete(_)), "{e}");
}

/// A resumed run guards the first call of *this* run for every instance, including one the
/// crashed run had already stopped: a protection added since wins.
#[tokio::test(start_paused = true)]
async fn a_resumed_run_guards_instances_the_crashed_run_had_called() {
    let sim = world(3, 31, Faults::default());
    let ids = sim.ids();
    for id in &ids {
        sim.set_state(id, State::Running);
    }
    let victim = ids[0].clone();
    // The crashed run: it had stopped the first instance.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let mut j = Journal::open(&path).unwrap();
    j.write(&Entry::Start {
        version: JOURNAL_VERSION,
        kind: compshare_teardown::workflow::journal::JournalKind::Instance,
        ids: ids.clone(),
        release_udisk: false,
        force_stop: false,
        resumed: false,
    })
    .unwrap();
    let row = sim.snapshot().instances[0].clone();
    let target: compshare_teardown::api::Instance = serde_json::from_value(row).unwrap();
    assert_eq!(target.uhost_id, victim);
    j.write(&Entry::Call {
        id: victim.clone(),
        call: Call::Stop,
        region: target.region.clone(),
        zone: target.zone.clone(),
    })
    .unwrap();
    sim.stop(&Target::of(&target), false).await.unwrap();
    j.write(&Entry::Result {
        id: victim.clone(),
        call: Call::Stop,
        effect: Effect::Accepted,
        error: None,
    })
    .unwrap();
    drop(j);
    let calls_before = sim.snapshot().calls.len();
    let protected = victim.clone();
    let ctl = Controls {
        journal: Some(Journal::open(&path).unwrap()),
        resume: Some(journal::replay(&path).unwrap()),
        guard: Some(Box::new(move |row| {
            (row.uhost_id == protected).then(|| "protected (--protect-name)".to_owned())
        })),
        ..Controls::default()
    };
    let report = workflow::run(Arc::new(sim.clone()), ids.clone(), settings(), ctl).await;
    let got = report.instances.iter().find(|i| i.uhost_id == victim).unwrap();
    assert!(
        matches!(&got.outcome, Outcome::Skipped { reason } if reason.contains("protected")),
        "{got:?}"
    );
    let state = sim.snapshot();
    let touched: Vec<_> = state.calls[calls_before..]
        .iter()
        .filter(|c| c.action != "DescribeCompShareInstance" && c.ids.contains(&victim))
        .collect();
    assert!(touched.is_empty(), "{touched:?}");
    assert!(sim.ids().contains(&victim));
    assert_eq!(sim.ids().len(), 1, "the others are gone");
}

/// A call task that panics ends its instance as failed, with the message, and the run ends.
#[test]
fn a_panicking_call_fails_its_instance_and_the_run_still_ends() {
    let (report, left, victim) = watched(|| async {
        let sim = world(4, 32, Faults::default());
        let ids = sim.ids();
        for id in &ids {
            sim.set_state(id, State::Running);
        }
        let mut front = Front::new(&sim, 1);
        front.panic_on_stop = Some(ids[0].clone());
        let report = workflow::run(Arc::new(front), ids.clone(), settings(), Controls::default()).await;
        (report, sim.ids(), ids[0].clone())
    });
    for i in &report.instances {
        if i.uhost_id == victim {
            assert!(
                matches!(&i.outcome, Outcome::Failed { error, .. }
                    if error == "internal error: an API task panicked: injected failure in Stop"),
                "{:?}",
                i.outcome
            );
        } else {
            assert!(i.outcome.is_gone(), "{:?}", i.outcome);
        }
    }
    assert_eq!(left, vec![victim]);
}

/// When the deadline passes with calls in flight, the loop sleeps until their answers come
/// (a spinning loop never lets virtual time reach them, and the watchdog fires).
#[test]
fn after_the_deadline_the_run_waits_for_calls_in_flight_without_spinning() {
    let (report, took) = watched(|| async {
        let sim = world(3, 33, Faults::default());
        let ids = sim.ids();
        for id in &ids {
            sim.set_state(id, State::Running);
        }
        let mut front = Front::new(&sim, 2);
        front.stop_delay = Duration::from_secs(120);
        let s = Settings {
            deadline: Some(Duration::from_secs(5)),
            ..settings()
        };
        let start = tokio::time::Instant::now();
        let report = workflow::run(Arc::new(front), ids, s, Controls::default()).await;
        (report, start.elapsed())
    });
    assert!(
        took >= Duration::from_secs(120) && took < Duration::from_secs(130),
        "{took:?}"
    );
    for i in &report.instances {
        assert!(matches!(i.outcome, Outcome::TimedOut { .. }), "{:?}", i.outcome);
    }
}

/// Throttled Describes say "slower", not "broken": forty in a row (each one covering every
/// waiting instance) must not use up the instances' retry budgets (10 failed looks each).
#[tokio::test(start_paused = true)]
async fn a_long_run_of_throttled_describes_fails_no_instance() {
    let sim = world(12, 34, Faults::default());
    let ids = sim.ids();
    let front = Front::new(&sim, 3);
    front.throttled_describes.store(40, Ordering::SeqCst);
    let front = Arc::new(front);
    let report = workflow::run(Arc::clone(&front), ids.clone(), settings(), Controls::default()).await;
    assert_eq!(
        front.throttled_describes.load(Ordering::SeqCst),
        0,
        "all forty were answered"
    );
    all_gone(&report, &sim);
    assert_safe(&sim.snapshot(), &ids);
}

/// The instance timeout ends with a last attempt, not with a wait: a lock that outlives it is
/// tried once more just before the timeout, however long the planned gap.
#[tokio::test(start_paused = true)]
async fn the_instance_timeout_ends_with_a_last_attempt() {
    let (sim, ids) = locked_for_an_hour(35);
    let s = Settings {
        instance_timeout: Duration::from_secs(100),
        lock_wait: Duration::from_secs(3000),
        ..settings()
    };
    let report = workflow::run(Arc::new(sim.clone()), ids.clone(), s, Controls::default()).await;
    assert!(
        matches!(report.instances[0].outcome, Outcome::TimedOut { .. }),
        "{:?}",
        report.instances[0].outcome
    );
    let stops = stop_times(&sim);
    let last = stops.last().copied().unwrap_or_default();
    // The lock's gaps grow to 30 s (jittered); the last attempt still lands in the last second
    // before the end (100 s from the start, plus the first Stop's short wait for a slot): a
    // second is left for its look and its call.
    assert!(
        (100.0 - 1.0 - 0.01..100.0 + 0.5).contains(&last),
        "attempts at {stops:?}"
    );
}

/// Stop and Terminate applied and then answered HTTP 502 a quarter of the time: such an
/// answer may follow the work, so the engine looks before any resend, and no instance gets a
/// Terminate after one was applied. Everything still goes.
#[tokio::test(start_paused = true)]
async fn a_502_after_the_work_never_leads_to_a_second_terminate() {
    for seed in 0..3 {
        let sim = world(
            40,
            1410 + seed,
            Faults {
                applied_then_502: 0.25,
                ..Faults::default()
            },
        );
        let ids = sim.ids();
        let report = workflow::run(Arc::new(sim.clone()), ids.clone(), settings(), Controls::default()).await;
        let state = sim.snapshot();
        let answered_502 = state
            .calls
            .iter()
            .filter(|c| c.action == "TerminateCompShareInstance" && c.fault.as_deref() == Some("applied_then_502"))
            .count();
        assert!(answered_502 > 0, "seed {seed}: no Terminate met the fault");
        assert_safe(&state, &ids);
        truthful(&report, &sim);
        all_gone(&report, &sim);
    }
}
