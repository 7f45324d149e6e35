//! What people do between two runs, done to the world (power, new instances, attaching a
//! data disk) or to the store as the `keep` command writes it; and the log of what took, the
//! checks' ground truth for keeps and attachments.

use serde_json::Map;

use super::World;
use super::disks;
use super::world::Deed;
use crate::api::State;
use crate::credentials::Account;
use crate::state::{Changes, Keep, Kind, Pending, Store};

/// What people's deeds left, for the checks.
#[derive(Debug, Default)]
pub(crate) struct People {
    /// (instance or disk, from, until) of every keep written.
    pub keeps: Vec<(String, i64, i64)>,
    /// (disk, instance, at) of every attach that took.
    pub attached: Vec<(String, String, i64)>,
}

impl People {
    /// Do `deed` at `now`.
    pub(crate) fn act_out(&mut self, w: &World, store: &mut Store, deed: Deed, now: i64) {
        match deed {
            Deed::Power { id, running } => {
                // Only a row that is still there and in the other state: a person starts what
                // is stopped and stops what runs.
                let state =
                    w.sim.snapshot().instances.iter().find_map(|v| {
                        (v["UHostId"] == id.as_str()).then(|| v["State"].as_str().unwrap_or("").to_owned())
                    });
                let flip = match state.as_deref() {
                    Some("Running") => !running,
                    Some("Stopped") => running,
                    _ => false,
                };
                if flip {
                    w.sim
                        .set_state(&id, if running { State::Running } else { State::Stopped });
                }
            }
            Deed::Insert { row } => {
                let mut i = row.instance().expect("a valid row");
                i.create_time = now;
                let id = i.uhost_id.clone();
                w.sim.insert(i);
                w.sim.set_gpu_load(&id, row.gpu_load.clone().unwrap_or_default());
            }
            Deed::Keep { id, until } => {
                keep(store, &w.account, &id, now, until);
                self.keeps.push((id, now, until));
            }
            Deed::Attach { disk, host } => {
                if disks::attach(&w.sim, &disk, &host) {
                    self.attached.push((disk, host, now));
                }
            }
        }
    }
}

/// `compshare-teardown keep ID --until ...`: the keep and its `kept` notice in one write, as
/// the command writes them: labelled a disk when the job has marked a disk of that ID, else an
/// instance (a keep holds by ID whatever its label).
fn keep(store: &mut Store, account: &Account, id: &str, now: i64, until: i64) {
    let disk = store
        .marks()
        .expect("marks readable")
        .iter()
        .any(|m| m.kind == Kind::Disk && m.id == id);
    let kind = if disk { Kind::Disk } else { Kind::Instance };
    let e = crate::notice::Event {
        id: crate::notice::Event::stable_id(&["kept", &account.slug(), id, &now.to_string()]),
        kind: crate::notice::EventKind::Kept,
        at: now,
        account: account.slug(),
        target: Some(crate::notice::Target {
            kind: kind.as_str().into(),
            id: id.to_owned(),
            name: String::new(),
            region: String::new(),
            zone: String::new(),
        }),
        due: Some(until),
        reason: "kept by a person".into(),
        details: Map::new(),
    };
    let changes = Changes {
        keeps: vec![Keep {
            kind,
            id: id.to_owned(),
            until_at: until,
            reason: "sweep".into(),
            created_at: now,
        }],
        notices: vec![Pending {
            event_id: e.id.clone(),
            created_at: now,
            body: serde_json::to_string(&e).expect("an event serializes"),
            attempts: 0,
            last_error: None,
        }],
        ..Changes::default()
    };
    store.apply(&changes).expect("a keep is written");
}
