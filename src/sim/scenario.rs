//! The scenario: everything that defines a simulated world (keys, timings, faults, rows), its
//! JSON file format (documented in `docs/simulator.md`) and seeded generation of realistic rows.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::api::{Instance, State};

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
    /// Requests per second per `PublicKey` (a token bucket); 0 = unlimited. Excess calls get
    /// RetCode 153.
    pub rate_limit_per_sec: u32,
    /// The bucket's size: calls that may come at once after a quiet spell; 0 = one second's
    /// worth (`rate_limit_per_sec`).
    pub rate_limit_burst: u32,
    /// Rows to generate (added before the explicit `instances`).
    pub generate: Option<Generate>,
    /// Explicit rows.
    pub instances: Vec<ScenarioInstance>,
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
            rate_limit_per_sec: 0,
            rate_limit_burst: 0,
            generate: None,
            instances: Vec::new(),
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
            ..Scenario::default()
        }
    }

    /// Parse and validate a scenario file.
    pub fn from_json(text: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario = serde_json::from_str(text)?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Rates must be probabilities and the time scale positive, or the world makes no sense.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        if !(self.time_scale.is_finite() && self.time_scale > 0.0) {
            return Err(ScenarioError::Invalid(format!(
                "time_scale must be > 0, got {}",
                self.time_scale
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
        }
        Ok(())
    }
}

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
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            stop_secs: 3.0,
            start_secs: 3.0,
            terminate_secs: 1.0,
            jitter: 0.2,
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
}

impl Faults {
    /// Every rate with its key, for validation.
    fn rates(&self) -> [(&'static str, f64); 13] {
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
        ]
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

/// Generated rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Generate {
    pub count: usize,
    /// State -> relative weight (wire spellings, e.g. `"Install Fail"`).
    pub mix: BTreeMap<String, f64>,
    /// Share of rows with `ChargeType: "Spot"`.
    pub spot_fraction: f64,
    /// Share of rows whose lock is pre-held by another operation (for 10%-100% of the TTL).
    pub locked_fraction: f64,
    /// Share of rows marked protected (any mutating call on them is a violation).
    pub protected_fraction: f64,
    /// `[region, zone]` pairs to spread rows over; empty = the built-in list.
    pub zones: Vec<(String, String)>,
}

impl Default for Generate {
    fn default() -> Self {
        Generate {
            count: 0,
            // Mostly Running, some Stopped, a few Stopping: what a busy account looks like.
            mix: [("Running", 0.7), ("Stopped", 0.22), ("Stopping", 0.08)]
                .into_iter()
                .map(|(s, w)| (s.to_owned(), w))
                .collect(),
            spot_fraction: 0.0,
            locked_fraction: 0.0,
            protected_fraction: 0.0,
            zones: Vec::new(),
        }
    }
}

/// Region/zone pairs seen on real CompShare accounts (reference §5.1).
pub const DEFAULT_ZONES: [(&str, &str); 5] = [
    ("cn-wlcb", "cn-wlcb-01"),
    ("cn-sh2", "cn-sh2-02"),
    ("cn-bj2", "cn-bj2-02"),
    ("cn-gd", "cn-gd-02"),
    ("us-den", "us-den-01"),
];

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
    pub fn from_instance(instance: &Instance, extra: Map<String, Value>) -> ScenarioInstance {
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

/// GPU models offered on CompShare, with per-card memory (GB) and an hourly price per card.
const GPUS: [(&str, i64, f64); 6] = [
    ("4090", 24, 1.98),
    ("3080Ti", 12, 0.88),
    ("A100", 80, 7.5),
    ("H100", 80, 13.9),
    ("4090D", 24, 1.78),
    ("L40S", 48, 4.2),
];

/// Name stems users give instances.
const STEMS: [&str; 6] = ["train", "infer", "dev", "sd", "llm-ft", "notebook"];

/// Billing modes seen in the model docs; Spot is only drawn by `spot_fraction`.
const CHARGE_TYPES: [&str; 4] = ["Postpay", "Dynamic", "Day", "Month"];

/// Data disk sizes (GB) users pick.
const DATA_SIZES: [i64; 4] = [100, 200, 500, 1000];

/// Business groups (`Tag`).
const TAGS: [&str; 4] = ["Default", "research", "prod", "team-a"];

/// Image OS names.
const OS_NAMES: [&str; 3] = ["Ubuntu 22.04", "Ubuntu 20.04", "CentOS 7.9"];

/// A fixed "now" for generated timestamps (2026-08-01T00:00:00Z), so worlds do not depend on
/// the wall clock.
const EPOCH_NOW: i64 = 1_785_542_400;

/// Generate rows per `g`, deterministically from `rng`.
pub(crate) fn generate_rows(g: &Generate, ttl_secs: f64, rng: &mut StdRng) -> Vec<ScenarioInstance> {
    let zones: Vec<(String, String)> = if g.zones.is_empty() {
        DEFAULT_ZONES
            .iter()
            .map(|(r, z)| ((*r).to_owned(), (*z).to_owned()))
            .collect()
    } else {
        g.zones.clone()
    };
    let mix: Vec<(State, f64)> = g.mix.iter().map(|(s, w)| (State::parse(s), w.max(0.0))).collect();
    let total_weight: f64 = mix.iter().map(|(_, w)| w).sum();
    let mut out = Vec::with_capacity(g.count);
    for n in 0..g.count {
        // About one in eight CompShare instances is a container (`cpod-`).
        let container = rng.random_bool(0.125);
        let id = format!("{}-{}", if container { "cpod" } else { "uhost" }, random_id(rng));
        let (gpu_type, gpu_mem, card_price) = GPUS[rng.random_range(0..GPUS.len())];
        let gpus: i64 = [1, 1, 1, 2, 4, 8][rng.random_range(0..6)];
        let (region, zone) = zones[rng.random_range(0..zones.len())].clone();
        let stem = STEMS[rng.random_range(0..STEMS.len())];
        let state = pick_state(&mix, total_weight, rng);
        let charge = if rng.random_bool(g.spot_fraction) {
            "Spot"
        } else {
            CHARGE_TYPES[rng.random_range(0..CHARGE_TYPES.len())]
        };
        let mut disks = vec![json!({
            "DiskId": format!("bsi-{}", random_id(rng)), "DiskType": "CLOUD_SSD", "IsBoot": "True",
            "Name": "系统盘", "Size": 100, "Type": "Boot", "Drive": "vda", "Encrypted": "false",
        })];
        for d in 0..rng.random_range(0..=2) {
            disks.push(json!({
                "DiskId": format!("bsi-{}", random_id(rng)), "DiskType": "CLOUD_SSD", "IsBoot": "False",
                "Name": format!("data-{d}"), "Size": (DATA_SIZES[rng.random_range(0..DATA_SIZES.len())]),
                "Type": "Data", "Drive": format!("vd{}", char::from(b'b' + u8::try_from(d).unwrap_or(0))),
                "Encrypted": "false",
            }));
        }
        let cpu = 16 * gpus;
        let create = EPOCH_NOW - rng.random_range(3_600..90 * 86_400);
        #[allow(clippy::cast_precision_loss)]
        let price = (card_price * gpus as f64 * 100.0).round() / 100.0;
        let row = json!({
            "UHostId": id,
            "Name": format!("{stem}-{}-{n:03}", gpu_type.to_ascii_lowercase()),
            "State": state.as_str(),
            "Region": region, "Zone": zone,
            "Tag": (TAGS[rng.random_range(0..TAGS.len())]),
            "Remark": "",
            "CreateTime": create, "UpdateTime": create + rng.random_range(0..3_600),
            "ChargeType": charge,
            "GPU": gpus, "GpuType": gpu_type, "CPU": cpu, "Memory": cpu * 4 * 1024,
            "GraphicsMemory": {"Rate": 1, "Value": gpu_mem},
            "InstanceType": if container { "Container" } else { "UHost" },
            "InstancePrice": price,
            "MachineType": "G", "CpuArch": "x86_64", "CpuPlatform": "Amd/Auto",
            "OsName": (OS_NAMES[rng.random_range(0..OS_NAMES.len())]),
            "OsType": "Linux",
            "AutoRenew": if charge == "Month" { "Yes" } else { "No" },
            "IsExpire": "No",
            "ExpireTime": create + 30 * 86_400,
            "DiskSet": disks,
            "IPSet": [{
                "IP": format!("10.{}.{}.{}", rng.random_range(0..=255), rng.random_range(0..=255), rng.random_range(2..=254)),
                "IPMode": "IPv4", "Type": "Private", "Bandwidth": 0, "Default": "true",
            }],
            "TotalDiskSpace": 0,
        });
        let Value::Object(row) = row else {
            unreachable!("json! object")
        };
        let locked_for_secs = rng
            .random_bool(g.locked_fraction)
            .then(|| ttl_secs * rng.random_range(0.1..=1.0));
        out.push(ScenarioInstance {
            protected: rng.random_bool(g.protected_fraction),
            locked_for_secs,
            row,
            ..ScenarioInstance::default()
        });
    }
    out
}

fn pick_state(mix: &[(State, f64)], total: f64, rng: &mut StdRng) -> State {
    if total <= 0.0 {
        return State::Running;
    }
    let mut x = rng.random_range(0.0..total);
    for (state, w) in mix {
        if x < *w {
            return state.clone();
        }
        x -= w;
    }
    mix.last().map_or(State::Running, |(s, _)| s.clone())
}

/// Twelve lowercase base-36 characters, the shape of real resource IDs (`uhost-1paxrg4g1vfw`).
pub(crate) fn random_id(rng: &mut StdRng) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    (0..12)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// The seeded generator for a world (kept here so generation and the world agree).
pub(crate) fn rng_for(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_realistic() {
        let g = Generate {
            count: 200,
            spot_fraction: 0.2,
            ..Generate::default()
        };
        let a = generate_rows(&g, 600.0, &mut rng_for(7));
        let b = generate_rows(&g, 600.0, &mut rng_for(7));
        let c = generate_rows(&g, 600.0, &mut rng_for(8));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let rows: Vec<Instance> = a.iter().map(|r| r.instance().unwrap()).collect();
        assert!(
            rows.iter()
                .any(|i| i.uhost_id.starts_with("cpod-") && i.instance_type == "Container")
        );
        assert!(
            rows.iter()
                .all(|i| i.uhost_id.len() == "uhost-".len() + 12 || i.uhost_id.len() == 17)
        );
        assert!(rows.iter().any(Instance::is_spot));
        let running = rows.iter().filter(|i| i.state == State::Running).count();
        let stopped = rows.iter().filter(|i| i.state == State::Stopped).count();
        assert!(running > stopped && stopped > 0, "{running} {stopped}");
        assert!(
            rows.iter()
                .all(|i| i.disk_set.iter().filter(|d| !d.is_data()).count() == 1)
        );
        assert!(rows.iter().all(|i| i.create_time < EPOCH_NOW && !i.ip_set.is_empty()));
        assert!(a[0].row.contains_key("GraphicsMemory"));
    }

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
    fn example_file_parses() {
        let text = include_str!("../../docs/examples/scenario.json");
        let s = Scenario::from_json(text).unwrap();
        assert!(!s.instances.is_empty());
        assert!(s.instances.iter().any(|i| i.protected));
    }
}
