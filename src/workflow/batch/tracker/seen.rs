//! What the driver keeps of an instance's latest row ([`Seen`]): its name and where it lives
//! (one region rule for selection, scope checks and the engine), its state, and where calls
//! on it go.

use crate::api::look::LookRow;
use crate::api::{State, Target};

/// What the driver keeps of an instance's latest Describe row: what it acts on and reports.
/// A whole row (disks, addresses, monitor data, tags) is several times this, and a batch of
/// 100,000 keeps one per instance for the whole run.
#[derive(Debug, Clone, Default)]
pub(in super::super) struct Seen {
    pub name: String,
    /// Where it lives: its `Region`, or its zone's when the row had none (one rule,
    /// `Instance::home_region`, for selection, scope checks and the engine).
    pub region: String,
    pub zone: String,
    pub state: State,
}

impl Seen {
    pub(in super::super) fn of(row: &LookRow) -> Seen {
        Seen {
            name: row.name.clone().into_owned(),
            region: row.home_region().to_owned(),
            zone: row.zone.clone().into_owned(),
            state: row.state.clone(),
        }
    }

    /// What the selection knew, its strings moved in; its region by the same rule as a row's.
    pub(in super::super) fn known(k: super::super::Known) -> Seen {
        let region = if k.region.is_empty() {
            crate::api::model::home_region(&k.region, &k.zone).to_owned()
        } else {
            k.region
        };
        Seen {
            name: k.name,
            region,
            zone: k.zone,
            state: k.state,
        }
    }

    /// Where calls on instance `id` go: `Target::of` its row (the same home region), without
    /// keeping a second copy of the ID, region and zone per instance.
    pub(in super::super) fn target(&self, id: &str) -> Target {
        Target {
            uhost_id: id.to_owned(),
            region: self.region.clone(),
            zone: self.zone.clone(),
        }
    }

    /// Keep `row` as the latest seen, in place: a look at an instance that did not move or
    /// rename reuses the strings it has (one look per instance every few ticks, about 20 of them
    /// per instance in a 10,000 batch, each had cost five new strings).
    pub(in super::super) fn update(seen: &mut Option<Seen>, row: &LookRow) {
        let Some(s) = seen else {
            *seen = Some(Seen::of(row));
            return;
        };
        for (kept, now) in [
            (&mut s.name, &*row.name),
            (&mut s.region, row.home_region()),
            (&mut s.zone, &*row.zone),
        ] {
            if kept != now {
                kept.clear();
                kept.push_str(now);
            }
        }
        if s.state != row.state {
            s.state.clone_from(&row.state);
        }
    }
}
