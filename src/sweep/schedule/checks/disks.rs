//! The data disks' invariants of one scheduled-sweep seed (issue 18), held against the
//! simulator's ledger (accepted Deletes, Terminates, every call), the people's deeds (keeps,
//! attachments that took) and the notices received, never against the job's own beliefs:
//!
//! - D1: an accepted Delete was decided at least the window plus the grace after the end of
//!   the disk's last attachment (the accepted Terminate of the instance it was attached to;
//!   EPOCH for a free-standing disk never attached). Why it must hold: the store's first
//!   sighting of a detached disk is never earlier than the true detach (every listing comes
//!   after the deeds and teardowns before it), the mark waits the window from that sighting,
//!   the Delete waits the grace from the mark.
//! - D2: no Delete at all of a disk kept at the run's time, protected by name, not of the
//!   world, or in a world whose job does not watch disks.
//! - D3: every disk mark and accepted Delete told; no disk notice for an event that did not
//!   happen.
//! - D4: every disk mark in the store is of a disk of the world, not protected, due its grace
//!   after it and told in the same write; at the end none is `acting` and each is of a disk
//!   listed detached.

use std::collections::{BTreeMap, BTreeSet};

use super::{Evidence, Notice, fail, name};
use crate::api::disk::DELETE_DISK;
use crate::notice::Event;
use crate::state::{Kind, Mark, Store};
use crate::sweep::Failure;
use crate::sweep::schedule::disks::rows;
use crate::sweep::schedule::{EPOCH, Stats, World};

/// A time of the simulator's ledger (seconds since the world began) as the world's unix
/// clock, in whole seconds as the job reads that clock.
#[expect(clippy::cast_possible_truncation, reason = "a few days of seconds: far inside i64")]
fn unix(at_secs: f64) -> i64 {
    EPOCH + at_secs.floor() as i64
}

/// One disk mark as the store holds it: of a disk of the world (in a world whose job watches
/// disks), not protected, due its grace after it was made, its `marked` notice written with it.
pub(super) fn stored_mark(w: &World, store: &Store, m: &Mark, at: &str) -> Vec<Failure> {
    let mut out = Vec::new();
    let disks = &w.disks;
    let mut bad = |why: String| fail(&mut out, name::DISK_STORE, &m.id, format!("{at}: {why}"));
    match disks.rows.get(&m.id) {
        None => bad("a mark of no disk of the world".into()),
        Some(x) if x.protected || disks.protected(&x.name) => bad("a mark of a protected disk".into()),
        Some(_) if !disks.watch => bad("a disk mark in a world whose job does not watch disks".into()),
        Some(_) => {}
    }
    if m.due_at != m.marked_at + w.grace {
        bad(format!(
            "marked at {} due at {}, grace {}",
            m.marked_at, m.due_at, w.grace
        ));
    }
    let notice = Event::stable_id(&["marked", &w.account.slug(), &m.id, &m.marked_at.to_string()]);
    if !store.has_notice(&notice).unwrap_or(false) {
        bad("a disk mark without its marked notice".into());
    }
    out
}

/// D1-D4 (D4's store half is [`stored_mark`], called for every reopened store); fills the
/// seed's disk figures.
#[expect(
    clippy::too_many_lines,
    reason = "one invariant after another, each a short block; the list reads best whole"
)]
pub(super) fn check(e: &Evidence<'_>, got: &[Notice], stats: &mut Stats) -> Vec<Failure> {
    let mut out = Vec::new();
    let w = e.world;
    let disks = &w.disks;
    let account = w.account.slug();
    let grace = w.grace;
    let run_at = |secs: f64| {
        e.runs
            .iter()
            .rev()
            .find(|r| r.start_secs <= secs)
            .map_or(i64::MIN, |r| r.now)
    };
    // When each instance left: the end of every attachment to it.
    let ended: BTreeMap<&str, i64> = e
        .state
        .terminated
        .iter()
        .map(|t| (t.uhost_id.as_str(), unix(t.at_secs)))
        .collect();
    // Each disk's attachments: (from, instance); the initial one from the start of time.
    let mut attachments: BTreeMap<&str, Vec<(i64, &str)>> = BTreeMap::new();
    for (id, x) in disks.rows.iter().filter(|(_, x)| !x.host.is_empty()) {
        attachments.entry(id).or_default().push((i64::MIN, &x.host));
    }
    for (disk, host, at) in e.attached {
        attachments.entry(disk).or_default().push((*at, host));
    }
    let marked: Vec<&Notice> = got.iter().filter(|n| n.kind == "marked" && n.of_disk()).collect();
    let mark_of = |id: &str, t: i64| {
        marked
            .iter()
            .filter(|n| n.target == id && n.at <= t)
            .max_by_key(|n| n.at)
    };
    let window = disks.detached_for;

    // D1: every accepted Delete.
    for del in &e.state.deleted_disks {
        let id = del.disk_id.as_str();
        let t = run_at(del.at_secs);
        let what = format!("Delete accepted at {:.0}s, decided at {t}", del.at_secs);
        let last = attachments
            .get(id)
            .and_then(|v| v.iter().filter(|(from, _)| *from <= t).max_by_key(|(from, _)| *from));
        let end = match last {
            None => EPOCH,
            Some((_, host)) => match ended.get(host) {
                Some(&gone) if gone <= t => gone,
                _ => {
                    fail(
                        &mut out,
                        name::DISK_WINDOW,
                        id,
                        format!("{what}: attached to {host}, still there"),
                    );
                    continue;
                }
            },
        };
        if t - end < window + grace {
            fail(
                &mut out,
                name::DISK_WINDOW,
                id,
                format!("{what}: detached at {end}, window {window}, grace {grace}"),
            );
        }
        match mark_of(id, t) {
            None => fail(
                &mut out,
                name::DISK_WINDOW,
                id,
                format!("{what}: no marked notice before"),
            ),
            Some(m) if m.at + grace > t || m.at - end < window => fail(
                &mut out,
                name::DISK_WINDOW,
                id,
                format!(
                    "{what}: marked at {}, detached at {end}, window {window}, grace {grace}",
                    m.at
                ),
            ),
            Some(_) => {}
        }
    }
    stats.disk_deletes = e.state.deleted_disks.len() as u64;

    // D2: every Delete sent, accepted or not.
    for call in e.state.calls.iter().filter(|c| c.action == DELETE_DISK) {
        let t = run_at(call.at_secs);
        for id in &call.ids {
            let what = format!("Delete at {:.0}s, decided at {t}", call.at_secs);
            let mut bad = |why: String| fail(&mut out, name::DISK_FORBIDDEN, id, format!("{what}: {why}"));
            if !disks.watch {
                bad("the job does not watch disks".into());
            }
            match disks.rows.get(id) {
                None => bad("no disk of the world".into()),
                Some(x) if x.protected || disks.protected(&x.name) => bad(format!("protected ({})", x.name)),
                Some(_) => {}
            }
            if let Some((_, from, until)) = e.keeps.iter().find(|(k, f, u)| k == id && *f <= t && t < *u) {
                bad(format!("kept from {from} until {until}"));
            }
        }
    }

    // D3: notices.
    let accepted: BTreeSet<&str> = e.state.deleted_disks.iter().map(|x| x.disk_id.as_str()).collect();
    for n in got.iter().filter(|n| n.of_disk()) {
        let id = n.target.as_str();
        let happened = match n.kind.as_str() {
            "marked" => {
                disks.watch
                    && disks
                        .rows
                        .get(id)
                        .is_some_and(|x| !x.protected && !disks.protected(&x.name))
            }
            "torn_down" => accepted.contains(id),
            "unmarked" | "failed" => mark_of(id, n.at).is_some(),
            "kept" => e.keeps.iter().any(|(k, from, _)| k == id && *from == n.at),
            _ => false,
        };
        let paired = match n.kind.as_str() {
            "unmarked" | "torn_down" => marked
                .iter()
                .any(|m| m.target == id && Event::stable_id(&[&n.kind, &account, id, &m.at.to_string()]) == n.id),
            _ => true,
        };
        if !happened || !paired {
            fail(
                &mut out,
                name::DISK_NOTICE,
                id,
                format!("{} at {} for an event that did not happen", n.kind, n.at),
            );
        }
    }
    for (id, at) in e.disk_marks {
        let told = Event::stable_id(&["marked", &account, id, &at.to_string()]);
        if !got.iter().any(|n| n.id == told && n.of_disk()) {
            fail(&mut out, name::DISK_NOTICE, id, format!("the mark of {at} never told"));
        }
    }
    for id in &accepted {
        if !got
            .iter()
            .any(|n| n.kind == "torn_down" && n.of_disk() && n.target == *id)
        {
            fail(
                &mut out,
                name::DISK_NOTICE,
                id,
                "deleted without a torn_down notice".into(),
            );
        }
    }

    // D4: at the end, after the healthy catch-up, no disk mark acting, each of a disk listed
    // attached to nothing (a run that sees it attached or gone drops its mark).
    let listed = rows(&e.state.disks);
    for m in e.store.marks().unwrap_or_default() {
        if m.kind != Kind::Disk {
            continue;
        }
        if m.acting_since.is_some() {
            fail(
                &mut out,
                name::DISK_STORE,
                &m.id,
                "still acting after the last run".into(),
            );
        }
        if !listed.iter().any(|r| r.disk_id == m.id && r.is_detached()) {
            fail(
                &mut out,
                name::DISK_STORE,
                &m.id,
                "marked at the end, not listed detached".into(),
            );
        }
    }
    stats.disks_left_detached = listed.iter().filter(|r| r.is_detached()).count() as u64;
    out
}

#[cfg(test)]
mod tests;
