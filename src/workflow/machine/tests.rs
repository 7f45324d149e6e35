//! The decision table: every state in every phase, the restart and settle rules, and the memory each call leaves.

use super::*;

const S: Duration = Duration::from_secs(1);

fn rules() -> Rules {
    Rules {
        force_stop: false,
        stop_only: false,
        max_restarts: 2,
        stop_grace: 10 * S,
        terminate_settle: 30 * S,
        confirm_timeout: 180 * S,
    }
}

fn mem(phase: Phase) -> Memory {
    Memory {
        phase,
        seen: true,
        ..Memory::default()
    }
}

fn present(state: State) -> Observation {
    Observation::Present { state, spot: false }
}

const ALL_PHASES: [Phase; 4] = [
    Phase::Fresh,
    Phase::StopSent,
    Phase::TerminateUnsure,
    Phase::TerminateSent,
];

fn all_states() -> Vec<State> {
    vec![
        State::Initializing,
        State::Starting,
        State::Running,
        State::Stopping,
        State::Stopped,
        State::InstallFail,
        State::Rebooting,
        State::Resizing,
        State::Unknown(String::new()),
        State::Unknown("Install".into()),
    ]
}

/// The full state × phase table, with enough elapsed time that no grace period applies.
#[test]
fn table_after_grace_periods() {
    use Decision::{Stop, Terminate};
    for phase in ALL_PHASES {
        for state in all_states() {
            let (_, d) = decide(mem(phase), &present(state.clone()), 60 * S, &rules());
            let want = match (phase, &state) {
                (Phase::TerminateSent, _) => "wait",
                (_, State::Stopped | State::InstallFail) => "terminate",
                (_, State::Running) => "stop",
                _ => "wait",
            };
            let got = match d {
                Stop { force: false } => "stop",
                Terminate => "terminate",
                Decision::Wait(_) => "wait",
                other => panic!("{phase:?} {state:?}: unexpected {other:?}"),
            };
            assert_eq!(got, want, "{phase:?} × {state:?}");
        }
    }
}

/// Terminate only ever comes from Stopped or Install Fail, whatever the phase and time.
#[test]
fn terminate_only_from_stopped_or_install_fail() {
    for phase in ALL_PHASES {
        for state in all_states() {
            for since in [Duration::ZERO, 5 * S, 60 * S, 1000 * S] {
                let (_, d) = decide(mem(phase), &present(state.clone()), since, &rules());
                if d == Decision::Terminate {
                    assert!(
                        matches!(state, State::Stopped | State::InstallFail),
                        "{phase:?} {state:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn absent_outcomes_by_phase() {
    let r = rules();
    let unseen = Memory::default();
    assert_eq!(
        decide(unseen, &Observation::Absent, S, &r).1,
        Decision::Done(Gone::AlreadyGone)
    );
    assert_eq!(
        decide(mem(Phase::Fresh), &Observation::Absent, S, &r).1,
        Decision::Done(Gone::DeletedByOther)
    );
    assert_eq!(
        decide(mem(Phase::StopSent), &Observation::Absent, S, &r).1,
        Decision::Done(Gone::DeletedByOther)
    );
    assert_eq!(
        decide(mem(Phase::TerminateSent), &Observation::Absent, S, &r).1,
        Decision::Done(Gone::Terminated)
    );
    assert_eq!(
        decide(mem(Phase::TerminateUnsure), &Observation::Absent, S, &r).1,
        Decision::Done(Gone::Terminated)
    );
}

#[test]
fn running_right_after_our_stop_waits_then_restops() {
    let r = rules();
    let (m, d) = decide(mem(Phase::StopSent), &present(State::Running), 2 * S, &r);
    assert!(matches!(d, Decision::Wait(_)));
    assert_eq!(m.restarts, 0);
    // Our Stop never showed an effect: stop again, but that is no restart by anyone.
    let (m, d) = decide(mem(Phase::StopSent), &present(State::Running), 11 * S, &r);
    assert_eq!(d, Decision::Stop { force: false });
    assert_eq!(m.restarts, 0);
}

#[test]
fn retries_of_a_stop_that_is_not_getting_through_are_not_restarts() {
    // A real restart, then the re-stop is refused (lock) again and again.
    let r = rules();
    let m = Memory {
        stop_took_effect: true,
        ..mem(Phase::StopSent)
    };
    let (m, d) = decide(m, &present(State::Running), S, &r);
    assert_eq!((d, m.restarts), (Decision::Stop { force: false }, 1));
    let mut m = m;
    for _ in 0..10 {
        m = after_call(m, Call::Stop, Effect::NotApplied);
        let (next, d) = decide(m, &present(State::Running), 60 * S, &r);
        assert_eq!(d, Decision::Stop { force: false });
        m = next;
    }
    assert_eq!(m.restarts, 1);
    // After an unsure Terminate, Running means someone started it: one restart, then a
    // plain stop-and-wait.
    let (m, d) = decide(mem(Phase::TerminateUnsure), &present(State::Running), 60 * S, &r);
    assert_eq!(
        (d, m.restarts, m.phase),
        (Decision::Stop { force: false }, 1, Phase::StopSent)
    );
}

#[test]
fn restart_interference_is_bounded() {
    let r = rules();
    let mut m = mem(Phase::StopSent);
    // Saw it stopping, then it came back up: stop again at once, no grace.
    m = decide(m, &present(State::Stopping), S, &r).0;
    assert!(m.stop_took_effect);
    let (m1, d) = decide(m, &present(State::Running), S, &r);
    assert_eq!(d, Decision::Stop { force: false });
    assert_eq!(m1.restarts, 1);
    let m2 = after_call(m1, Call::Stop, Effect::Accepted);
    let m2 = decide(m2, &present(State::Stopped), S, &r).0;
    let (m3, d) = decide(m2, &present(State::Running), S, &r);
    assert_eq!((d, m3.restarts), (Decision::Stop { force: false }, 2));
    let m3 = decide(
        after_call(m3, Call::Stop, Effect::Accepted),
        &present(State::Stopping),
        S,
        &r,
    )
    .0;
    let (_, d) = decide(m3, &present(State::Running), S, &r);
    assert_eq!(d, Decision::Fail(Refusal::KeepsRestarting { restarts: 2 }));
}

#[test]
fn spot_needs_force() {
    let spot = Observation::Present {
        state: State::Running,
        spot: true,
    };
    assert_eq!(
        decide(Memory::default(), &spot, S, &rules()).1,
        Decision::Fail(Refusal::SpotNeedsForce)
    );
    let forced = Rules {
        force_stop: true,
        ..rules()
    };
    assert_eq!(
        decide(Memory::default(), &spot, S, &forced).1,
        Decision::Stop { force: true }
    );
    // Force is only ever sent for spot instances.
    assert_eq!(
        decide(Memory::default(), &present(State::Running), S, &forced).1,
        Decision::Stop { force: false }
    );
}

#[test]
fn unsure_terminate_settles_before_retry_and_accepted_is_never_resent() {
    let r = rules();
    let m = after_call(mem(Phase::Fresh), Call::Terminate, Effect::Unsure);
    assert_eq!(m.phase, Phase::TerminateUnsure);
    assert!(matches!(
        decide(m, &present(State::Stopped), 5 * S, &r).1,
        Decision::Wait(_)
    ));
    assert_eq!(decide(m, &present(State::Stopped), 31 * S, &r).1, Decision::Terminate);
    let accepted = after_call(m, Call::Terminate, Effect::Accepted);
    let accepted = after_call(accepted, Call::Terminate, Effect::Unsure);
    assert_eq!(accepted.phase, Phase::TerminateSent);
    for since in [S, 100 * S, 179 * S] {
        assert!(matches!(
            decide(accepted, &present(State::Stopped), since, &r).1,
            Decision::Wait(_)
        ));
    }
    assert_eq!(
        decide(accepted, &present(State::Stopped), 180 * S, &r).1,
        Decision::Done(Gone::TerminatedUnconfirmed)
    );
}

#[test]
fn a_deletion_state_after_our_terminate_counts_as_terminated() {
    let r = rules();
    let m = mem(Phase::TerminateSent);
    for s in ["Deleted", "Terminating", "Recycled", "InRecycle"] {
        assert_eq!(
            decide(m, &present(State::Unknown(s.into())), S, &r).1,
            Decision::Done(Gone::Terminated),
            "{s}"
        );
    }
    assert!(matches!(
        decide(m, &present(State::Stopped), S, &r).1,
        Decision::Wait(_)
    ));
    // Before our Terminate, such a state is someone else's business: wait.
    assert!(matches!(
        decide(mem(Phase::StopSent), &present(State::Unknown("Deleted".into())), S, &r).1,
        Decision::Wait(_)
    ));
}

#[test]
fn after_call_table() {
    let fresh = Memory::default();
    assert_eq!(after_call(fresh, Call::Stop, Effect::NotApplied), fresh);
    assert_eq!(after_call(fresh, Call::Terminate, Effect::NotApplied), fresh);
    assert_eq!(after_call(fresh, Call::Stop, Effect::Accepted).phase, Phase::StopSent);
    assert_eq!(after_call(fresh, Call::Stop, Effect::Unsure).phase, Phase::StopSent);
    assert_eq!(
        after_call(fresh, Call::Terminate, Effect::Accepted).phase,
        Phase::TerminateSent
    );
    assert_eq!(
        after_call(fresh, Call::Terminate, Effect::Unsure).phase,
        Phase::TerminateUnsure
    );
    let m = Memory {
        stop_took_effect: true,
        ..mem(Phase::StopSent)
    };
    assert!(!after_call(m, Call::Stop, Effect::Accepted).stop_took_effect);
}

/// A refusal earns one more look per accepted call; the look fails it only if the instance
/// is still where the refused call found it.
#[test]
fn refusal_recheck_table() {
    // (already rechecked since the last accepted call) -> what follows a refusal
    for (rechecked, want) in [(false, AfterRefusal::LookAgain), (true, AfterRefusal::Fail)] {
        let m = Memory {
            refusal_rechecked: rechecked,
            ..mem(Phase::StopSent)
        };
        let (after, step) = after_refusal(m);
        assert_eq!(step, want, "rechecked {rechecked}");
        assert!(after.refusal_rechecked, "a refusal always spends the look");
    }
    // Only an accepted call gives the look back.
    let spent = after_refusal(mem(Phase::Fresh)).0;
    for call in [Call::Stop, Call::Terminate] {
        assert!(!after_call(spent, call, Effect::Accepted).refusal_rechecked);
        assert!(after_call(spent, call, Effect::Unsure).refusal_rechecked);
        assert!(after_call(spent, call, Effect::NotApplied).refusal_rechecked);
    }
    // (decided on, seen on the look after the refusal) -> verdict
    let table = [
        (State::Stopped, present(State::Stopped), Recheck::Refused),
        (State::Running, present(State::Running), Recheck::Refused),
        (State::Stopped, present(State::Starting), Recheck::Moved),
        (State::Stopped, present(State::Running), Recheck::Moved),
        (State::Running, present(State::Stopping), Recheck::Moved),
        (State::Stopped, Observation::Absent, Recheck::Moved),
        (
            State::Unknown("X".into()),
            present(State::Unknown("X".into())),
            Recheck::Refused,
        ),
    ];
    for (decided_on, seen, want) in table {
        assert_eq!(recheck(&decided_on, &seen), want, "{decided_on:?} then {seen:?}");
    }
}

/// Stop-only mode: every state in every phase our stop-only run can be in (never a Terminate
/// sent, so never a Terminate phase): `Stopped` (and `Install Fail`) end it as stopped, a
/// running instance is stopped, nothing ever decides Terminate.
#[test]
fn stop_only_never_terminates() {
    let r = Rules {
        stop_only: true,
        ..rules()
    };
    for phase in [Phase::Fresh, Phase::StopSent] {
        for state in all_states() {
            for since in [Duration::ZERO, 60 * S] {
                let (_, d) = decide(mem(phase), &present(state.clone()), since, &r);
                assert_ne!(d, Decision::Terminate, "{phase:?} {state:?}");
                if matches!(state, State::Stopped | State::InstallFail) {
                    assert_eq!(d, Decision::Done(Gone::Stopped), "{phase:?} {state:?}");
                }
            }
        }
    }
    let (_, d) = decide(mem(Phase::Fresh), &present(State::Running), S, &r);
    assert_eq!(d, Decision::Stop { force: false });
    // Absent after our Stop: someone else deleted it (not "stopped").
    let (_, d) = decide(mem(Phase::StopSent), &Observation::Absent, S, &r);
    assert_eq!(d, Decision::Done(Gone::DeletedByOther));
}
