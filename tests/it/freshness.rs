//! The look that licenses a Terminate is as fresh as the transport allows, also under a
//! request pace: against instances that someone else starts again 2 s (nominal) after they
//! stop, at 1/100 and 1/10 time, behind a gateway rate limit or none, no Terminate reaches an
//! instance that is no longer `Stopped` (not even as a race the API would refuse). Paused
//! time: the tool's own waits (a slot, the pace) are the only gap between a look's answer and
//! the Terminate, so a Terminate that waited at all must look again right before it leaves.

use compshare_teardown::sim::SimHandle;
use compshare_teardown::workflow::{Controls, Outcome, Settings};

use crate::workflow::{running_behind, teardown};

async fn restarted_two_seconds_after_stopping(scale: f64, limit: u32, seed: u64) {
    let mut s = running_behind(12, seed, f64::from(limit), limit / 4);
    s.time_scale = scale;
    s.faults.restart = 1.0;
    s.faults.restart_after_secs = 2.0;
    let sim = SimHandle::new(s);
    let ids = sim.ids();
    // At 1/100 time a stop and the restart after it both fit between two looks, so most
    // instances never show their stop and are stopped again until their time runs out.
    let settings = Settings {
        jitter_seed: Some(seed),
        instance_timeout: std::time::Duration::from_secs(120),
        ..Settings::default()
    };
    let report = teardown(&sim, ids, settings, Controls::default()).await;
    let state = sim.snapshot();
    let what = format!("scale {scale}, limit {limit}/s, seed {seed}");
    assert!(state.violations.is_empty(), "{what}: {:#?}", state.violations);
    assert!(state.races.is_empty(), "{what}: {:#?}", state.races);
    // Caught while stopped and terminated, or given up on as they kept coming back.
    for i in &report.instances {
        let ended = matches!(
            i.outcome,
            Outcome::Terminated { .. } | Outcome::Failed { .. } | Outcome::TimedOut { .. }
        );
        assert!(ended, "{what}: {:?}", i.outcome);
    }
}

#[tokio::test(start_paused = true)]
async fn no_terminate_reaches_an_instance_restarted_after_its_look() {
    for seed in 0..10 {
        for scale in [0.01, 0.1] {
            for limit in [0, 20] {
                restarted_two_seconds_after_stopping(scale, limit, seed).await;
            }
        }
    }
}
