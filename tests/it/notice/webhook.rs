//! One event to a webhook: what is sent, what is retried, how long it takes, what is shown.

use std::time::Duration;

use compshare_teardown::notice::{EventKind, Failure, NoticeError};
use tokio::time::Instant;

use super::*;

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
async fn a_hanging_receiver_is_cut_by_the_timeout_on_every_attempt() {
    let (r, url) = receiver(vec![Answer::Hang], vec![]).await;
    let started = Instant::now();
    let err = notifier(Some(&url), None, 200, 3)
        .deliver(&event(EventKind::Marked, "uhost-4"))
        .await
        .unwrap_err();
    let took = started.elapsed();
    // 3 × 200 ms, backoff at most (20 + 40) ms doubled by jitter, and scheduling slack (a
    // loaded machine's): each attempt was cut by its timeout, none hung.
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_secs(3),
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
