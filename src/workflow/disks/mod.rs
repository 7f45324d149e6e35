//! The disk deletion driver: every selected data disk to an outcome, one task per disk under
//! a concurrency bound and the run's request pace.
//!
//! Per disk the rule is short, so it is a small loop rather than the instance engine's
//! machine: look (a fresh `DescribeCompshareDisk` of the disk's region), then
//! - the listing shows it free: re-check the guard on that row, and send one Delete;
//! - attached (to anything) or in an unknown status: never deleted, skipped with the reason;
//! - detaching (or a Delete answered 8434): wait, through tokio's clock, and look again,
//!   within the detach budget;
//! - deleting or absent after our accepted Delete: confirm it leaves the listing.
//!
//! Reused from the engine: [`Pace`] (one pace for every call), [`api::classify`] (8434 is
//! [`RetryClass::Detaching`]), [`Policy`]/[`Episode`] (retry budgets in time), [`Outcome`] and
//! [`Report`] (rows with `kind: disk`), and the [`Journal`] (a disk journal: its start line
//! says `kind: disk`; each Delete's intent is synced before the Delete leaves). A Delete whose
//! answer was lost (in this process, or by an earlier one per the journal) is never resent
//! before a look shows the disk still listed as free; one an earlier process had accepted is
//! only confirmed.

mod disk;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::journal::{Entry, JOURNAL_VERSION, Journal, JournalKind, Resume, Synced};
use super::machine::Phase;
use super::outcome::{InstanceReport, Outcome, Report};
use super::pace::Pace;
use crate::api::{DiskCloud, DiskRow};
use crate::defaults;
use disk::Disk;

/// How a disk deletion runs.
#[derive(Debug, Clone)]
pub struct DiskSettings {
    /// Deletes (and their looks) in flight at once.
    pub concurrency: usize,
    /// Hard ceiling on requests per second (0 = none; the pace adapts below it).
    pub rate: u32,
    /// The gap between looks at a disk that is detaching or being deleted.
    pub poll_interval: Duration,
    /// How long a disk may stay "detaching" (listed so, or answering 8434) before it fails.
    pub detach_wait: Duration,
    /// How long a deleted disk may stay listed before its outcome is "deleted (unconfirmed)".
    pub confirm_timeout: Duration,
    /// Whole-run time limit.
    pub deadline: Option<Duration>,
    /// Fixed seed for jitter (tests); `None` = random.
    pub jitter_seed: Option<u64>,
}

impl Default for DiskSettings {
    fn default() -> Self {
        DiskSettings {
            concurrency: 8,
            rate: defaults::RATE,
            poll_interval: defaults::POLL_INTERVAL,
            // compshare-cli gives 8434 three retries over 12 s; a detach that follows a
            // Terminate can take longer, so five minutes.
            detach_wait: Duration::from_secs(5 * 60),
            confirm_timeout: defaults::CONFIRM_TIMEOUT,
            deadline: None,
            jitter_seed: None,
        }
    }
}

/// The guard a disk's fresh row must pass right before its Delete: `Some(reason)` skips it.
pub type DiskGuard = Box<dyn Fn(&DiskRow) -> Option<String> + Send + Sync>;

/// What shapes one deletion run besides its settings.
pub struct DiskControls {
    pub guard: Option<DiskGuard>,
    pub cancel: CancellationToken,
    /// A disk journal (`None`: none kept). A write that fails halts the run: the disks not
    /// finished end `failed`, and no Delete leaves whose intent is not on disk.
    pub journal: Option<Journal>,
    /// What a disk journal says an earlier process did (`disks delete --resume`).
    pub resume: Option<Resume>,
}

impl Default for DiskControls {
    fn default() -> Self {
        DiskControls {
            guard: None,
            cancel: CancellationToken::new(),
            journal: None,
            resume: None,
        }
    }
}

/// Shared by the disks' tasks.
struct Shared<C> {
    cloud: Arc<C>,
    settings: DiskSettings,
    guard: Option<DiskGuard>,
    cancel: CancellationToken,
    pace: Pace,
    slots: tokio::sync::Semaphore,
    calls: Mutex<BTreeMap<String, u32>>,
    throttled: Mutex<u32>,
    start: Instant,
    /// The freshest look at each disk by when it was sent, from any task's listing (a region
    /// listing shows every disk of the region): whether it showed the disk free. An answer
    /// says how things were at some moment between its sending and its arrival, so a slow
    /// answer that shows a disk free is older news than a later-sent one that shows it
    /// detaching; the Delete waits for a look that is the freshest and free.
    freshest: Mutex<HashMap<String, (Instant, bool)>>,
    journal: Mutex<Option<Journal>>,
    /// The first journal write that failed: the run halts, and says why.
    journal_error: Mutex<Option<String>>,
    /// Cancelled when a journal write fails.
    halt: CancellationToken,
}

impl<C> Shared<C> {
    /// Note what a listing sent at `sent` showed of each of its rows.
    fn saw(&self, sent: Instant, rows: &[DiskRow]) {
        if let Ok(mut f) = self.freshest.lock() {
            for r in rows {
                let e = f.entry(r.disk_id.clone()).or_insert((sent, r.is_free()));
                if sent > e.0 {
                    *e = (sent, r.is_free());
                }
            }
        }
    }

    /// Append a line; a failure halts the run.
    fn journal(&self, entry: &Entry) {
        let mut j = self.journal.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(Err(e)) = j.as_mut().map(|j| j.write(entry)) {
            drop(j);
            self.journal_failed(e.to_string());
        }
    }

    /// Append a Delete's intent and start its sync (`Err`: the write failed, the run halts).
    fn intent(&self, entry: &Entry) -> Result<Synced, String> {
        let mut j = self.journal.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(journal) = j.as_mut() else {
            return Ok(Synced::done());
        };
        let written = journal.write_intent(entry);
        drop(j);
        written.map_err(|e| {
            self.journal_failed(e.to_string());
            e.to_string()
        })
    }

    /// Without a journal a resume could repeat a Delete: start nothing new.
    fn journal_failed(&self, error: String) {
        let mut slot = self.journal_error.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            tracing::error!("{error}; stopping the run");
            *slot = Some(error);
        }
        self.halt.cancel();
    }

    /// How a disk not finished ends when the run stops early: `failed` after a journal
    /// write failed (exit 1, as for instances), else `interrupted`.
    fn halted(&self, phase: Phase) -> Outcome {
        match self
            .journal_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            Some(error) => Outcome::Failed {
                phase,
                error: format!("journal write failed: {error}"),
                request_id: None,
            },
            None => Outcome::Interrupted { phase },
        }
    }

    /// Whether the freshest look at `id` any task has had showed it free.
    fn freshest_free(&self, id: &str) -> bool {
        self.freshest
            .lock()
            .ok()
            .and_then(|f| f.get(id).map(|(_, free)| *free))
            .unwrap_or(false)
    }
}

/// Delete every disk in `disks` (rows from the selection listing); one report row each.
pub async fn delete_disks<C: DiskCloud + 'static>(
    cloud: Arc<C>,
    disks: Vec<DiskRow>,
    settings: DiskSettings,
    ctl: DiskControls,
) -> Report {
    let resume = ctl.resume.unwrap_or_default();
    let shared = Arc::new(Shared {
        cloud,
        pace: Pace::new(settings.rate),
        slots: tokio::sync::Semaphore::new(settings.concurrency.max(1)),
        guard: ctl.guard,
        cancel: ctl.cancel,
        calls: Mutex::new(BTreeMap::new()),
        throttled: Mutex::new(0),
        start: Instant::now(),
        freshest: Mutex::new(HashMap::new()),
        journal: Mutex::new(ctl.journal),
        journal_error: Mutex::new(None),
        halt: CancellationToken::new(),
        settings,
    });
    // The start line (not written again if the command already wrote and synced it).
    shared.journal(&Entry::Start {
        version: JOURNAL_VERSION,
        kind: JournalKind::Disk,
        ids: disks.iter().map(|d| d.disk_id.clone()).collect(),
        release_udisk: false,
        force_stop: false,
        resumed: !resume.ids.is_empty(),
    });
    let seed = shared.settings.jitter_seed;
    let mut tasks = tokio::task::JoinSet::new();
    for (n, row) in disks.into_iter().enumerate() {
        let shared = shared.clone();
        let rng = match seed {
            Some(s) => StdRng::seed_from_u64(s.wrapping_add(n as u64)),
            None => StdRng::from_os_rng(),
        };
        let before = resume.calls.get(&row.disk_id).copied().unwrap_or_default();
        let journaled = resume.disks.get(&row.disk_id).copied();
        // A disk is seen in this run once a listing of this process shows it (the
        // selection's rows come from one), or if an earlier process sent it a Delete: gone
        // now, someone else deleted it. Otherwise, gone is `already_gone`.
        let seen = !row.status.is_empty() || before > 0;
        let disk = Disk::new(row, rng, journaled, before, seen);
        tasks.spawn(async move { (n, disk.run(&shared).await) });
    }
    let mut rows: Vec<(usize, InstanceReport)> = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        // A panicking task is a bug; its disk still gets no silent pass (see below).
        if let Ok(r) = joined {
            rows.push(r);
        }
    }
    rows.sort_by_key(|(n, _)| *n);
    let calls = shared.calls.lock().map(|c| c.clone()).unwrap_or_default();
    let throttled = shared.throttled.lock().map(|t| *t).unwrap_or_default();
    let mut report = Report::new(
        rows.into_iter().map(|(_, r)| r).collect(),
        shared.start.elapsed().as_secs_f64(),
        calls,
        throttled,
    );
    report.summary.pace = shared.pace.summary();
    report.summary.calls_before_resume = resume.calls_by_action;
    report
}
