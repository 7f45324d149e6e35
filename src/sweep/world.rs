//! The random world of one seed: the simulated account (sizes, states, latencies, locks,
//! faults, interference), the selection handed to the engine (with IDs that exist nowhere,
//! exclusions, protections and "this machine"), the engine's settings and where the run is
//! killed. Everything comes from the seed, so a seed names one world exactly.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::api::Instance;
use crate::selection::{self, Protections};
use crate::sim::{Faults, Generate, Latency, LockConfig, LockHold, Scenario, SimHandle};
use crate::workflow::Settings;

use super::Options;

/// The largest world. Sizes are log-uniform in `1..=MAX_INSTANCES` (median about 17): most
/// worlds are small and fast, and one in five still has more than 100 instances, so paged
/// Describes and the 100-ID chunking are exercised.
pub const MAX_INSTANCES: usize = 300;

/// How long a segment may outlive its `--deadline` before it counts as hung: calls in flight
/// are let finish after the deadline, and the slowest simulated answer takes 30 s.
pub(crate) const DEADLINE_GRACE: Duration = Duration::from_secs(120);

/// One seed's world, ready to run.
pub(crate) struct World {
    pub sim: SimHandle,
    /// Rows at time zero.
    pub rows: Vec<Instance>,
    /// IDs handed to the engine, in order.
    pub ids: Vec<String>,
    /// Every ID the user named (`ids` plus the refused ones when they were filtered out first).
    pub selected: BTreeSet<String>,
    /// IDs the user named that must never see a mutating call (excluded, protected, self).
    pub refused: BTreeSet<String>,
    pub protections: Protections,
    pub settings: Settings,
    /// Virtual times, from each segment's start, at which the run is killed (kill -9) and
    /// resumed from its journal; one entry per kill.
    pub kills: Vec<Duration>,
    pub private_key: String,
    /// The selection is the whole account, read by a listing (as `run --all` does) rather
    /// than handed over as IDs: the listing must be complete, or the run must not start.
    pub lists: bool,
}

/// Sizes 1..=max, log-uniform.
fn log_size(rng: &mut StdRng, max: usize) -> usize {
    #[expect(clippy::cast_precision_loss, reason = "max is a few hundred")]
    let ln_max = (max as f64).ln();
    let x = (rng.random::<f64>() * ln_max).exp();
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "x is in 1..=max by construction"
    )]
    let n = x.floor() as usize;
    n.clamp(1, max)
}

/// A rate that is off half the time, else uniform in `0..=max`.
fn maybe(rng: &mut StdRng, max: f64) -> f64 {
    if rng.random_bool(0.5) {
        0.0
    } else {
        rng.random_range(0.0..=max)
    }
}

fn secs(rng: &mut StdRng, lo: u64, hi: u64) -> Duration {
    Duration::from_secs(rng.random_range(lo..=hi))
}

impl World {
    #[expect(
        clippy::too_many_lines,
        reason = "the order of the draws is what a seed means: one function keeps it in view"
    )]
    pub(crate) fn build(seed: u64, opts: Options) -> World {
        // The world's own dice, apart from the simulator's (which the scenario seeds).
        let mut rng = StdRng::seed_from_u64(seed ^ 0x243f_6a88_85a3_08d3);
        let count = log_size(&mut rng, opts.max_instances.max(1));
        // Mostly Running and Stopped, and every other state a row can be found in: transient
        // ones settle, `Install Fail` is terminated directly, and the rest (Initializing,
        // Resizing, an unknown spelling) never settle, so the engine must time them out.
        let mix = [
            ("Running", rng.random_range(0.0..1.0)),
            ("Stopped", rng.random_range(0.0..1.0)),
            ("Stopping", rng.random_range(0.0..0.3)),
            ("Starting", rng.random_range(0.0..0.1)),
            ("Rebooting", rng.random_range(0.0..0.05)),
            ("Install Fail", rng.random_range(0.0..0.1)),
            ("Initializing", maybe(&mut rng, 0.03)),
            ("Resizing", maybe(&mut rng, 0.03)),
            ("Migrating", maybe(&mut rng, 0.03)),
        ]
        .into_iter()
        .map(|(s, w)| (s.to_owned(), w))
        .collect();
        let stop = rng.random_range(1.0..60.0);
        // Terminate latencies stay well under the engine's 60 s settle (30 s at most with
        // jitter): the settle is documented as "how long a deleting instance may stay
        // listed", and a world that breaks that assumption would make a re-sent Terminate
        // expected rather than a bug.
        // Disks draw from their own dice: every instance draw stays what it was.
        let mut dk = StdRng::seed_from_u64(seed ^ 0x4528_21e6_38d0_1377);
        let latency = Latency {
            stop_secs: stop,
            start_secs: rng.random_range(1.0..30.0),
            terminate_secs: rng.random_range(0.2..20.0),
            jitter: rng.random_range(0.0..0.5),
            detach_secs: dk.random_range(0.5..60.0),
            disk_delete_secs: dk.random_range(0.2..20.0),
        };
        let lock = LockConfig {
            ttl_secs: if rng.random_bool(0.5) {
                600.0
            } else {
                rng.random_range(30.0..600.0)
            },
            hold: if rng.random_bool(0.5) {
                LockHold::UntilComplete
            } else {
                LockHold::FullTtl
            },
            ..LockConfig::default()
        };
        let ec = opts.eventual_consistency;
        // The gateway behaviours of issue 14 come from their own dice, so every draw above
        // and below (and thus every world without them) stays what it was.
        let mut gw = StdRng::seed_from_u64(seed ^ 0x1319_8a2e_0370_7344);
        let faults = Faults {
            http_502: maybe(&mut rng, 0.1),
            http_503: maybe(&mut rng, 0.1),
            drop: maybe(&mut rng, 0.1),
            lost_response: maybe(&mut rng, 0.1),
            slow: maybe(&mut rng, 0.1),
            slow_secs: rng.random_range(1.0..30.0),
            throttle: maybe(&mut rng, 0.1),
            unavailable: maybe(&mut rng, 0.05),
            restart: maybe(&mut rng, 0.3),
            restart_after_secs: rng.random_range(1.0..60.0),
            vanish: maybe(&mut rng, 0.1),
            vanish_within_secs: rng.random_range(1.0..60.0),
            retcode_as_string: maybe(&mut rng, 0.5),
            null_lists: maybe(&mut rng, 0.5),
            // Drawn whether or not they are used, so turning them on changes nothing else.
            drop_row: Some(maybe(&mut rng, 0.1)).filter(|_| ec).unwrap_or(0.0),
            omit_total_count: Some(maybe(&mut rng, 0.3)).filter(|_| ec).unwrap_or(0.0),
            lagging_replica: Some(maybe(&mut gw, 0.5)).filter(|_| ec).unwrap_or(0.0),
            lagging_share: gw.random_range(0.01..=0.5),
            omit_region: maybe(&mut gw, 1.0),
            applied_then_502: maybe(&mut gw, 0.25),
            detach_shows_free: maybe(&mut dk, 1.0),
        };
        let rate_limit: u32 = if rng.random_bool(0.3) {
            rng.random_range(3..=50)
        } else {
            0
        };
        // 0 = a bucket as large as a second's worth.
        let rate_limit_burst = rng.random_range(0..=rate_limit);
        // A tenth of the limited worlds go down to the lowest limits seen: 0.5-2 requests a
        // second, with a bucket of 1-2.
        let low = rate_limit > 0 && gw.random_bool(0.1);
        let (rate_limit_per_sec, rate_limit_burst) = if low {
            (gw.random_range(0.5..=2.0), gw.random_range(1..=2))
        } else {
            (f64::from(rate_limit), rate_limit_burst)
        };
        let private_key = format!("sweep-secret-{seed:016x}-{:08x}", rng.random::<u32>());
        let scenario = Scenario {
            seed,
            time_scale: 1.0,
            public_key: format!("sweep-public-{seed}"),
            private_key: private_key.clone(),
            lock,
            latency,
            faults,
            rate_limit_per_sec,
            rate_limit_burst,
            generate: Some(Generate {
                count,
                mix,
                spot_fraction: maybe(&mut rng, 0.4),
                locked_fraction: maybe(&mut rng, 0.2),
                protected_fraction: 0.0,
                zones: Vec::new(),
                detached_disks: dk.random_range(0..=20),
            }),
            instances: Vec::new(),
            disks: Vec::new(),
            ..Scenario::default()
        };
        let sim = SimHandle::new(scenario);
        let rows: Vec<Instance> = sim
            .snapshot()
            .instances
            .into_iter()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect();

        // The selection: a random share of the account, a few IDs that exist nowhere.
        let share = rng.random_range(0.2..=1.0);
        let mut selected: Vec<String> = rows
            .iter()
            .filter(|_| rng.random_bool(share))
            .map(|r| r.uhost_id.clone())
            .collect();
        if selected.is_empty() {
            selected.push(rows[rng.random_range(0..rows.len())].uhost_id.clone());
        }
        let ghosts: BTreeSet<String> = (0..rng.random_range(0..=3))
            .map(|n| format!("uhost-gh{n}{:09x}", rng.random_range(0..0xf_ffff_ffffu64)))
            .collect();
        selected.extend(ghosts.iter().cloned());
        // Shuffle so ghosts and refused IDs are spread over Describe chunks.
        for i in (1..selected.len()).rev() {
            selected.swap(i, rng.random_range(0..=i));
        }

        // Protections: exclusions, a protected tag, a protected name pattern, this machine.
        let mut protections = Protections::default();
        for id in &selected {
            if rng.random_bool(0.05) {
                protections.exclude.insert(id.clone());
            }
        }
        if rng.random_bool(0.3) {
            protections.protect_tags.push("prod".into());
        }
        if rng.random_bool(0.2) {
            protections.protect_names = selection::globs(&["notebook-*".to_owned()]).unwrap_or_default();
        }
        if rng.random_bool(0.2) {
            let mine = &rows[rng.random_range(0..rows.len())];
            protections.own_addresses = mine
                .ip_set
                .iter()
                .filter_map(|ip| ip.ip.parse::<IpAddr>().ok())
                .collect();
        }
        let refused: BTreeSet<String> = selected
            .iter()
            .filter(|id| {
                protections.exclude.contains(*id)
                    || rows
                        .iter()
                        .find(|r| &r.uhost_id == *id)
                        .is_some_and(|r| protections.refuse(r).is_some())
            })
            .cloned()
            .collect();
        // Half the worlds leave refused IDs to the selection step (as a fresh `run` does);
        // the other half hand them to the engine, whose guard must refuse them (as a resumed
        // or planned run does).
        let ids: Vec<String> = if rng.random_bool(0.5) {
            selected.iter().filter(|id| !refused.contains(*id)).cloned().collect()
        } else {
            selected.clone()
        };

        let poll = secs(&mut rng, 1, 10);
        let concurrency = rng.random_range(1..=64);
        let rate = [0, 2, 5, 10, 20, 50][rng.random_range(0..6)];
        // A third of the worlds run the pace and poll defaults: defaults are what users run.
        let tuned = !rng.random_bool(1.0 / 3.0);
        let d = Settings::default();
        let settings = Settings {
            release_udisk: rng.random_bool(0.5),
            force_stop: rng.random_bool(0.7),
            concurrency: if tuned { concurrency } else { d.concurrency },
            rate: if tuned { rate } else { d.rate },
            poll_interval: if tuned { poll } else { d.poll_interval },
            lock_wait: secs(&mut rng, 60, 11 * 60),
            instance_timeout: secs(&mut rng, 5 * 60, 30 * 60),
            deadline: Some(secs(&mut rng, 5 * 60, 60 * 60)),
            max_restarts: rng.random_range(0..=3),
            jitter_seed: Some(seed),
            ..Settings::default()
        };
        // A third of the runs are killed, up to three times, somewhere in their first
        // minutes (most runs end within a few virtual minutes).
        let kills = if rng.random_bool(1.0 / 3.0) {
            (0..rng.random_range(1..=3))
                .map(|_| Duration::from_millis(rng.random_range(0..300_000)))
                .collect()
        } else {
            Vec::new()
        };
        // A fifth of the worlds select the whole account by a listing (`run --all`): every
        // row is selected, the protected ones refused, the rest handed over as the listing
        // reads them.
        let lists = gw.random_bool(0.2);
        let (ids, selected, refused) = if lists {
            let all: BTreeSet<String> = rows.iter().map(|r| r.uhost_id.clone()).collect();
            let refused: BTreeSet<String> = rows
                .iter()
                .filter(|r| protections.exclude.contains(&r.uhost_id) || protections.refuse(r).is_some())
                .map(|r| r.uhost_id.clone())
                .collect();
            let ids = all.iter().filter(|id| !refused.contains(*id)).cloned().collect();
            (ids, all, refused)
        } else {
            (ids, selected.into_iter().collect(), refused)
        };
        World {
            sim,
            rows,
            ids,
            selected,
            refused,
            protections,
            settings,
            kills,
            private_key,
            lists,
        }
    }
}
