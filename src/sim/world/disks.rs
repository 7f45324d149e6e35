//! Data disks: the inventory (every instance's data disks from its `DiskSet`, attached to it,
//! plus free-standing disks from the scenario), their attach state, the detach a Terminate
//! without `ReleaseUDisk` starts, and `DescribeCompshareDisk` / `DeleteCompshareDisk` with
//! their rules and violations.
//!
//! Disks draw their random numbers from a stream of their own: a world without disk calls
//! behaves exactly as it did before disks existed. Their timed changes (a detach ending, a
//! deleted disk leaving the listing) are read lazily from the clock like the instances'.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use rand::Rng;
use rand::rngs::StdRng;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::{Dice, Params, Rejection, World, code, rule};
use crate::api::{DiskRow, Instance};
use crate::sim::ledger::{DeletedDisk, OrphanDisk};
use crate::sim::scenario::{DEFAULT_ZONES, ScenarioDisk, random_id, rng_for};

/// Where a disk is in its life.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Attached,
    /// Detaching until `until` (a Delete is answered 8434); listed as `Available` from
    /// `free_from` (at `until`, unless the view runs ahead: `faults.detach_shows_free`).
    Detaching {
        until: Instant,
        free_from: Instant,
    },
    Free,
    /// Deleted; listed as `Deleting` until `until`, then gone.
    Deleting {
        until: Instant,
    },
}

/// A delivered listing that showed a disk: what the client could know, and when.
#[derive(Debug, Clone, Copy)]
struct DiskLook {
    sent: Instant,
    answered: Instant,
    free: bool,
}

/// At most this many looks are kept per disk, as a bound for a long-running server. Looks
/// are dropped by age first (see [`World::describe_disks`]): every task's region listing
/// looks at every disk of the region, so a count alone would drop the look that licensed a
/// slow Delete still on its way.
const LOOKS_KEPT: usize = 1024;

#[derive(Debug, Clone)]
pub(super) struct SimDisk {
    row: DiskRow,
    /// The instance it is attached to, or was last attached to (empty: never attached).
    host: String,
    phase: Phase,
    protected: bool,
    looks: VecDeque<DiskLook>,
}

/// The disk inventory.
pub(super) struct Disks {
    map: BTreeMap<String, SimDisk>,
    /// The disks ever attached to each instance, in ID order (a superset, re-checked where
    /// read): an instance's Terminate finds its disks here, not by a scan of every disk.
    attached: HashMap<String, BTreeSet<String>>,
    /// Deleted by an accepted Delete (a second Delete is a violation).
    deleted: HashSet<String>,
    ledger: Vec<DeletedDisk>,
    rng: StdRng,
}

impl Disks {
    pub(super) fn new(seed: u64) -> Disks {
        Disks {
            map: BTreeMap::new(),
            attached: HashMap::new(),
            deleted: HashSet::new(),
            ledger: Vec::new(),
            // An arbitrary constant decorrelates the disks' stream from the world's others.
            rng: rng_for(seed ^ 0x2545_f491_4f6c_dd1d),
        }
    }
}

/// Sizes (GB) of generated free-standing disks.
const SIZES: [i64; 4] = [100, 200, 500, 1000];

impl World {
    /// Free-standing disks: the generated ones, then the scenario's.
    pub(super) fn add_free_disks(&mut self) {
        let count = self.scenario.generate.as_ref().map_or(0, |g| g.detached_disks);
        let zones: Vec<(String, String)> = match self.scenario.generate.as_ref().map(|g| &g.zones) {
            Some(z) if !z.is_empty() => z.clone(),
            _ => DEFAULT_ZONES
                .iter()
                .map(|(r, z)| ((*r).to_owned(), (*z).to_owned()))
                .collect(),
        };
        let mut made = Vec::with_capacity(count);
        for n in 0..count {
            let rng = &mut self.disks.rng;
            let (region, zone) = zones[rng.random_range(0..zones.len())].clone();
            made.push(ScenarioDisk {
                disk_id: format!("bsi-{}", random_id(rng)),
                name: format!("data-{n}"),
                size_gb: SIZES[rng.random_range(0..SIZES.len())],
                zone,
                region,
                disk_type: "CLOUD_SSD".into(),
                protected: false,
            });
        }
        made.extend(self.scenario.disks.iter().cloned());
        for d in made {
            let region = if d.region.is_empty() {
                crate::api::model::home_region("", &d.zone).to_owned()
            } else {
                d.region.clone()
            };
            self.regions.insert(region.clone());
            self.disks.map.insert(
                d.disk_id.clone(),
                SimDisk {
                    row: DiskRow {
                        disk_id: d.disk_id,
                        name: d.name,
                        size_gb: d.size_gb,
                        disk_type: d.disk_type,
                        zone: d.zone,
                        region,
                        ..DiskRow::default()
                    },
                    host: String::new(),
                    phase: Phase::Free,
                    protected: d.protected,
                    looks: VecDeque::new(),
                },
            );
        }
    }

    /// An instance's data disks join the inventory, attached to it.
    pub(super) fn add_instance_disks(&mut self, instance: &Instance) {
        for d in instance.data_disks() {
            self.disks.deleted.remove(&d.disk_id);
            let host = self.disks.attached.entry(instance.uhost_id.clone()).or_default();
            host.insert(d.disk_id.clone());
            self.disks.map.insert(
                d.disk_id.clone(),
                SimDisk {
                    row: DiskRow {
                        disk_id: d.disk_id.clone(),
                        name: d.name.clone(),
                        size_gb: d.size,
                        disk_type: d.disk_type.clone(),
                        zone: instance.zone.clone(),
                        region: instance.region.clone(),
                        ..DiskRow::default()
                    },
                    host: instance.uhost_id.clone(),
                    phase: Phase::Attached,
                    protected: false,
                    looks: VecDeque::new(),
                },
            );
        }
    }

    /// The instance `host` is going: its disks are released with it, or detached.
    pub(super) fn release_or_detach(&mut self, host: &str, release: bool, now: Instant) {
        let ids: Vec<String> = self
            .disks
            .attached
            .remove(host)
            .unwrap_or_default()
            .into_iter()
            .filter(|id| {
                self.disks
                    .map
                    .get(id)
                    .is_some_and(|d| d.host == host && d.phase == Phase::Attached)
            })
            .collect();
        for id in ids {
            if release {
                self.disks.map.remove(&id);
                continue;
            }
            let j = self.scenario.latency.jitter.clamp(0.0, 1.0);
            let factor = if j > 0.0 {
                1.0 + self.disks.rng.random_range(-j..=j)
            } else {
                1.0
            };
            let took = self.scaled(self.scenario.latency.detach_secs * factor);
            let early = self.disks.rng.random::<f64>() < self.scenario.faults.detach_shows_free;
            let until = now + took;
            let free_from = if early { now + took / 2 } else { until };
            if let Some(d) = self.disks.map.get_mut(&id) {
                d.phase = Phase::Detaching { until, free_from };
            }
        }
    }

    /// Someone attaches a free disk to an instance (interference, for tests).
    pub(crate) fn attach_disk(&mut self, disk_id: &str, host: &str, now: Instant) {
        self.settle_disks(now);
        if let Some(d) = self.disks.map.get_mut(disk_id)
            && d.phase == Phase::Free
        {
            d.phase = Phase::Attached;
            host.clone_into(&mut d.host);
            let attached = self.disks.attached.entry(host.to_owned()).or_default();
            attached.insert(disk_id.to_owned());
        }
    }

    /// Detaches that ended become free; deleted disks whose time came leave the listing.
    fn settle_disks(&mut self, now: Instant) {
        self.disks
            .map
            .retain(|_, d| !matches!(d.phase, Phase::Deleting { until } if until <= now));
        for d in self.disks.map.values_mut() {
            if let Phase::Detaching { until, .. } = d.phase
                && until <= now
            {
                d.phase = Phase::Free;
            }
        }
    }

    /// A disk as the listing shows it at `now`.
    fn disk_json(d: &SimDisk, now: Instant) -> (Value, bool) {
        let (status, mount) = match d.phase {
            Phase::Attached => ("InUse", d.host.as_str()),
            Phase::Detaching { free_from, .. } if now < free_from => ("Detaching", d.host.as_str()),
            Phase::Detaching { .. } | Phase::Free => ("Available", ""),
            Phase::Deleting { .. } => ("Deleting", ""),
        };
        let mut row = d.row.clone();
        status.clone_into(&mut row.status);
        mount.clone_into(&mut row.mount_instance);
        let free = row.is_free();
        (serde_json::to_value(row).unwrap_or_default(), free)
    }

    /// `DescribeCompshareDisk`: optional `Region`, `HostId`, `Limit`/`Offset` (without
    /// `Limit`, every row: compshare-cli sends none).
    pub(super) fn describe_disks(
        &mut self,
        p: &Params,
        plan: &Dice,
        (sent, now): (Instant, Instant),
    ) -> Result<Map<String, Value>, Rejection> {
        self.settle_disks(now);
        let bad = |k: &str| (code::BAD_PARAM, format!("Params [{k}] not available"));
        let region = p.get("Region").filter(|r| !r.is_empty());
        if region.is_some_and(|r| !self.regions.contains(r)) {
            return Err(bad("Region"));
        }
        let host = p.get("HostId").filter(|h| !h.is_empty());
        let limit = match p.get("Limit") {
            None => usize::MAX,
            Some(v) => match v.parse::<usize>() {
                Ok(0) => usize::MAX,
                Ok(n) if n <= 1000 => n,
                _ => return Err(bad("Limit")),
            },
        };
        let offset = match p.get("Offset") {
            None => 0,
            Some(v) => v.parse::<usize>().map_err(|_| bad("Offset"))?,
        };
        let matches: Vec<String> = self
            .disks
            .map
            .iter()
            .filter(|(_, d)| region.is_none_or(|r| *r == d.row.region))
            .filter(|(_, d)| host.is_none_or(|h| d.phase == Phase::Attached && *h == d.host))
            .map(|(id, _)| id.clone())
            .collect();
        // A call is processed at most one slow delay after it was sent: a look answered
        // earlier than that can only matter as the latest one before it.
        let horizon = now
            .checked_sub(self.scaled(self.scenario.faults.slow_nominal()))
            .unwrap_or(self.start);
        let mut listed = Vec::new();
        for id in matches.iter().skip(offset).take(limit) {
            let Some(d) = self.disks.map.get_mut(id) else { continue };
            let (json_row, free) = World::disk_json(d, now);
            listed.push(json_row);
            // A look counts only if the client receives it.
            if !plan.lost_response {
                while d.looks.len() >= 2 && d.looks[1].answered < horizon {
                    d.looks.pop_front();
                }
                if d.looks.len() == LOOKS_KEPT {
                    d.looks.pop_front();
                }
                d.looks.push_back(DiskLook {
                    sent,
                    answered: now,
                    free,
                });
            }
        }
        let mut out = Map::new();
        out.insert("TotalCount".into(), json!(matches.len()));
        out.insert(
            "DiskSet".into(),
            if listed.is_empty() && plan.null_lists {
                Value::Null
            } else {
                Value::Array(listed)
            },
        );
        Ok(out)
    }

    /// Whether the freshest listing the client had received when it sent a call at `sent`
    /// showed the disk free.
    fn looked_free(d: &SimDisk, sent: Instant) -> bool {
        d.looks
            .iter()
            .filter(|l| l.answered <= sent)
            .max_by_key(|l| l.sent)
            .is_some_and(|l| l.free)
    }

    /// `DeleteCompshareDisk`: `Region`, `Zone`, `UDiskId`.
    pub(super) fn delete_disk(
        &mut self,
        p: &Params,
        (sent, now): (Instant, Instant),
    ) -> Result<Map<String, Value>, Rejection> {
        self.settle_disks(now);
        let name = p.get("Action").cloned().unwrap_or_default();
        for key in ["Region", "Zone", "UDiskId"] {
            if p.get(key).is_none_or(String::is_empty) {
                return Err((code::MISSING_PARAM, format!("Missing params [{key}]")));
            }
        }
        let (region, zone, id) = (&p["Region"], &p["Zone"], p["UDiskId"].clone());
        if !self.regions.contains(region) {
            return Err((code::BAD_PARAM, "Params [Region] not available".into()));
        }
        let not_found = || (code::NOT_FOUND, format!("UDisk not found: {id}"));
        let Some(d) = self.disks.map.get(&id) else {
            if self.disks.deleted.contains(&id) {
                self.violate(
                    now,
                    &id,
                    &name,
                    rule::DISK_DELETE_RESENT,
                    "the disk was already deleted".into(),
                );
            }
            return Err(not_found());
        };
        let (phase, protected, seen_free) = (d.phase, d.protected, World::looked_free(d, sent));
        let misplaced = d.row.region != *region || d.row.zone != *zone;
        if protected {
            self.violate(
                now,
                &id,
                &name,
                rule::PROTECTED,
                "the scenario protects this disk".into(),
            );
        }
        if let Phase::Deleting { .. } = phase {
            self.violate(
                now,
                &id,
                &name,
                rule::DISK_DELETE_RESENT,
                "a Delete was already applied".into(),
            );
        } else if !seen_free {
            self.violate(
                now,
                &id,
                &name,
                rule::DISK_DELETE_UNLOOKED,
                "the freshest listing the client had did not show the disk free".into(),
            );
        } else if phase == Phase::Attached {
            self.violate(
                now,
                &id,
                &name,
                rule::DISK_ATTACH_RACED,
                "attached after the client's look".into(),
            );
        }
        if misplaced {
            return Err(not_found());
        }
        match phase {
            Phase::Attached => Err((code::BAD_STATE, format!("disk {id} is attached; detach it first"))),
            Phase::Detaching { .. } => Err((crate::api::disk::STILL_DETACHING, "the disk is still detaching".into())),
            Phase::Deleting { .. } => Err((code::BAD_STATE, format!("disk {id} is being deleted"))),
            Phase::Free => {
                let j = self.scenario.latency.jitter.clamp(0.0, 1.0);
                let factor = if j > 0.0 {
                    1.0 + self.disks.rng.random_range(-j..=j)
                } else {
                    1.0
                };
                let until = now + self.scaled(self.scenario.latency.disk_delete_secs * factor);
                let at_secs = self.secs(now);
                if let Some(d) = self.disks.map.get_mut(&id) {
                    d.phase = Phase::Deleting { until };
                }
                self.disks.deleted.insert(id.clone());
                self.disks.ledger.push(DeletedDisk { disk_id: id, at_secs });
                Ok(Map::new())
            }
        }
    }

    /// The disks for the snapshot: listed rows, orphans (existing, attached to nothing, not
    /// being deleted), and the accepted Deletes.
    pub(super) fn disk_snapshot(&mut self, now: Instant) -> (Vec<Value>, Vec<OrphanDisk>, Vec<DeletedDisk>) {
        self.settle_disks(now);
        let rows = self.disks.map.values().map(|d| World::disk_json(d, now).0).collect();
        let orphans = self
            .disks
            .map
            .values()
            .filter(|d| matches!(d.phase, Phase::Free | Phase::Detaching { .. }))
            .map(|d| OrphanDisk {
                disk_id: d.row.disk_id.clone(),
                from_uhost_id: d.host.clone(),
                size: d.row.size_gb,
            })
            .collect();
        (rows, orphans, self.disks.ledger.clone())
    }
}
