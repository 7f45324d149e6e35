//! The simulator over real HTTP, driven by the crate's own signed client (and raw reqwest for
//! GET, JSON and the state endpoint). Real time with a tiny time scale keeps it fast.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use compshare_teardown::api::sign::{Params, sign_in_place};
use compshare_teardown::api::{
    ApiError, Client, ClientConfig, Cloud, Instance, LockCodes, RetryClass, State, Target, TransportKind, classify,
    describe_all, describe_ids,
};
use compshare_teardown::credentials::{Credentials, PrivateKey};
use compshare_teardown::sim::json_mode::signature as json_signature;

/// Every instance, with the API error (not the listing's) when the first read fails.
async fn all(c: &impl Cloud) -> Result<Vec<Instance>, ApiError> {
    describe_all(c, None, None).await.map_err(|e| match e {
        compshare_teardown::api::ListingError::Api(e) => e,
        other @ compshare_teardown::api::ListingError::Incomplete(_) => panic!("{other}"),
    })
}
use compshare_teardown::sim::{Faults, Scenario, Server, SimHandle, SimState, rule};
use serde_json::{Value, json};

/// Time scale for HTTP tests: a 3 s stop takes 3 ms, the 10-minute lock 0.6 s.
const SCALE: f64 = 0.001;

fn server(scenario: Scenario) -> Server {
    Server::start(SimHandle::new(scenario), "127.0.0.1:0".parse().unwrap()).unwrap()
}

fn scenario(count: usize) -> Scenario {
    Scenario {
        time_scale: SCALE,
        ..Scenario::generated(count, 42)
    }
}

fn client_with(server: &Server, private: &str) -> Client {
    let mut config = ClientConfig::new(
        server.url.clone(),
        Credentials {
            public_key: server.handle.public_key(),
            private_key: PrivateKey::new(private),
            source: "test".into(),
        },
    );
    // Short, so that a dropped connection can never hang a test.
    config.timeout = Duration::from_secs(5);
    Client::new(config).unwrap()
}

fn client(server: &Server) -> Client {
    client_with(server, server.handle.private_key().expose())
}

fn target_in(server: &Server, state: &State) -> Target {
    let snap = server.handle.snapshot();
    let row = snap
        .instances
        .iter()
        .find(|r| r["State"] == state.as_str())
        .expect("a row in that state");
    Target {
        uhost_id: row["UHostId"].as_str().unwrap().into(),
        region: row["Region"].as_str().unwrap().into(),
        zone: row["Zone"].as_str().unwrap().into(),
    }
}

async fn wait_for(client: &Client, id: &str, want: Option<State>) {
    for _ in 0..200 {
        let got = describe_ids(client, &[id.to_owned()])
            .await
            .unwrap()
            .first()
            .map(|i| i.state.clone());
        if got == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{id} never reached {want:?}");
}

#[tokio::test]
async fn paging_and_chunking() {
    let server = server(scenario(250));
    let c = client(&server);
    let all = describe_all(&c, None, None).await.unwrap();
    assert_eq!(all.len(), 250);
    let ids: Vec<String> = all.iter().map(|i| i.uhost_id.clone()).collect();
    let mut wanted: Vec<String> = ids.iter().take(229).cloned().collect();
    wanted.push("uhost-000000000000".into());
    assert_eq!(describe_ids(&c, &wanted).await.unwrap().len(), 229);
    let calls = server.handle.snapshot().calls;
    assert_eq!(
        calls.len(),
        3 + 3 + 2,
        "3 pages of 100 + 3 chunks of at most 100 IDs + the one unknown ID asked about twice more"
    );
    assert!(calls.iter().all(|c| c.ret_code == Some(0) && c.http_status == 200));
}

#[tokio::test]
async fn stop_then_terminate_and_early_terminate_is_refused() {
    // A stop long enough (0.5 s here) that the early Terminate surely lands while Stopping,
    // even on a loaded machine.
    let mut s = scenario(20);
    s.latency.stop_secs = 500.0;
    let server = server(s);
    let c = client(&server);
    let t = target_in(&server, &State::Running);
    c.stop(&t, false).await.unwrap();
    let e = c.terminate(&t, true).await.unwrap_err();
    assert!(matches!(e, ApiError::RetCode { .. }), "{e}");
    let violations = server.handle.snapshot().violations;
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].rule, rule::TERMINATE_NOT_STOPPED);
    assert_eq!(violations[0].uhost_id, t.uhost_id);
    wait_for(&c, &t.uhost_id, Some(State::Stopped)).await;
    let ack = c.terminate(&t, true).await.unwrap();
    assert_eq!(ack.in_recycle, "Yes");
    wait_for(&c, &t.uhost_id, None).await;
    let snap = server.handle.snapshot();
    assert!(
        snap.terminated
            .iter()
            .any(|x| x.uhost_id == t.uhost_id && x.release_udisk)
    );
    assert_eq!(snap.violations.len(), 1);
}

#[tokio::test]
async fn lock_error_is_classified_locked() {
    let server = server(scenario(20));
    let c = client(&server);
    let t = target_in(&server, &State::Running);
    server.handle.hold_lock(&t.uhost_id, Duration::from_secs(30));
    let e = c.stop(&t, false).await.unwrap_err();
    assert_eq!(e.code(), Some(8903));
    assert!(e.to_string().contains("InstanceOperationInProgress"), "{e}");
    assert!(e.request_id().is_some_and(|id| id.len() == 36));
    assert_eq!(classify(&e, &LockCodes::default()), RetryClass::Locked);
}

#[tokio::test]
async fn rate_limit_answers_153() {
    let mut s = scenario(5);
    s.rate_limit_per_sec = 2.0;
    let server = server(s);
    let c = client(&server);
    // Back to back at 2 a second: refused within a few calls (not a fixed count: the bucket
    // refills in real time, and a loaded machine may pause between two of them).
    let mut codes = Vec::new();
    let mut refused = None;
    for _ in 0..10 {
        match all(&c).await {
            Err(e) if e.code() == Some(153) => {
                refused = Some(e);
                break;
            }
            other => codes.push(other.err().and_then(|e| e.code())),
        }
    }
    let e = refused.unwrap_or_else(|| panic!("never throttled: {codes:?}"));
    assert_eq!(classify(&e, &LockCodes::default()), RetryClass::Throttled);
    assert!(e.to_string().contains("API request throttled"));
}

#[tokio::test]
async fn proxy_errors_and_quirky_answers() {
    let server = server(scenario(5));
    let c = client(&server);
    server.handle.set_faults(Faults {
        http_502: 1.0,
        ..Faults::default()
    });
    match all(&c).await.unwrap_err() {
        ApiError::Http { status, snippet, .. } => {
            assert_eq!(status, 502);
            assert!(snippet.contains("Bad Gateway"), "{snippet}");
        }
        other => panic!("{other}"),
    }
    server.handle.set_faults(Faults {
        http_503: 1.0,
        ..Faults::default()
    });
    assert!(matches!(all(&c).await, Err(ApiError::Http { status: 503, .. })));
    server.handle.set_faults(Faults {
        retcode_as_string: 1.0,
        null_lists: 1.0,
        ..Faults::default()
    });
    assert_eq!(all(&c).await.unwrap().len(), 5);
    assert!(describe_ids(&c, &["uhost-none".into()]).await.unwrap().is_empty());
    // The raw body really carries the quirks.
    let body = raw_form(
        &server,
        &[("Action", "DescribeCompShareInstance"), ("UHostIds.0", "uhost-none")],
    )
    .await;
    assert_eq!(body["RetCode"], json!("0"));
    assert_eq!(body["UHostSet"], Value::Null);
}

#[tokio::test]
async fn dropped_and_lost_answers_close_the_connection() {
    let server = server(scenario(20));
    let c = client(&server);
    let t = target_in(&server, &State::Running);
    server.handle.set_faults(Faults {
        drop: 1.0,
        ..Faults::default()
    });
    let e = c.stop(&t, false).await.unwrap_err();
    assert!(matches!(e, ApiError::Transport { .. }), "{e}");
    assert_eq!(classify(&e, &LockCodes::default()), RetryClass::Ambiguous);
    server.handle.set_faults(Faults::default());
    wait_for(&c, &t.uhost_id, Some(State::Running)).await;
    server.handle.set_faults(Faults {
        lost_response: 1.0,
        ..Faults::default()
    });
    let e = c.stop(&t, false).await.unwrap_err();
    assert!(
        matches!(
            e,
            ApiError::Transport {
                kind: TransportKind::Closed,
                ..
            }
        ),
        "{e}"
    );
    server.handle.set_faults(Faults::default());
    let row = &describe_ids(&c, std::slice::from_ref(&t.uhost_id)).await.unwrap()[0];
    assert!(
        matches!(row.state, State::Stopping | State::Stopped),
        "the lost call was applied"
    );
}

#[tokio::test]
async fn wrong_private_key_is_171() {
    let server = server(scenario(3));
    let e = all(&client_with(&server, "not-the-key")).await.unwrap_err();
    assert_eq!(e.code(), Some(171));
    assert!(e.to_string().contains("Signature VerifyAC Error"));
}

fn pairs(p: &[(&str, &str)]) -> Params {
    p.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// The server URL with `p` as its query string (reqwest's `query` needs a feature we lack).
fn with_query(server: &Server, p: &Params) -> url::Url {
    let mut url = server.url.clone();
    url.query_pairs_mut().extend_pairs(p.iter());
    url
}

/// POST a signed form with reqwest, returning the JSON body.
/// Send a request and decode its JSON body.
async fn json_of(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

async fn raw_form(server: &Server, pairs: &[(&str, &str)]) -> Value {
    let mut p: Params = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    sign_in_place(&mut p, &server.handle.public_key(), &server.handle.private_key());
    json_of(reqwest::Client::new().post(server.url.clone()).form(&p)).await
}

#[tokio::test]
async fn get_query_and_json_post_are_accepted_and_unsigned_ones_refused() {
    let server = server(scenario(7));
    let http = reqwest::Client::new();
    let mut p = Params::new();
    p.insert("Action".into(), "DescribeCompShareInstance".into());
    p.insert("Limit".into(), "5".into());
    p.insert("SomethingUnknown".into(), "ignored".into());
    sign_in_place(&mut p, &server.handle.public_key(), &server.handle.private_key());
    let resp = http.get(with_query(&server, &p)).send().await.unwrap();
    assert!(resp.headers().contains_key("x-ucloud-request-uuid"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["Action"], "DescribeCompShareInstanceResponse");
    assert_eq!(body["RetCode"], 0);
    assert_eq!(body["UHostSet"].as_array().unwrap().len(), 5);
    assert_eq!(body["TotalCount"], 7);

    // JSON mode: an array signed without indices.
    let ids: Vec<String> = server.handle.ids().into_iter().take(2).collect();
    let mut object = serde_json::Map::new();
    object.insert("Action".into(), json!("DescribeCompShareInstance"));
    object.insert("UHostIds".into(), json!(ids));
    object.insert("Limit".into(), json!(10.0));
    object.insert("PublicKey".into(), json!(server.handle.public_key()));
    let sig = json_signature(&object, &server.handle.private_key());
    object.insert("Signature".into(), json!(sig));
    let body: Value = json_of(http.post(server.url.clone()).json(&object)).await;
    assert_eq!(body["RetCode"], 0, "{body}");
    assert_eq!(body["TotalCount"], 2);

    let codes = |b: &Value| (b["RetCode"].as_i64(), b["Message"].as_str().map(str::to_owned));
    let b: Value = json_of(http.get(with_query(&server, &pairs(&[("Action", "DescribeCompShareInstance")])))).await;
    assert_eq!(codes(&b), (Some(170), Some("Missing signature".into())));
    let b: Value = json_of(http.get(with_query(
        &server,
        &pairs(&[
            ("Action", "DescribeCompShareInstance"),
            ("PublicKey", "who"),
            ("Signature", "x"),
        ]),
    )))
    .await;
    assert_eq!(codes(&b), (Some(172), Some("User Not Exists".into())));
    assert_eq!(raw_form(&server, &[("Limit", "1")]).await["RetCode"], 160);
    assert_eq!(
        raw_form(&server, &[("Action", "PoweronCompShareInstance")]).await["RetCode"],
        161
    );
    let missing = raw_form(
        &server,
        &[
            ("Action", "StartCompShareInstance"),
            ("Region", "cn-wlcb"),
            ("Zone", "cn-wlcb-01"),
        ],
    )
    .await;
    assert_eq!(missing["RetCode"], 210);
    assert!(missing["Message"].as_str().unwrap().contains("[UHostId]"));

    let state: SimState = http
        .get(server.url.join("_sim/state").unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state.instances.len(), 7);
    let actions: BTreeMap<String, usize> = state.calls.iter().fold(BTreeMap::new(), |mut m, c| {
        *m.entry(c.action.clone()).or_default() += 1;
        m
    });
    assert_eq!(actions["DescribeCompShareInstance"], 4);
}

/// What the official Python SDK (`ucloud-sdk-python3`) puts on the wire: a form POST whose fields
/// come in its dict order (config `Region` and `ProjectId` first, then the call's own, then
/// `PublicKey`, `Signature`), with an unset-but-empty `ProjectId` kept and signed as
/// `ProjectId` + "". The signature is computed here the way its `verify_ac` does (keys sorted by
/// Python's `str` order, which for UTF-8 is byte order), independently of the crate's signer.
async fn python_sdk_call(server: &Server, private: &str, call: &[(&str, &str)]) -> Value {
    let public = server.handle.public_key();
    let mut fields: Vec<(String, String)> = [("Region", "cn-wlcb"), ("ProjectId", "")]
        .iter()
        .chain(call)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        // The call's own Region overrides the config's, in place, as a Python dict update does.
        .fold(Vec::new(), |mut out, (k, v)| {
            match out.iter_mut().find(|(key, _)| *key == k) {
                Some(slot) => slot.1 = v,
                None => out.push((k, v)),
            }
            out
        });
    fields.push(("PublicKey".into(), public));
    let signature = python_verify_ac(&fields, private);
    fields.push(("Signature".into(), signature));
    json_of(
        reqwest::Client::new()
            .post(server.url.clone())
            .header("U-Timestamp-Ms", "1700000000000")
            .form(&fields),
    )
    .await
}

/// The Python SDK's `verify_ac`: SHA-1 over every key + value sorted by key, then the private key.
fn python_verify_ac(fields: &[(String, String)], private: &str) -> String {
    let mut sorted = fields.to_vec();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut text: String = sorted.iter().flat_map(|(k, v)| [k.as_str(), v.as_str()]).collect();
    text.push_str(private);
    let digest = <sha1::Sha1 as sha1::Digest>::digest(text.as_bytes());
    digest.iter().fold(String::new(), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    })
}

#[test]
fn python_verify_ac_matches_a_body_the_sdk_built() {
    // Captured from ucloud-sdk-python3 0.11.150 (`Client._build_http_request`) with the
    // simulator's default keys and `project_id: ""`.
    let body: Vec<(String, String)> = [
        ("Region", "cn-wlcb"),
        ("ProjectId", ""),
        ("Action", "DescribeCompShareInstance"),
        ("Limit", "100"),
        ("UHostIds.0", "uhost-g2vx8qgxadqa"),
        ("PublicKey", "sim-public-key"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    assert_eq!(
        python_verify_ac(&body, "sim-private-key"),
        "739ca9137e236aa363c09c6897c6228af9192750"
    );
}

#[tokio::test]
async fn python_sdk_request_shape_is_accepted() {
    let server = server(scenario(20));
    let private = server.handle.private_key().expose().to_owned();
    let t = target_in(&server, &State::Running);
    let (region, zone, id) = (t.region.as_str(), t.zone.as_str(), t.uhost_id.as_str());

    let all = python_sdk_call(
        &server,
        &private,
        &[("Action", "DescribeCompShareInstance"), ("Limit", "100")],
    )
    .await;
    assert_eq!(all["RetCode"], 0, "{all}");
    let one = python_sdk_call(
        &server,
        &private,
        &[
            ("Action", "DescribeCompShareInstance"),
            ("Region", region),
            ("Limit", "100"),
            ("UHostIds.0", id),
        ],
    )
    .await;
    assert_eq!(
        (one["RetCode"].as_i64(), one["TotalCount"].as_i64()),
        (Some(0), Some(1)),
        "{one}"
    );

    let lifecycle = |action: &'static str, release: Option<&'static str>| {
        let mut call = vec![("Action", action), ("Region", region), ("Zone", zone), ("UHostId", id)];
        call.extend(release.map(|r| ("ReleaseUDisk", r)));
        let private = private.clone();
        let server = &server;
        async move { python_sdk_call(server, &private, &call).await }
    };
    let stop = lifecycle("StopCompShareInstance", None).await;
    assert_eq!(
        (stop["RetCode"].as_i64(), stop["UHostId"].as_str()),
        (Some(0), Some(id)),
        "{stop}"
    );
    wait_for(&client(&server), id, Some(State::Stopped)).await;
    let term = lifecycle("TerminateCompShareInstance", Some("true")).await;
    assert_eq!(
        (term["RetCode"].as_i64(), term["UHostId"].as_str()),
        (Some(0), Some(id)),
        "{term}"
    );
    wait_for(&client(&server), id, None).await;
    let snap = server.handle.snapshot();
    assert!(snap.terminated.iter().any(|x| x.uhost_id == id && x.release_udisk));
    assert!(snap.orphan_disks.iter().all(|d| d.from_uhost_id != id));
    assert!(snap.violations.is_empty(), "{:?}", snap.violations);

    let wrong = python_sdk_call(&server, "not-the-key", &[("Action", "DescribeCompShareInstance")]).await;
    assert_eq!(wrong["RetCode"], 171, "{wrong}");
}

/// Half-open connections cannot hold the simulator: past the cap they are closed at once,
/// and each is closed when it sends no request head in time; then calls are served again.
#[test]
#[expect(
    clippy::disallowed_methods,
    reason = "The server runs in real time on its own thread: waiting for its timeout needs the real clock."
)]
fn half_open_connections_are_capped_and_timed_out() {
    use compshare_teardown::sim::{HEADER_TIMEOUT, MAX_CONNECTIONS};
    use std::io::Read;
    let server = server(scenario(1));
    let addr = format!("{}:{}", server.url.host_str().unwrap(), server.url.port().unwrap());
    let extra = 50;
    let mut idle: Vec<std::net::TcpStream> = (0..MAX_CONNECTIONS + extra)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // Past the cap: closed at once (EOF or reset), not queued.
    let closed = |s: &mut std::net::TcpStream, wait: Duration| {
        s.set_read_timeout(Some(wait)).unwrap();
        let mut b = [0u8; 1];
        match s.read(&mut b) {
            Ok(n) => n == 0,
            Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
        }
    };
    let closed_now = idle
        .iter_mut()
        .filter_map(|s| closed(s, Duration::from_millis(1)).then_some(()))
        .count();
    assert!(closed_now >= extra, "{closed_now} closed at once");
    // After the head timeout every idle connection is closed, and calls are served again.
    std::thread::sleep(HEADER_TIMEOUT + Duration::from_secs(1));
    for s in &mut idle {
        assert!(
            closed(s, Duration::from_secs(2)),
            "an idle connection outlived the head timeout"
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let rows = rt.block_on(all(&client(&server))).unwrap();
    assert_eq!(rows.len(), 1);
}

/// `GetCompShareInstanceMonitor` through the real client: a JSON body with `UHostIds` as an
/// array, signed with the IDs concatenated, split by ten; the form style and the indexed
/// signature refused.
#[tokio::test]
async fn monitor_goes_as_a_signed_json_body() {
    use compshare_teardown::monitor::{ACTION, gpu_samples};
    use compshare_teardown::sim::GpuLoad;

    let instances = (0..13)
        .map(|i| {
            let id = if i == 12 {
                "cpod-c".to_owned()
            } else {
                format!("uhost-{i:02}")
            };
            let mut row: compshare_teardown::sim::ScenarioInstance = serde_json::from_value(json!({
                "UHostId": id, "State": "Running", "Region": "cn-wlcb", "Zone": "cn-wlcb-01", "GPU": 2,
            }))
            .unwrap();
            row.gpu_load = Some(GpuLoad::Idle);
            row
        })
        .collect();
    let server = server(Scenario {
        time_scale: SCALE,
        epoch: Some(1_800_000_000),
        instances,
        ..Scenario::default()
    });
    let ids = server.handle.ids();
    let got = gpu_samples(&client(&server), "cn-wlcb", "cn-wlcb-01", &ids)
        .await
        .unwrap();
    assert_eq!(got.len(), 13);
    for (id, samples) in &got {
        // Two GPUs, a minute apart over 30 minutes (a few nominal seconds pass meanwhile).
        assert!((58..=62).contains(&samples.len()), "{id}: {}", samples.len());
        assert!(samples.iter().all(|s| s.util <= 2.0), "{id}");
    }
    let calls: Vec<usize> = server
        .handle
        .snapshot()
        .calls
        .iter()
        .filter(|c| c.action == ACTION && c.ret_code == Some(0))
        .map(|c| c.ids.len())
        .collect();
    assert_eq!(calls, [10, 3]);

    let (public, private) = (server.handle.public_key(), server.handle.private_key());
    let http = reqwest::Client::new();
    let body = |ids: &[&str]| {
        let Value::Object(m) = json!({
            "Action": ACTION, "Region": "cn-wlcb", "Zone": "cn-wlcb-01", "UHostIds": ids, "PublicKey": public,
        }) else {
            unreachable!()
        };
        m
    };
    // Signed as compshare-cli signs it: accepted.
    let mut good = body(&["uhost-00", "uhost-01"]);
    let sig = json_signature(&good, &private);
    good.insert("Signature".into(), json!(sig));
    let answer = json_of(http.post(server.url.clone()).json(&good)).await;
    assert_eq!(answer["RetCode"], 0, "{answer}");
    assert_eq!(answer["Data"]["List"].as_array().unwrap().len(), 2);
    // The same body signed over the indexed form keys: refused.
    let mut indexed = body(&["uhost-00", "uhost-01"]);
    let mut flat = pairs(&[
        ("Action", ACTION),
        ("Region", "cn-wlcb"),
        ("Zone", "cn-wlcb-01"),
        ("UHostIds.0", "uhost-00"),
        ("UHostIds.1", "uhost-01"),
    ]);
    sign_in_place(&mut flat, &public, &private);
    indexed.insert("Signature".into(), json!(flat["Signature"]));
    let answer = json_of(http.post(server.url.clone()).json(&indexed)).await;
    assert_eq!(answer["RetCode"], 171, "{answer}");
    // Form style, correctly signed: the gateway does not take `UHostIds.0`.
    let answer = raw_form(
        &server,
        &[
            ("Action", ACTION),
            ("Region", "cn-wlcb"),
            ("Zone", "cn-wlcb-01"),
            ("UHostIds.0", "uhost-00"),
        ],
    )
    .await;
    assert_eq!(answer["RetCode"], 210, "{answer}");
}
