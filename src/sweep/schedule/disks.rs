//! The data disks of a scheduled-sweep world (issue 18): the disks each instance carries in
//! its `DiskSet`, the free-standing ones (some protected by name), what people do to them
//! (attach one to a running instance, keep one), whether the job watches them at all, and the
//! listing each run reads and judges as `watch --disks` does.
//!
//! Every die here comes from a stream of its own, so a seed's instances, people, faults and
//! job settings are drawn exactly as they were before worlds had disks.

use std::collections::BTreeMap;
use std::time::Duration;

use globset::GlobMatcher;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::recorder::Recorder;
use super::world::Deed;
use super::{HOUR, MINUTE};
use crate::api::{self, DiskRow, State};
use crate::schedule::Disks;
use crate::selection::{self, Verdict};
use crate::sim::{ScenarioDisk, ScenarioInstance, SimHandle};
use crate::workflow::disks::DiskSettings;

/// The protected disk name pattern of every world (the simulator marks those disks protected
/// too, so a Delete of one is a violation on both sides).
pub const PROTECTED_DISK_GLOB: &str = "scratch-keep-*";

/// A disk of the world.
#[derive(Debug, Clone)]
pub(crate) struct WorldDisk {
    pub name: String,
    /// The instance it starts attached to (in its `DiskSet`); empty for a free-standing disk.
    pub host: String,
    pub protected: bool,
}

/// One world's disks and the job's disk settings.
pub(crate) struct DiskWorld {
    /// Whether the job runs with `--disks` (three worlds in four).
    pub watch: bool,
    /// `--disk-detached-for`, seconds.
    pub detached_for: i64,
    pub rows: BTreeMap<String, WorldDisk>,
    pub protect: Vec<GlobMatcher>,
    rng: StdRng,
}

/// Sizes (GB) of the world's disks.
const SIZES: [i64; 4] = [100, 200, 500, 1000];

impl DiskWorld {
    pub(crate) fn new(seed: u64) -> DiskWorld {
        // An arbitrary constant decorrelates this stream from the world's others.
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5be0_cd19_137e_2179);
        let watch = rng.random_bool(0.75);
        // 30 minutes to 6 hours: several windows (and graces) fit in the CI test's 4-8 hours.
        let detached_for = rng.random_range(30..=360) * MINUTE;
        DiskWorld {
            watch,
            detached_for,
            rows: BTreeMap::new(),
            protect: selection::globs(&[PROTECTED_DISK_GLOB.to_owned()]).expect("a valid glob"),
            rng,
        }
    }

    pub(crate) fn protected(&self, name: &str) -> bool {
        self.protect.iter().any(|g| g.is_match(name))
    }

    /// 0-2 data disks in the `DiskSet` of instance `r` (with a boot disk when it has any).
    pub(crate) fn give(&mut self, r: &mut ScenarioInstance) {
        let n = self.rng.random_range(0..=2);
        if n == 0 {
            return;
        }
        let host = r.row["UHostId"].as_str().unwrap_or_default().to_owned();
        let tail = host.trim_start_matches("uhost-").to_owned();
        let mut set =
            vec![json!({"DiskId": format!("{host}-boot"), "DiskType": "CLOUD_SSD", "IsBoot": "True", "Size": 40})];
        for k in 1..=n {
            let id = format!("bsi-{tail}-{k}");
            let name = format!("data-{tail}-{k}");
            set.push(json!({
                "DiskId": id, "DiskType": "CLOUD_SSD", "IsBoot": "False", "Name": name,
                "Size": SIZES[self.rng.random_range(0..SIZES.len())],
            }));
            self.rows.insert(
                id,
                WorldDisk {
                    name,
                    host: host.clone(),
                    protected: false,
                },
            );
        }
        r.row.insert("DiskSet".into(), Value::Array(set));
    }

    /// 0-6 free-standing disks, one in six under the protected name pattern.
    pub(crate) fn free(&mut self) -> Vec<ScenarioDisk> {
        let rng = &mut self.rng;
        (0..rng.random_range(0..=6))
            .map(|n| {
                let protected = rng.random_bool(1.0 / 6.0);
                let d = ScenarioDisk {
                    disk_id: format!("bsi-free-{n}"),
                    name: if protected {
                        format!("scratch-keep-{n}")
                    } else {
                        format!("scratch-{n}")
                    },
                    size_gb: SIZES[rng.random_range(0..SIZES.len())],
                    zone: ["cn-wlcb-01", "cn-wlcb-02"][rng.random_range(0..2)].into(),
                    region: String::new(),
                    disk_type: "CLOUD_SSD".into(),
                    protected,
                };
                self.rows.insert(
                    d.disk_id.clone(),
                    WorldDisk {
                        name: d.name.clone(),
                        host: String::new(),
                        protected,
                    },
                );
                d
            })
            .collect()
    }

    /// What people do to the disks between `start` and `end`: a quarter of them are attached
    /// to a random instance at a random time (it takes only if the disk is free then and the
    /// instance running), 15% are kept for 1-12 hours at a random time.
    pub(crate) fn deeds(&mut self, hosts: &[String], start: i64, end: i64) -> Vec<(i64, Deed)> {
        let mut out = Vec::new();
        for id in self.rows.keys() {
            let rng = &mut self.rng;
            if !hosts.is_empty() && rng.random_bool(0.25) {
                let at = rng.random_range(start..end);
                let host = hosts[rng.random_range(0..hosts.len())].clone();
                out.push((at, Deed::Attach { disk: id.clone(), host }));
            }
            if rng.random_bool(0.15) {
                let at = rng.random_range(start..end);
                let until = at + rng.random_range(HOUR..12 * HOUR);
                out.push((at, Deed::Keep { id: id.clone(), until }));
            }
        }
        out
    }
}

/// A person attaches `disk` to `host` now, if `host` is running; whether it took (the
/// simulator attaches only a free disk), read back from the listing.
pub(crate) fn attach(sim: &SimHandle, disk: &str, host: &str) -> bool {
    let running = sim
        .snapshot()
        .instances
        .iter()
        .any(|v| v["UHostId"] == host && v["State"] == State::Running.as_str());
    if !running {
        return false;
    }
    sim.attach_disk(disk, host);
    rows(&sim.snapshot().disks)
        .iter()
        .any(|r| r.disk_id == disk && r.mount_instance == host)
}

/// The simulator's disk listing, read.
pub(crate) fn rows(disks: &[Value]) -> Vec<DiskRow> {
    disks
        .iter()
        .filter_map(|v| serde_json::from_value(v.clone()).ok())
        .collect()
}

/// The disk listing failed, retries included: the run does not happen (the command exits 4
/// before any change, as for the instance listing).
pub(super) struct ListingFailed;

/// The disks one run looks at, as `watch --disks` lists and judges them: every disk the
/// listing returns, a protected name refused, the name checked again on each disk's fresh row
/// right before its Delete. `None` when the world's job does not watch disks.
pub(super) async fn targets(cloud: &Recorder, d: &DiskWorld, seed: u64) -> Result<Option<Disks>, ListingFailed> {
    if !d.watch {
        return Ok(None);
    }
    let mut listed = None;
    for _ in 0..4 {
        if let Ok(rows) = api::describe_disks_all(cloud, None).await {
            listed = Some(rows);
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let rows = listed.ok_or(ListingFailed)?;
    let protect = d.protect.clone();
    let refuse = move |r: &DiskRow| {
        protect
            .iter()
            .any(|g| g.is_match(&r.name))
            .then(|| format!("name matches {PROTECTED_DISK_GLOB}"))
    };
    let rows = rows
        .into_iter()
        .map(|r| {
            let v = match refuse(&r) {
                Some(reason) => Verdict::Skip { reason },
                None => Verdict::Act,
            };
            (r, v)
        })
        .collect();
    Ok(Some(Disks {
        rows,
        detached_for: Duration::from_secs(d.detached_for.unsigned_abs()),
        settings: DiskSettings {
            jitter_seed: Some(seed),
            ..DiskSettings::default()
        },
        guard: Some(Box::new(refuse)),
    }))
}
