//! Notices against a real local HTTP receiver and real commands, in real time with short
//! timeouts (paused time and real sockets do not mix): what is sent, what is retried and how
//! often, how long a failing delivery takes, and that a webhook's secret never shows.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use compshare_teardown::notice::{Event, EventKind, Failure, Inbox, NoticeConfig, NoticeError, Notifier, Target};
use serde_json::Value;
use tokio::time::Instant;

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

#[tokio::test]
async fn an_accepted_notice_is_posted_once_with_the_event_and_its_stable_id() {
    let (r, url) = receiver(vec![Answer::Status(200, &[], "ok")], vec![]).await;
    let e = event(EventKind::Marked, "uhost-1");
    notifier(Some(&url), None, 2000, 3).deliver(&e).await.unwrap();
    let hits = r.hits();
    assert_eq!(hits.len(), 1);
    let hit = &hits[0];
    assert_eq!(hit.path, SECRET_PATH);
    assert_eq!(hit.content_type, "application/json");
    assert!(hit.user_agent.starts_with("compshare-teardown/"), "{}", hit.user_agent);
    let body = &hit.body;
    assert_eq!(body["schema"], 1);
    assert_eq!(
        body["id"],
        Event::stable_id(&["marked", "acct", "uhost-1", "1800000000"])
    );
    assert_eq!(body["kind"], "marked");
    assert_eq!(body["target"]["id"], "uhost-1");
    assert_eq!(body["due"], 1_800_003_600);
    assert_eq!(body["details"]["price_per_hour"], 12.5);
    let text = body["text"].as_str().unwrap();
    assert!(
        text.contains("uhost-1") && text.contains("marked for teardown"),
        "{text}"
    );
}

#[tokio::test]
async fn a_500_then_200_is_retried_and_delivered_once() {
    let (r, url) = receiver(
        vec![Answer::Status(500, &[], "busy"), Answer::Status(200, &[], "ok")],
        vec![],
    )
    .await;
    notifier(Some(&url), None, 2000, 3)
        .deliver(&event(EventKind::TornDown, "uhost-2"))
        .await
        .unwrap();
    let hits = r.hits();
    assert_eq!(hits.len(), 2, "one failure, one delivery");
    assert_eq!(
        hits[0].body["id"], hits[1].body["id"],
        "a retry carries the same event ID"
    );
}

#[tokio::test]
async fn a_receiver_that_always_fails_gets_exactly_the_attempts_and_no_secret_leaks() {
    let (r, url) = receiver(vec![Answer::Status(503, &[], "down for maintenance")], vec![]).await;
    let err = notifier(Some(&url), None, 2000, 3)
        .deliver(&event(EventKind::Failed, "uhost-3"))
        .await
        .unwrap_err();
    assert_eq!(r.hits().len(), 3);
    assert_eq!(err.attempts(), 3);
    let said = err.to_string();
    assert!(
        said.contains("HTTP 503") && said.contains("down for maintenance"),
        "{said}"
    );
    assert!(said.contains("http://127.0.0.1:") && said.contains("/***"), "{said}");
    assert_masked(&err);
}

#[tokio::test]
async fn a_hanging_receiver_times_out_within_timeout_times_attempts_plus_backoff() {
    let (r, url) = receiver(vec![Answer::Hang], vec![]).await;
    let started = Instant::now();
    let err = notifier(Some(&url), None, 200, 3)
        .deliver(&event(EventKind::Marked, "uhost-4"))
        .await
        .unwrap_err();
    let took = started.elapsed();
    // 3 × 200 ms, backoff at most (20 + 40) ms doubled by jitter, and scheduling slack.
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_millis(1200),
        "{took:?}"
    );
    assert_eq!(r.hits().len(), 3);
    assert!(
        matches!(
            &err,
            NoticeError::Sink {
                failure: Failure::Timeout(_),
                attempts: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert_masked(&err);
}

#[tokio::test]
async fn a_404_is_permanent_and_tried_once() {
    let (r, url) = receiver(
        vec![Answer::Status(404, &[], "no such hook"), Answer::Status(200, &[], "ok")],
        vec![],
    )
    .await;
    let err = notifier(Some(&url), None, 2000, 3)
        .deliver(&event(EventKind::Kept, "uhost-5"))
        .await
        .unwrap_err();
    assert_eq!(r.hits().len(), 1);
    assert!(err.to_string().contains("HTTP 404: no such hook"), "{err}");
    assert_masked(&err);
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let to_elsewhere: &[(&str, &str)] = &[("location", "/elsewhere")];
    let (r, url) = receiver(
        vec![Answer::Status(302, to_elsewhere, ""), Answer::Status(200, &[], "ok")],
        vec![],
    )
    .await;
    let err = notifier(Some(&url), None, 2000, 3)
        .deliver(&event(EventKind::Stopped, "uhost-6"))
        .await
        .unwrap_err();
    let hits = r.hits();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].path, SECRET_PATH, "nothing sent to /elsewhere");
    assert!(
        matches!(
            &err,
            NoticeError::Sink {
                failure: Failure::Redirect(302),
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn retry_after_is_honoured_and_one_beyond_the_longest_wait_is_left_for_the_next_run() {
    let wait_1s: &[(&str, &str)] = &[("retry-after", "1")];
    let (r, url) = receiver(
        vec![
            Answer::Status(429, wait_1s, "slow down"),
            Answer::Status(200, &[], "ok"),
        ],
        vec![],
    )
    .await;
    let started = Instant::now();
    notifier(Some(&url), None, 2000, 3)
        .deliver(&event(EventKind::Marked, "uhost-7"))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1), "{:?}", started.elapsed());
    assert_eq!(r.hits().len(), 2);

    let wait_1h: &[(&str, &str)] = &[("retry-after", "3600")];
    let (r, url) = receiver(
        vec![Answer::Status(429, wait_1h, ""), Answer::Status(200, &[], "ok")],
        vec![],
    )
    .await;
    let err = notifier(Some(&url), None, 2000, 3)
        .deliver(&event(EventKind::Marked, "uhost-7"))
        .await
        .unwrap_err();
    assert_eq!(r.hits().len(), 1);
    assert!(err.to_string().contains("asked to wait 3600 s"), "{err}");
}

#[tokio::test]
async fn an_unreachable_webhook_fails_without_showing_its_secret() {
    // A port just bound and released: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}{SECRET_PATH}?{SECRET_QUERY}");
    let n = notifier(Some(&url), None, 500, 2);
    let err = n.deliver(&event(EventKind::Marked, "uhost-8")).await.unwrap_err();
    assert_eq!(err.attempts(), 2);
    assert!(
        matches!(
            &err,
            NoticeError::Sink {
                failure: Failure::Transport(_),
                ..
            }
        ),
        "{err:?}"
    );
    assert_masked(&err);
    assert!(!format!("{n:?}").contains("SECRET42"), "{n:?}");
}

#[tokio::test]
async fn a_command_gets_the_payload_on_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("payload.json");
    let line = format!("cat > '{}'", out.display());
    let e = event(EventKind::Unmarked, "uhost-9");
    notifier(None, Some(&line), 2000, 3).deliver(&e).await.unwrap();
    let got: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(got["id"], e.id);
    assert_eq!(got["kind"], "unmarked");
    assert_eq!(got["target"]["name"], "train-1");
}

#[tokio::test]
async fn a_failing_command_is_retried_and_its_stderr_reported() {
    let dir = tempfile::tempdir().unwrap();
    let tries = dir.path().join("tries");
    let line = format!("echo x >> '{}'; echo 'receiver said no' >&2; exit 3", tries.display());
    let err = notifier(None, Some(&line), 2000, 2)
        .deliver(&event(EventKind::Marked, "uhost-10"))
        .await
        .unwrap_err();
    assert_eq!(std::fs::read_to_string(&tries).unwrap().lines().count(), 2);
    let said = err.to_string();
    assert!(said.starts_with("notice command: exited with exit status: 3"), "{said}");
    assert!(said.contains("stderr: receiver said no"), "{said}");
    assert!(!said.contains("tries"), "the command line is never shown: {said}");
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

/// A command that starts a child in its process group and waits for it, and where the
/// child's process ID goes.
#[cfg(target_os = "linux")]
fn sleeper(dir: &std::path::Path) -> (String, std::path::PathBuf) {
    let pid = dir.join("pid");
    (format!("sleep 30 & echo $! > '{}'; wait", pid.display()), pid)
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_command_that_hangs_is_killed_with_its_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let (line, pid) = sleeper(dir.path());
    let started = Instant::now();
    let err = notifier(None, Some(&line), 300, 1)
        .deliver(&event(EventKind::Marked, "uhost-11"))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(1300),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(
            &err,
            NoticeError::Sink {
                failure: Failure::Timeout(_),
                attempts: 1,
                ..
            }
        ),
        "{err:?}"
    );
    let pid = std::fs::read_to_string(pid).unwrap();
    // The kill is sent before the call returns; give the kernel a moment to finish it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!running(&pid), "the command's child {pid} outlived the timeout");
}

#[tokio::test]
async fn both_sinks_must_accept() {
    let (r, url) = receiver(vec![Answer::Status(200, &[], "ok")], vec![]).await;
    let err = notifier(Some(&url), Some("exit 1"), 2000, 1)
        .deliver(&event(EventKind::Marked, "uhost-12"))
        .await
        .unwrap_err();
    assert_eq!(r.hits().len(), 1, "the webhook was still sent");
    assert!(
        matches!(&err, NoticeError::Sink { .. }) && err.to_string().starts_with("notice command:"),
        "{err}"
    );
    notifier(Some(&url), Some("cat > /dev/null"), 2000, 1)
        .deliver(&event(EventKind::Marked, "uhost-12"))
        .await
        .unwrap();
}

#[tokio::test]
async fn many_events_give_results_in_input_order() {
    let (r, url) = receiver(
        vec![Answer::Status(200, &[], "ok")],
        vec![("failed", Answer::Status(400, &[], "bad"))],
    )
    .await;
    let kinds = [
        EventKind::Marked,
        EventKind::Failed,
        EventKind::Kept,
        EventKind::Failed,
        EventKind::Summary,
        EventKind::TornDown,
    ];
    let events: Vec<Event> = kinds
        .iter()
        .enumerate()
        .map(|(i, k)| event(*k, &format!("uhost-{i}")))
        .collect();
    let results = notifier(Some(&url), None, 2000, 2)
        .deliver_all(&events, Duration::from_secs(5))
        .await;
    let delivered: Vec<bool> = results.iter().map(Result::is_ok).collect();
    assert_eq!(delivered, [true, false, true, false, true, true]);
    let mut seen: Vec<String> = r
        .hits()
        .iter()
        .map(|h| h.body["id"].as_str().unwrap().to_owned())
        .collect();
    let mut sent: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    seen.sort();
    sent.sort();
    assert_eq!(seen, sent, "each event posted once (a 400 is not retried)");
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_deadline_bounds_many_deliveries_and_kills_their_commands() {
    let (_r, url) = receiver(vec![Answer::Hang], vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let (line, pid) = sleeper(dir.path());
    // Each event would take 10 s × 3 on its own; the deadline cuts all of them at 300 ms.
    let n = notifier(Some(&url), None, 10_000, 3);
    let events: Vec<Event> = (0..6)
        .map(|i| event(EventKind::Marked, &format!("uhost-{i}")))
        .collect();
    let started = Instant::now();
    let results = n.deliver_all(&events, Duration::from_millis(300)).await;
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
    assert!(
        results.iter().all(|r| matches!(r, Err(NoticeError::Deadline(_)))),
        "{results:?}"
    );

    let n = notifier(None, Some(&line), 10_000, 1);
    let results = n.deliver_all(&events[..1], Duration::from_millis(300)).await;
    assert!(matches!(results[..], [Err(NoticeError::Deadline(_))]), "{results:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let pid = std::fs::read_to_string(pid).unwrap();
    assert!(!running(&pid), "the command's child {pid} outlived the deadline");
}

#[tokio::test]
async fn a_chatty_failing_command_neither_blocks_nor_floods_the_error() {
    // 1 MiB on each pipe, far beyond a pipe's buffer and the 4 KiB kept: a reader that
    // stopped reading would block the command until the timeout, or (closing the pipe) kill
    // its writer with SIGPIPE, and the line would exit 9 instead of 7.
    let line = "head -c 1048576 /dev/zero | tr '\\0' a || exit 9; \
                head -c 1048576 /dev/zero | tr '\\0' b >&2 || exit 9; exit 7";
    let started = Instant::now();
    let err = notifier(None, Some(line), 5000, 1)
        .deliver(&event(EventKind::Marked, "uhost-13"))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    let said = err.to_string();
    assert!(said.contains("exited with exit status: 7"), "{said}");
    assert!(said.len() < 800, "{} bytes", said.len());
}

/// The in-memory inbox: no I/O, so paused time can check the backoff's schedule exactly.
fn inbox_notifier(inbox: &Inbox, attempts: u32) -> Notifier {
    let config = NoticeConfig::new(None, None, NoticeConfig::DEFAULT_TIMEOUT)
        .unwrap()
        .with_attempts(attempts)
        .unwrap()
        .with_inbox(inbox.clone());
    Notifier::new(config)
}

#[tokio::test(start_paused = true)]
async fn retries_wait_on_tokios_clock_with_a_doubling_backoff() {
    let inbox = Inbox::new();
    inbox.refuse_next(2);
    let e = event(EventKind::Marked, "uhost-14");
    let started = Instant::now();
    inbox_notifier(&inbox, 3).deliver(&e).await.unwrap();
    // Waits of 1 s and 2 s, each plus a jitter below itself.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(6),
        "{took:?}"
    );
    assert_eq!(inbox.attempts(), 3);
    assert_eq!(inbox.ids(), std::slice::from_ref(&e.id), "delivered once");

    let down = Inbox::new();
    down.refuse_all(true);
    let err = inbox_notifier(&down, 4).deliver(&e).await.unwrap_err();
    assert_eq!((down.attempts(), err.attempts()), (4, 4));
    assert!(down.received().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_receiver_that_is_down_costs_no_more_than_the_deadline() {
    let inbox = Inbox::new();
    inbox.refuse_all(true);
    let events: Vec<Event> = (0..9).map(|i| event(EventKind::Kept, &format!("uhost-{i}"))).collect();
    let started = Instant::now();
    let results = inbox_notifier(&inbox, 10)
        .deliver_all(&events, Duration::from_secs(20))
        .await;
    assert_eq!(started.elapsed(), Duration::from_secs(20));
    assert!(
        results.iter().all(|r| matches!(r, Err(NoticeError::Deadline(_)))),
        "{results:?}"
    );
    inbox.refuse_all(false);
    let results = inbox_notifier(&inbox, 10)
        .deliver_all(&events, Duration::from_secs(20))
        .await;
    assert!(results.iter().all(Result::is_ok));
    let mut ids = inbox.ids();
    ids.sort();
    let mut sent: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    sent.sort();
    assert_eq!(ids, sent, "every event once, on the next try");
}
