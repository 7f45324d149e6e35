//! The global request pace: a ceiling from `--rate` (a governor limiter on tokio's clock) that
//! is lowered when the gateway throttles us (RetCode 153) and raised again slowly.
//!
//! governor's own clock reads the real monotonic time; ours reads `tokio::time::Instant`, so
//! paused-time tests see the limiter wait in virtual time like everything else.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::Clock;
use governor::{Quota, RateLimiter};
use tokio::time::Instant;

/// governor clock over tokio time: instants are durations since `origin`.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: Instant,
}

impl TokioClock {
    pub fn new() -> TokioClock {
        TokioClock { origin: Instant::now() }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        TokioClock::new()
    }
}

impl Clock for TokioClock {
    type Instant = Duration;
    fn now(&self) -> Duration {
        Instant::now().duration_since(self.origin)
    }
}

type Limiter = RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    TokioClock,
    governor::middleware::NoOpMiddleware<Duration>,
>;

/// After a throttle, successes needed before the rate is raised one step.
const RAISE_AFTER_SUCCESSES: u32 = 10;
/// Each raise adds 10%: slow enough not to hit the wall again at once.
const RAISE_FACTOR: f64 = 1.1;
/// Each throttle halves the rate (the usual multiplicative decrease).
const CUT_FACTOR: f64 = 0.5;
/// Never go below one request a second: a throttled run must still make progress.
const FLOOR_RPS: f64 = 1.0;

struct Inner {
    /// `--rate`; `None` = unlimited.
    ceiling: Option<f64>,
    /// The rate in force; `None` = unlimited.
    current: Option<f64>,
    limiter: Option<Limiter>,
    successes: u32,
    /// Send times in the last second, to know what "unlimited" was when a throttle hits.
    recent: VecDeque<Instant>,
    throttles: u32,
}

/// Shared pace for every request of a run.
pub struct Pace {
    clock: TokioClock,
    inner: Mutex<Inner>,
}

fn limiter(rps: f64, clock: TokioClock) -> Limiter {
    let period = Duration::from_secs_f64(1.0 / rps.max(FLOOR_RPS));
    // A burst of a tenth of a second's worth keeps calls smooth rather than bunched.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let burst = NonZeroU32::new(((rps / 10.0).ceil() as u32).max(1)).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst);
    RateLimiter::direct_with_clock(quota, clock)
}

impl Pace {
    /// `rate` requests per second; 0 = unlimited.
    pub fn new(rate: u32) -> Pace {
        let clock = TokioClock::new();
        let ceiling = (rate > 0).then_some(f64::from(rate));
        Pace {
            clock,
            inner: Mutex::new(Inner {
                ceiling,
                current: ceiling,
                limiter: ceiling.map(|r| limiter(r, clock)),
                successes: 0,
                recent: VecDeque::new(),
                throttles: 0,
            }),
        }
    }

    /// Wait for a slot.
    pub async fn ready(&self) {
        loop {
            let wait = {
                let mut inner = self.inner.lock().expect("pace lock");
                let now = Instant::now();
                let check = inner.limiter.as_ref().map(Limiter::check);
                match check {
                    None | Some(Ok(())) => {
                        inner.recent.push_back(now);
                        while inner
                            .recent
                            .front()
                            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(1))
                        {
                            inner.recent.pop_front();
                        }
                        return;
                    }
                    Some(Err(not_until)) => not_until.wait_time_from(self.clock.now()),
                }
            };
            tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
        }
    }

    /// The gateway answered 153: halve the rate.
    pub fn throttled(&self) {
        let mut inner = self.inner.lock().expect("pace lock");
        #[allow(clippy::cast_precision_loss)]
        let base = inner.current.unwrap_or_else(|| inner.recent.len().max(2) as f64);
        let next = (base * CUT_FACTOR).max(FLOOR_RPS);
        inner.current = Some(next);
        inner.limiter = Some(limiter(next, self.clock));
        inner.successes = 0;
        inner.throttles += 1;
        tracing::warn!(
            rate = format!("{next:.1}/s"),
            "throttled by the API (RetCode 153); lowering the request rate"
        );
    }

    /// A request went through: after enough of them, raise the rate a step towards the ceiling.
    pub fn succeeded(&self) {
        let mut inner = self.inner.lock().expect("pace lock");
        let Some(current) = inner.current else { return };
        if inner.ceiling.is_some_and(|c| current >= c) {
            return;
        }
        inner.successes += 1;
        if inner.successes < RAISE_AFTER_SUCCESSES {
            return;
        }
        inner.successes = 0;
        let raised = current * RAISE_FACTOR + 0.5;
        match inner.ceiling {
            Some(c) if raised >= c => {
                inner.current = Some(c);
                inner.limiter = Some(limiter(c, self.clock));
            }
            // Unlimited to begin with, and well past where the throttle hit: lift the limit.
            None if raised > 1000.0 => {
                inner.current = None;
                inner.limiter = None;
            }
            _ => {
                inner.current = Some(raised);
                inner.limiter = Some(limiter(raised, self.clock));
            }
        }
    }

    /// The rate in force (`None` = unlimited).
    pub fn current(&self) -> Option<f64> {
        self.inner.lock().expect("pace lock").current
    }

    /// How many throttles this run has seen.
    pub fn throttles(&self) -> u32 {
        self.inner.lock().expect("pace lock").throttles
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ceiling_is_enforced_in_virtual_time() {
        let pace = Pace::new(10);
        let start = Instant::now();
        for _ in 0..31 {
            pace.ready().await;
        }
        let took = start.elapsed();
        // 10/s with a burst of 1: 31 requests need about 3 s.
        assert!(
            took >= Duration::from_millis(2900) && took <= Duration::from_millis(3200),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_does_not_wait() {
        let pace = Pace::new(0);
        let start = Instant::now();
        for _ in 0..1000 {
            pace.ready().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn throttle_halves_and_successes_raise_slowly_back_to_ceiling() {
        let pace = Pace::new(20);
        pace.throttled();
        assert_eq!(pace.current(), Some(10.0));
        pace.throttled();
        assert_eq!(pace.current(), Some(5.0));
        for _ in 0..RAISE_AFTER_SUCCESSES {
            pace.succeeded();
        }
        let raised = pace.current().unwrap();
        assert!(raised > 5.0 && raised < 7.0, "{raised}");
        for _ in 0..(RAISE_AFTER_SUCCESSES * 40) {
            pace.succeeded();
        }
        assert_eq!(pace.current(), Some(20.0));
        assert_eq!(pace.throttles(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_gets_a_limit_after_a_throttle() {
        let pace = Pace::new(0);
        for _ in 0..40 {
            pace.ready().await;
        }
        pace.throttled();
        assert_eq!(pace.current(), Some(20.0));
        let start = Instant::now();
        for _ in 0..41 {
            pace.ready().await;
        }
        assert!(start.elapsed() >= Duration::from_millis(1800), "{:?}", start.elapsed());
    }
}
