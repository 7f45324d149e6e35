//! The scenario's monitoring: how `GetCompShareInstanceMonitor` answers (sample period,
//! warm-up, reach, faults) and each instance's GPU load profile.

use serde::{Deserialize, Serialize};

use super::ScenarioError;

/// How the world's monitor answers. The real values are unknown (compshare-api.md §8.1); the
/// defaults are plausible ones that make the tool's own history necessary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Monitoring {
    /// Nominal seconds between two samples of a series: a minute, what GPU reapers sample at.
    pub period_secs: f64,
    /// Nominal seconds after an instance starts before its first sample: the API's unknown
    /// "no data for a new instance" (an agent starting, a first scrape); 5 minutes.
    pub warmup_secs: f64,
    /// How far back an answer reaches, nominal seconds: 30 minutes, shorter than the idle
    /// window (2 h), so a tool that judged from one answer alone could never see idleness.
    pub reach_secs: f64,
    /// Per monitor call: answered RetCode 150 instead of samples.
    pub error: f64,
    /// Per sample (one GPU at one time): left out of the answer, a gap in the series.
    pub drop_sample: f64,
}

impl Default for Monitoring {
    fn default() -> Self {
        Monitoring {
            period_secs: 60.0,
            warmup_secs: 300.0,
            reach_secs: 1_800.0,
            error: 0.0,
            drop_sample: 0.0,
        }
    }
}

/// The most samples one series of an answer may hold: a day of minutes. Bounds the answer's
/// size (10 hosts × 8 GPUs × 2 metrics × this, well under the client's 4 MiB cap).
const MAX_POINTS: f64 = 1_440.0;

/// The longest nominal time a profile may name: 30 days (a simulated week of cron runs fits).
const MAX_PROFILE_SECS: f64 = 30.0 * 86_400.0;

/// One instance's GPU load over nominal time (seconds since the world's time zero). Samples
/// exist only while the instance is Running and warmed up, whatever the profile.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum GpuLoad {
    /// Working: 60-100% utilisation, 55-90% memory. The default for explicit rows, so a
    /// scenario that says nothing about load has nothing idle.
    #[default]
    Busy,
    /// Nobody uses it: a noise floor of 0-2% utilisation and 1-3% memory (the driver's
    /// context), never exactly 0.
    Idle,
    /// Training that pauses between epochs: `busy_secs` of work at 85-100%, then `pause_secs`
    /// at 0-1%. The model stays in GPU memory through a pause (70-80%) unless
    /// `release_memory`, when memory drops to the floor too.
    Epochs {
        busy_secs: f64,
        pause_secs: f64,
        #[serde(default)]
        release_memory: bool,
    },
    /// Busy until nominal time `secs`, idle from then on.
    IdleAfter { secs: f64 },
    /// Idle until nominal time `secs`, busy from then on.
    BusyAfter { secs: f64 },
    /// The monitor lists the instance with no GPU series at all.
    NoData,
}

impl GpuLoad {
    /// Times in range (the profile must describe a world that can run).
    pub(crate) fn check(&self) -> Result<(), String> {
        let secs = |name: &str, v: f64| {
            if (0.0..=MAX_PROFILE_SECS).contains(&v) {
                Ok(())
            } else {
                Err(format!("gpu_load {name} must be in 0..={MAX_PROFILE_SECS}, got {v:e}"))
            }
        };
        match *self {
            GpuLoad::Epochs {
                busy_secs, pause_secs, ..
            } => {
                secs("epochs.busy_secs", busy_secs)?;
                secs("epochs.pause_secs", pause_secs)?;
                if busy_secs + pause_secs <= 0.0 {
                    return Err("gpu_load epochs needs busy_secs + pause_secs > 0".into());
                }
                Ok(())
            }
            GpuLoad::IdleAfter { secs: v } => secs("idle_after.secs", v),
            GpuLoad::BusyAfter { secs: v } => secs("busy_after.secs", v),
            GpuLoad::Busy | GpuLoad::Idle | GpuLoad::NoData => Ok(()),
        }
    }

    /// Utilisation and memory (percent) at nominal time `t` from two uniform draws.
    pub(crate) fn reading(&self, t: f64, u: f64, v: f64) -> (f64, f64) {
        let busy = (60.0 + 40.0 * u, 55.0 + 35.0 * v);
        let idle = (2.0 * u, 1.0 + 2.0 * v);
        match *self {
            GpuLoad::Busy => busy,
            GpuLoad::Idle | GpuLoad::NoData => idle,
            GpuLoad::Epochs {
                busy_secs,
                pause_secs,
                release_memory,
            } => {
                if t.rem_euclid(busy_secs + pause_secs) < busy_secs {
                    (85.0 + 15.0 * u, 70.0 + 10.0 * v)
                } else if release_memory {
                    (u, idle.1)
                } else {
                    (u, 70.0 + 10.0 * v)
                }
            }
            GpuLoad::IdleAfter { secs } => {
                if t < secs {
                    busy
                } else {
                    idle
                }
            }
            GpuLoad::BusyAfter { secs } => {
                if t < secs {
                    idle
                } else {
                    busy
                }
            }
        }
    }
}

impl Monitoring {
    pub(crate) fn check(&self) -> Result<(), ScenarioError> {
        let invalid = |m: String| Err(ScenarioError::Invalid(m));
        if !(1.0..=3_600.0).contains(&self.period_secs) {
            return invalid(format!(
                "monitor.period_secs must be in 1..=3600, got {:e}",
                self.period_secs
            ));
        }
        if !(0.0..=MAX_PROFILE_SECS).contains(&self.warmup_secs) {
            return invalid(format!(
                "monitor.warmup_secs must be in 0..={MAX_PROFILE_SECS}, got {:e}",
                self.warmup_secs
            ));
        }
        if !(self.reach_secs >= self.period_secs && self.reach_secs <= self.period_secs * MAX_POINTS) {
            return invalid(format!(
                "monitor.reach_secs must be in period_secs..={MAX_POINTS} periods, got {:e}",
                self.reach_secs
            ));
        }
        for (name, rate) in [("error", self.error), ("drop_sample", self.drop_sample)] {
            if !(0.0..=1.0).contains(&rate) {
                return invalid(format!("monitor.{name} must be in 0..=1, got {rate}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Scenario;
    use super::*;

    #[test]
    fn gpu_load_profiles_parse_by_name() {
        let text = r#"{"instances": [
            {"UHostId": "a", "Region": "r", "Zone": "z", "gpu_load": "idle"},
            {"UHostId": "b", "Region": "r", "Zone": "z", "gpu_load": {"epochs": {"busy_secs": 60, "pause_secs": 30}}},
            {"UHostId": "c", "Region": "r", "Zone": "z", "gpu_load": {"busy_after": {"secs": 9}}},
            {"UHostId": "d", "Region": "r", "Zone": "z", "gpu_load": "no_data"},
            {"UHostId": "e", "Region": "r", "Zone": "z"}
        ]}"#;
        let loads: Vec<Option<GpuLoad>> = Scenario::from_json(text)
            .unwrap()
            .instances
            .into_iter()
            .map(|i| i.gpu_load)
            .collect();
        assert_eq!(
            loads,
            [
                Some(GpuLoad::Idle),
                Some(GpuLoad::Epochs {
                    busy_secs: 60.0,
                    pause_secs: 30.0,
                    release_memory: false
                }),
                Some(GpuLoad::BusyAfter { secs: 9.0 }),
                Some(GpuLoad::NoData),
                None,
            ]
        );
        assert!(
            Scenario::from_json(
                r#"{"instances": [{"UHostId": "a", "Region": "r", "Zone": "z", "gpu_load": "sleepy"}]}"#
            )
            .is_err()
        );
    }
}
