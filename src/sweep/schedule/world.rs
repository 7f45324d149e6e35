//! One scheduled-sweep world, drawn from its seed: the instances and their GPU load
//! profiles, what people do to them between runs (stop and start by hand, new instances,
//! keeps), the monitor's and the gateway's faults, and the job's settings; their data disks
//! are drawn by [`super::disks`].

use std::collections::BTreeMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::disks::DiskWorld;
use super::{EPOCH, HOUR, MINUTE, Options, PROTECTED_GLOB};
use crate::credentials::Account;
use crate::monitor::IdleRule;
use crate::selection::{self, Protections};
use crate::sim::{Faults, GpuLoad, Monitoring, Scenario, ScenarioInstance, SimHandle};

/// Something a person does between two runs, at unix time `at`.
#[derive(Debug, Clone)]
pub(crate) enum Deed {
    /// Stop (`false`) or start (`true`) an instance by hand.
    Power { id: String, running: bool },
    /// A new GPU instance appears, running.
    Insert { row: Box<ScenarioInstance> },
    /// `compshare-teardown keep ID --for ...`, written to the store as the command does (an
    /// instance's or a data disk's ID).
    Keep { id: String, until: i64 },
    /// Someone attaches a data disk to a running instance (it takes only if the disk is free).
    Attach { disk: String, host: String },
}

/// One seed's world.
pub(crate) struct World {
    pub sim: SimHandle,
    pub account: Account,
    pub rule: IdleRule,
    pub grace: i64,
    /// The instances of the world, inserted ones included: (GPUs, name).
    pub rows: BTreeMap<String, (i64, String)>,
    pub protections: Protections,
    /// (unix time, what), in time order.
    pub deeds: Vec<(i64, Deed)>,
    /// The end of the scheduled runs (unix seconds).
    pub end: i64,
    pub max_count: usize,
    /// Dice for the runs (kills, crashes, the inbox), apart from the world's so a change in
    /// how runs are disturbed leaves the world itself as it was.
    pub runs_rng: StdRng,
    /// The data disks, what people do to them, and whether the job watches them.
    pub disks: DiskWorld,
}

/// A rate of 0 in half the worlds, else uniform in `0..max`.
fn maybe(rng: &mut StdRng, max: f64) -> f64 {
    if rng.random_bool(0.5) {
        0.0
    } else {
        rng.random_range(0.0..max)
    }
}

fn load(rng: &mut StdRng, hours: i64) -> GpuLoad {
    let span = u32::try_from(hours * HOUR).unwrap_or(u32::MAX);
    let when = |rng: &mut StdRng| f64::from(rng.random_range(0..span));
    match rng.random_range(0..12) {
        0..=2 => GpuLoad::Busy,
        3..=5 => GpuLoad::Idle,
        6..=7 => GpuLoad::Epochs {
            // 20-60 minutes of work, 5-40 minutes of pause, as the simulator's generator.
            busy_secs: rng.random_range(1_200.0..3_600.0),
            pause_secs: rng.random_range(300.0..2_400.0),
            release_memory: rng.random_bool(0.5),
        },
        8 => GpuLoad::IdleAfter { secs: when(rng) },
        9 => GpuLoad::BusyAfter { secs: when(rng) },
        _ => GpuLoad::NoData,
    }
}

fn row(rng: &mut StdRng, i: usize, hours: i64, create_time: i64) -> ScenarioInstance {
    let id = format!("uhost-{i:04}");
    // One in eight a notebook: protected by the world's name glob.
    let name = if rng.random_bool(0.125) {
        format!("notebook-{i}")
    } else {
        format!("train-{i}")
    };
    let zone = ["cn-wlcb-01", "cn-wlcb-02"][rng.random_range(0..2)];
    let mut r: ScenarioInstance = serde_json::from_value(json!({
        "UHostId": id, "Name": name, "State": "Running", "Region": "cn-wlcb", "Zone": zone,
        "GPU": rng.random_range(1..=8), "CreateTime": create_time,
        "InstancePrice": rng.random_range(1.0..20.0),
    }))
    .expect("a valid row");
    r.gpu_load = Some(load(rng, hours));
    r
}

impl World {
    #[expect(
        clippy::too_many_lines,
        reason = "every die of a world in the order drawn: reordering them would change every seed"
    )]
    pub(crate) fn build(seed: u64, opts: Options) -> World {
        let mut rng = StdRng::seed_from_u64(seed ^ 0xa409_3822_299f_31d0);
        let (lo, hi) = (opts.hours.0.max(1), opts.hours.1.max(opts.hours.0.max(1)));
        let hours = i64::from(rng.random_range(lo..=hi));
        let end = EPOCH + hours * HOUR;
        let n = rng.random_range(5..=opts.max_instances.max(5));
        let mut instances = Vec::new();
        let mut deeds: Vec<(i64, Deed)> = Vec::new();
        let mut rows = BTreeMap::new();
        let mut disks = DiskWorld::new(seed);
        for i in 0..n {
            // One in six appears later, at a random time of the run.
            let later = rng.random_bool(1.0 / 6.0).then(|| rng.random_range(EPOCH..end));
            let created = later.unwrap_or_else(|| EPOCH - rng.random_range(HOUR..3 * 24 * HOUR));
            let mut r = row(&mut rng, i, hours, created);
            disks.give(&mut r);
            let id = r.row["UHostId"].as_str().unwrap_or_default().to_owned();
            let name = r.row["Name"].as_str().unwrap_or_default().to_owned();
            rows.insert(id.clone(), (r.row["GPU"].as_i64().unwrap_or(1), name));
            match later {
                Some(at) => deeds.push((at, Deed::Insert { row: Box::new(r) })),
                None => instances.push(r),
            }
            // Someone stops it by hand and starts it again later, 0-3 times.
            for _ in 0..rng.random_range(0..=3) {
                if rng.random_bool(0.5) {
                    continue;
                }
                let at = rng.random_range(EPOCH..end);
                let back = at + rng.random_range(MINUTE..6 * HOUR);
                deeds.push((
                    at,
                    Deed::Power {
                        id: id.clone(),
                        running: false,
                    },
                ));
                deeds.push((
                    back,
                    Deed::Power {
                        id: id.clone(),
                        running: true,
                    },
                ));
            }
            if rng.random_bool(0.15) {
                let at = rng.random_range(EPOCH..end);
                let until = at + rng.random_range(HOUR..12 * HOUR);
                deeds.push((at, Deed::Keep { id: id.clone(), until }));
            }
        }
        let free = disks.free();
        let hosts: Vec<String> = rows.keys().cloned().collect();
        deeds.extend(disks.deeds(&hosts, EPOCH, end));
        // Stable: the instances' deeds keep their order among themselves.
        deeds.sort_by_key(|(at, _)| *at);
        let faults = Faults {
            http_502: maybe(&mut rng, 0.03),
            http_503: maybe(&mut rng, 0.03),
            drop: maybe(&mut rng, 0.03),
            lost_response: maybe(&mut rng, 0.03),
            slow: maybe(&mut rng, 0.03),
            slow_secs: rng.random_range(1.0..20.0),
            throttle: maybe(&mut rng, 0.03),
            unavailable: maybe(&mut rng, 0.02),
            applied_then_502: maybe(&mut rng, 0.03),
            ..Faults::default()
        };
        // The API's sample period is unknown (compshare-api.md §8.1): a minute to five, each
        // well under the 20-minute gap the idle rule tolerates.
        let period = [60.0, 120.0, 180.0, 300.0][rng.random_range(0..4)];
        let monitor = Monitoring {
            period_secs: period,
            error: maybe(&mut rng, 0.2),
            drop_sample: maybe(&mut rng, 0.2),
            ..Monitoring::default()
        };
        let scenario = Scenario {
            seed,
            time_scale: 1.0,
            epoch: Some(EPOCH),
            faults,
            monitor,
            instances,
            disks: free,
            ..Scenario::default()
        };
        scenario.validate().expect("a sweep world is valid");
        let sim = SimHandle::new(scenario);
        let account = Account::new(&"http://sim.invalid".parse().expect("a URL"), None, &sim.public_key());
        // The default rule (2 h) in half the worlds, else a shorter window of 30 min to 2 h.
        let mut rule = IdleRule::default();
        if rng.random_bool(0.5) {
            rule.window = Duration::from_secs(rng.random_range(30..120) * 60);
        }
        let protections = Protections {
            protect_names: selection::globs(&[PROTECTED_GLOB.to_owned()]).expect("a valid glob"),
            ..Protections::default()
        };
        World {
            sim,
            account,
            rule,
            grace: rng.random_range(0..=2 * HOUR),
            rows,
            protections,
            deeds,
            end,
            max_count: if rng.random_bool(0.1) {
                rng.random_range(1..5)
            } else {
                40
            },
            runs_rng: StdRng::seed_from_u64(seed ^ 0x0801_f2e2_858e_fc16),
            disks,
        }
    }
}
