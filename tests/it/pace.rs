//! The request pace at the lowest limits a gateway may set: behind a bucket of one request a
//! second (burst 2), a teardown at default settings finishes, with few refusals, close to the
//! time its admitted requests take at that rate. A look and the Terminate it licenses are
//! sent as a pair, so the look cannot take the only token the Terminate needs.

use compshare_teardown::sim::SimHandle;
use compshare_teardown::workflow::{Controls, Settings};

use crate::workflow::{all_gone, assert_safe, refused_and_admitted, running_behind, teardown};

/// `count` running instances behind a gateway that admits `per_sec` requests a second with a
/// burst of `burst`; the run at default settings.
async fn behind_a_low_limit(count: usize, seed: u64, per_sec: f64, burst: u32) -> (usize, usize, f64) {
    let s = running_behind(count, seed, per_sec, burst);
    let sim = SimHandle::new(s);
    let ids = sim.ids();
    let settings = Settings {
        jitter_seed: Some(seed),
        ..Settings::default()
    };
    let report = teardown(&sim, ids.clone(), settings, Controls::default()).await;
    all_gone(&report, &sim);
    let state = sim.snapshot();
    assert_safe(&state, &ids);
    let (refused, admitted) = refused_and_admitted(&state);
    eprintln!(
        "{count} instances behind {per_sec}/s (burst {burst}), seed {seed}: {admitted} admitted, {refused} refused, {:.0} s",
        report.summary.seconds
    );
    (admitted, refused, report.summary.seconds)
}

#[tokio::test(start_paused = true)]
async fn one_request_a_second_tears_everything_down_without_livelock() {
    for seed in [1, 2, 3] {
        let (admitted, refused, seconds) = behind_a_low_limit(30, seed, 1.0, 2).await;
        let sent = admitted + refused;
        assert!(refused * 5 <= sent, "seed {seed}: {refused} of {sent} requests refused");
        #[expect(clippy::cast_precision_loss, reason = "small counts")]
        let bound = 1.3 * admitted as f64;
        assert!(
            seconds <= bound,
            "seed {seed}: {seconds:.0} s for {admitted} admitted requests at 1/s"
        );
    }
}

/// From half a request a second to a hundred: the same bounds hold.
#[tokio::test(start_paused = true)]
async fn half_a_request_to_a_hundred_a_second_hold_the_same_bounds() {
    for (count, per_sec, burst) in [(12, 0.5, 2), (60, 2.0, 2), (60, 5.0, 3), (300, 100.0, 10)] {
        let (admitted, refused, seconds) = behind_a_low_limit(count, 4, per_sec, burst).await;
        let sent = admitted + refused;
        // At half a request a second the first wave (ten requests into a bucket of two) and
        // the decreases down from it cost a quarter of the requests; from one a second up, a
        // fifth at most.
        let share = if per_sec < 1.0 { 3 } else { 5 };
        assert!(
            refused * share <= sent,
            "{per_sec}/s: {refused} of {sent} requests refused"
        );
        #[expect(clippy::cast_precision_loss, reason = "small counts")]
        let bound = 1.3 * admitted as f64 / per_sec;
        // At 100/s the run is bound by the instances' own stop time, not the limit.
        if per_sec < 50.0 {
            assert!(
                seconds <= bound,
                "{per_sec}/s: {seconds:.0} s for {admitted} admitted requests"
            );
        }
    }
}
