//! The last look before a delayed Terminate, shared between instances.
//!
//! A Terminate that waited for its turn (a concurrency slot, the pace) long enough for its
//! `Stopped` to go stale looks at the instance once more right before it is sent (see
//! `batch::Runner::send`). Under a rate limit many Terminates get their turn within a short
//! time of each other; they share one Describe of up to 100 IDs instead of one Describe each.
//! The first to ask leads: it waits a short gathering window for others to ask, describes them
//! all, and hands the lead to the next one asking.
//!
//! Those asking already have their turn from the pace; the shared look is charged to the pace
//! (borrowing a token if needed) rather than queued behind every other waiting call, which
//! would make the gathered Terminates wait, then go out as one burst.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::pace::Pace;
use crate::api::{Cloud, DESCRIBE_MAX, DescribeQuery, LockCodes, RetryClass, State, classify};

/// Whether an instance may still be terminated: `Ok` if it is still `Stopped` (or `Install
/// Fail`), else why not.
pub type Verdict = Result<(), String>;

/// What a waiting instance is told.
enum Msg {
    Verdict(Verdict),
    /// Your turn to lead: describe yourself and the next ones waiting.
    Lead,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<(String, oneshot::Sender<Msg>)>,
    /// Someone is leading: new arrivals wait for it.
    leading: bool,
}

/// Shared by every call task of a run.
pub struct Recheck<C> {
    cloud: Arc<C>,
    pace: Arc<Pace>,
    region: Option<String>,
    lock_codes: LockCodes,
    queue: Mutex<Queue>,
    describes: AtomicU32,
}

impl<C: Cloud> Recheck<C> {
    pub fn new(cloud: Arc<C>, pace: Arc<Pace>, region: Option<String>, lock_codes: LockCodes) -> Recheck<C> {
        Recheck {
            cloud,
            pace,
            region,
            lock_codes,
            queue: Mutex::new(Queue::default()),
            describes: AtomicU32::new(0),
        }
    }

    /// Describe calls sent so far.
    pub fn describes(&self) -> u32 {
        self.describes.load(Ordering::Relaxed)
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A fresh look at `id`, shared with the other instances asking within `gather`.
    pub async fn still_stopped(&self, id: &str, gather: Duration) -> Verdict {
        // Gathering is counted from one's own arrival: whoever is handed the lead after
        // waiting that long already describes at once, so leaders do not wait one after the
        // other.
        let until = Instant::now() + gather;
        let (tx, rx) = oneshot::channel();
        let lead = {
            let mut q = self.queue();
            if q.leading {
                q.waiting.push_back((id.to_owned(), tx));
                false
            } else {
                q.leading = true;
                true
            }
        };
        if lead {
            return self.lead(id, until).await;
        }
        match rx.await {
            Ok(Msg::Verdict(v)) => v,
            Ok(Msg::Lead) => self.lead(id, until).await,
            Err(_) => Err("the look right before sending was abandoned".to_owned()),
        }
    }

    /// At `until`, describe `id` and up to 99 others waiting, then hand the lead to the next
    /// one waiting. One chunk only: the leader's own Terminate goes out right after its look.
    async fn lead(&self, id: &str, until: Instant) -> Verdict {
        // Dropped at the end (or if this task is cancelled mid-way): passes the lead on.
        let _handover = Handover(self);
        tokio::time::sleep_until(until).await;
        self.pace.pair().await;
        let others: Vec<(String, oneshot::Sender<Msg>)> = {
            let mut q = self.queue();
            let n = q.waiting.len().min(DESCRIBE_MAX - 1);
            q.waiting.drain(..n).collect()
        };
        let mut ids: Vec<String> = others.iter().map(|(id, _)| id.clone()).collect();
        ids.push(id.to_owned());
        let verdicts = self.describe(ids).await;
        for (other, tx) in others {
            let v = verdicts(&other);
            let _ = tx.send(Msg::Verdict(v)); // the asker may be gone (a halt)
        }
        verdicts(id)
    }

    /// One Describe of `ids`: a verdict per ID.
    async fn describe(&self, mut ids: Vec<String>) -> impl Fn(&str) -> Verdict + use<C> {
        ids.sort_unstable();
        ids.dedup();
        let query = DescribeQuery {
            limit: u32::try_from(ids.len()).unwrap_or(100),
            ids,
            region: self.region.clone(),
            ..DescribeQuery::default()
        };
        self.describes.fetch_add(1, Ordering::Relaxed);
        let sent_at = Instant::now();
        let answer = self.cloud.describe(&query).await;
        match &answer {
            Err(e) if classify(e, &self.lock_codes) == RetryClass::Throttled => self.pace.throttled(sent_at),
            _ => self.pace.succeeded(sent_at),
        }
        let answer: Result<HashMap<String, State>, String> = answer
            .map(|page| page.uhost_set.into_iter().map(|r| (r.uhost_id, r.state)).collect())
            .map_err(|e| format!("the look right before sending failed: {e}"));
        move |id: &str| match &answer {
            Err(e) => Err(e.clone()),
            Ok(rows) => match rows.get(id) {
                Some(State::Stopped | State::InstallFail) => Ok(()),
                Some(state) => Err(format!("it is {state} now")),
                None => Err("it is gone now".to_owned()),
            },
        }
    }
}

/// Passes the lead on, also when a leader is dropped mid-way (its task cancelled).
struct Handover<'a, C>(&'a Recheck<C>);

impl<C> Drop for Handover<'_, C> {
    fn drop(&mut self) {
        let mut q = self.0.queue.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some((_, tx)) = q.waiting.pop_front() {
            if tx.send(Msg::Lead).is_ok() {
                return; // still leading, through that one
            }
        }
        q.leading = false;
    }
}
