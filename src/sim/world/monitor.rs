//! Monitoring: each instance's GPU load profile and the runs (Running spells) it has had, and
//! `GetCompShareInstanceMonitor` answered from them. A series is a pure function of the
//! profile, the runs, the seed and the time, so nothing is stored per sample, an answer costs
//! the same in a world of any size (IDs are looked up), and the same seed gives the same
//! series whatever else the world did.

use std::collections::VecDeque;

use rand::Rng;

use super::{Auth, Instant, Map, Rejection, Request, Row, State, Value, World, code, json};
use crate::monitor::{DEVICE_TAG, GPU_MEMORY, GPU_UTIL, MAX_IDS};
use crate::sim::scenario::GpuLoad;

/// Runs kept per row: the answer reaches back minutes, not days, so a few spells cover it
/// even for an instance someone keeps restarting, and a long-lived world stays bounded.
const RUNS_KEPT: usize = 8;

/// Salts that make the drop die and the two value draws of one sample independent.
const SALT_DROP: u64 = 0x6a09_e667_f3bc_c908;
const SALT_UTIL: u64 = 0xbb67_ae85_84ca_a73b;
const SALT_MEM: u64 = 0x3c6e_f372_fe94_f82b;

/// The most GPUs one instance reports: CompShare's largest machines have 8; a scenario row
/// claiming more still gets a bounded answer.
const MAX_GPUS: usize = 16;

/// A row's GPUs as the monitor sees them.
#[derive(Debug, Clone)]
pub(super) struct GpuTrack {
    pub(super) load: GpuLoad,
    /// Running spells, oldest first: (started, stopped). `None` as the start: running since
    /// before the world began (warm long ago); `None` as the end: running now.
    runs: VecDeque<(Option<Instant>, Option<Instant>)>,
}

impl GpuTrack {
    /// A row entering the world: running since long before if the world starts with it
    /// Running, just started if it is inserted later in that state.
    pub(super) fn new(load: GpuLoad, running: bool, since: Option<Instant>) -> GpuTrack {
        let mut runs = VecDeque::new();
        if running {
            runs.push_back((since, None));
        }
        GpuTrack { load, runs }
    }
}

impl Row {
    /// Every state change goes through here, so the monitor knows when the instance ran.
    pub(super) fn set_state(&mut self, state: State, at: Instant) {
        let was = self.instance.state == State::Running;
        let is = state == State::Running;
        let runs = &mut self.gpu.runs;
        if !was && is {
            if runs.len() == RUNS_KEPT {
                runs.pop_front();
            }
            runs.push_back((Some(at), None));
        } else if was
            && !is
            && let Some(run) = runs.back_mut()
        {
            run.1 = Some(at);
        }
        self.instance.state = state;
    }
}

impl World {
    /// Nominal seconds since the world's time zero.
    fn nominal(&self, at: Instant) -> f64 {
        self.secs(at) / self.scenario.time_scale
    }

    /// The world's wall clock: `epoch` plus the nominal seconds elapsed.
    pub(crate) fn unix_now(&self, now: Instant) -> i64 {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "nominal seconds of a running world, far below 2^53, floored"
        )]
        let elapsed = self.nominal(now).floor() as i64;
        self.epoch.saturating_add(elapsed)
    }

    pub(crate) fn gpu_load(&self, id: &str) -> Option<GpuLoad> {
        self.rows.get(id).map(|row| row.gpu.load.clone())
    }

    pub(crate) fn set_gpu_load(&mut self, id: &str, load: GpuLoad) {
        if let Some(row) = self.rows.get_mut(id) {
            row.gpu.load = load;
        }
    }

    /// `GetCompShareInstanceMonitor`: `Region`, `Zone`, and `UHostIds` as a JSON array of at
    /// most [`MAX_IDS`]; rows elsewhere or unknown are left out of the answer.
    pub(super) fn monitor(
        &mut self,
        req: &Request,
        now: Instant,
        fault: &mut Option<&'static str>,
    ) -> Result<Map<String, Value>, Rejection> {
        let p = &req.params;
        for key in ["Region", "Zone"] {
            if p.get(key).is_none_or(String::is_empty) {
                return Err((code::MISSING_PARAM, format!("Missing params [{key}]")));
            }
        }
        // Only a JSON body carries the array; `UHostIds.0=` in a form is refused (§8.1).
        let ids: Vec<String> = match &req.auth {
            Auth::Json(body) => match body.get("UHostIds") {
                Some(Value::Array(items)) if !items.is_empty() => items
                    .iter()
                    .map(|v| v.as_str().map(str::to_owned))
                    .collect::<Option<_>>()
                    .ok_or((code::BAD_PARAM, "Params [UHostIds] not available".to_owned()))?,
                _ => return Err((code::MISSING_PARAM, "Missing params [UHostIds]".into())),
            },
            Auth::Trusted | Auth::Form => return Err((code::MISSING_PARAM, "Missing params [UHostIds]".into())),
        };
        if ids.len() > MAX_IDS {
            return Err((code::BAD_PARAM, "Params [UHostIds] not available".into()));
        }
        // One die per answered call, from its own stream (worlds that never ask are unchanged).
        if self.mon_rng.random::<f64>() < self.scenario.monitor.error {
            *fault = Some("monitor_error");
            return Err((code::UNAVAILABLE, "Monitor data temporarily unavailable".into()));
        }
        let (region, zone) = (&p["Region"], &p["Zone"]);
        let (mut list, mut pods) = (Vec::new(), Vec::new());
        for id in &ids {
            let Some(row) = self.rows.get(id) else { continue };
            if row.instance.region != *region || row.instance.zone != *zone {
                continue;
            }
            let metrics = self.metrics(id, row, now);
            if id.starts_with("cpod-") {
                pods.push(json!({"PodId": id, "Metrics": metrics}));
            } else {
                list.push(json!({"UHostId": id, "Metrics": metrics}));
            }
        }
        let mut out = Map::new();
        out.insert("Data".into(), json!({"List": list, "PodList": pods}));
        Ok(out)
    }

    /// The two GPU metrics of one row, one series per GPU, over the answer's reach.
    fn metrics(&self, id: &str, row: &Row, now: Instant) -> Value {
        let m = &self.scenario.monitor;
        let whole = |secs: f64| {
            #[expect(
                clippy::cast_possible_truncation,
                reason = "validated nominal seconds (at most 30 days), rounded"
            )]
            let s = secs.round() as i64;
            s
        };
        let (period, warmup, reach) = (whole(m.period_secs).max(1), m.warmup_secs, whole(m.reach_secs));
        let unix_now = self.unix_now(now);
        // Nominal spells, warm-up applied: a sample at nominal `t` exists if a spell holds it.
        let spells: Vec<(f64, f64)> = row
            .gpu
            .runs
            .iter()
            .map(|(from, to)| {
                (
                    from.map_or(f64::NEG_INFINITY, |i| self.nominal(i) + warmup),
                    to.map_or(f64::INFINITY, |i| self.nominal(i)),
                )
            })
            .collect();
        let gpus = usize::try_from(row.instance.gpu).unwrap_or(0).min(MAX_GPUS);
        let id_hash = fnv(id);
        let first = (unix_now - reach).div_euclid(period) * period + period;
        let mut util = Vec::new();
        let mut mem = Vec::new();
        if row.gpu.load != GpuLoad::NoData {
            for device in 0..gpus {
                let (mut u_points, mut m_points) = (Vec::new(), Vec::new());
                for at in (first..=unix_now).step_by(usize::try_from(period).unwrap_or(1)) {
                    #[expect(clippy::cast_precision_loss, reason = "seconds far below 2^52")]
                    let t = (at - self.epoch) as f64;
                    if !spells.iter().any(|&(from, to)| from <= t && t < to) {
                        continue;
                    }
                    let die = |salt| unit(self.scenario.seed, id_hash, device, at, salt);
                    if die(SALT_DROP) < m.drop_sample {
                        continue;
                    }
                    let (u, v) = row.gpu.load.reading(t, die(SALT_UTIL), die(SALT_MEM));
                    u_points.push(json!({"Timestamp": at, "Value": hundredths(u)}));
                    m_points.push(json!({"Timestamp": at, "Value": hundredths(v)}));
                }
                let tags = json!({DEVICE_TAG: bus_id(device)});
                util.push(json!({"ResourceId": id, "TagMap": tags, "Values": u_points}));
                mem.push(json!({"ResourceId": id, "TagMap": tags, "Values": m_points}));
            }
        }
        json!([
            {"MetricKey": GPU_UTIL, "Results": util},
            {"MetricKey": GPU_MEMORY, "Results": mem},
        ])
    }
}

/// The PCI bus ID of GPU `n`, the shape `nvidia-smi` prints (`0000:01:00.0`).
pub(crate) fn bus_id(n: usize) -> String {
    format!("0000:{:02x}:00.0", n + 1)
}

/// Percent with two decimals, as monitoring APIs report.
fn hundredths(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// FNV-1a of an ID: a stable number per instance for the sample dice.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// splitmix64's finaliser: a well-mixed 64-bit hash of `x`.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A uniform draw in [0, 1) that depends only on its inputs: the same sample of the same seed
/// always has the same value and the same fate.
fn unit(seed: u64, id: u64, device: usize, at: i64, salt: u64) -> f64 {
    let device = u64::try_from(device).unwrap_or(u64::MAX);
    let h = mix(mix(mix(mix(seed ^ salt) ^ id) ^ device) ^ at.cast_unsigned());
    #[expect(clippy::cast_precision_loss, reason = "53 bits, exact in an f64")]
    let x = (h >> 11) as f64 / (1u64 << 53) as f64;
    x
}

/// A generated row's load: a mix like a shared GPU account's, with every profile the idle
/// rule must tell apart (nominal times spread over the first hours, where a sweep runs).
pub(super) fn generated_load(rng: &mut impl Rng) -> GpuLoad {
    let hours = |rng: &mut dyn rand::RngCore, h: f64| (rng.random::<f64>() * h * 3_600.0).round();
    match rng.random_range(0..20) {
        0..=6 => GpuLoad::Busy,
        7..=11 => GpuLoad::Idle,
        12..=14 => GpuLoad::Epochs {
            // 20-60 minutes of work, 5-40 minutes of pause.
            busy_secs: 1_200.0 + hours(rng, 2.0 / 3.0),
            pause_secs: 300.0 + hours(rng, 7.0 / 12.0),
            release_memory: rng.random_bool(0.5),
        },
        15..=16 => GpuLoad::IdleAfter { secs: hours(rng, 6.0) },
        17..=18 => GpuLoad::BusyAfter { secs: hours(rng, 6.0) },
        _ => GpuLoad::NoData,
    }
}
