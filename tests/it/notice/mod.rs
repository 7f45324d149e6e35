//! Notices against a real local HTTP receiver and real commands, in real time with short
//! timeouts (paused time and real sockets do not mix): what is sent, what is retried and how
//! often, how long a failing delivery takes, and that a webhook's secret never shows. The
//! in-memory inbox (no I/O) pins the backoff's schedule on paused time.
//!
//! `webhook`: one event over HTTP; `command`: one event to a command; `delivery`: both sinks,
//! many events, the deadline. Here: the receiver and the shared helpers.

mod command;
mod delivery;
mod webhook;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use compshare_teardown::notice::{Event, EventKind, NoticeConfig, NoticeError, Notifier, Target};
use serde_json::Value;

/// The secret parts of the webhook URL used throughout: neither may appear in any output.
const SECRET_PATH: &str = "/services/T0001/B0002/PATHSECRET42";
const SECRET_QUERY: &str = "token=QUERYSECRET42";

/// How the receiver answers one request.
#[derive(Clone)]
enum Answer {
    Status(u16, &'static [(&'static str, &'static str)], &'static str),
    /// Never answers.
    Hang,
}

/// What the receiver saw of one request.
#[derive(Clone, Debug)]
struct Hit {
    path: String,
    content_type: String,
    user_agent: String,
    body: Value,
}

#[derive(Clone)]
struct Receiver {
    hits: Arc<Mutex<Vec<Hit>>>,
    /// Answers in order; the last repeats. `by_kind` overrides them per event kind.
    script: Arc<Vec<Answer>>,
    by_kind: Arc<Vec<(&'static str, Answer)>>,
}

impl Receiver {
    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
}

async fn receive(State(r): State<Receiver>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let hit = Hit {
        path: uri.path().to_owned(),
        content_type: header("content-type"),
        user_agent: header("user-agent"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    let answer = {
        let mut hits = r.hits.lock().unwrap();
        let kind = hit.body["kind"].as_str().unwrap_or_default().to_owned();
        hits.push(hit);
        match r.by_kind.iter().find(|(k, _)| *k == kind) {
            Some((_, a)) => a.clone(),
            None => r.script[(hits.len() - 1).min(r.script.len() - 1)].clone(),
        }
    };
    match answer {
        Answer::Status(code, headers, body) => {
            let mut response = (StatusCode::from_u16(code).unwrap(), body).into_response();
            for (name, value) in headers {
                response.headers_mut().insert(*name, value.parse().unwrap());
            }
            response
        }
        Answer::Hang => std::future::pending().await,
    }
}

/// A receiver on a loopback port, and the secret-bearing webhook URL pointing at it.
async fn receiver(script: Vec<Answer>, by_kind: Vec<(&'static str, Answer)>) -> (Receiver, String) {
    let r = Receiver {
        hits: Arc::default(),
        script: Arc::new(script),
        by_kind: Arc::new(by_kind),
    };
    let app = axum::Router::new().fallback(receive).with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (r, format!("http://{addr}{SECRET_PATH}?{SECRET_QUERY}"))
}

fn event(kind: EventKind, instance: &str) -> Event {
    Event {
        id: Event::stable_id(&[kind.as_str(), "acct", instance, "1800000000"]),
        kind,
        at: 1_800_000_000,
        account: "0123456789ab".into(),
        target: Some(Target {
            kind: "instance".into(),
            id: instance.into(),
            name: "train-1".into(),
            region: "cn-wlcb".into(),
            zone: "cn-wlcb-01".into(),
        }),
        due: Some(1_800_003_600),
        reason: "idle for 4h".into(),
        details: serde_json::Map::from_iter([("price_per_hour".to_owned(), Value::from(12.5))]),
    }
}

/// `attempts` tries, `timeout_ms` each, 20 ms first backoff.
fn notifier(webhook: Option<&str>, command: Option<&str>, timeout_ms: u64, attempts: u32) -> Notifier {
    let config = NoticeConfig::new(webhook, command, Duration::from_millis(timeout_ms))
        .unwrap()
        .with_attempts(attempts)
        .unwrap()
        .with_first_delay(Duration::from_millis(20))
        .unwrap();
    Notifier::new(config)
}

/// Neither secret part of the URL in the error's `Display` or `Debug`.
fn assert_masked(err: &NoticeError) {
    for shown in [err.to_string(), format!("{err:?}")] {
        assert!(
            !shown.contains("PATHSECRET42") && !shown.contains("QUERYSECRET42"),
            "{shown}"
        );
    }
}

/// Whether a process still runs (a zombie waiting for its reaper does not).
#[cfg(target_os = "linux")]
fn running(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or_default()
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// The PID the command's child wrote to `pid_file`, if it outlives the kill. The kill is
/// sent before the call returns and the kernel finishes it moments later, so this waits up
/// to 2 s (a loaded machine). The child writes its PID itself before it becomes the
/// `sleep`, so one that survived writes it within that time; no PID written by then (or an
/// empty file) means it was killed before it could.
#[cfg(target_os = "linux")]
async fn survivor(pid_file: &std::path::Path) -> Option<String> {
    let mut pid = String::new();
    for _ in 0..40 {
        pid = std::fs::read_to_string(pid_file).unwrap_or_default();
        if !pid.trim().is_empty() && !running(&pid) {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    (!pid.trim().is_empty()).then_some(pid)
}

/// A command that starts a child in its process group and waits for it, and where the
/// child's process ID goes.
#[cfg(target_os = "linux")]
fn sleeper(dir: &std::path::Path) -> (String, std::path::PathBuf) {
    let pid = dir.join("pid");
    // The child writes its own PID, then becomes the `sleep`: a PID file exists only once
    // the process it names is running.
    (
        format!("sh -c 'echo $$ > \"{}\"; exec sleep 30' & wait", pid.display()),
        pid,
    )
}
