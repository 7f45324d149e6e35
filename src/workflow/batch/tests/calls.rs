//! `calls.rs`: what each answer to a Stop or Terminate means.

use super::*;

/// A Stop refused by the operation lock is tried again, further apart each time, until the
/// lock lifts; then the teardown goes on as usual.
#[tokio::test(start_paused = true)]
async fn a_locked_stop_is_tried_again_until_the_lock_lifts() {
    let mut script = Scripted::new(&[("uhost-a", State::Running)]);
    script.stop = refuse_then_stop(3, 8903, "InstanceOperationInProgress");
    let cloud = Arc::new(script);
    let report = drive(&cloud, &["uhost-a"], settings(), Controls::default()).await;
    assert!(confirmed(outcome(&report, "uhost-a")), "{report:?}");
    let stops: Vec<Duration> = cloud.calls(STOP).iter().map(|r| r.at).collect();
    assert_eq!(stops.len(), 4, "{stops:?}");
    let gaps: Vec<Duration> = stops.windows(2).map(|w| w[1].saturating_sub(w[0])).collect();
    assert!(gaps.windows(2).all(|g| g[1] > g[0]), "gaps {gaps:?}");
    assert_eq!(cloud.calls(TERMINATE).len(), 1);
}

/// A Terminate whose answer is lost may have been accepted: while the instance is still
/// listed (deleting) within the settle time, it is not sent again.
#[tokio::test(start_paused = true)]
async fn a_lost_terminate_answer_is_not_sent_again_while_the_instance_settles() {
    let mut script = Scripted::new(&[("uhost-a", State::Stopped)]);
    script.terminate = Box::new(|t, target, _| {
        // Accepted, still listed for 20 s, and the answer never arrives.
        t.gone_at
            .insert(target.uhost_id.clone(), Instant::now() + Duration::from_secs(20));
        Err(ApiError::Transport {
            action: "TerminateCompShareInstance".to_owned(),
            kind: crate::api::TransportKind::Closed,
            detail: "connection reset".to_owned(),
        })
    });
    let cloud = Arc::new(script);
    let report = drive(&cloud, &["uhost-a"], settings(), Controls::default()).await;
    assert_eq!(cloud.calls(TERMINATE).len(), 1);
    assert!(outcome(&report, "uhost-a").is_gone(), "{report:?}");
}

/// Throttled calls are tried again without spending the retry budget, and the run says how
/// often the API pushed back.
#[tokio::test(start_paused = true)]
async fn throttled_stops_go_through_in_the_end() {
    let mut script = Scripted::new(&[("uhost-a", State::Running)]);
    script.stop = refuse_then_stop(10, 153, "request too frequent");
    let cloud = Arc::new(script);
    let report = drive(&cloud, &["uhost-a"], settings(), Controls::default()).await;
    assert!(confirmed(outcome(&report, "uhost-a")), "{report:?}");
    assert_eq!(cloud.calls(STOP).len(), 11);
    assert_eq!(report.summary.throttled, 10);
    assert!(report.summary.pace.throttles >= 10, "{:?}", report.summary.pace);
}
