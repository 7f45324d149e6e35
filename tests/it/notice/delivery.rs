//! Both sinks, many events, the deadline; the in-memory inbox on paused time.

use std::time::Duration;

use compshare_teardown::notice::{Event, EventKind, Inbox, NoticeConfig, NoticeError, Notifier};
use tokio::time::Instant;

use super::*;

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
    // Far under the 30 s each would take: the deadline cut them all, with room for a loaded
    // machine.
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert!(
        results.iter().all(|r| matches!(r, Err(NoticeError::Deadline(_)))),
        "{results:?}"
    );

    let n = notifier(None, Some(&line), 10_000, 1);
    let results = n.deliver_all(&events[..1], Duration::from_millis(500)).await;
    assert!(matches!(results[..], [Err(NoticeError::Deadline(_))]), "{results:?}");
    let left = survivor(&pid).await;
    assert!(left.is_none(), "the command's child {left:?} outlived the deadline");
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
