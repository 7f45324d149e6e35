//! The invariants of one scheduled-sweep seed, checked against what the simulator recorded
//! (every call, the rows left, the rules broken), every GPU sample a monitor answer brought
//! the job, the notices the inbox received and the store the job left, never against what the
//! job believes. The data disks' invariants are in [`disks`].

mod disks;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{RunLog, Served, Stats, World};
use crate::notice::Event;
use crate::sim::{SimState, rule};
use crate::state::{Kind, Store};
use crate::sweep::Failure;

/// Invariant names, as printed for a failing seed.
pub mod name {
    /// Stop or Terminate while the window before the decision held a busy sample, a gap
    /// longer than `max_gap`, or no data for a GPU.
    pub const WINDOW: &str = "acted without a quiet, covered window";
    /// Stop or Terminate before the grace of the instance's first `marked` notice ended,
    /// while a keep held, or on a protected instance.
    pub const GRACE: &str = "acted before its grace, while kept or protected";
    /// Stop or Terminate after a busy sample since the mark (the mark should have gone).
    pub const BUSY_MARK: &str = "acted on a mark that outlived a busy sample";
    /// A notice not delivered by the end, delivered twice without cause, two events under one
    /// ID, or a notice for an event that did not happen.
    pub const NOTICE: &str = "notices";
    /// The store after a kill (or at the end) does not hold what it promises.
    pub const STORE: &str = "store inconsistent";
    /// The simulator recorded a rule the client broke.
    pub const SIM_VIOLATION: &str = "simulator violation";
    /// A run did not end.
    pub const HANG: &str = "run did not end";
    /// D1: a disk deleted (Delete accepted) less than the window plus the grace after the end
    /// of its last attachment, or without a `marked` notice the window after that end and the
    /// grace before the decision.
    pub const DISK_WINDOW: &str = "deleted a disk before its detached window and grace";
    /// D2: a Delete (accepted or not) of a disk kept at the run's time, protected by name, not
    /// of the world, or in a world whose job does not watch disks.
    pub const DISK_FORBIDDEN: &str = "deleted a kept, protected or unknown disk";
    /// D3: a disk mark or accepted Delete never told, or a disk notice for an event that did
    /// not happen.
    pub const DISK_NOTICE: &str = "disk notices";
    /// D4 and the store's disk marks: a disk mark still `acting` at the end, of no disk of the
    /// world or a protected one, without its notice, or due other than its grace after it.
    pub const DISK_STORE: &str = "disk marks inconsistent";
}

/// What one seed left behind.
pub(crate) struct Evidence<'a> {
    pub world: &'a World,
    pub state: &'a SimState,
    pub served: &'a Served,
    pub runs: &'a [RunLog],
    /// (instance or disk, from, until) of every keep written.
    pub keeps: &'a [(String, i64, i64)],
    /// (disk, instance, at) of every attach by a person that took.
    pub attached: &'a [(String, String, i64)],
    /// (disk, marked at) of every disk mark the store held after some run.
    pub disk_marks: &'a BTreeSet<(String, i64)>,
    /// Every payload the inbox accepted, in order.
    pub inbox: &'a [Value],
    pub store: &'a Store,
}

fn fail(out: &mut Vec<Failure>, invariant: &'static str, id: &str, detail: String) {
    out.push(Failure {
        invariant,
        uhost_id: (!id.is_empty()).then(|| id.to_owned()),
        detail,
    });
}

fn secs(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn protected(w: &World, id: &str) -> bool {
    w.rows
        .get(id)
        .is_some_and(|(_, name)| w.protections.protect_names.iter().any(|g| g.is_match(name)))
}

/// The store a killed run left, reopened by the next process: every mark is of an instance
/// of the world that is not protected, carries its `marked` notice in the outbox (written in
/// the same transaction) and is due its grace after it was made.
pub(crate) fn store_after_kill(w: &World, store: &Store, now: i64) -> Vec<Failure> {
    let mut out = Vec::new();
    let marks = match store.marks() {
        Ok(m) => m,
        Err(e) => {
            fail(
                &mut out,
                name::STORE,
                "",
                format!("after the run at {now}: marks unreadable: {e}"),
            );
            return out;
        }
    };
    for m in marks {
        let at = format!("after the run at {now}");
        if m.kind == Kind::Disk {
            out.extend(disks::stored_mark(w, store, &m, &at));
            continue;
        }
        if !w.rows.contains_key(&m.id) {
            fail(
                &mut out,
                name::STORE,
                &m.id,
                format!("{at}: a mark of no instance of the world"),
            );
        }
        if protected(w, &m.id) {
            fail(
                &mut out,
                name::STORE,
                &m.id,
                format!("{at}: a mark of a protected instance"),
            );
        }
        if m.due_at != m.marked_at + w.grace {
            fail(
                &mut out,
                name::STORE,
                &m.id,
                format!("{at}: marked at {} due at {}, grace {}", m.marked_at, m.due_at, w.grace),
            );
        }
        let notice = Event::stable_id(&["marked", &w.account.slug(), &m.id, &m.marked_at.to_string()]);
        if !store.has_notice(&notice).unwrap_or(false) {
            fail(
                &mut out,
                name::STORE,
                &m.id,
                format!("{at}: a mark without its marked notice"),
            );
        }
    }
    out
}

/// A notice as received.
struct Notice {
    id: String,
    kind: String,
    at: i64,
    target: String,
    /// `instance` or `disk`.
    target_kind: String,
}

impl Notice {
    fn of_disk(&self) -> bool {
        self.target_kind == "disk"
    }
}

fn notices(inbox: &[Value]) -> Vec<Notice> {
    inbox
        .iter()
        .map(|p| Notice {
            id: p["id"].as_str().unwrap_or_default().to_owned(),
            kind: p["kind"].as_str().unwrap_or_default().to_owned(),
            at: p["at"].as_i64().unwrap_or_default(),
            target: p["target"]["id"].as_str().unwrap_or_default().to_owned(),
            target_kind: p["target"]["kind"].as_str().unwrap_or_default().to_owned(),
        })
        .collect()
}

/// Invariant 1: the window `[now - D, now]` of `id` as every monitor answer the job received
/// shows it: no sample over a threshold (or unreadable), a series for every GPU, the first
/// sample no later than `max_gap` into the window, no two consecutive samples and no last
/// sample and `now` further apart than `max_gap`.
fn window_faults(e: &Evidence<'_>, id: &str, now: i64) -> Option<String> {
    let rule = &e.world.rule;
    let (from, gap) = (now - secs(rule.window), secs(rule.max_gap));
    let mut devices: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    let lo = (id.to_owned(), String::new(), i64::MIN);
    for ((sid, device, at), (util, mem)) in e.served.range(lo..) {
        if sid != id {
            break;
        }
        if *at < from || *at > now {
            continue;
        }
        if util.is_nan() || *util > rule.util_max || mem.is_some_and(|m| m > rule.mem_max) {
            return Some(format!("busy sample at {at} on {device}: {util}% / {mem:?}% memory"));
        }
        devices.entry(device).or_default().push(*at);
    }
    let gpus = usize::try_from(e.world.rows.get(id).map_or(0, |r| r.0)).unwrap_or(0);
    if devices.len() < gpus {
        return Some(format!("{} of {gpus} GPUs with data in [{from}, {now}]", devices.len()));
    }
    for (device, times) in &devices {
        if times[0] > from + gap {
            return Some(format!("{device}: first sample at {}, window from {from}", times[0]));
        }
        for pair in times
            .windows(2)
            .chain(std::iter::once(&[times[times.len() - 1], now][..]))
        {
            if pair[1] - pair[0] > gap {
                return Some(format!("{device}: gap from {} to {}", pair[0], pair[1]));
            }
        }
    }
    None
}

/// Every check of one seed's end; fills the seed's figures.
#[expect(
    clippy::too_many_lines,
    reason = "one invariant after another, each a short block; the list reads best whole"
)]
pub(crate) fn check(e: &Evidence<'_>, stats: &mut Stats) -> Vec<Failure> {
    let mut out = Vec::new();
    let w = e.world;
    let account = w.account.slug();
    let grace = w.grace;
    let listed: BTreeMap<String, String> = e
        .state
        .instances
        .iter()
        .filter_map(|v| Some((v["UHostId"].as_str()?.to_owned(), v["State"].as_str()?.to_owned())))
        .collect();

    // 6: the simulator's own rules.
    for v in e.state.violations.iter().filter(|v| v.rule != rule::AFTER_DELETE) {
        fail(
            &mut out,
            name::SIM_VIOLATION,
            &v.uhost_id,
            format!("{} {} at {:.1}s: {}", v.rule, v.action, v.at_secs, v.detail),
        );
    }

    let got = notices(e.inbox);
    let marked: Vec<&Notice> = got.iter().filter(|n| n.kind == "marked" && !n.of_disk()).collect();
    // The latest `marked` of `id` at or before `t`: the mark an act at `t` acts on.
    let mark_of = |id: &str, t: i64| {
        marked
            .iter()
            .filter(|n| n.target == id && n.at <= t)
            .max_by_key(|n| n.at)
    };
    let dropped = |id: &str, m: &Notice, before: i64| {
        let unmarked = Event::stable_id(&["unmarked", &account, id, &m.at.to_string()]);
        got.iter().any(|n| n.id == unmarked && n.at < before)
    };
    let run_at = |secs: f64| {
        e.runs
            .iter()
            .rev()
            .find(|r| r.start_secs <= secs)
            .map_or(i64::MIN, |r| r.now)
    };

    // 1-3: every Stop and Terminate the simulator received.
    let mut terminated_ok: BTreeSet<&str> = BTreeSet::new();
    for call in &e.state.calls {
        let stop = call.action == "StopCompShareInstance";
        if call.fault.is_some() {
            stats.faults += 1;
        }
        if call.action == crate::monitor::ACTION {
            stats.monitor_calls += 1;
        }
        if !stop && call.action != "TerminateCompShareInstance" {
            continue;
        }
        if stop {
            stats.stops += 1;
        } else {
            stats.terminates += 1;
            if call.ret_code == Some(0) {
                terminated_ok.extend(call.ids.iter().map(String::as_str));
            }
        }
        let now = run_at(call.at_secs);
        for id in &call.ids {
            let what = format!("{} at {:.0}s, decided at {now}", call.action, call.at_secs);
            if protected(w, id) {
                fail(&mut out, name::GRACE, id, format!("{what}: protected"));
            }
            if let Some((_, from, until)) = e.keeps.iter().find(|(k, f, u)| k == id && *f <= now && now < *u) {
                fail(
                    &mut out,
                    name::GRACE,
                    id,
                    format!("{what}: kept from {from} until {until}"),
                );
            }
            match mark_of(id, now) {
                None => fail(&mut out, name::GRACE, id, format!("{what}: no marked notice before")),
                Some(m) => {
                    if m.at + grace > now {
                        fail(
                            &mut out,
                            name::GRACE,
                            id,
                            format!("{what}: marked at {}, grace {grace}", m.at),
                        );
                    }
                    if dropped(id, m, now) {
                        fail(
                            &mut out,
                            name::BUSY_MARK,
                            id,
                            format!("{what}: its mark of {} was dropped", m.at),
                        );
                    }
                    let lo = (id.clone(), String::new(), i64::MIN);
                    let busy = e
                        .served
                        .range(lo..)
                        .take_while(|(k, _)| k.0 == *id)
                        .find(|((_, _, at), (u, mem))| {
                            *at >= m.at
                                && *at <= now
                                && (*u > w.rule.util_max || mem.is_some_and(|x| x > w.rule.mem_max))
                        });
                    if let Some(((_, device, at), _)) = busy {
                        fail(
                            &mut out,
                            name::BUSY_MARK,
                            id,
                            format!("{what}: busy at {at} on {device}, after its mark of {}", m.at),
                        );
                    }
                }
            }
            // The window is judged where the teardown began: at the Stop.
            if stop && let Some(why) = window_faults(e, id, now) {
                fail(&mut out, name::WINDOW, id, format!("{what}: {why}"));
            }
        }
    }

    // 4: notices.
    match e.store.pending_notices() {
        Ok(p) if p.is_empty() => {}
        Ok(p) => fail(
            &mut out,
            name::NOTICE,
            "",
            format!("{} notice(s) never delivered, e.g. {}", p.len(), p[0].body),
        ),
        Err(err) => fail(&mut out, name::NOTICE, "", format!("outbox unreadable: {err}")),
    }
    let run_of = |i: usize| e.runs.iter().position(|r| r.delivered.contains(&i));
    let mut first: BTreeMap<&str, (usize, &Value)> = BTreeMap::new();
    for (i, (n, body)) in got.iter().zip(e.inbox).enumerate() {
        match first.get(n.id.as_str()) {
            None => {
                first.insert(&n.id, (i, body));
            }
            Some((earlier, was)) => {
                stats.duplicates += 1;
                if *was != body {
                    fail(
                        &mut out,
                        name::NOTICE,
                        &n.target,
                        format!("two events with ID {}", n.id),
                    );
                }
                let (then, again) = (run_of(*earlier), run_of(i));
                let excused = then.is_some_and(|r| e.runs[r].disturbed) && then != again;
                if !excused {
                    fail(
                        &mut out,
                        name::NOTICE,
                        &n.target,
                        format!(
                            "{} {} delivered again (runs {then:?} and {again:?}) without a kill",
                            n.kind, n.id
                        ),
                    );
                }
            }
        }
    }
    stats.notices_delivered = first.len() as u64;
    // The disks' notices are the disks' checks (D3).
    for n in got.iter().filter(|n| !n.of_disk()) {
        let id = n.target.as_str();
        let happened = match n.kind.as_str() {
            "torn_down" => terminated_ok.contains(id) && !listed.contains_key(id),
            "unmarked" | "failed" => mark_of(id, n.at).is_some(),
            "kept" => e.keeps.iter().any(|(k, from, _)| k == id && *from == n.at),
            "marked" => !protected(w, id) && w.rows.contains_key(id),
            "summary" => true,
            _ => false,
        };
        // An unmarked or torn_down names the mark it ends.
        let paired = match n.kind.as_str() {
            "unmarked" | "torn_down" => marked
                .iter()
                .any(|m| m.target == id && Event::stable_id(&[&n.kind, &account, id, &m.at.to_string()]) == n.id),
            _ => true,
        };
        if !happened || !paired {
            fail(
                &mut out,
                name::NOTICE,
                id,
                format!("{} at {} for an event that did not happen", n.kind, n.at),
            );
        }
    }
    for id in &terminated_ok {
        if !got
            .iter()
            .any(|n| n.kind == "torn_down" && !n.of_disk() && n.target == *id)
        {
            fail(
                &mut out,
                name::NOTICE,
                id,
                "terminated without a torn_down notice".into(),
            );
        }
    }
    for (id, from, _) in e.keeps {
        let kept = Event::stable_id(&["kept", &account, id, &from.to_string()]);
        if !got.iter().any(|n| n.id == kept) {
            fail(&mut out, name::NOTICE, id, format!("the keep of {from} never told"));
        }
    }

    // 5, at the end: the store as the kills left it, and after a healthy last run no
    // teardown left begun and every mark on a running instance.
    let end = e.runs.last().map_or(0, |r| r.now);
    out.extend(store_after_kill(w, e.store, end));
    for m in e.store.marks().unwrap_or_default() {
        if m.kind == Kind::Disk {
            continue;
        }
        if m.acting_since.is_some() {
            fail(&mut out, name::STORE, &m.id, "still acting after the last run".into());
        }
        if listed.get(&m.id).is_none_or(|s| s != "Running") {
            fail(
                &mut out,
                name::STORE,
                &m.id,
                format!("marked at the end, listed as {:?}", listed.get(&m.id)),
            );
        }
    }
    stats.torn_down = w.rows.keys().filter(|id| !listed.contains_key(*id)).count() as u64;
    out.extend(disks::check(e, &got, stats));
    out
}
