//! What the job knows of each instance before it decides: where the fresh listing puts it
//! (marked ones the selection did not return looked up by ID) and what its GPUs did in the
//! window (the API's samples with the store's, judged by [`monitor::judge`]).

use std::collections::{BTreeMap, HashMap};

use super::{Config, secs};
use crate::api::{self, Instance, State, Transport};
use crate::monitor::{self, Verdict, Why};
use crate::schedule::decide::{Judgement, Listed};
use crate::selection::{Candidate, Verdict as Selected};
use crate::state::{Mark, Seen, StateError, Store};

pub(super) type Rows = BTreeMap<String, (Listed, Option<Instance>)>;

/// Where each instance stands in the fresh listing, marked ones the selection did not return
/// included.
pub(super) async fn listed<T: Transport>(cloud: &T, cands: Vec<Candidate>, marks: &HashMap<String, Mark>) -> Rows {
    let mut rows = Rows::new();
    for c in cands {
        let listed = match (&c.verdict, &c.row) {
            (Selected::Act, Some(r)) if r.state == State::Running => Listed::Running,
            (Selected::Act, Some(_)) => Listed::NotRunning,
            (Selected::Skip { .. }, Some(_)) => Listed::NotSelected,
            _ => Listed::Gone,
        };
        rows.insert(c.id, (listed, c.row));
    }
    let missing: Vec<String> = marks.keys().filter(|id| !rows.contains_key(*id)).cloned().collect();
    if !missing.is_empty() {
        // A marked instance the selection did not return: renamed out of a filter, or gone.
        // An error here leaves its mark as it is ("not known"), never "gone".
        if let Ok(found) = api::describe_ids(cloud, &missing).await {
            let found: HashMap<String, Instance> = found.into_iter().map(|r| (r.uhost_id.clone(), r)).collect();
            for id in missing {
                let listed = if found.contains_key(&id) {
                    Listed::NotSelected
                } else {
                    Listed::Gone
                };
                rows.insert(id.clone(), (listed, found.get(&id).cloned()));
            }
        }
    }

    rows
}

pub(super) type Judged = HashMap<String, (Judgement, Vec<monitor::Sample>, Option<Seen>)>;

/// Judge every running instance on the API's samples and the store's, grouped by (region,
/// zone) as the monitor call needs, and say what was seen of every listed one.
pub(super) async fn judge_all<T: Transport>(
    cloud: &T,
    store: &Store,
    cfg: &Config,
    now: i64,
    rows: &Rows,
    seen: &HashMap<String, Seen>,
) -> Result<Judged, StateError> {
    let mut out = Judged::new();
    let mut groups: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for (id, (listed, row)) in rows {
        let Some(row) = row else { continue };
        let before = seen.get(id);
        let running = row.state == State::Running;
        let running_since = running.then(|| running_since(before, row, now));
        let s = Seen {
            id: id.clone(),
            name: row.name.clone(),
            state: row.state.as_str().to_owned(),
            running_since,
            last_seen: now,
            last_busy_at: before.and_then(|b| b.last_busy_at),
            last_busy_util: before.and_then(|b| b.last_busy_util),
        };
        out.insert(id.clone(), (Judgement::NotJudged, Vec::new(), Some(s)));
        if *listed == Listed::Running && row.gpu > 0 {
            groups
                .entry((row.home_region().to_owned(), row.zone.clone()))
                .or_default()
                .push(id.clone());
        }
    }
    let since = now - secs(cfg.rule.window) - secs(cfg.rule.max_gap);
    for ((region, zone), ids) in groups {
        let fetched = monitor::gpu_samples(cloud, &region, &zone, &ids).await;
        for id in ids {
            let entry = out.get_mut(&id).expect("inserted above");
            let Some(seen_now) = entry.2.as_mut() else { continue };
            let fresh = match &fetched {
                Ok(map) => map.get(&id).cloned().unwrap_or_default(),
                Err(e) => {
                    entry.0 = Judgement::Unknown {
                        why: format!("monitoring unavailable: {e}"),
                    };
                    continue;
                }
            };
            let mut all = store.samples(&id, since)?;
            all.extend(fresh.iter().cloned());
            let gpus = rows
                .get(&id)
                .and_then(|(_, r)| r.as_ref())
                .map(|r| usize::try_from(r.gpu).unwrap_or(0));
            let verdict = monitor::judge(&cfg.rule, now, seen_now.running_since.unwrap_or(now), gpus, &all);
            entry.0 = match verdict {
                Verdict::Idle { .. } => Judgement::Idle,
                Verdict::Busy { at, util, .. } => {
                    if seen_now.last_busy_at.is_none_or(|b| b <= at) {
                        seen_now.last_busy_at = Some(at);
                        seen_now.last_busy_util = Some(util);
                    }
                    Judgement::Busy { at }
                }
                Verdict::Unknown(Why::TooYoung { .. }) => Judgement::StartedAgain,
                Verdict::Unknown(why) => Judgement::Unknown {
                    why: format!("{why:?}"),
                },
            };
            // Only the API's samples are new to the store.
            entry.1 = fresh;
        }
    }
    Ok(out)
}

/// Since when a running instance has been running, as far as anyone can tell: from the store
/// if it saw it running last time; `now` if it saw it not running (it started since); its
/// creation time if the store never saw it (the samples' own gaps show a restart).
fn running_since(before: Option<&Seen>, row: &Instance, now: i64) -> i64 {
    match before {
        Some(b) => match b.running_since {
            Some(since) if b.state == State::Running.as_str() => since.min(now),
            _ => now,
        },
        None if row.create_time > 0 => row.create_time.min(now),
        None => now,
    }
}
