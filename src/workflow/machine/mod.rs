//! The per-instance state machine: pure functions from what we remember and what Describe just
//! said to what to do next. No I/O, no clock: elapsed times come in as arguments, so every
//! state × phase pair is table-tested (in `tests.rs`). The batch driver is the only code that awaits.
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
            // Not "before stop": a stopped instance's first call is a Terminate.
            Phase::Fresh => "waiting to start",
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
    /// Since our last accepted call, a refused call has already had its one more look (see
    /// [`after_refusal`]).
    #[serde(default)]
    pub refusal_rechecked: bool,
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
    /// Stop, never terminate: an instance seen `Stopped` is done (`watch --action stop`:
    /// the GPU and CPU stop billing; the disks, and the machine, stay).
    pub stop_only: bool,
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
    /// Stop-only mode: it is `Stopped` (by us, or already), and stays.
    Stopped,
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
        // Stop-only mode never terminates: `Stopped` is the end. (`Install Fail` is not
        // running either, and never deletable by us in this mode.)
        State::Stopped | State::InstallFail if rules.stop_only => (mem, Decision::Done(Gone::Stopped)),
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
            // the lock budget, the retry limits and the instance timeout. (`StopSent` or
            // `TerminateUnsure`: `TerminateSent` was decided above, before the state.)
            _ => {
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
    if effect == Effect::Accepted {
        // An accepted call is progress: a later refusal earns its own one more look.
        mem.refusal_rechecked = false;
    }
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

/// What to do after a Stop or Terminate was refused outright (a fatal answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterRefusal {
    /// Look once more before giving up: the refusal may only mean the instance moved between
    /// our look and the call (someone restarted it).
    LookAgain,
    /// The one more look since the last accepted call was spent: fail with the refusal.
    Fail,
}

/// A call was refused outright. A refusal such as "state Running does not allow Terminate"
/// may only mean the instance moved between our look and the call, so it gets one more look
/// ([`recheck`] then judges it); only one per accepted call, so an API that keeps refusing
/// cannot keep an instance in a loop of looks and calls.
pub fn after_refusal(mut mem: Memory) -> (Memory, AfterRefusal) {
    if mem.refusal_rechecked {
        return (mem, AfterRefusal::Fail);
    }
    mem.refusal_rechecked = true;
    (mem, AfterRefusal::LookAgain)
}

/// The judgement of the look after a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recheck {
    /// Still in the state the refused call was decided on: the refusal stands.
    Refused,
    /// It moved (or vanished) since: decide again from this look.
    Moved,
}

/// The look after a refusal: did the instance move since the refused call was decided on
/// `decided_on`? Absence counts as a move (the absence rule decides what it means).
pub fn recheck(decided_on: &State, obs: &Observation) -> Recheck {
    match obs {
        Observation::Present { state, .. } if state == decided_on => Recheck::Refused,
        _ => Recheck::Moved,
    }
}

#[cfg(test)]
mod tests;
