//! Retry budgets in time: when to try again after a refusal, and when to give up.
//!
//! A budget means what it says: `--lock-wait 35s` keeps trying until 35 s have passed since
//! the *first* refusal of the episode, and makes a last attempt at the end of them. Gaps grow
//! exponentially (jittered, so many instances do not retry in lockstep), but no gap is longer
//! than a tenth of the budget, so a short budget is not spent in one or two sleeps, and the
//! last gap is cut to end exactly at the budget's end.
//!
//! Pure: the batch driver keeps one [`Episode`] per instance and kind of refusal, and asks
//! [`Policy::next`] with its own clock reading and random draw.

use std::time::Duration;

use tokio::time::Instant;

/// How a kind of refusal is retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Keep trying this long after the first refusal.
    pub budget: Duration,
    /// The gap after the first refusal (before jitter).
    pub first_gap: Duration,
    /// Gaps double up to this (before jitter).
    pub max_gap: Duration,
}

/// Refusals in a row of one kind, for one instance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Episode {
    /// When the first refusal was answered.
    pub since: Instant,
    /// Refusals so far (1 after the first).
    pub refusals: u32,
}

/// What to do after a refusal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    /// Try again after this gap.
    Retry(Duration),
    /// The budget is spent; this long has passed since the first refusal.
    GiveUp { waited: Duration },
}

/// Each gap is 50%–150% of its nominal value.
const JITTER: f64 = 0.5;

impl Policy {
    /// The operation lock: 5 s doubling to 30 s, for `budget` (`--lock-wait`). Gaps of at
    /// most 45 s (30 s + 50%) guarantee an attempt in the last minute of the default
    /// 11-minute budget, i.e. after a 10-minute lock taken at our first attempt has expired.
    pub fn lock(budget: Duration) -> Policy {
        Policy {
            budget,
            first_gap: Duration::from_secs(5),
            max_gap: Duration::from_secs(30),
        }
    }

    /// Transient errors (5xx, dropped connections): first a third of the poll interval (1 s at
    /// the default 3 s; at least 200 ms, at most 4 s), doubling to 30 s, for three minutes:
    /// an outage longer than that is not ridden out instance by instance.
    pub fn transient(poll_interval: Duration) -> Policy {
        Policy {
            budget: Duration::from_secs(3 * 60),
            first_gap: (poll_interval / 3).clamp(Duration::from_millis(200), Duration::from_secs(4)),
            max_gap: Duration::from_secs(30),
        }
    }

    /// The next step after the `episode`'s latest refusal, answered at `now`; `jitter` is a
    /// random draw in `0..1`.
    pub fn next(&self, episode: Episode, now: Instant, jitter: f64) -> Next {
        let waited = now.saturating_duration_since(episode.since);
        if waited >= self.budget {
            return Next::GiveUp { waited };
        }
        let doublings = episode.refusals.saturating_sub(1).min(16);
        let nominal = self.first_gap.saturating_mul(1 << doublings).min(self.max_gap);
        let jittered = nominal.mul_f64(1.0 - JITTER + 2.0 * JITTER * jitter.clamp(0.0, 1.0));
        let gap = jittered.min(self.budget / 10).min(self.budget.saturating_sub(waited));
        Next::Retry(gap)
    }
}

impl Episode {
    /// Count a refusal answered at `now`, starting an episode if there is none.
    pub fn refused(episode: &mut Option<Episode>, now: Instant) -> Episode {
        let e = episode.get_or_insert(Episode {
            since: now,
            refusals: 0,
        });
        e.refusals += 1;
        *e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// (budget, seconds since the first refusal, refusals so far, jitter draw) -> next.
    #[test]
    fn lock_policy_table() {
        let t0 = Instant::now();
        let table: &[(f64, f64, u32, f64, Next)] = &[
            // Long budget: 5 s doubling to 30 s, jittered ±50%.
            (660.0, 0.0, 1, 0.5, Next::Retry(secs(5.0))),
            (660.0, 5.0, 2, 0.5, Next::Retry(secs(10.0))),
            (660.0, 15.0, 3, 0.0, Next::Retry(secs(10.0))),
            (660.0, 15.0, 3, 1.0, Next::Retry(secs(30.0))),
            (660.0, 100.0, 9, 0.5, Next::Retry(secs(30.0))),
            (660.0, 100.0, 9, 1.0, Next::Retry(secs(45.0))),
            // The last gap ends at the budget's end.
            (660.0, 650.0, 30, 0.5, Next::Retry(secs(10.0))),
            (660.0, 660.0, 31, 0.5, Next::GiveUp { waited: secs(660.0) }),
            (660.0, 661.5, 31, 0.5, Next::GiveUp { waited: secs(661.5) }),
            // Short budgets: no gap longer than a tenth of the budget.
            (35.0, 0.0, 1, 0.5, Next::Retry(secs(3.5))),
            (35.0, 33.0, 12, 0.9, Next::Retry(secs(2.0))),
            (5.0, 0.0, 1, 0.0, Next::Retry(secs(0.5))),
            (5.0, 4.8, 10, 0.0, Next::Retry(secs(0.2))),
            (5.0, 5.0, 11, 0.0, Next::GiveUp { waited: secs(5.0) }),
            // A zero budget gives up at the first refusal.
            (0.0, 0.0, 1, 0.5, Next::GiveUp { waited: secs(0.0) }),
        ];
        for &(budget, waited, refusals, jitter, expected) in table {
            let policy = Policy::lock(secs(budget));
            let episode = Episode { since: t0, refusals };
            let got = policy.next(episode, t0 + secs(waited), jitter);
            assert_eq!(
                got, expected,
                "budget {budget}, waited {waited}, refusal {refusals}, jitter {jitter}"
            );
        }
    }

    #[test]
    fn transient_policy_starts_from_the_poll_interval() {
        let t0 = Instant::now();
        let first = |poll: f64| {
            let e = Episode { since: t0, refusals: 1 };
            Policy::transient(secs(poll)).next(e, t0, 0.5)
        };
        assert_eq!(first(3.0), Next::Retry(secs(1.0)));
        assert_eq!(first(0.1), Next::Retry(secs(0.2)));
        assert_eq!(first(60.0), Next::Retry(secs(4.0)));
        let late = Episode {
            since: t0,
            refusals: 12,
        };
        assert_eq!(
            Policy::transient(secs(3.0)).next(late, t0 + secs(180.0), 0.5),
            Next::GiveUp { waited: secs(180.0) }
        );
    }

    /// Following the policy from the first refusal, attempts are made until the budget's end,
    /// the last one exactly at it, and never more than a tenth of the budget apart.
    #[test]
    fn attempts_cover_the_whole_budget() {
        for budget in [0.3, 5.0, 35.0, 660.0] {
            let policy = Policy::lock(secs(budget));
            let t0 = Instant::now();
            let mut episode = None;
            let mut now = t0;
            let mut draws = [0.1, 0.9, 0.5, 0.0, 1.0, 0.7].iter().cycle();
            let mut attempts = vec![];
            loop {
                let e = Episode::refused(&mut episode, now);
                match policy.next(e, now, *draws.next().unwrap()) {
                    Next::Retry(gap) => {
                        assert!(gap <= secs(budget / 10.0), "{gap:?} in {budget}");
                        now += gap;
                        attempts.push(now);
                    }
                    Next::GiveUp { waited } => {
                        assert_eq!(waited, secs(budget));
                        break;
                    }
                }
            }
            assert_eq!(attempts.last().copied(), Some(t0 + secs(budget)), "budget {budget}");
        }
    }
}
