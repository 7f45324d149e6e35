//! Lazy time: the world's timed transitions (a stop settling, someone else restarting or
//! deleting an instance, a terminated row leaving Describe) are stored with a due instant
//! and applied when the world is next touched, each at its own instant and in order. An
//! ordered index of what falls due keeps that proportional to the transitions due, not to
//! the world's size.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use super::{Event, EventKind, Lock, LockHold, Removal, State, Terminated, World};

impl World {
    /// Put `kind` on row `id`'s timeline at `due`, and in the index of what falls due.
    pub(super) fn schedule(&mut self, id: &str, due: Instant, kind: EventKind) {
        if let Some(row) = self.rows.get_mut(id) {
            row.events.push(Event { due, kind });
            self.due.insert((due, id.to_owned()));
        }
    }

    /// Apply every transition due by `now`, each at its own due instant, in order.
    pub(crate) fn settle(&mut self, now: Instant) {
        // The rows with an event due by now, in the rows' own (ID) order, as a scan of every
        // row would find them: events applied here schedule others, and the order of their
        // jitter draws is the world's.
        let later = self.due.split_off(&(now + Duration::from_nanos(1), String::new()));
        let due = std::mem::replace(&mut self.due, later);
        let ids: BTreeSet<String> = due
            .into_iter()
            .map(|(_, id)| id)
            .filter(|id| self.rows.get(id).is_some_and(|r| r.events.iter().any(|e| e.due <= now)))
            .collect();
        for id in ids {
            while let Some(row) = self.rows.get_mut(&id) {
                let Some(next) = (0..row.events.len())
                    .filter(|&i| row.events[i].due <= now)
                    .min_by_key(|&i| row.events[i].due)
                else {
                    break;
                };
                let event = row.events.remove(next);
                self.apply(&id, event);
            }
        }
    }

    pub(super) fn apply(&mut self, id: &str, event: Event) {
        let at = event.due;
        let ttl = self.scaled(self.scenario.lock.ttl_secs);
        let until_complete = self.scenario.lock.hold == LockHold::UntilComplete;
        match event.kind {
            EventKind::Settle(state) => {
                let Some(row) = self.rows.get_mut(id) else { return };
                row.set_state(state, at);
                if row.lock.as_ref().is_some_and(|l| l.release_on_complete) {
                    row.lock = None;
                }
            }
            EventKind::Disappear => {
                self.rows.remove(id);
                self.gone.insert(id.to_owned(), Removal::Terminated);
            }
            EventKind::RestartByOther => {
                let start_lat = match self.rows.get(id) {
                    Some(row) if !row.terminating && row.instance.state == State::Stopped => row.latency.start,
                    _ => return,
                };
                let settle = at + self.jittered(start_lat);
                let Some(row) = self.rows.get_mut(id) else { return };
                row.set_state(State::Starting, at);
                row.lock = Some(Lock {
                    until: at + ttl,
                    by_other: true,
                    release_on_complete: until_complete,
                });
                self.schedule(id, settle, EventKind::Settle(State::Running));
            }
            EventKind::VanishByOther => {
                self.delete(id, at);
            }
        }
    }

    pub(super) fn delete(&mut self, id: &str, at: Instant) {
        if self.rows.remove(id).is_some() {
            self.gone.insert(id.to_owned(), Removal::Deleted);
            // Deleted by someone else with its disks (recorded as `release_udisk` below).
            self.release_or_detach(id, true, at);
            self.terminated.push(Terminated {
                uhost_id: id.to_owned(),
                at_secs: self.secs(at),
                release_udisk: true,
                by_other: true,
            });
        }
    }
}
