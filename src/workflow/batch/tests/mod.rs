//! The driver's parts, each against a scripted [`Cloud`] whose answers the test writes call by
//! call (the whole-world tests in `tests/it` run the same driver against the simulator):
//! looks (`looks.rs`), calls (`calls.rs`), and the loop and ends (`mod.rs`, `ends.rs`).

use std::sync::Mutex;

use super::*;
use crate::api::{Answer, DescribePage, DescribeQuery, Looked, State, Target};
use crate::workflow::absence;

/// What the scripted cloud holds true: the state of each instance, and when an instance
/// whose deletion was accepted stops being listed.
#[derive(Default)]
struct Truth {
    states: HashMap<String, State>,
    gone_at: HashMap<String, Instant>,
}

impl Truth {
    fn listed(&self, id: &str, now: Instant) -> bool {
        self.states.contains_key(id) && self.gone_at.get(id).is_none_or(|at| now < *at)
    }
}

/// A call as the scripted cloud received it: when (since the script was made), which verb,
/// for which IDs.
#[derive(Debug, Clone)]
struct Received {
    at: Duration,
    verb: &'static str,
    ids: Vec<String>,
}

/// The `n`-th call (0-based) of a verb, with the truth to read or change.
type Hook<T> = Box<dyn Fn(&mut Truth, &Target, usize) -> Result<T, ApiError> + Send + Sync>;
type DescribeHook = Box<dyn Fn(&Truth, &DescribeQuery, usize) -> Result<DescribePage, ApiError> + Send + Sync>;

/// A [`Cloud`] whose answers are written by the test. By default Stop stops at once,
/// Terminate deletes at once, and Describe lists every requested instance that exists with
/// an honest `TotalCount`.
struct Scripted {
    made: Instant,
    truth: Mutex<Truth>,
    log: Mutex<Vec<Received>>,
    stop: Hook<()>,
    terminate: Hook<TerminateAck>,
    describe: DescribeHook,
    /// How long Stop and Describe take to answer.
    stop_delay: Duration,
    describe_delay: Duration,
    /// Looks answered, before any other, with a body that does not read as a page.
    garbled_looks: usize,
}

const STOP: &str = "Stop";
const TERMINATE: &str = "Terminate";
const DESCRIBE: &str = "Describe";

fn row(id: &str, state: State) -> Instance {
    Instance {
        uhost_id: id.to_owned(),
        name: format!("name-of-{id}"),
        state,
        region: "cn-wlcb".to_owned(),
        zone: "cn-wlcb-01".to_owned(),
        charge_type: "Postpay".to_owned(),
        ..Instance::default()
    }
}

fn honest(truth: &Truth, q: &DescribeQuery) -> DescribePage {
    let now = Instant::now();
    let rows: Vec<Instance> = q
        .ids
        .iter()
        .filter(|id| truth.listed(id, now))
        .map(|id| row(id, truth.states[id].clone()))
        .collect();
    DescribePage {
        total_count: Some(i64::try_from(rows.len()).unwrap_or(i64::MAX)),
        uhost_set: rows,
    }
}

fn retcode(action: &str, code: i64, message: &str) -> ApiError {
    ApiError::RetCode {
        action: action.to_owned(),
        code,
        message: message.to_owned(),
        request_id: Some("req-1".to_owned()),
    }
}

/// A Stop hook that refuses the first `k` Stops with RetCode `code`, then stops the instance.
fn refuse_then_stop(k: usize, code: i64, message: &'static str) -> Hook<()> {
    Box::new(move |t, target, n| {
        if n < k {
            return Err(retcode("StopCompShareInstance", code, message));
        }
        t.states.insert(target.uhost_id.clone(), State::Stopped);
        Ok(())
    })
}

impl Scripted {
    fn new(rows: &[(&str, State)]) -> Scripted {
        let truth = Truth {
            states: rows.iter().map(|(id, s)| ((*id).to_owned(), s.clone())).collect(),
            gone_at: HashMap::new(),
        };
        Scripted {
            made: Instant::now(),
            truth: Mutex::new(truth),
            log: Mutex::new(Vec::new()),
            stop: Box::new(|t, target, _| {
                t.states.insert(target.uhost_id.clone(), State::Stopped);
                Ok(())
            }),
            terminate: Box::new(|t, target, _| {
                t.gone_at.insert(target.uhost_id.clone(), Instant::now());
                Ok(TerminateAck::default())
            }),
            describe: Box::new(|t, q, _| Ok(honest(t, q))),
            stop_delay: Duration::ZERO,
            describe_delay: Duration::ZERO,
            garbled_looks: 0,
        }
    }

    /// Every instance of `ids` in `state`.
    fn uniform(ids: &[String], state: &State) -> Scripted {
        let rows: Vec<(&str, State)> = ids.iter().map(|id| (id.as_str(), state.clone())).collect();
        Scripted::new(&rows)
    }

    /// Log the call; its number among calls of the same verb.
    fn receive(&self, verb: &'static str, ids: Vec<String>) -> usize {
        let mut log = self.log.lock().expect("not poisoned");
        let n = log.iter().filter(|r| r.verb == verb).count();
        log.push(Received {
            at: self.made.elapsed(),
            verb,
            ids,
        });
        n
    }

    /// A hook that panics (on purpose) poisons the lock; the truth is still sound.
    fn truth(&self) -> std::sync::MutexGuard<'_, Truth> {
        self.truth.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn calls(&self, verb: &str) -> Vec<Received> {
        let log = self.log.lock().expect("not poisoned");
        log.iter().filter(|r| r.verb == verb).cloned().collect()
    }
}

impl Cloud for Scripted {
    async fn describe(&self, q: &DescribeQuery) -> Result<DescribePage, ApiError> {
        let n = self.receive(DESCRIBE, q.ids.clone());
        tokio::time::sleep(self.describe_delay).await;
        let truth = self.truth();
        (self.describe)(&truth, q, n)
    }

    async fn look(&self, q: DescribeQuery) -> Result<Looked, ApiError> {
        let garbled = self.calls(DESCRIBE).len() < self.garbled_looks;
        if garbled {
            self.receive(DESCRIBE, q.ids.clone());
            // A `State` that is a number: the page does not read (as a `String` would not).
            return Ok(Looked::from(Answer::from_body(
                br#"{"UHostSet":[{"State":5}]}"#.to_vec(),
            )));
        }
        self.describe(&q).await.map(Looked::from)
    }

    async fn stop(&self, target: &Target, _force: bool) -> Result<(), ApiError> {
        let n = self.receive(STOP, vec![target.uhost_id.clone()]);
        tokio::time::sleep(self.stop_delay).await;
        let mut truth = self.truth();
        (self.stop)(&mut truth, target, n)
    }

    async fn terminate(&self, target: &Target, _release: bool) -> Result<TerminateAck, ApiError> {
        let n = self.receive(TERMINATE, vec![target.uhost_id.clone()]);
        let mut truth = self.truth();
        (self.terminate)(&mut truth, target, n)
    }
}

/// A Describe that shows a `Stopping` instance as `Stopped` once `d` has passed from now.
fn stopping_for(d: Duration) -> DescribeHook {
    let t0 = Instant::now();
    Box::new(move |t, q, _| {
        let mut page = honest(t, q);
        for r in &mut page.uhost_set {
            if r.state == State::Stopping && t0.elapsed() > d {
                r.state = State::Stopped;
            }
        }
        Ok(page)
    })
}

fn settings() -> Settings {
    Settings {
        jitter_seed: Some(3),
        ..Settings::default()
    }
}

async fn drive(cloud: &Arc<Scripted>, ids: &[&str], settings: Settings, ctl: Controls) -> Report {
    let ids = ids.iter().map(|s| (*s).to_owned()).collect();
    run(Arc::clone(cloud), ids, settings, ctl).await
}

fn outcome<'a>(report: &'a Report, id: &str) -> &'a Outcome {
    &report
        .instances
        .iter()
        .find(|i| i.uhost_id == id)
        .expect("every instance is in the report")
        .outcome
}

fn confirmed(o: &Outcome) -> bool {
    matches!(o, Outcome::Terminated { confirmed: true, .. })
}

mod calls;
mod ends;
mod looks;
