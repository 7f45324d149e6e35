//! `mod.rs` and `ends.rs`: the loop, halts and how instances end.

use super::*;

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

/// Decided calls wait in the queue, not as tasks: with 300 Stops decided at once at
/// `--concurrency 4`, the tasks alive at any time are at most twice the concurrency in calls,
/// plus the looks in flight and the test's own (one task per decided call would be 300).
#[tokio::test(start_paused = true)]
async fn decided_calls_hold_no_task_until_a_slot_is_near() {
    let ids: Vec<String> = (0..300).map(|n| format!("uhost-{n:03}")).collect();
    let mut script = Scripted::uniform(&ids, &State::Running);
    script.stop_delay = Duration::from_secs(1);
    let cloud = Arc::new(script);
    let s = Settings {
        concurrency: 4,
        ..settings()
    };
    let names: Vec<String> = ids.clone();
    let driving = tokio::spawn({
        let cloud = Arc::clone(&cloud);
        async move { run(cloud, names, s, Controls::default()).await }
    });
    let metrics = tokio::runtime::Handle::current().metrics();
    let mut most = 0;
    while !driving.is_finished() {
        most = most.max(metrics.num_alive_tasks());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = driving.await.expect("the run ends");
    assert!(report.instances.iter().all(|i| confirmed(&i.outcome)), "{report:?}");
    // 2 × 4 call tasks, 4 looks (`looks_in_flight`), the run itself.
    assert!(most <= 2 * 4 + 4 + 1, "{most} tasks alive at once");
    assert!(cloud.calls(STOP).len() == 300);
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
