//! The per-instance state machine: pure functions from what we remember and what Describe just
//! said to what to do next. No I/O, no clock: elapsed times come in as arguments, so every
//! state × phase pair is table-tested below. The batch driver is the only code that awaits.
//!
//! Safety rules that live here:
//! - Terminate is decided only from an observation that says `Stopped` (or `Install Fail`,
//!   which the platform may refuse; the refusal is then reported plainly). The driver calls
//!   [`decide`] only with an observation taken after the instance's last call was answered.
//! - A Terminate that was accepted is never sent again; one whose answer was lost is re-sent
//!   only after the instance has stayed present for a settle period.
//! - An instance that keeps coming back up is stopped again a bounded number of times.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::api::State;

/// How far our own actions on one instance have got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Nothing accepted yet.
    #[default]
    Fresh,
    /// A Stop was accepted, or may have been: waiting for `Stopped`.
    StopSent,
    /// A Terminate may have been sent (its answer was lost): waiting to see it vanish.
    TerminateUnsure,
    /// A Terminate was accepted: confirming the instance leaves Describe.
    TerminateSent,
}

impl Phase {
    /// A short human label.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Fresh => "before stop",
            Phase::StopSent => "stopping",
            Phase::TerminateUnsure => "terminating (unconfirmed call)",
            Phase::TerminateSent => "confirming deletion",
        }
    }
}

/// What the driver remembers about one instance between observations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Memory {
    pub phase: Phase,
    /// Describe has shown the instance at least once during this run.
    pub seen: bool,
    /// Since our last Stop, Describe has shown `Stopping` or `Stopped`.
    pub stop_took_effect: bool,
    /// Stops re-sent because the instance came back up (or our Stop never took hold).
    pub restarts: u32,
}

/// What one Describe said about one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// Not in the answer: deleted (or never existed).
    Absent,
    Present {
        state: State,
        spot: bool,
    },
}

/// Knobs of the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// The user allowed `Force=true` for spot instances (`--force-stop`).
    pub force_stop: bool,
    /// How many times an instance that comes back up is stopped again before giving up.
    pub max_restarts: u32,
    /// After a Stop was accepted, how long `Running` is read as "not yet in effect" rather
    /// than "restarted by someone else".
    pub stop_grace: Duration,
    /// After a Terminate whose answer was lost, how long to wait for the instance to vanish
    /// before sending Terminate again (sending it twice would act on a deleted instance).
    pub terminate_settle: Duration,
    /// After a Terminate was accepted, how long to wait for the instance to leave Describe
    /// before reporting it as terminated but unconfirmed.
    pub confirm_timeout: Duration,
}

/// How an instance left the workflow successfully.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gone {
    /// We terminated it and Describe no longer lists it.
    Terminated,
    /// Our Terminate was accepted but the instance was still listed when the confirm window ended.
    TerminatedUnconfirmed,
    /// It was not there before we acted.
    AlreadyGone,
    /// Someone else deleted it while we were working on it.
    DeletedByOther,
}

/// Why the machine gave up on an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A spot instance cannot be stopped without `Force=true`, which needs `--force-stop`.
    SpotNeedsForce,
    /// It kept coming back up after being stopped.
    KeepsRestarting { restarts: u32 },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::SpotNeedsForce => f.write_str("spot instance: stopping it needs Force=true; pass --force-stop"),
            Refusal::KeepsRestarting { restarts } => {
                write!(
                    f,
                    "restarted by someone else after being stopped ({restarts} re-stops); gave up"
                )
            }
        }
    }
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Stop {
        force: bool,
    },
    Terminate,
    /// Nothing to send; observe again later. The text says what we are waiting for.
    Wait(&'static str),
    Done(Gone),
    Fail(Refusal),
}

/// Decide from memory and a fresh observation. `since_call` is the time since our last call
/// on this instance was answered (or since the run started, before any call).
pub fn decide(mut mem: Memory, obs: &Observation, since_call: Duration, rules: &Rules) -> (Memory, Decision) {
    let Observation::Present { state, spot } = obs else {
        let gone = match mem.phase {
            Phase::TerminateSent | Phase::TerminateUnsure => Gone::Terminated,
            Phase::StopSent => Gone::DeletedByOther,
            Phase::Fresh if mem.seen => Gone::DeletedByOther,
            Phase::Fresh => Gone::AlreadyGone,
        };
        return (mem, Decision::Done(gone));
    };
    mem.seen = true;
    match mem.phase {
        Phase::TerminateSent if since_call >= rules.confirm_timeout => {
            return (mem, Decision::Done(Gone::TerminatedUnconfirmed));
        }
        // Some gateways list a deleted instance for a while in a state of its own; after our
        // accepted Terminate, such a state is the deletion we asked for.
        Phase::TerminateSent if is_deletion_state(state) => return (mem, Decision::Done(Gone::Terminated)),
        Phase::TerminateSent => return (mem, Decision::Wait("waiting for the instance to leave Describe")),
        Phase::TerminateUnsure if since_call < rules.terminate_settle => {
            return (
                mem,
                Decision::Wait("terminate answer was lost; waiting to see whether it took effect"),
            );
        }
        _ => {}
    }
    let stop = |mem: Memory| {
        if *spot && !rules.force_stop {
            (mem, Decision::Fail(Refusal::SpotNeedsForce))
        } else {
            (
                mem,
                Decision::Stop {
                    force: *spot && rules.force_stop,
                },
            )
        }
    };
    match state {
        // The one state the platform deletes from. The driver guarantees this observation is
        // the freshest there is.
        State::Stopped => {
            if mem.phase == Phase::StopSent {
                mem.stop_took_effect = true;
            }
            (mem, Decision::Terminate)
        }
        // Documented as not deletable, but there is nothing else to do with it: try, and
        // report a refusal plainly.
        State::InstallFail => (mem, Decision::Terminate),
        State::Stopping => {
            if mem.phase == Phase::StopSent {
                mem.stop_took_effect = true;
            }
            (mem, Decision::Wait("stopping"))
        }
        State::Running => match mem.phase {
            Phase::Fresh => stop(mem),
            Phase::StopSent if !mem.stop_took_effect && since_call < rules.stop_grace => {
                (mem, Decision::Wait("stop accepted; waiting for it to take effect"))
            }
            // Running again after our Stop: stop it again. It counts as a restart by someone
            // else only if we saw our Stop take effect (or a Terminate may have gone out, which
            // needs Stopped): a Stop that was refused, locked or lost is merely retried, within
            // the lock budget, the retry limits and the instance timeout.
            Phase::StopSent | Phase::TerminateUnsure | Phase::TerminateSent => {
                if mem.stop_took_effect || mem.phase == Phase::TerminateUnsure {
                    if mem.restarts >= rules.max_restarts {
                        return (mem, Decision::Fail(Refusal::KeepsRestarting { restarts: mem.restarts }));
                    }
                    mem.restarts += 1;
                }
                // From here on we wait for this new Stop; a retry of it is not another restart.
                mem.phase = Phase::StopSent;
                mem.stop_took_effect = false;
                stop(mem)
            }
        },
        // Starting, Rebooting, Initializing, Resizing, "" and anything unknown: someone's
        // operation is under way; never act on a state we do not understand.
        _ => (mem, Decision::Wait("waiting for a settled state")),
    }
}

/// A state no document lists but that names a deletion (`Deleted`, `Terminating`, `Recycled`,
/// ...). Only ever read after our own Terminate was accepted.
fn is_deletion_state(state: &State) -> bool {
    let State::Unknown(s) = state else { return false };
    let s = s.to_ascii_lowercase();
    ["delet", "terminat", "recycl", "destroy", "releas"]
        .iter()
        .any(|w| s.contains(w))
}

/// The two calls the machine makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Call {
    Stop,
    Terminate,
}

impl Call {
    pub fn action(self) -> &'static str {
        match self {
            Call::Stop => "StopCompShareInstance",
            Call::Terminate => "TerminateCompShareInstance",
        }
    }
}

/// What a call's answer tells us about its effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// The API accepted it.
    Accepted,
    /// Nobody knows (lost answer, timeout, RetCode 110).
    Unsure,
    /// It certainly did not happen (lock, throttling, refused, never sent).
    NotApplied,
}

/// Update memory after a call's answer. Also used to rebuild memory from a journal.
pub fn after_call(mut mem: Memory, call: Call, effect: Effect) -> Memory {
    match (call, effect) {
        (_, Effect::NotApplied) => {}
        (Call::Stop, Effect::Accepted | Effect::Unsure) => {
            mem.phase = Phase::StopSent;
            mem.stop_took_effect = false;
        }
        (Call::Terminate, Effect::Accepted) => mem.phase = Phase::TerminateSent,
        (Call::Terminate, Effect::Unsure) => {
            // Once accepted, always accepted: a lost answer to a retry does not undo that.
            if mem.phase != Phase::TerminateSent {
                mem.phase = Phase::TerminateUnsure;
            }
        }
    }
    mem
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn rules() -> Rules {
        Rules {
            force_stop: false,
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
}
