//! The control surface for tests, the demo and `/_sim/state`: the snapshot, and interference
//! by "someone else" (inserted rows, states, locks, deletions, restarts) and fault changes.

use super::{
    Duration, Event, EventKind, Faults, Instance, Instant, Lock, LockView, Map, ScenarioInstance, SimState, State,
    World, row_json,
};

impl World {
    pub(crate) fn snapshot(&mut self, now: Instant) -> SimState {
        self.settle(now);
        let (disks, orphan_disks, deleted_disks) = self.disk_snapshot(now);
        SimState {
            now_secs: self.secs(now),
            instances: self.rows.values().map(|r| row_json(r, false)).collect(),
            protected: self
                .rows
                .iter()
                .filter(|(_, r)| r.protected)
                .map(|(id, _)| id.clone())
                .collect(),
            locks: self
                .rows
                .iter()
                .filter_map(|(id, r)| {
                    let l = r.lock.as_ref().filter(|l| l.until > now)?;
                    Some(LockView {
                        uhost_id: id.clone(),
                        by_other: l.by_other,
                        remaining_secs: l.until.saturating_duration_since(now).as_secs_f64(),
                    })
                })
                .collect(),
            terminated: self.terminated.clone(),
            orphan_disks,
            disks,
            deleted_disks,
            calls: self.calls.clone(),
            violations: self.violations.clone(),
            races: self.races.clone(),
        }
    }

    pub(crate) fn insert(&mut self, instance: &Instance, now: Instant) {
        self.settle(now);
        // Inserted Running: it has just started, and warms up like a new instance.
        self.add_row(&ScenarioInstance::from_instance(instance, Map::new()), now, Some(now));
    }

    pub(crate) fn set_state(&mut self, id: &str, state: State, now: Instant) {
        self.settle(now);
        if let Some(row) = self.rows.get_mut(id) {
            row.set_state(state, now);
            row.events.retain(|e| !matches!(e.kind, EventKind::Settle(_)));
        }
    }

    pub(crate) fn hold_lock(&mut self, id: &str, d: Duration, now: Instant) {
        self.settle(now);
        if let Some(row) = self.rows.get_mut(id) {
            row.lock = Some(Lock {
                until: now + d,
                by_other: true,
                release_on_complete: false,
            });
        }
    }

    pub(crate) fn delete_by_other(&mut self, id: &str, now: Instant) {
        self.settle(now);
        self.delete(id, now);
    }

    pub(crate) fn start_by_other(&mut self, id: &str, now: Instant) {
        self.settle(now);
        if self.rows.contains_key(id) {
            self.apply(
                id,
                Event {
                    due: now,
                    kind: EventKind::RestartByOther,
                },
            );
        }
    }

    /// A new gateway limit from now on (0 = none); every key starts with a full bucket.
    pub(crate) fn set_rate_limit(&mut self, per_sec: f64, burst: u32) {
        self.scenario.rate_limit_per_sec = per_sec;
        self.scenario.rate_limit_burst = burst;
        self.limiters.clear();
    }

    pub(crate) fn set_faults(&mut self, faults: Faults) {
        self.scenario.faults = faults;
    }

    pub(crate) fn set_protected(&mut self, id: &str, protected: bool) {
        if let Some(row) = self.rows.get_mut(id) {
            row.protected = protected;
        }
    }

    pub(crate) fn ids(&mut self, now: Instant) -> Vec<String> {
        self.settle(now);
        self.rows.keys().cloned().collect()
    }
}
