//! A teardown begun by a run that died, on an instance that never stopped.

use super::*;

/// A run killed after it wrote `acting` but before the instance stopped (seed 541 of the
/// scheduled sweep): the next run finds it running with no fresh evidence and waits, and the
/// mark is no longer acting, so a person's later stop ends the mark instead of being taken
/// for the dead run's half-done teardown and finished with a Terminate.
#[tokio::test(start_paused = true)]
async fn a_dead_runs_teardown_on_a_running_instance_is_not_finished_after_a_persons_stop() {
    let scenario = Scenario {
        epoch: Some(EPOCH),
        instances: vec![row("uhost-idle", 1, GpuLoad::NoData)],
        ..Scenario::default()
    };
    let sim = SimHandle::new(scenario);
    let account = Account::new(&"http://sim.invalid".parse().unwrap(), None, "sim-public-key");
    let mut store = Store::in_memory(&account).unwrap();
    let cfg = config(&account);
    let now = sim.unix_now();
    store
        .apply(&Changes {
            marks: vec![crate::state::Mark {
                kind: Kind::Instance,
                id: "uhost-idle".into(),
                name: "uhost-idle".into(),
                marked_at: now - 2 * HOUR,
                due_at: now - HOUR,
                reason: "idle".into(),
                acting_since: Some(now - 60),
            }],
            ..Changes::default()
        })
        .unwrap();
    let report = once(&sim, &mut store, &cfg).await;
    assert!(
        matches!(report.entries[0].decision, Decision::Wait { .. }),
        "{report:?}"
    );
    let marks = store.marks().unwrap();
    assert_eq!(marks.len(), 1);
    assert_eq!(marks[0].acting_since, None, "{marks:?}");

    sim.set_state("uhost-idle", State::Stopped);
    let report = once(&sim, &mut store, &cfg).await;
    assert!(
        matches!(&report.entries[0].decision, Decision::Unmark { why } if why == "no longer running"),
        "{report:?}"
    );
    assert!(
        !sim.snapshot()
            .calls
            .iter()
            .any(|c| c.action == "TerminateCompShareInstance"),
        "a stop by a person is never finished with a Terminate"
    );
    assert!(sim.ids().contains(&"uhost-idle".to_owned()));
}
