//! `looks.rs`: batched Describes, their answers and the absence rule.

use super::*;

/// The first tick looks at every instance in chunks of at most 100, each instance once.
#[tokio::test(start_paused = true)]
async fn the_first_looks_go_in_chunks_of_a_hundred() {
    let ids: Vec<String> = (0..250).map(|i| format!("uhost-{i:03}")).collect();
    let cloud = Arc::new(Scripted::uniform(&ids, &State::Stopped));
    let names: Vec<&str> = ids.iter().map(String::as_str).collect();
    let report = drive(&cloud, &names, settings(), Controls::default()).await;
    let describes = cloud.calls(DESCRIBE);
    let first: Vec<&Received> = describes.iter().filter(|r| r.at == describes[0].at).collect();
    let mut sizes: Vec<usize> = first.iter().map(|r| r.ids.len()).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [50, 100, 100]);
    let mut asked: Vec<&String> = first.iter().flat_map(|r| &r.ids).collect();
    asked.sort();
    asked.dedup();
    assert_eq!(asked.len(), 250, "each instance once");
    assert!(report.instances.iter().all(|i| confirmed(&i.outcome)));
    assert_eq!(cloud.calls(TERMINATE).len(), 250);
    assert!(cloud.calls(STOP).is_empty(), "already stopped");
}

/// A look that rode early in a Describe leaving anyway, and found nothing new, does not pull
/// the instance's later looks forward: 300 instances stopping for 20 s, their Stops spread
/// by the pace's slow start, are each looked at about as often as the poll gap says (a sixth
/// of the time in the phase, at least `min_poll`), not a third more.
#[tokio::test(start_paused = true)]
async fn early_looks_do_not_pull_the_schedule_forward() {
    let ids: Vec<String> = (0..300).map(|i| format!("uhost-{i:03}")).collect();
    let mut script = Scripted::uniform(&ids, &State::Running);
    script.stop = Box::new(|t, target, _| {
        t.states.insert(target.uhost_id.clone(), State::Stopping);
        Ok(())
    });
    script.describe = stopping_for(Duration::from_secs(20));
    let cloud = Arc::new(script);
    let names: Vec<&str> = ids.iter().map(String::as_str).collect();
    let report = drive(&cloud, &names, settings(), Controls::default()).await;
    assert!(report.instances.iter().all(|i| confirmed(&i.outcome)), "{report:?}");
    let looks: usize = cloud
        .calls(DESCRIBE)
        .iter()
        .filter(|r| r.at < Duration::from_secs(20))
        .map(|r| r.ids.len())
        .sum();
    #[expect(clippy::cast_precision_loss, reason = "a few thousand looks")]
    let per_instance = looks as f64 / 300.0;
    // The schedule gives 24: the first look, 6 a `min_poll` apart until 1.5 s into the phase,
    // 17 a sixth of the age apart until 20 s. Early looks that moved it measured 25.33.
    assert!(per_instance <= 24.5, "{per_instance:.2} looks per instance");
}

/// An answer that does not read as a page is a failed look, as when the task read it: the
/// instance backs off and looks again. Taken for an empty page, six of them would have
/// proved it gone (five absent looks over a poll interval) without a call; it is stopped and
/// terminated once an answer reads.
#[tokio::test(start_paused = true)]
async fn an_unreadable_answer_is_a_failed_look_not_an_absence() {
    let mut script = Scripted::new(&[("uhost-a", State::Running)]);
    script.garbled_looks = 6;
    let cloud = Arc::new(script);
    let report = drive(&cloud, &["uhost-a"], settings(), Controls::default()).await;
    assert!(confirmed(outcome(&report, "uhost-a")), "{report:?}");
    let stop = cloud.calls(STOP)[0].at;
    let looks_before = cloud.calls(DESCRIBE).iter().filter(|r| r.at <= stop).count();
    assert_eq!(
        looks_before, 7,
        "six unreadable answers, then the look the Stop was decided on"
    );
}

/// At most a quarter of `--concurrency` Describes are in flight: the first tick of 1,000
/// instances at `--concurrency 16` sends 4 of its 10 at once, the next as those come back.
#[tokio::test(start_paused = true)]
async fn describes_in_flight_are_bounded_by_a_quarter_of_the_concurrency() {
    let ids: Vec<String> = (0..1000).map(|i| format!("uhost-{i:04}")).collect();
    let mut scripted = Scripted::uniform(&ids, &State::Stopped);
    scripted.describe_delay = Duration::from_millis(100);
    let cloud = Arc::new(scripted);
    let names: Vec<&str> = ids.iter().map(String::as_str).collect();
    let report = drive(
        &cloud,
        &names,
        Settings {
            concurrency: 16,
            ..settings()
        },
        Controls::default(),
    )
    .await;
    let describes = cloud.calls(DESCRIBE);
    let at_once = |at: Duration| describes.iter().filter(|r| r.at == at).count();
    assert_eq!(at_once(describes[0].at), 4);
    assert!(describes.iter().all(|r| at_once(r.at) <= 4));
    assert!(report.instances.iter().all(|i| confirmed(&i.outcome)));
}

/// An answer that carries fewer rows than its `TotalCount` says it matched is not a look: an
/// instance missing from twenty such answers (more than the most looks the absence rule ever
/// asks for) is still there, and is torn down once it shows.
#[tokio::test(start_paused = true)]
async fn a_short_answer_that_says_so_is_not_a_look() {
    let mut script = Scripted::new(&[("uhost-a", State::Running)]);
    script.describe = Box::new(|t, q, n| {
        let mut page = honest(t, q);
        if n < 20 {
            page.uhost_set.clear(); // the row is dropped, the count still admits it
        }
        Ok(page)
    });
    let cloud = Arc::new(script);
    let report = drive(&cloud, &["uhost-a"], settings(), Controls::default()).await;
    assert!(confirmed(outcome(&report, "uhost-a")), "{report:?}");
    assert_eq!(cloud.calls(STOP).len(), 1);
    assert_eq!(cloud.calls(TERMINATE).len(), 1);
}

/// An instance no answer lists is gone only after five looks spread over a poll interval,
/// and nothing is sent for it.
#[tokio::test(start_paused = true)]
async fn absence_without_our_terminate_takes_five_looks_over_a_poll_interval() {
    let cloud = Arc::new(Scripted::new(&[]));
    let s = settings();
    let poll = s.poll_interval;
    let report = drive(&cloud, &["uhost-a"], s, Controls::default()).await;
    assert_eq!(outcome(&report, "uhost-a"), &Outcome::AlreadyGone);
    let describes = cloud.calls(DESCRIBE);
    assert!(describes.len() >= absence::UNEXPECTED_LOOKS as usize, "{describes:?}");
    let span = describes[describes.len() - 1].at.saturating_sub(describes[0].at);
    assert!(span >= poll, "looked for {span:?} only");
    assert!(cloud.calls(STOP).is_empty() && cloud.calls(TERMINATE).is_empty());
}
