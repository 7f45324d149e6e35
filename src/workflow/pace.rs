//! The global request pace: it finds the account's rate limit instead of being told one.
//!
//! CompShare does not publish its rate limits, so the pace starts with no client-side rate
//! limit (only `--rate`, a hard ceiling, if the user gave one), but with TCP's slow start: at
//! most [`INITIAL_WINDOW`] requests await their answers, and each answer lets one more out.
//! When the API throttles (RetCode 153)
//! it starts a token bucket and lowers its rate; afterwards the rate follows a CUBIC curve back
//! up: fast at first, flat near the last good rate, then probing beyond it. This is the
//! adaptive retry mode of the AWS SDKs (smithy-rs's client rate limiter), with two rules from
//! TCP congestion control and from what a noisy gateway does:
//!
//! - **One decrease per window**: a 153 answering a request sent *before* the last decrease is
//!   already accounted for and does not cut again (the "recover" point of TCP `NewReno`), so a burst of
//!   153s lowers the rate once, not once per answer.
//! - **Isolated throttles are noise**: a decrease needs [`CUT_AFTER`] throttles among the last
//!   [`ANSWER_WINDOW`] answers (of requests sent since the last decrease). A gateway at its limit
//!   refuses a good share of the excess; a random 153 now and then does not collapse the rate.
//! - **Pairs**: a look that licenses a call already holding its turn leaves with it after a
//!   gap worth both ([`Pace::pair`]), so at one request a second the look cannot take the
//!   token its Terminate needs.
//!
//! The bucket is hand-rolled rather than a `governor` limiter because its rate changes with
//! every request (the curve is a function of time); it runs on `tokio::time`, so paused-time
//! tests see it wait in virtual time like everything else.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::outcome::PaceSummary;

/// Each decrease keeps 70% of the last good rate (the SDKs' β).
const BETA: f64 = 0.7;
/// The CUBIC scale constant: with it, a rate of 20/s is back at its last maximum 2.5 s after a
/// decrease, and 200/s after 5.3 s.
const CUBIC_C: f64 = 0.4;
/// The fewest requests (at the last maximum) a curve takes to climb back to it: twenty, so at
/// 1/s it takes twenty seconds (and probes beyond it after forty, each probe costing a few
/// refusals); above about 20/s CUBIC's own `K` is longer and rules.
const RECOVER_REQUESTS: f64 = 20.0;
/// A decrease's new maximum is at most the rate the gateway admitted, divided by this: what
/// a gateway admits while we probe reads a little low (one with a small burst refuses some
/// requests even below its limit), and a maximum right at it would ratchet down decrease
/// after decrease; a maximum far above it would be refused again and again.
const ADMITTED_SHARE: f64 = 0.9;
/// Requests that may await their answers at the start, before the gateway's limit is known:
/// each answer that is not a throttle lets one more out (TCP's slow start: the window doubles
/// every round trip), so a run at a low limit learns it from a few refusals instead of
/// sending its whole first wave into it. Ten, as TCP's initial window; the window reaches the
/// default concurrency (64) within three round trips.
const INITIAL_WINDOW: u32 = 10;
/// How long a request waits for an answer to free the window before it goes anyway: answers
/// can be lost (a task that panicked), and slow start must never stall a run.
const WINDOW_WAIT: Duration = Duration::from_secs(1);
/// Never below one request every two seconds: a throttled run must still make progress.
const FLOOR_RPS: f64 = 0.5;
/// Answers remembered to tell a rate limit from random throttles.
const ANSWER_WINDOW: usize = 20;
/// Throttles among those answers that mean "too fast". With 2% random 153s, three in twenty
/// happen about once every 140 windows; a gateway refusing the excess over its limit sends
/// them within a second once we are 15% above it.
const CUT_AFTER: usize = 3;
/// The send rate is measured over the last second, or over the last [`MEASURE_EVENTS`] sends
/// when a second holds fewer (at low rates a second holds one or two sends, and their rate
/// reads high or not at all), but never over more than [`MEASURE_MAX`].
const MEASURE: Duration = Duration::from_secs(1);
/// Sends a low-rate measurement spans: at 1/s about ten seconds, so a look and its Terminate
/// sent as a pair read as the rate they average, not as one burst.
const MEASURE_EVENTS: usize = 10;
/// The oldest send a measurement reads: beyond this the rate it gave has long changed.
const MEASURE_MAX: Duration = Duration::from_secs(30);
/// A change of the rate in force by this factor is logged (the curve moves continuously).
const LOG_STEP: f64 = 1.1;

/// The rate of the events in `times` over the last [`MEASURE`], or over the last
/// [`MEASURE_EVENTS`] events if that second holds fewer (dropping older ones); 0 with fewer
/// than two.
#[expect(clippy::cast_precision_loss, reason = "a count of events in one second")]
fn rate_of(times: &mut VecDeque<Instant>, now: Instant) -> f64 {
    while times.front().is_some_and(|t| {
        let age = now.duration_since(*t);
        age > MEASURE_MAX || (age > MEASURE && times.len() > MEASURE_EVENTS)
    }) {
        times.pop_front();
    }
    let n = times.len();
    let (Some(oldest), Some(newest)) = (times.front(), times.back()) else {
        return 0.0;
    };
    if n < 2 {
        return 0.0;
    }
    // n events evenly spaced at rate r span (n − 1)/r seconds. At least 50 ms, so an opening
    // burst reads as a high rate rather than an infinite one.
    let span = newest
        .duration_since(*oldest)
        .max(Duration::from_millis(50))
        .as_secs_f64();
    (n - 1) as f64 / span
}

/// The rate curve after a decrease.
#[derive(Debug, Clone, Copy)]
struct Curve {
    /// When the decrease happened.
    since: Instant,
    /// The rate at which the API throttled us.
    last_max: f64,
}

impl Curve {
    /// CUBIC: `c·(t − K)³ + last_max`, which is `β·last_max` at the decrease and `last_max`
    /// again after `K` seconds. `K = ∛(last_max·(1 − β)/C)` as in CUBIC, but never shorter
    /// than [`RECOVER_REQUESTS`] requests at `last_max`, and `c` follows from `K`: at low
    /// rates seconds hold few requests, and a curve back at its maximum within a request or
    /// two would spend most of its time above the limit it just found.
    fn rate(&self, now: Instant) -> f64 {
        let t = now.duration_since(self.since).as_secs_f64();
        let k = (self.last_max * (1.0 - BETA) / CUBIC_C)
            .cbrt()
            .max(RECOVER_REQUESTS / self.last_max);
        let c = self.last_max * (1.0 - BETA) / k.powi(3);
        c * (t - k).powi(3) + self.last_max
    }
}

#[derive(Debug)]
struct Inner {
    /// `--rate`: never faster than this.
    ceiling: Option<f64>,
    /// `None` until the first decrease: no client-side limit (but the ceiling).
    curve: Option<Curve>,
    tokens: f64,
    refilled: Instant,
    /// Send times within the last [`MEASURE`].
    sends: VecDeque<Instant>,
    /// Times of answers that were not throttles, within the last [`MEASURE`].
    admitted: VecDeque<Instant>,
    /// The last answers: (when their request was sent, throttled).
    answers: VecDeque<(Instant, bool)>,
    /// When the rate was last decreased.
    last_cut: Option<Instant>,
    /// The rate last logged.
    logged: Option<f64>,
    /// Slow start until the first decrease (and only without `--rate`).
    start: Option<SlowStart>,
    stats: PaceSummary,
}

/// The slow-start window (see [`INITIAL_WINDOW`]).
#[derive(Debug, Clone, Copy)]
struct SlowStart {
    window: u32,
    /// Requests sent and not answered yet.
    outstanding: u32,
}

/// Why a request cannot go yet.
enum Wait {
    /// For the next token.
    For(Duration),
    /// For an answer to free the slow-start window.
    Answer,
}

/// Shared pace for every request of a run.
#[derive(Debug)]
pub struct Pace {
    /// Waiters take turns (tokio's mutex is fair): one sleeps for the next token, the others
    /// queue behind it instead of all waking for every token.
    turn: tokio::sync::Mutex<()>,
    inner: Mutex<Inner>,
    /// Woken by every answer (for a request waiting on the slow-start window).
    answered: tokio::sync::Notify,
}

impl Inner {
    /// The send rate over the last second: the gaps between the sends in it (n sends evenly
    /// spaced at rate r span (n − 1)/r seconds; counting n per second would read high at low
    /// rates, and a limit found from it would sit above the gateway's).
    fn measured(&mut self, now: Instant) -> f64 {
        rate_of(&mut self.sends, now)
    }

    /// The rate in force at `now`; `None` = no limit.
    fn rate(&mut self, now: Instant) -> Option<f64> {
        let Some(curve) = self.curve else {
            return self.ceiling;
        };
        // Past the last maximum, probe at most twice as fast as we actually send: a run that
        // sends little does not build up a rate it never tested.
        let probe_cap = curve.last_max.max(2.0 * self.measured(now));
        let rate = curve.rate(now).min(probe_cap).max(FLOOR_RPS);
        Some(self.ceiling.map_or(rate, |c| rate.min(c)))
    }

    fn record_send(&mut self, now: Instant) {
        self.sends.push_back(now);
        let _ = rate_of(&mut self.sends, now); // trims: an unlimited run must not grow it
    }

    fn record_answer(&mut self, sent_at: Instant, throttled: bool) {
        if let Some(start) = self.start.as_mut() {
            start.outstanding = start.outstanding.saturating_sub(1);
            if !throttled {
                start.window = start.window.saturating_add(1);
            }
        }
        if self.answers.len() == ANSWER_WINDOW {
            self.answers.pop_front();
        }
        self.answers.push_back((sent_at, throttled));
    }

    /// Take a token if there is one; else how long until there is.
    fn take(&mut self, now: Instant) -> Result<(), Wait> {
        let Some(rate) = self.rate(now) else {
            if let Some(start) = self.start.as_mut() {
                if start.outstanding >= start.window {
                    return Err(Wait::Answer);
                }
                start.outstanding += 1;
            }
            self.record_send(now);
            return Ok(());
        };
        self.log_change(rate);
        // A burst of a tenth of a second's worth keeps calls smooth rather than bunched.
        let capacity = (rate / 10.0).max(1.0);
        let dt = now.duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + dt * rate).min(capacity);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.record_send(now);
            return Ok(());
        }
        Err(Wait::For(
            Duration::from_secs_f64((1.0 - self.tokens) / rate).max(Duration::from_millis(1)),
        ))
    }

    fn log_change(&mut self, rate: f64) {
        let moved = self.logged.is_none_or(|l| rate > l * LOG_STEP || rate * LOG_STEP < l);
        if moved {
            self.logged = Some(rate);
            tracing::debug!(rate = format!("{rate:.1}/s"), "request pace");
        }
    }
}

impl Pace {
    /// `ceiling` requests per second at most; 0 = no ceiling.
    pub fn new(ceiling: u32) -> Pace {
        let now = Instant::now();
        let ceiling = (ceiling > 0).then_some(f64::from(ceiling));
        Pace {
            turn: tokio::sync::Mutex::new(()),
            answered: tokio::sync::Notify::new(),
            inner: Mutex::new(Inner {
                ceiling,
                curve: None,
                tokens: 1.0,
                refilled: now,
                sends: VecDeque::new(),
                admitted: VecDeque::new(),
                answers: VecDeque::with_capacity(ANSWER_WINDOW),
                last_cut: None,
                logged: None,
                start: ceiling.is_none().then_some(SlowStart {
                    window: INITIAL_WINDOW,
                    outstanding: 0,
                }),
                stats: PaceSummary {
                    final_rate: ceiling,
                    ..PaceSummary::default()
                },
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every critical section leaves the state consistent; a panic elsewhere does not
        // make it unusable.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Wait for the turn to send a request. Without a limit this returns at once.
    pub async fn ready(&self) {
        if self.lock().take(Instant::now()).is_ok() {
            return;
        }
        let _turn = self.turn.lock().await;
        loop {
            let answered = self.answered.notified();
            let wait = match self.lock().take(Instant::now()) {
                Ok(()) => return,
                Err(wait) => wait,
            };
            match wait {
                Wait::For(d) => tokio::time::sleep(d).await,
                Wait::Answer => {
                    if tokio::time::timeout(WINDOW_WAIT, answered).await.is_err() {
                        // No answer for a second: go anyway (and widen the window for it).
                        let mut inner = self.lock();
                        if let Some(start) = inner.start.as_mut() {
                            start.window += 1;
                        }
                    }
                }
            }
        }
    }

    /// A request that must go right before one that already has its turn (the last look
    /// before a Terminate): it borrows a token, then waits until the debt is paid back, so
    /// the two leave as a pair after a gap worth both. The gap is the point: sent at once, a
    /// look would take the only token a gateway at its limit has left, and the Terminate it
    /// licenses would be refused, looked at again and refused again, forever. Nothing else is
    /// sent meanwhile (the bucket is in debt).
    pub async fn pair(&self) {
        let wait = {
            let now = Instant::now();
            let mut inner = self.lock();
            match inner.take(now) {
                Ok(()) => return,
                Err(Wait::Answer) => {
                    // Slow start: the look goes now, counted like any request.
                    if let Some(start) = inner.start.as_mut() {
                        start.outstanding += 1;
                    }
                    inner.record_send(now);
                    None
                }
                Err(Wait::For(_)) => {
                    inner.tokens -= 1.0;
                    inner.record_send(now);
                    inner
                        .rate(now)
                        .map(|rate| Duration::from_secs_f64(-inner.tokens.min(0.0) / rate))
                }
            }
        };
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
    }

    /// The gateway answered 153 to a request sent at `sent_at`.
    pub fn throttled(&self, sent_at: Instant) {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.stats.throttles += 1;
        inner.record_answer(sent_at, true);
        self.answered.notify_waiters();
        // At the very instant of a decrease (paused time answers at once), "before" wins.
        if inner.last_cut.is_some_and(|cut| sent_at <= cut) {
            return; // sent before the last decrease: already accounted for
        }
        let since_cut = inner.last_cut;
        let recent = inner
            .answers
            .iter()
            .filter(|(sent, throttled)| *throttled && since_cut.is_none_or(|cut| *sent > cut))
            .count();
        if recent < CUT_AFTER {
            tracing::debug!(recent, "throttled by the API (RetCode 153); not slowing down yet");
            return;
        }
        let measured = inner.measured(now);
        let current = inner.rate(now);
        // The rate we were throttled at: what we actually sent, or the limit if it was lower.
        let mut last_max = current.map_or(measured, |c| c.min(measured));
        // And no faster than what the gateway let through meanwhile: the curve returns to
        // `last_max` and dwells there, so a maximum above what the gateway admits would be
        // refused again and again. (A gateway with a small burst may refuse a few requests
        // below its limit, so this can read a little low; the curve probes beyond it.)
        let admitted = rate_of(&mut inner.admitted, now);
        if admitted > 0.0 {
            last_max = last_max.min(admitted / ADMITTED_SHARE);
        }
        let last_max = last_max.max(FLOOR_RPS);
        inner.curve = Some(Curve { since: now, last_max });
        inner.start = None; // the curve rules from now on
        inner.last_cut = Some(now);
        let rate = inner.rate(now).unwrap_or(FLOOR_RPS);
        // Slower from now on: no saved-up burst at the old rate.
        inner.tokens = 0.0;
        inner.refilled = now;
        inner.logged = Some(rate);
        inner.stats.decreases += 1;
        inner.stats.min_rate = Some(inner.stats.min_rate.map_or(rate, |m| m.min(rate)));
        tracing::debug!(
            rate = format!("{rate:.1}/s"),
            throttled_at = format!("{last_max:.1}/s"),
            throttles = inner.stats.throttles,
            decreases = inner.stats.decreases,
            "throttled by the API (RetCode 153): lowering the request pace"
        );
    }

    /// An answer that was not a throttle, to a request sent at `sent_at`.
    pub fn succeeded(&self, sent_at: Instant) {
        let mut inner = self.lock();
        inner.record_answer(sent_at, false);
        self.answered.notify_waiters();
        inner.admitted.push_back(Instant::now());
        // Trimmed here too: a run that is never throttled must not grow this without end.
        let _ = rate_of(&mut inner.admitted, Instant::now());
    }

    /// The rate in force now (`None` = no limit).
    pub fn current(&self) -> Option<f64> {
        self.lock().rate(Instant::now())
    }

    /// Totals for the report.
    pub fn summary(&self) -> PaceSummary {
        let mut inner = self.lock();
        let rate = inner.rate(Instant::now());
        let round = |r: f64| (r * 10.0).round() / 10.0;
        PaceSummary {
            final_rate: rate.map(round),
            min_rate: inner.stats.min_rate.map(round),
            ..inner.stats.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_ceiling_is_enforced_in_virtual_time() {
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

    /// A request that already has its turn and the look paired with it leave together after
    /// a gap worth both; nothing else leaves in that gap.
    #[tokio::test(start_paused = true)]
    async fn a_pair_leaves_after_a_gap_worth_both() {
        let pace = Pace::new(1);
        pace.ready().await; // the first token
        let start = Instant::now();
        pace.ready().await; // the call's turn: a second later
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        pace.pair().await; // its look: borrowed, then a second of debt paid back
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        pace.ready().await; // the next request: a second after the pair
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        // Without a limit a pair costs nothing.
        let free = Pace::new(0);
        let start = Instant::now();
        free.ready().await;
        free.pair().await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    /// The measured rate at one request a second, sent as pairs, reads as the average, not
    /// as the burst of each pair.
    #[tokio::test(start_paused = true)]
    async fn a_low_rate_is_measured_over_enough_sends() {
        let mut times = VecDeque::new();
        let start = Instant::now();
        for k in 0..10u32 {
            let at = start + Duration::from_secs(2) * k;
            times.push_back(at);
            times.push_back(at + Duration::from_millis(5));
        }
        let now = start + Duration::from_secs(19);
        let rate = rate_of(&mut times, now);
        assert!((0.9..1.3).contains(&rate), "{rate}");
        // At high rates the last second is enough.
        let mut fast: VecDeque<Instant> = (0..400u32).map(|k| start + Duration::from_millis(5) * k).collect();
        let rate = rate_of(&mut fast, start + Duration::from_secs(2));
        assert!((190.0..=210.0).contains(&rate), "{rate}");
    }

    /// No rate limit until throttled: requests wait only for answers, ten at first, each
    /// answer letting one more out (slow start).
    #[tokio::test(start_paused = true)]
    async fn no_limit_until_throttled() {
        let pace = Pace::new(0);
        let start = Instant::now();
        for _ in 0..1000 {
            pace.ready().await;
            pace.succeeded(Instant::now());
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(pace.current(), None);
        assert_eq!(pace.summary(), PaceSummary::default());
    }

    #[tokio::test(start_paused = true)]
    async fn slow_start_lets_ten_wait_for_answers_then_one_more_per_answer() {
        let pace = std::sync::Arc::new(Pace::new(0));
        let start = Instant::now();
        for _ in 0..INITIAL_WINDOW {
            pace.ready().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        let answers = std::sync::Arc::clone(&pace);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            answers.succeeded(start);
        });
        pace.ready().await; // the eleventh waits for the answer
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        pace.ready().await; // the answer widened the window by one
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        pace.ready().await; // no answer: it goes after a second anyway
        assert_eq!(start.elapsed(), Duration::from_millis(100) + WINDOW_WAIT);
    }

    /// Send at the pace for `secs` against a gateway admitting `limit` requests a second (a
    /// token bucket with a burst of `limit / 10`); every answer goes back to the pace. Returns
    /// (admitted, throttled).
    async fn drive(pace: &Pace, limit: f64, secs: u64) -> (u32, u32) {
        let end = Instant::now() + Duration::from_secs(secs);
        let burst = (limit / 10.0).max(1.0);
        let mut gateway = burst;
        let mut last = Instant::now();
        let (mut ok, mut refused) = (0, 0);
        while Instant::now() < end {
            pace.ready().await;
            let now = Instant::now();
            gateway = (gateway + now.duration_since(last).as_secs_f64() * limit).min(burst);
            last = now;
            if gateway >= 1.0 {
                gateway -= 1.0;
                ok += 1;
                pace.succeeded(now);
            } else {
                refused += 1;
                pace.throttled(now);
            }
            // Requests take a moment: without a limit the client sends 1000/s.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        (ok, refused)
    }

    #[tokio::test(start_paused = true)]
    async fn a_real_rate_limit_is_found_and_held() {
        let pace = Pace::new(0);
        // Finding it: from 1000/s down to 20/s within a few seconds.
        let (_, refused_early) = drive(&pace, 20.0, 5).await;
        let rate = pace.current().expect("limited after throttles");
        assert!(rate < 40.0, "{rate}");
        // Holding it: over the next minute, at least 80% of the limit gets through and few
        // requests are refused.
        let (ok, refused) = drive(&pace, 20.0, 60).await;
        assert!(ok >= 60 * 16, "{ok} admitted in 60 s");
        assert!(refused * 10 < ok, "{refused} refused, {ok} admitted");
        assert!(refused_early < 200, "{refused_early}");
        let s = pace.summary();
        assert!(s.decreases >= 2 && s.throttles >= s.decreases, "{s:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn isolated_throttles_do_not_collapse_the_rate() {
        let pace = Pace::new(0);
        // A 153 every 50 requests (2%), evenly spread: no decrease at all.
        for i in 0..5000 {
            pace.ready().await;
            let now = Instant::now();
            if i % 50 == 49 {
                pace.throttled(now);
            } else {
                pace.succeeded(now);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let s = pace.summary();
        assert_eq!(s.throttles, 100);
        assert_eq!(s.decreases, 0, "{s:?}");
        assert_eq!(pace.current(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_throttles_lowers_the_rate_once() {
        let pace = Pace::new(0);
        let sent = Instant::now();
        for _ in 0..INITIAL_WINDOW {
            pace.ready().await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The first window's requests sent together, all refused: one decrease.
        for _ in 0..INITIAL_WINDOW {
            pace.throttled(sent);
        }
        let s = pace.summary();
        assert_eq!((s.throttles, s.decreases), (10, 1), "{s:?}");
        // 10 sends at once read as 9 gaps in 50 ms (the shortest span measured): 180/s,
        // and the rate is 70% of it.
        let rate = pace.current().unwrap();
        assert!((rate - 126.0).abs() < 1.0, "{rate}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_climbs_back_within_seconds_and_probes_beyond() {
        let pace = Pace::new(0);
        let (_, _) = drive(&pace, 20.0, 10).await;
        // The gateway's limit is raised to 100/s: within ten seconds the pace sends at least
        // 80 a second.
        let (_, _) = drive(&pace, 100.0, 10).await;
        let (ok, _) = drive(&pace, 100.0, 5).await;
        assert!(ok >= 5 * 80, "{ok} admitted in 5 s after the raise");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lowered_limit_is_followed_down() {
        let pace = Pace::new(0);
        let (_, _) = drive(&pace, 50.0, 10).await;
        let (_, _) = drive(&pace, 10.0, 5).await;
        let before = pace.summary();
        let (ok, refused) = drive(&pace, 10.0, 20).await;
        assert!(ok >= 20 * 8, "{ok} {refused} {before:?} {:?}", pace.summary());
        assert!(refused * 5 < ok, "{refused} refused, {ok} admitted");
    }

    #[tokio::test(start_paused = true)]
    async fn the_ceiling_caps_the_curve() {
        let pace = Pace::new(15);
        let (ok, _) = drive(&pace, 1000.0, 10).await;
        assert!((140..=160).contains(&ok), "{ok}");
        assert_eq!(pace.summary().decreases, 0);
    }
}
