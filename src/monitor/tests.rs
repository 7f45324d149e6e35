use std::sync::Mutex;

use serde_json::json;

use super::*;
use crate::api::Answer;
use crate::api::client::decode_envelope;
use crate::api::sign::Params;

/// A transport that records each JSON body and answers from a function of it.
struct Recorder<F> {
    bodies: Mutex<Vec<Map<String, Value>>>,
    answer: F,
}

impl<F: Fn(&Map<String, Value>) -> Value + Send + Sync> Transport for Recorder<F> {
    async fn call(&self, action: &str, _: Params) -> Result<Answer, ApiError> {
        panic!("{action} must go as a JSON body, not a form");
    }

    async fn call_json(&self, action: &str, body: Map<String, Value>) -> Result<Answer, ApiError> {
        let answer = (self.answer)(&body);
        self.bodies.lock().unwrap().push(body);
        decode_envelope(action, serde_json::to_vec(&answer).unwrap(), None)
    }
}

fn recorder<F: Fn(&Map<String, Value>) -> Value + Send + Sync>(answer: F) -> Recorder<F> {
    Recorder {
        bodies: Mutex::new(Vec::new()),
        answer,
    }
}

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("uhost-{i:02}")).collect()
}

fn asked(body: &Map<String, Value>) -> Vec<String> {
    body["UHostIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// One GPU's points: (time, utilisation, memory) as the wire has them.
type Points<'a> = &'a [(i64, Value, Value)];

/// A host with one util and one memory series per GPU.
fn host(id_key: &str, id: &str, gpus: &[(&str, Points<'_>)]) -> Value {
    let metric = |key: &str, pick: fn(&(i64, Value, Value)) -> Value| {
        json!({"MetricKey": key, "Results": gpus.iter().map(|(dev, points)| json!({
            "ResourceId": id, "TagMap": {"gpu_bus_id": dev},
            "Values": points.iter().map(|p| json!({"Timestamp": p.0, "Value": pick(p)})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>()})
    };
    json!({id_key: id, "Metrics": [
        metric(GPU_UTIL, |p| p.1.clone()),
        metric(GPU_MEMORY, |p| p.2.clone()),
        {"MetricKey": "uhost_cpu_used", "Results": [{"ResourceId": id, "Values": [{"Timestamp": 1, "Value": 99}]}]},
    ]})
}

#[tokio::test]
async fn ids_are_split_by_ten_sent_as_a_json_array_and_all_answered() {
    let t = recorder(|_| json!({"RetCode": 0, "Data": {"List": [], "PodList": []}}));
    let mut want = ids(25);
    // A repeated ID is asked for once.
    want.push("uhost-03".into());
    let got = gpu_samples(&t, "cn-wlcb", "cn-wlcb-01", &want).await.unwrap();
    let bodies = t.bodies.lock().unwrap().clone();
    let sizes: Vec<usize> = bodies.iter().map(|b| asked(b).len()).collect();
    assert_eq!(sizes, [10, 10, 5]);
    let sent: Vec<String> = bodies.iter().flat_map(asked).collect();
    assert_eq!(sent, ids(25));
    for b in &bodies {
        assert_eq!(b["Region"], "cn-wlcb");
        assert_eq!(b["Zone"], "cn-wlcb-01");
        assert_eq!(b.len(), 3, "only Region, Zone and UHostIds: {b:?}");
    }
    assert_eq!(got.len(), 25);
    assert!(got.values().all(Vec::is_empty));
}

#[tokio::test]
async fn vms_and_containers_are_read_with_memory_joined() {
    let t = recorder(|_| {
        json!({"RetCode": 0, "Data": {
            "List": [host("UHostId", "uhost-a", &[
                ("0000:02:00.0", &[(120, json!(3.5), json!(8))]),
                ("0000:01:00.0", &[(180, json!("1.25"), json!(null)), (120, json!(0), json!(4.0))]),
            ])],
            "PodList": [
                host("PodId", "cpod-b", &[("0000:01:00.0", &[(60, json!(97), json!(80))])]),
                {"PodId": "uhost-mem-only", "Metrics": [{"MetricKey": GPU_MEMORY, "Results": [
                    {"TagMap": {"gpu_bus_id": "d"}, "Values": [{"Timestamp": 60, "Value": 80}]}]}]},
            ],
        }})
    });
    let want = ["uhost-a", "cpod-b", "uhost-none", "uhost-mem-only"].map(String::from);
    let got = gpu_samples(&t, "r", "z", &want).await.unwrap();
    let s = |at, device: &str, util, mem| Sample {
        at,
        device: device.into(),
        util,
        mem,
    };
    assert_eq!(got["uhost-a"][0], s(120, "0000:01:00.0", 0.0, Some(4.0)));
    // A `null` memory value is unreadable, NaN, not absent.
    let late = &got["uhost-a"][1];
    assert_eq!((late.at, late.util), (180, 1.25));
    assert!(late.mem.is_some_and(f64::is_nan));
    assert_eq!(got["uhost-a"][2], s(120, "0000:02:00.0", 3.5, Some(8.0)));
    assert_eq!(got["uhost-a"].len(), 3, "the CPU series is not a GPU sample");
    assert_eq!(got["cpod-b"], [s(60, "0000:01:00.0", 97.0, Some(80.0))]);
    assert_eq!(got["uhost-none"], []);
    // A memory sample with no utilisation sample at its time is dropped.
    assert_eq!(got["uhost-mem-only"], []);
}

#[tokio::test]
async fn unreadable_values_are_nan_and_rows_not_asked_for_are_ignored() {
    let t = recorder(|_| {
        json!({"RetCode": 0, "Data": {"List": [
            host("UHostId", "uhost-a", &[("d", &[(1, json!("n/a"), json!(1)), (2, json!(null), json!("x"))])]),
            host("UHostId", "uhost-stranger", &[("d", &[(1, json!(50), json!(1))])]),
        ], "PodList": null}})
    });
    let got = gpu_samples(&t, "r", "z", &["uhost-a".to_owned()]).await.unwrap();
    assert_eq!(got.len(), 1);
    let a = &got["uhost-a"];
    assert!(a[0].util.is_nan() && a[0].mem == Some(1.0));
    assert!(a[1].util.is_nan() && a[1].mem.is_some_and(f64::is_nan));
}

#[tokio::test]
async fn duplicates_in_an_answer_keep_the_busier_value() {
    let t = recorder(|_| {
        json!({"RetCode": 0, "Data": {"List": [
            host("UHostId", "uhost-a", &[("d", &[(1, json!(2), json!(1)), (1, json!(60), json!(1))])]),
        ]}})
    });
    let got = gpu_samples(&t, "r", "z", &["uhost-a".to_owned()]).await.unwrap();
    assert_eq!(got["uhost-a"].len(), 1);
    assert!((got["uhost-a"][0].util - 60.0).abs() < f64::EPSILON);
}

#[tokio::test]
async fn an_unreadable_timestamp_or_a_refusal_fails_the_fetch() {
    let t = recorder(|_| {
        json!({"RetCode": 0, "Data": {"List": [
            host("UHostId", "uhost-a", &[("d", &[(1, json!(2), json!(1))])]),
        ]}})
    });
    // Patch the timestamp into garbage through the answer function instead.
    let bad = recorder(|_| {
        json!({"RetCode": 0, "Data": {"List": [{"UHostId": "uhost-a", "Metrics": [{"MetricKey": GPU_UTIL,
            "Results": [{"TagMap": {"gpu_bus_id": "d"}, "Values": [{"Timestamp": "soon", "Value": 1}]}]}]}]}})
    });
    assert!(gpu_samples(&t, "r", "z", &["uhost-a".to_owned()]).await.is_ok());
    assert!(matches!(
        gpu_samples(&bad, "r", "z", &["uhost-a".to_owned()]).await,
        Err(ApiError::Decode { .. })
    ));
    let refusing = recorder(|_| json!({"RetCode": 210, "Message": "Missing params [UHostIds]"}));
    let e = gpu_samples(&refusing, "r", "z", &ids(3)).await.unwrap_err();
    assert_eq!(e.code(), Some(210));
}
