//! Idleness from the API's own metrics: `GetCompShareInstanceMonitor` (a JSON body whose
//! `UHostIds` is a JSON array, at most 10 IDs a call) read into per-GPU [`Sample`]s, and the
//! pure rule that judges them ([`rule`]).

pub mod rule;

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::lenient;
use crate::api::{ApiError, Transport};

pub use rule::{IdleRule, Verdict, Why, judge};

/// The action.
pub const ACTION: &str = "GetCompShareInstanceMonitor";
/// IDs per call: compshare-cli never sends more, and what the gateway does with more is
/// unknown, so a larger set is split.
pub const MAX_IDS: usize = 10;
/// The metric key of GPU utilisation (percent), one series per GPU.
pub const GPU_UTIL: &str = "cloudwatch_gpu_util";
/// The metric key of GPU memory use (percent), one series per GPU.
pub const GPU_MEMORY: &str = "cloudwatch_gpu_memory_usage";
/// The `TagMap` key naming the GPU of a per-device series.
pub const DEVICE_TAG: &str = "gpu_bus_id";

/// One GPU's reading at one time.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Unix seconds.
    pub at: i64,
    /// The GPU (`gpu_bus_id`, e.g. `0000:01:00.0`); empty for a series that names none.
    pub device: String,
    /// GPU utilisation, percent. NaN when the answer's value was unreadable (the rule never
    /// reads that as idle).
    pub util: f64,
    /// GPU memory use, percent, when the answer had a memory sample at the same time.
    pub mem: Option<f64>,
}

/// Fetch GPU samples ([`GPU_UTIL`], [`GPU_MEMORY`]) for instances in one (region, zone): at
/// most [`MAX_IDS`] IDs per call (larger sets are split, one call after another), VMs read
/// from `List` and containers from `PodList`. Every ID asked for is in the result; an ID the
/// answer does not list, or lists without GPU series, maps to an empty `Vec`. A memory sample
/// joins the utilisation sample of the same GPU and time; one without a utilisation sample is
/// dropped (utilisation is what the rule needs; memory only adds a second threshold).
/// Each `Vec` is sorted by (device, time). A failed call fails the whole fetch: the caller
/// treats every instance as not known to be idle.
pub async fn gpu_samples<T: Transport>(
    t: &T,
    region: &str,
    zone: &str,
    ids: &[String],
) -> Result<HashMap<String, Vec<Sample>>, ApiError> {
    let mut unique: Vec<&String> = Vec::with_capacity(ids.len());
    let mut out: HashMap<String, Vec<Sample>> = HashMap::with_capacity(ids.len());
    for id in ids {
        if out.insert(id.clone(), Vec::new()).is_none() {
            unique.push(id);
        }
    }
    for chunk in unique.chunks(MAX_IDS) {
        let mut body = Map::new();
        body.insert("Region".into(), json!(region));
        body.insert("Zone".into(), json!(zone));
        body.insert("UHostIds".into(), json!(chunk));
        let answer: Answer = t.call_json(ACTION, body).await?.parse(ACTION)?;
        for host in answer.data.list.into_iter().chain(answer.data.pod_list) {
            let id = host.id();
            // Only the IDs of this call: a row for anything else is not ours to judge.
            if !chunk.iter().any(|c| **c == id) {
                continue;
            }
            if let Some(samples) = out.get_mut(&id) {
                samples.extend(host.samples()?);
            }
        }
    }
    for samples in out.values_mut() {
        samples.sort_by(|a, b| a.device.cmp(&b.device).then(a.at.cmp(&b.at)));
    }
    Ok(out)
}

/// The answer: `{"Data": {"List": [HOST], "PodList": [HOST]}}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Answer {
    #[serde(rename = "Data")]
    data: Data,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Data {
    #[serde(rename = "List", deserialize_with = "lenient::list")]
    list: Vec<Host>,
    #[serde(rename = "PodList", deserialize_with = "lenient::list")]
    pod_list: Vec<Host>,
}

/// A VM (`UHostId`) or a container (`PodId`) with its metrics.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Host {
    #[serde(rename = "UHostId", deserialize_with = "lenient::string")]
    uhost_id: String,
    #[serde(rename = "PodId", deserialize_with = "lenient::string")]
    pod_id: String,
    #[serde(rename = "Metrics", deserialize_with = "lenient::list")]
    metrics: Vec<Metric>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Metric {
    #[serde(rename = "MetricKey", deserialize_with = "lenient::string")]
    key: String,
    #[serde(rename = "Results", deserialize_with = "lenient::list")]
    results: Vec<Series>,
}

/// One device's series.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Series {
    #[serde(rename = "TagMap")]
    tags: Option<Map<String, Value>>,
    #[serde(rename = "Values", deserialize_with = "lenient::list")]
    values: Vec<Point>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Point {
    #[serde(rename = "Timestamp")]
    at: Value,
    #[serde(rename = "Value")]
    value: Value,
}

impl Host {
    fn id(&self) -> String {
        if self.uhost_id.is_empty() {
            self.pod_id.clone()
        } else {
            self.uhost_id.clone()
        }
    }

    /// The utilisation samples with the memory of the same (device, time) joined in. A point
    /// whose time cannot be read fails the answer: it cannot be placed in the window, and
    /// dropping it could drop the one busy sample there was.
    fn samples(&self) -> Result<Vec<Sample>, ApiError> {
        let mut util: BTreeMap<(String, i64), f64> = BTreeMap::new();
        let mut mem: BTreeMap<(String, i64), f64> = BTreeMap::new();
        for metric in &self.metrics {
            let into = match metric.key.as_str() {
                GPU_UTIL => &mut util,
                GPU_MEMORY => &mut mem,
                _ => continue,
            };
            for series in &metric.results {
                let device = series
                    .tags
                    .as_ref()
                    .and_then(|t| t.get(DEVICE_TAG))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                for point in &series.values {
                    let at = lenient::value_to_i64(&point.at).ok_or_else(|| ApiError::Decode {
                        action: ACTION.into(),
                        detail: format!("{}: a sample without a readable Timestamp: {}", self.id(), point.at),
                        request_id: None,
                    })?;
                    let value = percent(&point.value);
                    // Two values for one (device, time): the higher one, so a duplicate can
                    // only make the instance look busier.
                    into.entry((device.to_owned(), at))
                        .and_modify(|v| *v = worst(*v, value))
                        .or_insert(value);
                }
            }
        }
        Ok(util
            .into_iter()
            .map(|((device, at), util)| Sample {
                mem: mem.get(&(device.clone(), at)).copied(),
                at,
                device,
                util,
            })
            .collect())
    }
}

/// A percentage sent as a number or a numeric string; NaN for anything else (never 0, which
/// would read as idle).
fn percent(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        Value::String(s) => s.trim().parse().unwrap_or(f64::NAN),
        _ => f64::NAN,
    }
}

/// The busier of two readings of one sample; NaN (unreadable) wins, as it is never idle.
fn worst(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() { f64::NAN } else { a.max(b) }
}

#[cfg(test)]
mod tests;
