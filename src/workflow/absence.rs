//! When "not in the answer" means "gone": absence is confirmed, never assumed.
//!
//! An eventually consistent gateway can leave an existing row out of an ID-filtered Describe
//! answer, so one answer without an instance proves nothing. The rule, as a pure function:
//! an instance is gone only after it was absent from `required_looks` answers in a row (a
//! listed row resets the count), the first and last of them sent at least `min_span` apart.
//! Answers that admit they are incomplete (`TotalCount` above the rows they carry) do not
//! count at all; the driver skips them.
//!
//! How many looks depends on what the run has seen. Absence we caused (our Terminate was
//! accepted) needs 2 looks a short poll apart; any other absence (already gone, deleted by
//! someone else, a Terminate whose answer was lost) needs 5 spread over a whole poll
//! interval. Once this run has seen the gateway leave out rows that were there ("phantom"
//! absences: a row missing, then listed again), the count rises so that a run of phantoms
//! that long is rarer than one in a billion at the observed rate.

use std::time::Duration;

/// Looks needed for an absence we caused, on a gateway that has not dropped a row this run.
const EXPECTED_LOOKS: u32 = 2;
/// Looks needed for any other absence, on a gateway that has not dropped a row this run.
pub const UNEXPECTED_LOOKS: u32 = 5;
/// Never more than this many looks: at the highest drop rates worth running against, 16 in a
/// row are already beyond one in a billion.
const MAX_LOOKS: u32 = 16;
/// The chance of a wrong "gone" the rule accepts per instance, once drops have been seen.
const RISK: f64 = 1e-9;

/// What the run has seen of the gateway's consistency so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evidence {
    /// Looks that listed an instance.
    pub present: u64,
    /// Looks that missed an instance which was there (listed later, or admitted missing by
    /// `TotalCount`).
    pub phantom: u64,
}

/// The timing the rule works in (from the run's settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub min_poll: Duration,
    pub poll_interval: Duration,
}

/// What one more absent look means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Confirmed: the instance is gone.
    Gone,
    /// Not yet: look again after this long.
    LookAgain(Duration),
}

/// How many absent looks in a row prove absence.
fn required_looks(expected: bool, evidence: Evidence) -> u32 {
    let base = if expected { EXPECTED_LOOKS } else { UNEXPECTED_LOOKS };
    if evidence.phantom == 0 {
        return base;
    }
    #[expect(
        clippy::cast_precision_loss,
        reason = "An estimate of the drop rate that leans high (one phantom more than seen)."
    )]
    let p = (evidence.phantom + 1) as f64 / (evidence.present + evidence.phantom + 1) as f64;
    if p >= 1.0 {
        return MAX_LOOKS;
    }
    let k = (RISK.ln() / p.ln()).ceil();
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a positive finite f64 capped at MAX_LOOKS, checked before the cast"
    )]
    let k = if k.is_finite() && k > 0.0 {
        k.min(f64::from(MAX_LOOKS)) as u32
    } else {
        base
    };
    k.clamp(base, MAX_LOOKS)
}

/// The shortest time between the first and the last absent look.
fn min_span(expected: bool, t: Timing) -> Duration {
    if expected { t.min_poll } else { t.poll_interval }
}

/// Judge the `looks`-th absent look in a row, `span` after the first of them was sent.
pub fn judge(expected: bool, looks: u32, span: Duration, evidence: Evidence, t: Timing) -> Verdict {
    let need = required_looks(expected, evidence);
    let min_span = min_span(expected, t);
    if looks >= need && span >= min_span {
        return Verdict::Gone;
    }
    // Spread the looks still needed over the span still needed, never closer than min_poll.
    let looks_left = need.saturating_sub(looks).max(1);
    let gap = (min_span.saturating_sub(span) / looks_left).max(t.min_poll);
    Verdict::LookAgain(gap)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const T: Timing = Timing {
        min_poll: Duration::from_millis(250),
        poll_interval: Duration::from_secs(3),
    };
    const CLEAN: Evidence = Evidence {
        present: 500,
        phantom: 0,
    };

    #[test]
    fn a_clean_gateway_needs_two_looks_after_our_terminate_and_five_otherwise() {
        assert_eq!(required_looks(true, CLEAN), 2);
        assert_eq!(required_looks(false, CLEAN), 5);
        assert_eq!(required_looks(true, Evidence::default()), 2);
    }

    #[test]
    fn one_absent_answer_is_never_enough() {
        for expected in [true, false] {
            for span in [Duration::ZERO, 250 * MS, 10_000 * MS] {
                assert!(matches!(judge(expected, 1, span, CLEAN, T), Verdict::LookAgain(_)));
            }
        }
    }

    #[test]
    fn the_table() {
        // (expected, looks, span ms, evidence, gone?)
        let cases = [
            (true, 2, 250, CLEAN, true),
            (true, 2, 100, CLEAN, false), // too close together
            (true, 3, 260, CLEAN, true),
            (false, 4, 5000, CLEAN, false), // too few
            (false, 5, 2000, CLEAN, false), // too short
            (false, 5, 3000, CLEAN, true),
            (
                true,
                2,
                250,
                Evidence {
                    present: 100,
                    phantom: 8,
                },
                false,
            ),
            (
                true,
                9,
                2000,
                Evidence {
                    present: 100,
                    phantom: 8,
                },
                true,
            ),
            (false, 16, 3000, Evidence { present: 1, phantom: 5 }, true),
        ];
        for (expected, looks, span, ev, gone) in cases {
            let v = judge(expected, looks, span * MS, ev, T);
            assert_eq!(v == Verdict::Gone, gone, "{expected} {looks} {span} {ev:?}: {v:?}");
        }
    }

    #[test]
    fn observed_drops_raise_the_count_to_one_in_a_billion() {
        // 8 phantoms in 100 looks: p ~ 0.083, and 0.083^9 < 1e-9 < 0.083^8.
        let ev = Evidence {
            present: 100,
            phantom: 8,
        };
        assert_eq!(required_looks(true, ev), 9);
        assert_eq!(required_looks(false, ev), 9);
        // Rarely: a couple in thousands.
        let rare = Evidence {
            present: 5000,
            phantom: 2,
        };
        assert_eq!(required_looks(true, rare), 3);
        assert_eq!(required_looks(false, rare), 5);
        // Everything missing: the cap.
        assert_eq!(required_looks(true, Evidence { present: 0, phantom: 3 }), MAX_LOOKS);
    }

    #[test]
    fn looks_are_spread_over_the_span_still_needed() {
        assert_eq!(judge(false, 1, Duration::ZERO, CLEAN, T), Verdict::LookAgain(750 * MS));
        assert_eq!(judge(true, 1, Duration::ZERO, CLEAN, T), Verdict::LookAgain(250 * MS));
        // Enough looks but not enough span: one more look at least min_poll later.
        assert_eq!(judge(false, 5, 2900 * MS, CLEAN, T), Verdict::LookAgain(250 * MS));
    }
}
