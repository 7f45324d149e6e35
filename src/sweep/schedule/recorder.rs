//! The simulator as the scheduled job sees it, with every monitor answer that reached the job
//! kept: the sweep's ground truth of what the job could have known.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::{Map, Value};

use crate::api::{Answer, ApiError, Transport, sign::Params};
use crate::monitor;
use crate::sim::SimHandle;

/// A GPU sample as the job received it: (instance, device, unix time) -> (util, mem).
pub(crate) type Served = BTreeMap<(String, String, i64), (f64, Option<f64>)>;

/// The simulator as the job sees it, keeping every monitor answer that reached the job (with
/// the IDs it asked for): the ground truth of "what the job could have known" for the window
/// checks. Answers are read only at the end, and only those about an instance acted on.
#[derive(Clone)]
pub(super) struct Recorder {
    pub(super) sim: SimHandle,
    pub(super) answers: Arc<Mutex<Vec<Kept>>>,
}

/// A monitor answer and the IDs its call asked for.
pub(super) type Kept = (Vec<String>, Answer);

impl Transport for Recorder {
    async fn call(&self, action: &str, params: Params) -> Result<Answer, ApiError> {
        self.sim.call(action, params).await
    }

    async fn call_json(&self, action: &str, body: Map<String, Value>) -> Result<Answer, ApiError> {
        let ids: Vec<String> = body["UHostIds"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        let answer = self.sim.call_json(action, body).await;
        if action == monitor::ACTION
            && let Ok(a) = &answer
        {
            self.answers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((ids, a.clone()));
        }
        answer
    }
}

/// The samples of `wanted` instances in the answers kept.
pub(super) fn served(answers: &[Kept], wanted: &std::collections::BTreeSet<String>) -> Served {
    let mut out = Served::new();
    for (_, a) in answers
        .iter()
        .filter(|(ids, _)| ids.iter().any(|id| wanted.contains(id)))
    {
        record(&a.value(), &mut out);
    }
    out
}

/// Read a monitor answer's samples (the shape of compshare-api.md §8.1) into `out`.
fn record(v: &Value, out: &mut Served) {
    let hosts = v["Data"]["List"].as_array().into_iter().flatten();
    for host in hosts {
        let Some(id) = host["UHostId"].as_str() else { continue };
        for metric in host["Metrics"].as_array().into_iter().flatten() {
            let is_util = metric["MetricKey"] == monitor::GPU_UTIL;
            for series in metric["Results"].as_array().into_iter().flatten() {
                let device = series["TagMap"][monitor::DEVICE_TAG].as_str().unwrap_or_default();
                for p in series["Values"].as_array().into_iter().flatten() {
                    let (Some(at), Some(value)) = (p["Timestamp"].as_i64(), p["Value"].as_f64()) else {
                        continue;
                    };
                    let e = out
                        .entry((id.to_owned(), device.to_owned(), at))
                        .or_insert((f64::NAN, None));
                    if is_util {
                        e.0 = value;
                    } else {
                        e.1 = Some(value);
                    }
                }
            }
        }
    }
}
