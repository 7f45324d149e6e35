//! The scenario: everything that defines a simulated world (keys, timings, faults, rows), its
//! JSON file format (documented in `docs/simulator.md`); seeded generation of realistic rows
//! is in [`generate`].

mod generate;
mod monitor;

pub(crate) use generate::random_id;
pub use generate::{DEFAULT_ZONES, Generate};
pub(crate) use generate::{EPOCH_NOW, generate_rows, rng_for};
pub use monitor::{GpuLoad, Monitoring};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::api::Instance;

/// Everything that defines a world. Every key is optional in the JSON file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    /// Seeds every random decision (generation, jitter, faults, interference).
    pub seed: u64,
    /// Multiplies every duration of the world: 1.0 = real CompShare timings; 0.01 makes the
    /// 10-minute lock TTL 6 s and every latency 100 times shorter.
    pub time_scale: f64,
    /// The only key pair the gateway accepts.
    pub public_key: String,
    pub private_key: String,
    pub lock: LockConfig,
    pub latency: Latency,
    pub faults: Faults,
    /// Requests per second per `PublicKey` (a token bucket), fractions allowed (0.5 = one
    /// request every 2 s); 0 = unlimited. Excess calls get RetCode 153.
    pub rate_limit_per_sec: f64,
    /// The bucket's size: calls that may come at once after a quiet spell; 0 = one second's
    /// worth (`rate_limit_per_sec` rounded up, at least 1).
    pub rate_limit_burst: u32,
    /// Rows to generate (added before the explicit `instances`).
    pub generate: Option<Generate>,
    /// Explicit rows.
    pub instances: Vec<ScenarioInstance>,
    /// The unix time (seconds) of the world's time zero, which monitor samples and
    /// `SimHandle::unix_now` count from. Unset: fixed (2026-08-01T00:00:00Z) in a generated
    /// world, so a seed gives the same series every run; the real time otherwise.
    pub epoch: Option<i64>,
    /// How `GetCompShareInstanceMonitor` answers.
    pub monitor: Monitoring,
    /// Free-standing data disks (besides the data disks in the instances' `DiskSet`).
    pub disks: Vec<ScenarioDisk>,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            seed: 0,
            time_scale: 1.0,
            public_key: "sim-public-key".into(),
            private_key: "sim-private-key".into(),
            lock: LockConfig::default(),
            latency: Latency::default(),
            faults: Faults::default(),
            rate_limit_per_sec: 0.0,
            rate_limit_burst: 0,
            generate: None,
            instances: Vec::new(),
            epoch: None,
            monitor: Monitoring::default(),
            disks: Vec::new(),
        }
    }
}

/// Why a scenario file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("scenario JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("scenario: {0}")]
    Invalid(String),
}

impl Scenario {
    /// A world of `count` generated instances with the default state mix.
    pub fn generated(count: usize, seed: u64) -> Scenario {
        Scenario {
            seed,
            generate: Some(Generate {
                count,
                ..Generate::default()
            }),
            epoch: Some(EPOCH_NOW),
            ..Scenario::default()
        }
    }

    /// Parse and validate a scenario file.
    pub(crate) fn from_json(text: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario = serde_json::from_str(text)?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Rates must be probabilities and every number in the range its flag has, or the world
    /// makes no sense: a scenario file must not reach what `sim`'s flags refuse (a time scale
    /// of 1e308 or a TTL of 1e30 s overflow a duration and panic on the first request, a count
    /// of 1e11 aborts on allocation, a negative latency or a jitter above 1 turns time back).
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let invalid = |m: String| Err(ScenarioError::Invalid(m));
        let (lo, hi) = crate::cli::TIME_SCALE;
        if !(self.time_scale >= lo && self.time_scale <= hi) {
            return invalid(format!("time_scale must be in {lo}..={hi}, got {:e}", self.time_scale));
        }
        let max_rows = crate::cli::SIM_INSTANCES.1;
        let rows = self
            .generate
            .as_ref()
            .map_or(0, |g| g.count)
            .saturating_add(self.instances.len());
        if rows > max_rows {
            return invalid(format!(
                "at most {max_rows} instances (generate.count and instances), got {rows}"
            ));
        }
        for (name, secs) in [
            ("lock.ttl_secs", self.lock.ttl_secs),
            ("latency.stop_secs", self.latency.stop_secs),
            ("latency.start_secs", self.latency.start_secs),
            ("latency.terminate_secs", self.latency.terminate_secs),
            ("latency.detach_secs", self.latency.detach_secs),
            ("latency.disk_delete_secs", self.latency.disk_delete_secs),
            ("faults.slow_secs", self.faults.slow_secs),
            ("faults.restart_after_secs", self.faults.restart_after_secs),
            ("faults.vanish_within_secs", self.faults.vanish_within_secs),
        ] {
            // Nominal seconds, up to a day (the lock's TTL is 10 minutes, a stop 15-20 s).
            if !(0.0..=MAX_NOMINAL_SECS).contains(&secs) {
                return invalid(format!("{name} must be in 0..={MAX_NOMINAL_SECS}, got {secs:e}"));
            }
        }
        if !(0.0..=1.0).contains(&self.latency.jitter) {
            return invalid(format!(
                "latency.jitter must be in 0..=1, got {:e}",
                self.latency.jitter
            ));
        }
        if !(self.rate_limit_per_sec.is_finite() && self.rate_limit_per_sec >= 0.0) {
            return Err(ScenarioError::Invalid(format!(
                "rate_limit_per_sec must be >= 0, got {}",
                self.rate_limit_per_sec
            )));
        }
        for (name, rate) in self.faults.rates() {
            if !(0.0..=1.0).contains(&rate) {
                return Err(ScenarioError::Invalid(format!(
                    "faults.{name} must be in 0..=1, got {rate}"
                )));
            }
        }
        if let Some(g) = &self.generate {
            if let Some((state, w)) = g.mix.iter().find(|(_, w)| !(w.is_finite() && **w >= 0.0)) {
                return invalid(format!("generate.mix.{state} must be a weight >= 0, got {w:e}"));
            }
            for (name, f) in [
                ("spot_fraction", g.spot_fraction),
                ("locked_fraction", g.locked_fraction),
                ("protected_fraction", g.protected_fraction),
            ] {
                if !(0.0..=1.0).contains(&f) {
                    return Err(ScenarioError::Invalid(format!(
                        "generate.{name} must be in 0..=1, got {f}"
                    )));
                }
            }
        }
        for (i, row) in self.instances.iter().enumerate() {
            row.instance()
                .map_err(|e| ScenarioError::Invalid(format!("instances[{i}]: {e}")))?;
            if let Some(load) = &row.gpu_load {
                load.check()
                    .map_err(|e| ScenarioError::Invalid(format!("instances[{i}]: {e}")))?;
            }
        }
        // 1970 to 2100: sample times then stay far from any overflow.
        if let Some(epoch) = self.epoch.filter(|e| !(0..=MAX_EPOCH).contains(e)) {
            return invalid(format!("epoch must be a unix time in 0..={MAX_EPOCH}, got {epoch}"));
        }
        self.monitor.check()?;
        let disks = self
            .generate
            .as_ref()
            .map_or(0, |g| g.detached_disks)
            .saturating_add(self.disks.len());
        if disks > max_rows {
            return invalid(format!(
                "at most {max_rows} free-standing disks (generate.detached_disks and disks), got {disks}"
            ));
        }
        for (i, d) in self.disks.iter().enumerate() {
            if d.disk_id.is_empty() || d.zone.is_empty() {
                return invalid(format!("disks[{i}]: ResourceId and Zone are required"));
            }
        }
        Ok(())
    }
}

/// The latest `epoch` a scenario may set: 2100-01-01T00:00:00Z.
const MAX_EPOCH: i64 = 4_102_444_800;

/// The longest nominal duration a scenario may set: a day.
const MAX_NOMINAL_SECS: f64 = 86_400.0;

/// The per-instance operation lock (`InstanceOperationInProgress`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LockConfig {
    /// Nominal TTL; the documented value is 10 minutes.
    pub ttl_secs: f64,
    pub hold: LockHold,
    /// The RetCode of the lock error. Its real number is unpublished; 8903 is what a real
    /// account got from Stop/Start while an operation ran. The message always contains
    /// `InstanceOperationInProgress`.
    pub ret_code: i64,
}

impl Default for LockConfig {
    fn default() -> Self {
        LockConfig {
            ttl_secs: 600.0,
            hold: LockHold::UntilComplete,
            ret_code: 8903,
        }
    }
}

/// When an accepted operation releases the lock. Whether the real lock outlives the visible
/// transition is unknown, so both readings can be simulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum LockHold {
    /// Released when the transition completes (or at the TTL, whichever is first).
    #[default]
    UntilComplete,
    /// Held for the whole TTL.
    FullTtl,
}

/// Nominal durations in seconds, before `time_scale`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Latency {
    /// Stopping -> Stopped. A real account took 15-20 s; 3 s keeps unscaled runs short.
    pub stop_secs: f64,
    /// Starting -> Running.
    pub start_secs: f64,
    /// Accepted Terminate -> absent from Describe.
    pub terminate_secs: f64,
    /// Every latency is multiplied by a uniform factor in `1 ± jitter`.
    pub jitter: f64,
    /// A data disk's detach after its instance's Terminate without `ReleaseUDisk`: status
    /// `Detaching`, and a Delete answered 8434, for this long.
    pub detach_secs: f64,
    /// Accepted disk Delete -> absent from `DescribeCompshareDisk`.
    pub disk_delete_secs: f64,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            stop_secs: 3.0,
            start_secs: 3.0,
            terminate_secs: 1.0,
            jitter: 0.2,
            detach_secs: 5.0,
            disk_delete_secs: 2.0,
        }
    }
}

/// Fault and interference rates, each a probability per call (0.0..=1.0), all 0 by default.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// HTTP 502 with an nginx-style HTML body; nothing applied.
    pub http_502: f64,
    /// HTTP 503 with an HTML body; nothing applied.
    pub http_503: f64,
    /// Connection closed with no answer; the call is NOT applied.
    pub drop: f64,
    /// The call is applied, then the connection is closed with no answer.
    pub lost_response: f64,
    /// The answer is delayed by `slow_secs` (scaled).
    pub slow: f64,
    pub slow_secs: f64,
    /// RetCode 153 "API request throttled", independent of `rate_limit_per_sec`.
    pub throttle: f64,
    /// RetCode 150 "Service unavailable".
    pub unavailable: f64,
    /// Per accepted Stop: once the instance reaches Stopped, someone else starts it again
    /// after `restart_after_secs` (scaled) unless it was terminated first.
    pub restart: f64,
    pub restart_after_secs: f64,
    /// Per accepted Stop/Start: someone else deletes the instance within
    /// `vanish_within_secs` (scaled).
    pub vanish: f64,
    pub vanish_within_secs: f64,
    /// `"RetCode": "0"` as a string.
    pub retcode_as_string: f64,
    /// `null` instead of `[]` for empty lists.
    pub null_lists: f64,
    /// Eventual consistency: per existing row a Describe matched, the probability that the row
    /// is left out of that answer's page (it still exists, and `TotalCount` still counts it).
    pub drop_row: f64,
    /// Per Describe answer: `TotalCount` is missing from the body.
    pub omit_total_count: f64,
    /// Per Describe answer for a later page (`Offset` > 0): the answer comes from a lagging
    /// replica that lacks `lagging_share` of the rows, with a `TotalCount` that agrees with
    /// its short answer (and an `Offset` past its end refused, RetCode 230).
    pub lagging_replica: f64,
    /// The share of rows the lagging replica lacks (the same rows every time); 0 = 0.2.
    pub lagging_share: f64,
    /// The share of rows whose Describe rows never carry `Region` (the same rows every time;
    /// only `Zone` says where they live). The world still knows their region.
    pub omit_region: f64,
    /// Per mutating call (Stop, Start, Terminate): the call is processed (applied, if the
    /// state allows it), then answered HTTP 502 with nginx's page, as a proxy reports an
    /// upstream that closed after doing the work.
    pub applied_then_502: f64,
    /// Per detach: `DescribeCompshareDisk` already lists the disk as `Available` for the
    /// second half of its detach, while a Delete is still answered 8434 (a view ahead of the
    /// backend, which a client can only ride out by retrying).
    pub detach_shows_free: f64,
}

impl Faults {
    /// Every rate with its key, for validation.
    fn rates(&self) -> [(&'static str, f64); 18] {
        [
            ("http_502", self.http_502),
            ("http_503", self.http_503),
            ("drop", self.drop),
            ("lost_response", self.lost_response),
            ("slow", self.slow),
            ("throttle", self.throttle),
            ("unavailable", self.unavailable),
            ("restart", self.restart),
            ("vanish", self.vanish),
            ("retcode_as_string", self.retcode_as_string),
            ("null_lists", self.null_lists),
            ("drop_row", self.drop_row),
            ("omit_total_count", self.omit_total_count),
            ("lagging_replica", self.lagging_replica),
            ("lagging_share", self.lagging_share),
            ("omit_region", self.omit_region),
            ("applied_then_502", self.applied_then_502),
            ("detach_shows_free", self.detach_shows_free),
        ]
    }

    /// The share of rows a lagging replica lacks when `lagging_share` is unset: about what a
    /// replica a few minutes behind a busy account misses (52 of 250 in the report that
    /// found it).
    pub(crate) fn lagging_share(&self) -> f64 {
        if self.lagging_share > 0.0 {
            self.lagging_share
        } else {
            0.2
        }
    }

    /// Nominal seconds a slow answer takes when `slow_secs` is unset: long enough to trip a
    /// short client timeout, short enough not to stall a test.
    pub(crate) fn slow_nominal(&self) -> f64 {
        if self.slow_secs > 0.0 { self.slow_secs } else { 5.0 }
    }

    /// Nominal restart delay when unset: about one poll interval after the stop completes.
    pub(crate) fn restart_nominal(&self) -> f64 {
        if self.restart_after_secs > 0.0 {
            self.restart_after_secs
        } else {
            2.0
        }
    }

    /// Nominal vanish window when unset: around the length of a stop.
    pub(crate) fn vanish_nominal(&self) -> f64 {
        if self.vanish_within_secs > 0.0 {
            self.vanish_within_secs
        } else {
            5.0
        }
    }
}

/// One explicit row: real `CompShareInstanceSet` fields with their wire names (any field, known
/// or not, is echoed in Describe) plus the sim-only keys below.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ScenarioInstance {
    /// Any mutating call on this instance is a violation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub protected: bool,
    /// The lock is held by another operation for this many seconds (scaled) from time zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked_for_secs: Option<f64>,
    /// Nominal latency overrides for this row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_secs: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_secs: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminate_secs: Option<f64>,
    /// What its GPUs do, as the monitor reports it; unset: busy (a generated row: drawn
    /// from a mix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_load: Option<GpuLoad>,
    /// The row as Describe returns it (`UHostId`, `State`, `Region`, `Zone`, `DiskSet`, ...).
    #[serde(flatten)]
    pub row: Map<String, Value>,
}

impl ScenarioInstance {
    /// The typed part of the row. `UHostId`, `Region` and `Zone` are required: without them
    /// nobody could address the instance.
    pub fn instance(&self) -> Result<Instance, String> {
        let instance: Instance = serde_json::from_value(Value::Object(self.row.clone())).map_err(|e| e.to_string())?;
        for (key, value) in [
            ("UHostId", &instance.uhost_id),
            ("Region", &instance.region),
            ("Zone", &instance.zone),
        ] {
            if value.is_empty() {
                return Err(format!("missing {key}"));
            }
        }
        Ok(instance)
    }

    /// A row from a typed instance plus extra wire fields.
    pub(crate) fn from_instance(instance: &Instance, extra: Map<String, Value>) -> ScenarioInstance {
        let mut row = extra;
        if let Value::Object(typed) = serde_json::to_value(instance).unwrap_or(Value::Null) {
            row.extend(typed);
        }
        ScenarioInstance {
            row,
            ..ScenarioInstance::default()
        }
    }
}

/// One free-standing data disk, with `DescribeCompshareDisk`'s field names.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioDisk {
    #[serde(rename = "ResourceId")]
    pub disk_id: String,
    #[serde(rename = "Name", default)]
    pub name: String,
    /// GB.
    #[serde(rename = "Configuration", default)]
    pub size_gb: i64,
    #[serde(rename = "Zone")]
    pub zone: String,
    /// Empty: the zone's region.
    #[serde(rename = "Region", default, skip_serializing_if = "String::is_empty")]
    pub region: String,
    #[serde(rename = "DiskType", default)]
    pub disk_type: String,
    /// Any Delete of this disk is a violation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub protected: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_unknown_keys_and_bad_rates() {
        assert!(matches!(
            Scenario::from_json(r#"{"sed": 1}"#),
            Err(ScenarioError::Json(_))
        ));
        assert!(matches!(
            Scenario::from_json(r#"{"faults": {"drop": 1.5}}"#),
            Err(ScenarioError::Invalid(_))
        ));
        assert!(matches!(
            Scenario::from_json(r#"{"instances": [{"UHostId": "uhost-1"}]}"#),
            Err(ScenarioError::Invalid(_))
        ));
        let s = Scenario::from_json("{}").unwrap();
        assert_eq!(s, Scenario::default());
    }

    #[test]
    fn numbers_are_held_to_the_ranges_of_the_flags() {
        for (text, want) in [
            (r#"{"time_scale": 1e308}"#, "time_scale"),
            (r#"{"time_scale": 0}"#, "time_scale"),
            (r#"{"lock": {"ttl_secs": 1e30}}"#, "lock.ttl_secs"),
            (r#"{"generate": {"count": 100000000000}}"#, "at most 100000 instances"),
            (r#"{"latency": {"stop_secs": -1}}"#, "latency.stop_secs"),
            (r#"{"latency": {"jitter": 5}}"#, "latency.jitter"),
            (r#"{"faults": {"slow_secs": -3}}"#, "faults.slow_secs"),
            (r#"{"generate": {"mix": {"Running": -1}}}"#, "generate.mix.Running"),
            (r#"{"epoch": -1}"#, "epoch"),
            (r#"{"monitor": {"period_secs": 0}}"#, "monitor.period_secs"),
            (r#"{"monitor": {"reach_secs": 30}}"#, "monitor.reach_secs"),
            (r#"{"monitor": {"reach_secs": 1e9}}"#, "monitor.reach_secs"),
            (r#"{"monitor": {"warmup_secs": -1}}"#, "monitor.warmup_secs"),
            (r#"{"monitor": {"drop_sample": 2}}"#, "monitor.drop_sample"),
            (r#"{"monitor": {"error": -0.1}}"#, "monitor.error"),
            (
                r#"{"instances": [{"UHostId": "u", "Region": "r", "Zone": "z", "gpu_load": {"idle_after": {"secs": -5}}}]}"#,
                "instances[0]: gpu_load idle_after.secs",
            ),
            (
                r#"{"instances": [{"UHostId": "u", "Region": "r", "Zone": "z", "gpu_load": {"epochs": {"busy_secs": 0, "pause_secs": 0}}}]}"#,
                "busy_secs + pause_secs",
            ),
        ] {
            match Scenario::from_json(text) {
                Err(ScenarioError::Invalid(m)) => assert!(m.contains(want), "{text}: {m}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        assert!(Scenario::from_json(r#"{"time_scale": 0.001, "latency": {"jitter": 1}}"#).is_ok());
    }

    #[test]
    fn example_file_parses() {
        let text = include_str!("../../../docs/examples/scenario.json");
        let s = Scenario::from_json(text).unwrap();
        assert!(!s.instances.is_empty());
        assert!(s.instances.iter().any(|i| i.protected));
    }
}
