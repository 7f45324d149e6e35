//! The indexes over the trackers: which looks are due, which instances time out, and a
//! refusal's one more look.

use super::*;

const MS: Duration = Duration::from_millis(1);

fn trackers(n: usize, now: Instant) -> Trackers {
    let all = (0..n)
        .map(|i| Tracker::new(format!("uhost-{i}"), None, Memory::default(), 0, now))
        .collect();
    Trackers::new(all, now + Duration::from_secs(60))
}

#[tokio::test(start_paused = true)]
async fn due_looks_fill_the_last_chunk_but_never_with_parked_instances() {
    let now = Instant::now();
    let mut t = trackers(300, now);
    for i in 0..300 {
        let at = now + MS * u32::try_from(i).unwrap() * 10;
        t.schedule(i, at, i % 2 == 1, now);
    }
    // Due within 50 ms: 0..=5; parked 1, 3, 5 are not yet due at `now` (only 0 is at now).
    let looks = t.due_looks(now, now + 50 * MS);
    assert_eq!(&looks[..3], &[0, 2, 4], "unparked due ones first, soonest first");
    assert_eq!(looks.len(), 100, "the chunk is filled");
    assert!(
        looks.iter().all(|&i| i % 2 == 0),
        "no parked instance is pulled forward"
    );
    // Nothing due: nothing to look at, even though instances are waiting.
    let mut t = trackers(3, now);
    for i in 0..3 {
        t.schedule(i, now + Duration::from_secs(1), false, now);
    }
    assert!(t.due_looks(now, now + 50 * MS).is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_indexes_follow_every_change_of_status() {
    let now = Instant::now();
    let mut t = trackers(3, now);
    assert_eq!(t.next_due(), Some(now));
    t.start_look(0, now);
    t.start_look(1, now);
    t.start_call(2, State::Running, now);
    assert_eq!(t.next_due(), None, "nothing waits for a look or times out while busy");
    assert!(t.timed_out(now + Duration::from_secs(3600)).is_empty());
    // A look that queued 5 s moves that instance's limit by 5 s.
    assert_eq!(t.end_look(0, now + Duration::from_secs(5)), Some(now));
    t.schedule(0, now + Duration::from_secs(10), false, now);
    assert_eq!(t.limit(0), now + Duration::from_secs(65));
    assert_eq!(t.timed_out(now + Duration::from_secs(64)), Vec::<usize>::new());
    assert_eq!(t.timed_out(now + Duration::from_secs(65)), vec![0]);
    assert!(t.finish(0, Outcome::Skipped { reason: "x".into() }, now));
    assert!(
        !t.finish(0, Outcome::Skipped { reason: "y".into() }, now),
        "one outcome only"
    );
    assert!(t.timed_out(now + Duration::from_secs(3600)).is_empty());
    assert!(!t.all_done());
    assert_eq!(t.watched(), vec![1]);
    t.finish(1, Outcome::Skipped { reason: "x".into() }, now);
    t.finish(2, Outcome::Skipped { reason: "x".into() }, now);
    assert!(t.all_done());
}

#[tokio::test(start_paused = true)]
async fn a_refusal_waits_for_its_look_and_goes_with_the_next_call() {
    let now = Instant::now();
    let mut t = trackers(1, now);
    t.start_call(0, State::Stopped, now);
    assert_eq!(t.end_call(0, now), Some(State::Stopped));
    let error = ApiError::RetCode {
        action: "TerminateCompShareInstance".into(),
        code: 8900,
        message: "state".into(),
        request_id: None,
    };
    let refused = Refused {
        error,
        decided_on: State::Stopped,
    };
    t.refused(0, refused, now, now);
    // Scheduling again (an absence look, a failed Describe) keeps it pending.
    t.start_look(0, now);
    t.end_look(0, now);
    t.postpone(0, now + MS);
    t.schedule(0, now + MS, false, now);
    assert!(t.take_refused(0).is_some());
    assert!(t.take_refused(0).is_none(), "judged once");
}
