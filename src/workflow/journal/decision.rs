//! The `decision` field of a journal's `decision` line, in a stated format (journal version 3
//! on): a `kind` tag with `snake_case` names and fields, like every other line, so that an audit
//! can read it without knowing Rust. Version 2 wrote the machine's `Debug` text there; a
//! version-2 journal is still read (resume never used the field), and that text is kept as it
//! was written.

use serde::{Deserialize, Serialize};

use crate::workflow::machine::{Decision, Gone, Refusal};

/// What was decided on a fresh observation, as written since journal version 3.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Decided {
    /// Send Stop (`force`: with `Force=true`, a spot instance with `--force-stop`).
    Stop { force: bool },
    /// Send Terminate.
    Terminate,
    /// Send nothing and look again later; `reason` says what the run waits for.
    Wait { reason: String },
    /// The instance left the workflow; `gone` as the machine names it.
    Done { gone: Gone },
    /// The run gave up on the instance.
    Fail { refusal: Refused },
}

/// Why the run gave up on an instance, as a [`Decided::Fail`] writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Refused {
    /// A spot instance needs `Force=true` to stop, and `--force-stop` was not given.
    SpotNeedsForce,
    /// It kept coming back up after `restarts` re-stops.
    KeepsRestarting { restarts: u32 },
}

/// A `decision` line's `decision` field as read: the stated form, or the text a version-2
/// journal wrote (replay accepts text only under a version-2 start line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DecisionField {
    Stated(Decided),
    /// Version 2: Rust `Debug` text, for people only.
    Text(String),
}

impl From<&Decision> for Decided {
    fn from(d: &Decision) -> Self {
        match d {
            Decision::Stop { force } => Decided::Stop { force: *force },
            Decision::Terminate => Decided::Terminate,
            Decision::Wait(reason) => Decided::Wait {
                reason: (*reason).to_owned(),
            },
            Decision::Done(gone) => Decided::Done { gone: *gone },
            Decision::Fail(Refusal::SpotNeedsForce) => Decided::Fail {
                refusal: Refused::SpotNeedsForce,
            },
            Decision::Fail(Refusal::KeepsRestarting { restarts }) => Decided::Fail {
                refusal: Refused::KeepsRestarting { restarts: *restarts },
            },
        }
    }
}

impl From<&Decision> for DecisionField {
    fn from(d: &Decision) -> Self {
        DecisionField::Stated(d.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every decision, as its line says it: the format docs/report-schema.md states.
    #[test]
    fn every_decision_has_a_stated_form_that_reads_back() {
        let cases = [
            (Decision::Stop { force: false }, r#"{"kind":"stop","force":false}"#),
            (Decision::Stop { force: true }, r#"{"kind":"stop","force":true}"#),
            (Decision::Terminate, r#"{"kind":"terminate"}"#),
            (Decision::Wait("stopping"), r#"{"kind":"wait","reason":"stopping"}"#),
            (
                Decision::Done(Gone::TerminatedUnconfirmed),
                r#"{"kind":"done","gone":"terminated_unconfirmed"}"#,
            ),
            (
                Decision::Fail(Refusal::SpotNeedsForce),
                r#"{"kind":"fail","refusal":{"kind":"spot_needs_force"}}"#,
            ),
            (
                Decision::Fail(Refusal::KeepsRestarting { restarts: 3 }),
                r#"{"kind":"fail","refusal":{"kind":"keeps_restarting","restarts":3}}"#,
            ),
        ];
        for (decision, json) in cases {
            let field = DecisionField::from(&decision);
            assert_eq!(serde_json::to_string(&field).unwrap(), json, "{decision:?}");
            assert_eq!(serde_json::from_str::<DecisionField>(json).unwrap(), field);
        }
    }

    #[test]
    fn version_2_text_reads_as_text() {
        let field: DecisionField = serde_json::from_str(r#""Stop { force: false }""#).unwrap();
        assert_eq!(field, DecisionField::Text("Stop { force: false }".into()));
        // A stated form with an unknown kind is neither: not silently taken as text.
        assert!(serde_json::from_str::<DecisionField>(r#"{"kind":"explode"}"#).is_err());
    }
}
