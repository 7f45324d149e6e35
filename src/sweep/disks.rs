//! The disk pass of a seed: after the instance run (which kept or released data disks as the
//! world's `release_udisk` drew), list the disks, select a random share of the detached ones
//! (and, in some worlds, attached ones too, which must never be deleted), protect some by name,
//! and run the real [`delete_disks`] driver; then check the disk invariants against the
//! simulator's ground truth. Its dice are its own: the instance part of a seed is unchanged.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use globset::GlobMatcher;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::api::{DiskCloud, DiskRow, describe_disks_all};
use crate::selection;
use crate::sim::SimState;
use crate::workflow::Report;
use crate::workflow::disks::{DiskControls, DiskSettings, delete_disks};

use super::{Failure, within_wakeups};

/// Disk invariant names, as printed for a failing seed.
pub mod name {
    /// A Delete of a disk the pass did not select.
    pub const UNSELECTED: &str = "disk Delete outside the selection";
    /// A Delete of a disk protected by name.
    pub const REFUSED: &str = "disk Delete of a protected disk";
    /// Every selected disk ends in the report exactly once, as a disk.
    pub const REPORT: &str = "disk report incomplete";
    /// Reported deleted (or gone) while the simulator still lists it; or reported deleted
    /// without an accepted Delete.
    pub const GONE: &str = "disk reported deleted but not gone";
    /// Exit 0 while a selected, unprotected, detached disk is still there.
    pub const EXIT: &str = "disk exit code disagrees with the simulator";
    /// The pass did not end within its deadline plus grace.
    pub const HANG: &str = "disk pass did not end";
}

/// One seed's disk pass, drawn from the seed.
pub(crate) struct DiskWorld {
    /// Share of the detached disks selected.
    share: f64,
    /// Attached disks are handed to the driver too (it must skip them).
    hand_attached: bool,
    /// A name pattern protected (generated free-standing disks are `data-N`).
    protect: Option<GlobMatcher>,
    settings: DiskSettings,
}

/// What the pass did, for the checks.
pub(crate) struct DiskRun {
    pub selected: BTreeSet<String>,
    pub refused: BTreeSet<String>,
    /// Detached (free or detaching) when selected.
    pub detached: BTreeSet<String>,
    pub report: Option<Report>,
    pub hung: bool,
    /// Where the pass's own listing begins in the simulator's ledger (the instance run's
    /// calls end there).
    pub listing_from: Option<usize>,
    /// Where the driver's calls begin in the ledger, and how many it made (the report's
    /// counts must be exactly those).
    pub ledger_from: Option<usize>,
    pub ledger_len: usize,
}

impl DiskWorld {
    pub(crate) fn draw(seed: u64) -> DiskWorld {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x0801_f2e2_8583_13e1);
        DiskWorld {
            share: rng.random_range(0.3..=1.0),
            hand_attached: rng.random_bool(0.3),
            protect: rng
                .random_bool(0.3)
                .then(|| selection::globs(&["data-1*".to_owned()]).ok())
                .flatten()
                .and_then(|g| g.into_iter().next()),
            settings: DiskSettings {
                concurrency: rng.random_range(1..=16),
                rate: [0, 5, 20][rng.random_range(0..3)],
                poll_interval: Duration::from_secs(rng.random_range(1..=5)),
                detach_wait: Duration::from_secs(rng.random_range(120..=600)),
                confirm_timeout: Duration::from_secs(rng.random_range(60..=300)),
                deadline: Some(Duration::from_secs(30 * 60)),
                jitter_seed: Some(seed),
            },
        }
    }

    /// List (a few tries), select, and delete.
    /// `ledger()`: how many calls the simulator has received so far.
    pub(crate) async fn run<C: DiskCloud + 'static>(
        &self,
        seed: u64,
        cloud: Arc<C>,
        ledger: impl Fn() -> usize,
    ) -> DiskRun {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x6c62_272e_07bb_0142);
        let listing_from = Some(ledger());
        let mut rows: Option<Vec<DiskRow>> = None;
        for _ in 0..4 {
            if let Ok(r) = describe_disks_all(cloud.as_ref(), None).await {
                rows = Some(r);
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let mut run = DiskRun {
            selected: BTreeSet::new(),
            refused: BTreeSet::new(),
            detached: BTreeSet::new(),
            report: None,
            hung: false,
            listing_from,
            ledger_from: None,
            ledger_len: 0,
        };
        // A listing that cannot be read ends the pass before any call, as the command does.
        let Some(rows) = rows else { return run };
        let chosen: Vec<DiskRow> = rows
            .into_iter()
            .filter(|r| {
                let detached = matches!(
                    r.attachment(),
                    crate::api::Attachment::Free | crate::api::Attachment::Detaching
                );
                (detached || self.hand_attached) && rng.random_bool(self.share)
            })
            .collect();
        for r in &chosen {
            run.selected.insert(r.disk_id.clone());
            if self.protect.as_ref().is_some_and(|g| g.is_match(&r.name)) {
                run.refused.insert(r.disk_id.clone());
            }
            if matches!(
                r.attachment(),
                crate::api::Attachment::Free | crate::api::Attachment::Detaching
            ) {
                run.detached.insert(r.disk_id.clone());
            }
        }
        let protect = self.protect.clone();
        let ctl = DiskControls {
            guard: Some(Box::new(move |row| {
                protect
                    .as_ref()
                    .filter(|g| g.is_match(&row.name))
                    .map(|g| format!("protected: name matches {:?}", g.glob().glob()))
            })),
            ..DiskControls::default()
        };
        let cap = self.settings.deadline.unwrap_or_default() + super::world::DEADLINE_GRACE;
        let from = ledger();
        let pass = delete_disks(cloud, chosen, self.settings.clone(), ctl);
        match tokio::time::timeout(cap, within_wakeups(pass)).await {
            Ok(Some(report)) => run.report = Some(report),
            _ => run.hung = true,
        }
        run.ledger_from = Some(from);
        run.ledger_len = ledger() - from;
        run
    }
}

fn fail(out: &mut Vec<Failure>, invariant: &'static str, id: &str, detail: String) {
    out.push(Failure {
        invariant,
        uhost_id: Some(id.to_owned()),
        detail,
    });
}

/// The disk invariants (the simulator's own disk rules are checked with its other violations).
pub(crate) fn check(state: &SimState, run: &DiskRun) -> Vec<Failure> {
    let mut out = Vec::new();
    if run.hung {
        out.push(Failure {
            invariant: name::HANG,
            uhost_id: None,
            detail: "the disk deletion did not end".into(),
        });
    }
    for call in state.calls.iter().filter(|c| c.action == crate::api::disk::DELETE_DISK) {
        for id in &call.ids {
            let at = format!("Delete at {:.1}s", call.at_secs);
            if !run.selected.contains(id) {
                fail(&mut out, name::UNSELECTED, id, at);
            } else if run.refused.contains(id) {
                fail(&mut out, name::REFUSED, id, at);
            }
        }
    }
    let Some(report) = &run.report else { return out };
    let listed: BTreeMap<&str, &str> = state
        .disks
        .iter()
        .filter_map(|d| Some((d.get("ResourceId")?.as_str()?, d.get("Status")?.as_str().unwrap_or(""))))
        .collect();
    let deleted: BTreeSet<&str> = state.deleted_disks.iter().map(|d| d.disk_id.as_str()).collect();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for row in &report.instances {
        *seen.entry(row.uhost_id.as_str()).or_default() += 1;
        let id = row.uhost_id.as_str();
        if row.kind != crate::workflow::TargetKind::Disk {
            fail(&mut out, name::REPORT, id, "a disk row without kind disk".into());
        }
        let confirmed_gone = matches!(
            row.outcome,
            crate::workflow::Outcome::Deleted { confirmed: true }
                | crate::workflow::Outcome::AlreadyGone
                | crate::workflow::Outcome::DeletedByOther
        );
        if confirmed_gone && let Some(status) = listed.get(id) {
            fail(
                &mut out,
                name::GONE,
                id,
                format!("reported {}, listed as {status}", row.outcome.word()),
            );
        }
        if matches!(row.outcome, crate::workflow::Outcome::Deleted { .. }) && !deleted.contains(id) {
            fail(
                &mut out,
                name::GONE,
                id,
                "reported deleted, no Delete was accepted".into(),
            );
        }
    }
    for id in &run.selected {
        match seen.get(id.as_str()) {
            Some(1) => {}
            n => fail(
                &mut out,
                name::REPORT,
                id,
                format!("{} outcome(s) in the report", n.copied().unwrap_or(0)),
            ),
        }
    }
    if report.all_ok() {
        for id in run.detached.iter().filter(|id| !run.refused.contains(*id)) {
            if let Some(status) = listed.get(id.as_str())
                && *status != "Deleting"
                && *status != "InUse"
            {
                fail(&mut out, name::EXIT, id, format!("all ok, yet listed as {status}"));
            }
        }
    }
    out
}
