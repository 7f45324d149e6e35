//! Seeded generation of realistic rows: GPU types, names, disks, states by weight, spot
//! instances, locks held by others and protected rows, all from one seed.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::ScenarioInstance;
use crate::api::State;

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
    /// Free-standing data disks (attached to no instance) to generate, from a stream of
    /// their own: the instance rows are the same with or without them.
    pub detached_disks: usize,
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
            detached_disks: 0,
        }
    }
}

/// Region/zone pairs seen on real CompShare accounts; generated rows are spread over them.
pub const DEFAULT_ZONES: [(&str, &str); 5] = [
    ("cn-wlcb", "cn-wlcb-01"),
    ("cn-sh2", "cn-sh2-02"),
    ("cn-bj2", "cn-bj2-02"),
    ("cn-gd", "cn-gd-02"),
    ("us-den", "us-den-01"),
];

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
pub(crate) const EPOCH_NOW: i64 = 1_785_542_400;

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
        #[expect(
            clippy::cast_precision_loss,
            reason = "counts and small integers far below 2^52 convert to f64 exactly"
        )]
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
    use crate::api::Instance;

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
}
