//! The driver's parts, each against a scripted [`Cloud`] whose answers the test writes call by
//! call (the whole-world tests in `tests/it` run the same driver against the simulator):
//! looks (`looks.rs`), calls (`calls.rs`), and the loop and ends (`mod.rs`, `ends.rs`).

use std::sync::Mutex;

use super::*;
use crate::api::{Answer, DescribePage, DescribeQuery, Looked, State, Target};
use crate::workflow::absence;

/// What the scripted cloud holds true: the state of each instance, and when an instance
/// whose deletion was accepted stops being listed.
#[derive(Default)]
struct Truth {
    states: HashMap<String, State>,
    gone_at: HashMap<String, Instant>,
}

impl Truth {
    fn listed(&self, id: &str, now: Instant) -> bool {
        self.states.contains_key(id) && self.gone_at.get(id).is_none_or(|at| now < *at)
    }
}

/// A call as the scripted cloud received it: when (since the script was made), which verb,
/// for which IDs.
#[derive(Debug, Clone)]
struct Received {
    at: Duration,
    verb: &'static str,
    ids: Vec<String>,
}

/// The `n`-th call (0-based) of a verb, with the truth to read or change.
type Hook<T> = Box<dyn Fn(&mut Truth, &Target, usize) -> Result<T, ApiError> + Send + Sync>;
type DescribeHook = Box<dyn Fn(&Truth, &DescribeQuery, usize) -> Result<DescribePage, ApiError> + Send + Sync>;

/// A [`Cloud`] whose answers are written by the test. By default Stop stops at once,
/// Terminate deletes at once, and Describe lists every requested instance that exists with
/// an honest `TotalCount`.
struct Scripted {
    made: Instant,
    truth: Mutex<Truth>,
    log: Mutex<Vec<Received>>,
    stop: Hook<()>,
    terminate: Hook<TerminateAck>,
    describe: DescribeHook,
    /// How long Stop and Describe take to answer.
    stop_delay: Duration,
    describe_delay: Duration,
    /// Looks answered, before any other, with a body that does not read as a page.
    garbled_looks: usize,
}

const STOP: &str = "Stop";
const TERMINATE: &str = "Terminate";
const DESCRIBE: &str = "Describe";

fn row(id: &str, state: State) -> Instance {
    Instance {
        uhost_id: id.to_owned(),
        name: format!("name-of-{id}"),
        state,
        region: "cn-wlcb".to_owned(),
        zone: "cn-wlcb-01".to_owned(),
        charge_type: "Postpay".to_owned(),
        ..Instance::default()
    }
}

fn honest(truth: &Truth, q: &DescribeQuery) -> DescribePage {
    let now = Instant::now();
    let rows: Vec<Instance> = q
        .ids
        .iter()
        .filter(|id| truth.listed(id, now))
        .map(|id| row(id, truth.states[id].clone()))
        .collect();
    DescribePage {
        total_count: Some(i64::try_from(rows.len()).unwrap_or(i64::MAX)),
        uhost_set: rows,
    }
}

fn retcode(action: &str, code: i64, message: &str) -> ApiError {
    ApiError::RetCode {
        action: action.to_owned(),
        code,
        message: message.to_owned(),
        request_id: Some("req-1".to_owned()),
    }
}

/// A Stop hook that refuses the first `k` Stops with RetCode `code`, then stops the instance.
fn refuse_then_stop(k: usize, code: i64, message: &'static str) -> Hook<()> {
    Box::new(move |t, target, n| {
        if n < k {
            return Err(retcode("StopCompShareInstance", code, message));
        }
        t.states.insert(target.uhost_id.clone(), State::Stopped);
        Ok(())
    })
}

impl Scripted {
    fn new(rows: &[(&str, State)]) -> Scripted {
        let truth = Truth {
            states: rows.iter().map(|(id, s)| ((*id).to_owned(), s.clone())).collect(),
            gone_at: HashMap::new(),
        };
        Scripted {
            made: Instant::now(),
            truth: Mutex::new(truth),
            log: Mutex::new(Vec::new()),
            stop: Box::new(|t, target, _| {
                t.states.insert(target.uhost_id.clone(), State::Stopped);
                Ok(())
            }),
            terminate: Box::new(|t, target, _| {
                t.gone_at.insert(target.uhost_id.clone(), Instant::now());
                Ok(TerminateAck::default())
            }),
            describe: Box::new(|t, q, _| Ok(honest(t, q))),
            stop_delay: Duration::ZERO,
            describe_delay: Duration::ZERO,
            garbled_looks: 0,
        }
    }

    /// Every instance of `ids` in `state`.
    fn uniform(ids: &[String], state: &State) -> Scripted {
        let rows: Vec<(&str, State)> = ids.iter().map(|id| (id.as_str(), state.clone())).collect();
        Scripted::new(&rows)
    }

    /// Log the call; its number among calls of the same verb.
    fn receive(&self, verb: &'static str, ids: Vec<String>) -> usize {
        let mut log = self.log.lock().expect("not poisoned");
        let n = log.iter().filter(|r| r.verb == verb).count();
        log.push(Received {
            at: self.made.elapsed(),
            verb,
            ids,
        });
        n
    }

    /// A hook that panics (on purpose) poisons the lock; the truth is still sound.
    fn truth(&self) -> std::sync::MutexGuard<'_, Truth> {
        self.truth.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn calls(&self, verb: &str) -> Vec<Received> {
        let log = self.log.lock().expect("not poisoned");
        log.iter().filter(|r| r.verb == verb).cloned().collect()
    }
}

impl Cloud for Scripted {
    async fn describe(&self, q: &DescribeQuery) -> Result<DescribePage, ApiError> {
        let n = self.receive(DESCRIBE, q.ids.clone());
        tokio::time::sleep(self.describe_delay).await;
        let truth = self.truth();
        (self.describe)(&truth, q, n)
    }

    async fn look(&self, q: DescribeQuery) -> Result<Looked, ApiError> {
        let garbled = self.calls(DESCRIBE).len() < self.garbled_looks;
        if garbled {
            self.receive(DESCRIBE, q.ids.clone());
            // A `State` that is a number: the page does not read (as a `String` would not).
            return Ok(Looked::from(Answer::from_body(
                br#"{"UHostSet":[{"State":5}]}"#.to_vec(),
            )));
        }
        self.describe(&q).await.map(Looked::from)
    }

    async fn stop(&self, target: &Target, _force: bool) -> Result<(), ApiError> {
        let n = self.receive(STOP, vec![target.uhost_id.clone()]);
        tokio::time::sleep(self.stop_delay).await;
        let mut truth = self.truth();
        (self.stop)(&mut truth, target, n)
    }

    async fn terminate(&self, target: &Target, _release: bool) -> Result<TerminateAck, ApiError> {
        let n = self.receive(TERMINATE, vec![target.uhost_id.clone()]);
        let mut truth = self.truth();
        (self.terminate)(&mut truth, target, n)
    }
}

/// A Describe that shows a `Stopping` instance as `Stopped` once `d` has passed from now.
fn stopping_for(d: Duration) -> DescribeHook {
    let t0 = Instant::now();
    Box::new(move |t, q, _| {
        let mut page = honest(t, q);
        for r in &mut page.uhost_set {
            if r.state == State::Stopping && t0.elapsed() > d {
                r.state = State::Stopped;
            }
        }
        Ok(page)
    })
}

fn settings() -> Settings {
    Settings {
        jitter_seed: Some(3),
        ..Settings::default()
    }
}

async fn drive(cloud: &Arc<Scripted>, ids: &[&str], settings: Settings, ctl: Controls) -> Report {
    let ids = ids.iter().map(|s| (*s).to_owned()).collect();
    run(Arc::clone(cloud), ids, settings, ctl).await
}

fn outcome<'a>(report: &'a Report, id: &str) -> &'a Outcome {
    &report
        .instances
        .iter()
        .find(|i| i.uhost_id == id)
        .expect("every instance is in the report")
        .outcome
}

fn confirmed(o: &Outcome) -> bool {
    matches!(o, Outcome::Terminated { confirmed: true, .. })
}

// --- looks.rs: batched Describes and the absence rule -------------------------------------

/// The first tick looks at every instance in chunks of at most 100, each instance once.
#[tokio::test(start_paused = true)]
async fn the_first_looks_go_in_chunks_of_a_hundred() {
    let ids: Vec<String> = (0..250).map(|i| format!("uhost-{i:03}")).collect();
    let cloud = Arc::new(Scripted::uniform(&ids, &State::Stopped));
    let names: Vec<&str> = ids.iter().map(String::as_str).collect();
    let report = drive(&cloud, &names, settings(), Controls::default()).await;
    let describes = cloud.calls(DESCRIBE);
    let first: Vec<&Received> = describes.iter().filter(|r| r.at == describes[0].at).collect();
    let mut sizes: Vec<usize> = first.iter().map(|r| r.ids.len()).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [50, 100, 100]);
    let mut asked: Vec<&String> = first.iter().flat_map(|r| &r.ids).collect();
    asked.sort();
    asked.dedup();
    assert_eq!(asked.len(), 250, "each instance once");
    assert!(report.instances.iter().all(|i| confirmed(&i.outcome)));
    assert_eq!(cloud.calls(TERMINATE).len(), 250);
    assert!(cloud.calls(STOP).is_empty(), "already stopped");
}

/// A look that rode early in a Describe leaving anyway, and found nothing new, does not pull
/// the instance's later looks forward: 300 instances stopping for 20 s, their Stops spread
/// by the pace's slow start, are each looked at about as often as the poll gap says (a sixth
/// of the time in the phase, at least `min_poll`), not a third more.
#[tokio::test(start_paused = true)]
async fn early_looks_do_not_pull_the_schedule_forward() {
    let ids: Vec<String> = (0..300).map(|i| format!("uhost-{i:03}")).collect();
    let mut script = Scripted::uniform(&ids, &State::Running);
    script.stop = Box::new(|t, target, _| {
        t.states.insert(target.uhost_id.clone(), State::Stopping);
        Ok(())
    });
    script.describe = stopping_for(Duration::from_secs(20));
    let cloud = Arc::new(script);
    let names: Vec<&str> = ids.iter().map(String::as_str).collect();
    let report = drive(&cloud, &names, settings(), Controls::default()).await;
    assert!(report.instances.iter().all(|i| confirmed(&i.outcome)), "{report:?}");
    let looks: usize = cloud
        .calls(DESCRIBE)
        .iter()
        .filter(|r| r.at < Duration::from_secs(20))
        .map(|r| r.ids.len())
        .sum();
    #[expect(clippy::cast_precision_loss, reason = "a few thousand looks")]
    let per_instance = looks as f64 / 300.0;
    // The schedule gives 24: the first look, 6 a `min_poll` apart until 1.5 s into the phase,
    // 17 a sixth of the age apart until 20 s. Early looks that moved it measured 25.33.
    assert!(per_instance <= 24.5, "{per_instance:.2} looks per instance");
}

/// An answer that does not read as a page is a failed look, as when the task read it: the
/// instance backs off and looks again. Taken for an empty page, six of them would have
/// proved it gone (five absent looks over a poll interval) without a call; it is stopped and
/// terminated once an answer reads.
#[tokio::test(start_paused = true)]
async fn an_unreadable_answer_is_a_failed_look_not_an_absence() {
    let mut script = Scripted::new(&[("uhost-a", State::Running)]);
    script.garbled_looks = 6;
    let cloud = Arc::new(script);
    let report = drive(&cloud, &["uhost-a"], settings(), Controls::default()).await;
    assert!(confirmed(outcome(&report, "uhost-a")), "{report:?}");
    let stop = cloud.calls(STOP)[0].at;
    let looks_before = cloud.calls(DESCRIBE).iter().filter(|r| r.at <= stop).count();
    assert_eq!(
        looks_before, 7,
        "six unreadable answers, then the look the Stop was decided on"
    );
}

/// At most a quarter of `--concurrency` Describes are in flight: the first tick of 1,000
/// instances at `--concurrency 16` sends 4 of its 10 at once, the next as those come back.
#[tokio::test(start_paused = true)]
async fn describes_in_flight_are_bounded_by_a_quarter_of_the_concurrency() {
    let ids: Vec<String> = (0..1000).map(|i| format!("uhost-{i:04}")).collect();
    let mut scripted = Scripted::uniform(&ids, &State::Stopped);
    scripted.describe_delay = Duration::from_millis(100);
    let cloud = Arc::new(scripted);
    let names: Vec<&str> = ids.iter().map(String::as_str).collect();
    let report = drive(
        &cloud,
        &names,
        Settings {
            concurrency: 16,
            ..settings()
        },
        Controls::default(),
    )
    .await;
    let describes = cloud.calls(DESCRIBE);
    let at_once = |at: Duration| describes.iter().filter(|r| r.at == at).count();
    assert_eq!(at_once(describes[0].at), 4);
    assert!(describes.iter().all(|r| at_once(r.at) <= 4));
    assert!(report.instances.iter().all(|i| confirmed(&i.outcome)));
}

/// An answer that carries fewer rows than its `TotalCount` says it matched is not a look: an
/// instance missing from twenty such answers (more than the most looks the absence rule ever
/// asks for) is still there, and is torn down once it shows.
#[tokio::test(start_paused = true)]
async fn a_short_answer_that_says_so_is_not_a_look() {
    let mut script = Scripted::new(&[("uhost-a", State::Running)]);
    script.describe = Box::new(|t, q, n| {
        let mut page = honest(t, q);
        if n < 20 {
            page.uhost_set.clear(); // the row is dropped, the count still admits it
        }
        Ok(page)
    });
    let cloud = Arc::new(script);
    let report = drive(&cloud, &["uhost-a"], settings(), Controls::default()).await;
    assert!(confirmed(outcome(&report, "uhost-a")), "{report:?}");
    assert_eq!(cloud.calls(STOP).len(), 1);
    assert_eq!(cloud.calls(TERMINATE).len(), 1);
}

/// An instance no answer lists is gone only after five looks spread over a poll interval,
/// and nothing is sent for it.
#[tokio::test(start_paused = true)]
async fn absence_without_our_terminate_takes_five_looks_over_a_poll_interval() {
    let cloud = Arc::new(Scripted::new(&[]));
    let s = settings();
    let poll = s.poll_interval;
    let report = drive(&cloud, &["uhost-a"], s, Controls::default()).await;
    assert_eq!(outcome(&report, "uhost-a"), &Outcome::AlreadyGone);
    let describes = cloud.calls(DESCRIBE);
    assert!(describes.len() >= absence::UNEXPECTED_LOOKS as usize, "{describes:?}");
    let span = describes[describes.len() - 1].at.saturating_sub(describes[0].at);
    assert!(span >= poll, "looked for {span:?} only");
    assert!(cloud.calls(STOP).is_empty() && cloud.calls(TERMINATE).is_empty());
}

// --- calls.rs: what each answer to a Stop or Terminate means ---------------------------------

/// A Stop refused by the operation lock is tried again, further apart each time, until the
/// lock lifts; then the teardown goes on as usual.
#[tokio::test(start_paused = true)]
async fn a_locked_stop_is_tried_again_until_the_lock_lifts() {
    let mut script = Scripted::new(&[("uhost-a", State::Running)]);
    script.stop = refuse_then_stop(3, 8903, "InstanceOperationInProgress");
    let cloud = Arc::new(script);
    let report = drive(&cloud, &["uhost-a"], settings(), Controls::default()).await;
    assert!(confirmed(outcome(&report, "uhost-a")), "{report:?}");
    let stops: Vec<Duration> = cloud.calls(STOP).iter().map(|r| r.at).collect();
    assert_eq!(stops.len(), 4, "{stops:?}");
    let gaps: Vec<Duration> = stops.windows(2).map(|w| w[1].saturating_sub(w[0])).collect();
    assert!(gaps.windows(2).all(|g| g[1] > g[0]), "gaps {gaps:?}");
    assert_eq!(cloud.calls(TERMINATE).len(), 1);
}

/// A Terminate whose answer is lost may have been accepted: while the instance is still
/// listed (deleting) within the settle time, it is not sent again.
#[tokio::test(start_paused = true)]
async fn a_lost_terminate_answer_is_not_sent_again_while_the_instance_settles() {
    let mut script = Scripted::new(&[("uhost-a", State::Stopped)]);
    script.terminate = Box::new(|t, target, _| {
        // Accepted, still listed for 20 s, and the answer never arrives.
        t.gone_at
            .insert(target.uhost_id.clone(), Instant::now() + Duration::from_secs(20));
        Err(ApiError::Transport {
            action: "TerminateCompShareInstance".to_owned(),
            kind: crate::api::TransportKind::Closed,
            detail: "connection reset".to_owned(),
        })
    });
    let cloud = Arc::new(script);
    let report = drive(&cloud, &["uhost-a"], settings(), Controls::default()).await;
    assert_eq!(cloud.calls(TERMINATE).len(), 1);
    assert!(outcome(&report, "uhost-a").is_gone(), "{report:?}");
}

/// Throttled calls are tried again without spending the retry budget, and the run says how
/// often the API pushed back.
#[tokio::test(start_paused = true)]
async fn throttled_stops_go_through_in_the_end() {
    let mut script = Scripted::new(&[("uhost-a", State::Running)]);
    script.stop = refuse_then_stop(10, 153, "request too frequent");
    let cloud = Arc::new(script);
    let report = drive(&cloud, &["uhost-a"], settings(), Controls::default()).await;
    assert!(confirmed(outcome(&report, "uhost-a")), "{report:?}");
    assert_eq!(cloud.calls(STOP).len(), 11);
    assert_eq!(report.summary.throttled, 10);
    assert!(report.summary.pace.throttles >= 10, "{:?}", report.summary.pace);
}

// --- mod.rs and ends.rs: the loop, halts and how instances end -------------------------------

/// A call task that panics fails its own instance with the panic message; the others finish
/// and the run ends.
#[tokio::test(start_paused = true)]
async fn a_panicking_call_fails_only_its_instance() {
    let mut script = Scripted::new(&[("uhost-a", State::Running), ("uhost-b", State::Running)]);
    script.stop = Box::new(|t, target, _| {
        assert!(target.uhost_id != "uhost-a", "injected failure");
        t.states.insert(target.uhost_id.clone(), State::Stopped);
        Ok(())
    });
    let cloud = Arc::new(script);
    let report = drive(&cloud, &["uhost-a", "uhost-b"], settings(), Controls::default()).await;
    match outcome(&report, "uhost-a") {
        Outcome::Failed { error, .. } => {
            assert_eq!(error, "internal error: an API task panicked: injected failure");
        }
        other => panic!("{other:?}"),
    }
    assert!(confirmed(outcome(&report, "uhost-b")), "{report:?}");
}

/// A call task that dies frees its place for the calls queued behind it: at
/// `--concurrency 1` two call tasks are alive at once, both panic, and the two instances
/// queued behind them are still torn down.
#[tokio::test(start_paused = true)]
async fn a_panicking_call_frees_its_place_for_queued_calls() {
    let ids = ["uhost-a", "uhost-b", "uhost-c", "uhost-d"];
    let rows: Vec<(&str, State)> = ids.iter().map(|id| (*id, State::Running)).collect();
    let mut script = Scripted::new(&rows);
    script.stop = Box::new(|t, target, _| {
        assert!(
            !["uhost-a", "uhost-b"].contains(&target.uhost_id.as_str()),
            "injected failure"
        );
        t.states.insert(target.uhost_id.clone(), State::Stopped);
        Ok(())
    });
    let cloud = Arc::new(script);
    let s = Settings {
        concurrency: 1,
        ..settings()
    };
    let report = tokio::time::timeout(Duration::from_secs(600), drive(&cloud, &ids, s, Controls::default()))
        .await
        .expect("the run ends: queued calls are not left behind");
    for id in ["uhost-a", "uhost-b"] {
        assert!(matches!(outcome(&report, id), Outcome::Failed { .. }), "{report:?}");
    }
    for id in ["uhost-c", "uhost-d"] {
        assert!(confirmed(outcome(&report, id)), "{report:?}");
    }
}

/// Interrupted before anything was sent: every instance ends `interrupted`, and no Stop or
/// Terminate leaves.
#[tokio::test(start_paused = true)]
async fn an_interrupt_before_the_first_call_sends_nothing() {
    let cloud = Arc::new(Scripted::new(&[
        ("uhost-a", State::Running),
        ("uhost-b", State::Stopped),
    ]));
    let ctl = Controls::default();
    ctl.cancel.cancel();
    let report = drive(&cloud, &["uhost-a", "uhost-b"], settings(), ctl).await;
    for i in &report.instances {
        assert!(matches!(i.outcome, Outcome::Interrupted { .. }), "{i:?}");
    }
    assert!(cloud.calls(STOP).is_empty() && cloud.calls(TERMINATE).is_empty());
}

/// At the deadline a call in flight is let finish; the instance then ends `timed_out`, the
/// run ends with that answer, and nothing is sent after the deadline.
#[tokio::test(start_paused = true)]
async fn the_deadline_lets_a_call_in_flight_finish_and_sends_nothing_after() {
    let mut script = Scripted::new(&[("uhost-a", State::Running)]);
    script.stop_delay = Duration::from_secs(20);
    let cloud = Arc::new(script);
    let s = Settings {
        deadline: Some(Duration::from_secs(5)),
        ..settings()
    };
    let started = Instant::now();
    let report = drive(&cloud, &["uhost-a"], s, Controls::default()).await;
    let took = started.elapsed();
    assert!(
        matches!(outcome(&report, "uhost-a"), Outcome::TimedOut { .. }),
        "{report:?}"
    );
    assert!(
        took >= Duration::from_secs(20) && took < Duration::from_secs(21),
        "took {took:?}"
    );
    let late: Vec<Received> = cloud
        .log
        .lock()
        .expect("not poisoned")
        .iter()
        .filter(|r| r.at > Duration::from_secs(5))
        .cloned()
        .collect();
    assert!(late.is_empty(), "sent after the deadline: {late:?}");
}

/// Calls decided beyond what the concurrency can carry wait in the driver's queue without a
/// task of their own; a deadline ends them where they stand, unsent, and every instance
/// still ends in the report.
#[tokio::test(start_paused = true)]
async fn queued_calls_never_leave_after_the_deadline() {
    let ids: Vec<String> = (0..10).map(|n| format!("uhost-{n}")).collect();
    let mut script = Scripted::uniform(&ids, &State::Running);
    script.stop_delay = Duration::from_secs(10);
    let cloud = Arc::new(script);
    let s = Settings {
        concurrency: 1,
        deadline: Some(Duration::from_secs(15)),
        ..settings()
    };
    let names: Vec<&str> = ids.iter().map(String::as_str).collect();
    let report = drive(&cloud, &names, s, Controls::default()).await;
    let stops = cloud.calls(STOP);
    // One at a time: at 0 s and at 10 s; the other eight were still queued at 15 s.
    assert_eq!(stops.len(), 2, "{stops:?}");
    assert!(stops.iter().all(|r| r.at <= Duration::from_secs(15)), "{stops:?}");
    assert_eq!(report.instances.len(), 10);
    for i in &report.instances {
        assert!(matches!(i.outcome, Outcome::TimedOut { .. }), "{i:?}");
    }
}

/// A look answered after the instance timeout (it was on its way at the limit) starts no new
/// call: the instance ends `timed_out`, and no Stop leaves after its time ran out.
#[tokio::test(start_paused = true)]
async fn a_look_answered_after_the_timeout_starts_no_call() {
    let mut script = Scripted::new(&[("uhost-a", State::Running)]);
    script.stop = Box::new(|_, _, _| Err(retcode("StopCompShareInstance", 8903, "InstanceOperationInProgress")));
    // Slower than the last look's margin before the limit (a second).
    script.describe_delay = Duration::from_secs(2);
    let cloud = Arc::new(script);
    let s = Settings {
        instance_timeout: Duration::from_secs(100),
        lock_wait: Duration::from_secs(3000),
        ..settings()
    };
    let report = drive(&cloud, &["uhost-a"], s, Controls::default()).await;
    assert!(
        matches!(outcome(&report, "uhost-a"), Outcome::TimedOut { .. }),
        "{report:?}"
    );
    let stops: Vec<Duration> = cloud.calls(STOP).iter().map(|r| r.at).collect();
    assert!(stops.len() > 3, "{stops:?}");
    assert!(stops.iter().all(|at| *at < Duration::from_secs(100)), "{stops:?}");
}

/// An error budget is one episode's: a 503 on Stop, then minutes of `Stopping`, then a 503 on
/// Terminate is a new episode, retried, not a budget spent long ago.
#[tokio::test(start_paused = true)]
async fn an_error_budget_ends_with_its_episode() {
    let mut script = Scripted::new(&[("uhost-a", State::Running)]);
    // The Stop is applied, but answered "service unavailable" (a gateway that gave up on
    // the backend's answer): no accepted call ends that error episode.
    script.stop = Box::new(|t, target, _| {
        t.states.insert(target.uhost_id.clone(), State::Stopping);
        Err(retcode("StopCompShareInstance", 150, "service unavailable"))
    });
    // Stopping takes four minutes: longer than the three-minute transient budget.
    script.describe = stopping_for(Duration::from_secs(240));
    script.terminate = Box::new(|t, target, n| {
        if n == 0 {
            return Err(retcode("TerminateCompShareInstance", 150, "service unavailable"));
        }
        t.gone_at.insert(target.uhost_id.clone(), Instant::now());
        Ok(TerminateAck::default())
    });
    let cloud = Arc::new(script);
    let report = drive(&cloud, &["uhost-a"], settings(), Controls::default()).await;
    assert!(confirmed(outcome(&report, "uhost-a")), "{report:?}");
    assert_eq!(cloud.calls(STOP).len(), 1);
    assert_eq!(cloud.calls(TERMINATE).len(), 2);
}

/// A journal that cannot be written ends the instances it stops as failed (exit 1), not
/// interrupted (130 is for a signal).
#[tokio::test(start_paused = true)]
async fn a_failed_journal_write_fails_the_instances_it_stops() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("td.journal");
    // The start line, the first instance's decision and call; the second's decision fails,
    // so its Terminate is decided while the run halts.
    let journal = crate::workflow::journal::Journal::open(&path)
        .expect("journal")
        .fail_after(3);
    let cloud = Arc::new(Scripted::new(&[
        ("uhost-a", State::Running),
        ("uhost-b", State::Stopped),
    ]));
    let ctl = Controls {
        journal: Some(journal),
        ..Controls::default()
    };
    let report = drive(&cloud, &["uhost-a", "uhost-b"], settings(), ctl).await;
    assert!(!report.interrupted(), "{report:?}");
    for i in &report.instances {
        if !i.outcome.is_ok() {
            assert!(
                matches!(&i.outcome, Outcome::Failed { error, .. } if error.starts_with("journal write failed")),
                "{report:?}"
            );
        }
    }
    assert!(report.instances.iter().any(|i| !i.outcome.is_ok()), "{report:?}");
}

/// A halt drops the looks on their way: a Describe that takes 25 s to answer does not keep a
/// run with a 10 s deadline going, and the instances end timed out.
#[tokio::test(start_paused = true)]
async fn the_deadline_drops_looks_in_flight() {
    let mut script = Scripted::new(&[("uhost-a", State::Starting)]);
    script.describe_delay = Duration::from_secs(25);
    let cloud = Arc::new(script);
    let s = Settings {
        deadline: Some(Duration::from_secs(10)),
        ..settings()
    };
    let t0 = Instant::now();
    let report = drive(&cloud, &["uhost-a"], s, Controls::default()).await;
    assert!(t0.elapsed() < Duration::from_secs(11), "took {:?}", t0.elapsed());
    assert!(
        matches!(outcome(&report, "uhost-a"), Outcome::TimedOut { .. }),
        "{report:?}"
    );
    // The Describe that left is counted; none is counted that never left.
    assert_eq!(report.summary.api_calls.get("DescribeCompShareInstance"), Some(&1));
}

/// A long wait writes one decision line, not one per look.
#[tokio::test(start_paused = true)]
async fn a_long_wait_journals_its_decision_once() {
    let mut script = Scripted::new(&[("uhost-a", State::Running)]);
    script.stop = Box::new(|t, target, _| {
        t.states.insert(target.uhost_id.clone(), State::Stopping);
        Ok(())
    });
    // Stopping for ten minutes: about 200 looks at the default poll interval.
    script.describe = stopping_for(Duration::from_secs(600));
    let cloud = Arc::new(script);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("td.journal");
    let ctl = Controls {
        journal: Some(crate::workflow::journal::Journal::open(&path).expect("journal")),
        ..Controls::default()
    };
    let report = drive(&cloud, &["uhost-a"], settings(), ctl).await;
    assert!(confirmed(outcome(&report, "uhost-a")), "{report:?}");
    assert!(cloud.calls(DESCRIBE).len() > 100, "the wait took many looks");
    let text = std::fs::read_to_string(&path).expect("journal");
    let decisions = text.lines().filter(|l| l.contains(r#""event":"decision""#)).count();
    // Stop, wait for the Stop to take effect, wait while stopping, Terminate, wait to leave
    // Describe, gone: a handful of changes.
    assert!(decisions <= 8, "{decisions} decision lines:\n{text}");
}
