//! The idle rule, pure: from a window, two thresholds, the longest tolerated gap, the
//! instance's start and its GPU samples (the API's and the store's together), a [`Verdict`].
//!
//! An instance is idle for the window D when: it has been running since at least `now - D`;
//! every expected GPU has a series; each GPU's samples in `[now - D, now]` cover the window
//! (the oldest at or before `now - D + max_gap`, the newest at or after `now - max_gap`, no two
//! consecutive ones further apart than `max_gap`); and every one of them is at or under both
//! thresholds. Anything less is not idle: missing data, a gap and an unreadable value are
//! [`Verdict::Unknown`], never idle, because "no evidence of work" is not "evidence of no
//! work" (Cloud Custodian's users learned that from a filter that skipped missing data).
//! A busy sample wins over every unknown: it is evidence, and the schedule shows it as the
//! instance's last busy sample.
//!
//! Values outside 0..=100: above 100 (or +inf) is over any threshold, so busy; NaN (what
//! `monitor` makes of an unreadable value), a negative number or -inf is
//! [`Why::BadValue`]: a reading nobody can trust is no evidence of idleness, and calling it
//! busy would invent a "last busy sample" that never happened.

use std::collections::BTreeMap;
use std::time::Duration;

use super::Sample;
use crate::defaults;

/// The idle rule's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IdleRule {
    /// D: how long every GPU must have been quiet.
    pub window: Duration,
    /// Utilisation at or under this (percent) is idle.
    pub util_max: f64,
    /// GPU memory at or under this (percent) is idle.
    pub mem_max: f64,
    /// The longest gap between consecutive samples of one GPU still counted as covered.
    pub max_gap: Duration,
}

/// The defaults and why they are what they are: `crate::defaults`.
impl Default for IdleRule {
    fn default() -> Self {
        IdleRule {
            window: defaults::IDLE_WINDOW,
            util_max: defaults::IDLE_UTIL_MAX,
            mem_max: defaults::IDLE_MEM_MAX,
            max_gap: defaults::IDLE_MAX_GAP,
        }
    }
}

/// Why a rule's settings make no sense.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuleError {
    #[error("the idle threshold {name} must be a percentage in 0..100, got {value}")]
    Threshold { name: &'static str, value: f64 },
    #[error("the longest sample gap must be more than 0 and less than the idle window")]
    Gap,
}

impl IdleRule {
    /// Settings a rule can judge with: thresholds in 0..100 (100 would call a saturated GPU
    /// idle), and a gap above 0 and below the window (a gap as long as the window would let
    /// one sample "cover" it).
    pub fn check(&self) -> Result<(), RuleError> {
        for (name, value) in [("util_max", self.util_max), ("mem_max", self.mem_max)] {
            if !(0.0..100.0).contains(&value) {
                return Err(RuleError::Threshold { name, value });
            }
        }
        if self.max_gap.is_zero() || self.max_gap >= self.window {
            return Err(RuleError::Gap);
        }
        Ok(())
    }
}

/// What the samples say.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Idle for the whole window; `since`: from when the samples show it quiet without a break
    /// (never before it last started; at most `now - window + max_gap`).
    Idle { since: i64 },
    /// The latest sample in the window over a threshold.
    Busy {
        at: i64,
        device: String,
        util: f64,
        mem: Option<f64>,
    },
    /// Not known to be idle, and no busy sample: not idle.
    Unknown(Why),
}

/// Why the samples cannot show idleness, in the order they are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// Running for less than the window (new, or started again since).
    TooYoung { running_since: i64 },
    /// No sample in the window.
    NoData,
    /// The latest sample in the window with a value no one can read as a percentage (NaN,
    /// negative).
    BadValue { at: i64, device: String },
    /// Fewer GPUs have a series than the instance has.
    MissingGpu { device_count: usize, expected: usize },
    /// A GPU's oldest sample in the window is later than `now - window + max_gap`.
    NotCovered { oldest: i64 },
    /// Two consecutive samples of a GPU (or its newest and now) further apart than `max_gap`.
    Gap { from: i64, to: i64 },
}

/// Judge `samples` (any order, duplicates allowed: the API's and the store's together, deduped
/// by (device, time)) at `now` for an instance running since `running_since` with `gpus`
/// GPUs (`None`: not known, no per-GPU check).
pub fn judge(rule: &IdleRule, now: i64, running_since: i64, gpus: Option<usize>, samples: &[Sample]) -> Verdict {
    let window = secs(rule.window);
    let gap = secs(rule.max_gap);
    let from = now.saturating_sub(window);
    let in_window = || samples.iter().filter(|s| s.at >= from);
    // The latest busy sample; for two at one time, the first device by name.
    if let Some(s) = in_window()
        .filter(|s| busy(rule, s))
        .max_by(|a, b| a.at.cmp(&b.at).then_with(|| b.device.cmp(&a.device)))
    {
        return Verdict::Busy {
            at: s.at,
            device: s.device.clone(),
            util: s.util,
            mem: s.mem,
        };
    }
    if running_since > from {
        return Verdict::Unknown(Why::TooYoung { running_since });
    }
    if in_window().next().is_none() {
        return Verdict::Unknown(Why::NoData);
    }
    if let Some(s) = in_window()
        .filter(|s| bad(s))
        .max_by(|a, b| a.at.cmp(&b.at).then_with(|| b.device.cmp(&a.device)))
    {
        return Verdict::Unknown(Why::BadValue {
            at: s.at,
            device: s.device.clone(),
        });
    }
    // Each GPU's sample times in the window, deduplicated and in order.
    let mut devices: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for s in in_window() {
        devices.entry(&s.device).or_default().push(s.at);
    }
    for times in devices.values_mut() {
        times.sort_unstable();
        times.dedup();
    }
    if let Some(expected) = gpus
        && devices.len() < expected
    {
        return Verdict::Unknown(Why::MissingGpu {
            device_count: devices.len(),
            expected,
        });
    }
    let latest_oldest = devices.values().filter_map(|t| t.first().copied()).max();
    if let Some(oldest) = latest_oldest.filter(|&o| o > from.saturating_add(gap)) {
        return Verdict::Unknown(Why::NotCovered { oldest });
    }
    // The latest gap of any GPU (between samples, or from its newest sample to now).
    let mut latest_gap: Option<(i64, i64)> = None;
    for times in devices.values() {
        let ends = times
            .iter()
            .copied()
            .chain(std::iter::once(now.max(times[times.len() - 1])));
        for (a, b) in times.iter().copied().zip(ends.skip(1)) {
            if b.saturating_sub(a) > gap && latest_gap.is_none_or(|(_, to)| b > to) {
                latest_gap = Some((a, b));
            }
        }
    }
    if let Some((from, to)) = latest_gap {
        return Verdict::Unknown(Why::Gap { from, to });
    }
    Verdict::Idle {
        since: idle_since(rule, gap, samples, &devices).max(running_since),
    }
}

/// Over a threshold (NaN is not: it is [`bad`]).
fn busy(rule: &IdleRule, s: &Sample) -> bool {
    s.util > rule.util_max || s.mem.is_some_and(|m| m > rule.mem_max)
}

/// Not a percentage anyone can read.
fn bad(s: &Sample) -> bool {
    let unreadable = |v: f64| v.is_nan() || v < 0.0;
    unreadable(s.util) || s.mem.is_some_and(unreadable)
}

/// The latest of each GPU's start of quiet: walking back from its newest sample through
/// quiet samples no further apart than `gap`, into the samples before the window too (the
/// store may have them).
fn idle_since(rule: &IdleRule, gap: i64, samples: &[Sample], devices: &BTreeMap<&str, Vec<i64>>) -> i64 {
    let mut since = i64::MIN;
    for device in devices.keys() {
        // Every time of this GPU, quiet only if every reading at that time is.
        let mut quiet: BTreeMap<i64, bool> = BTreeMap::new();
        for s in samples.iter().filter(|s| s.device == *device) {
            let ok = !busy(rule, s) && !bad(s);
            quiet.entry(s.at).and_modify(|q| *q &= ok).or_insert(ok);
        }
        let mut start: Option<i64> = None;
        for (&at, &ok) in quiet.iter().rev() {
            if !ok || start.is_some_and(|later| later.saturating_sub(at) > gap) {
                break;
            }
            start = Some(at);
        }
        since = since.max(start.unwrap_or(i64::MIN));
    }
    since
}

/// Whole seconds of a duration, as the unix-second arithmetic needs them.
fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
