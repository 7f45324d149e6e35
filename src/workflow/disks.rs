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
//! [`Report`] (rows with `kind: disk`). A Delete whose answer was lost is never resent before
//! a look shows the disk still listed as free.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::machine::Phase;
use super::outcome::{InstanceReport, Outcome, Report, TargetKind};
use super::pace::Pace;
use super::retry::{Episode, Next, Policy};
use crate::api::{self, ApiError, Attachment, DiskCloud, DiskQuery, DiskRow, DiskTarget, LockCodes, RetryClass};
use crate::defaults;

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
}

impl Default for DiskControls {
    fn default() -> Self {
        DiskControls {
            guard: None,
            cancel: CancellationToken::new(),
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
        settings,
    });
    let seed = shared.settings.jitter_seed;
    let mut tasks = tokio::task::JoinSet::new();
    for (n, row) in disks.into_iter().enumerate() {
        let shared = shared.clone();
        let rng = match seed {
            Some(s) => StdRng::seed_from_u64(s.wrapping_add(n as u64)),
            None => StdRng::from_os_rng(),
        };
        tasks.spawn(async move { (n, Disk::new(row, rng).run(&shared).await) });
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
    report
}

/// One disk's run.
struct Disk {
    row: DiskRow,
    target: DiskTarget,
    rng: StdRng,
    calls: u32,
    /// Our Delete was accepted (or a look after a lost answer showed it deleting).
    deleted: bool,
    /// A Delete whose answer was lost: resend only after a look shows the disk still free.
    unsure: bool,
    detach: Option<Episode>,
    transient: Option<Episode>,
    /// When the accepted Delete was answered (the confirm timeout counts from it).
    deleted_at: Option<Instant>,
    /// Consecutive looks that did not list the disk.
    absent: u32,
    seen: bool,
}

/// What one step decided.
enum Step {
    Wait(Duration),
    Done(Outcome),
}

impl Disk {
    fn new(row: DiskRow, rng: StdRng) -> Disk {
        Disk {
            target: DiskTarget::of(&row),
            row,
            rng,
            calls: 0,
            deleted: false,
            unsure: false,
            detach: None,
            transient: None,
            deleted_at: None,
            absent: 0,
            seen: true,
        }
    }

    async fn run<C: DiskCloud>(mut self, s: &Shared<C>) -> InstanceReport {
        let outcome = loop {
            let step = tokio::select! {
                () = s.cancel.cancelled() => Step::Done(Outcome::Interrupted { phase: self.phase() }),
                step = self.step(s) => step,
            };
            match step {
                Step::Done(o) => break o,
                Step::Wait(d) => {
                    if s.settings.deadline.is_some_and(|dl| s.start.elapsed() + d >= dl) {
                        break Outcome::TimedOut { phase: self.phase() };
                    }
                    tokio::select! {
                        () = s.cancel.cancelled() => break Outcome::Interrupted { phase: self.phase() },
                        () = tokio::time::sleep(d) => {}
                    }
                }
            }
        };
        InstanceReport {
            kind: TargetKind::Disk,
            uhost_id: self.row.disk_id.clone(),
            name: self.row.name.clone(),
            region: self.target.region.clone(),
            zone: self.target.zone.clone(),
            last_state: self.row.status.clone(),
            outcome,
            seconds: s.start.elapsed().as_secs_f64(),
            calls: self.calls,
            release_udisk: false,
            size_gb: Some(self.row.size_gb),
        }
    }

    fn phase(&self) -> Phase {
        if self.deleted {
            Phase::TerminateSent
        } else if self.unsure {
            Phase::TerminateUnsure
        } else {
            Phase::Fresh
        }
    }

    fn count(s: &Shared<impl DiskCloud>, action: &str) {
        if let Ok(mut c) = s.calls.lock() {
            *c.entry(action.to_owned()).or_default() += 1;
        }
    }

    /// Send one request through the pace, noting throttling.
    /// The call's result, and when it was sent.
    async fn paced<T>(
        s: &Shared<impl DiskCloud>,
        action: &str,
        call: impl Future<Output = Result<T, ApiError>>,
    ) -> (Instant, Result<T, ApiError>) {
        s.pace.ready().await;
        let sent = Instant::now();
        Self::count(s, action);
        let r = call.await;
        match &r {
            Err(e) if api::classify(e, &LockCodes::default()) == RetryClass::Throttled => {
                s.pace.throttled(sent);
                if let Ok(mut t) = s.throttled.lock() {
                    *t += 1;
                }
            }
            _ => s.pace.succeeded(sent),
        }
        (sent, r)
    }

    /// A fresh look at this disk: its row in its region's listing, or `None` if not listed.
    async fn look(&self, s: &Shared<impl DiskCloud>) -> Result<Option<DiskRow>, ApiError> {
        let region = (!self.target.region.is_empty()).then_some(self.target.region.as_str());
        let mut offset = 0u32;
        // Pages of the region until the disk is found or the listing ends (see
        // `api::describe_disks_all` for the end rules).
        loop {
            let q = DiskQuery {
                region: region.map(str::to_owned),
                host_id: None,
                limit: 100,
                offset,
            };
            let (sent, page) = Self::paced(s, api::disk::DESCRIBE_DISKS, s.cloud.describe_disks(&q)).await;
            let page = page?;
            s.saw(sent, &page.disk_set);
            let got = page.disk_set.len();
            if let Some(row) = page.disk_set.into_iter().find(|r| r.disk_id == self.target.disk_id) {
                return Ok(Some(row));
            }
            offset += 100;
            let total = page.total_count.and_then(|t| u32::try_from(t).ok());
            if got < 100 || total.is_none_or(|t| offset >= t) || offset >= 1_000_000 {
                return Ok(None);
            }
        }
    }

    /// A gap drawn from `policy` for a refusal of this kind, or the outcome if spent.
    fn backoff(&mut self, transient: bool, policy: Policy, e: &ApiError) -> Step {
        let now = Instant::now();
        let slot = if transient {
            &mut self.transient
        } else {
            &mut self.detach
        };
        let episode = Episode::refused(slot, now);
        match policy.next(episode, now, self.rng.random()) {
            Next::Retry(d) => Step::Wait(d),
            Next::GiveUp { waited } => Step::Done(Outcome::Failed {
                phase: self.phase(),
                error: format!("gave up after {}: {e}", humantime::format_duration(round(waited))),
                request_id: e.request_id().map(str::to_owned),
            }),
        }
    }

    async fn step<C: DiskCloud>(&mut self, s: &Shared<C>) -> Step {
        let _slot = s.slots.acquire().await;
        let looked = self.look(s).await;
        let row = match looked {
            Ok(row) => {
                self.transient = None;
                row
            }
            Err(e) => return self.on_error(s, &e),
        };
        let Some(row) = row else {
            return self.absent(s);
        };
        self.absent = 0;
        self.seen = true;
        self.row = row.clone();
        let attachment = row.attachment();
        tracing::debug!(id = %row.disk_id, status = %row.status, mount = %row.mount_instance, "disk looked at");
        if self.deleted || (self.unsure && attachment == Attachment::Deleting) {
            self.deleted = true;
            let since = *self.deleted_at.get_or_insert_with(Instant::now);
            return if since.elapsed() >= s.settings.confirm_timeout {
                Step::Done(Outcome::Deleted { confirmed: false })
            } else {
                Step::Wait(s.settings.poll_interval)
            };
        }
        match attachment {
            // Never deleted: the freshest look shows it in use.
            Attachment::Attached(host) => {
                let on = if host.is_empty() {
                    String::new()
                } else {
                    format!(" to {host}")
                };
                Step::Done(Outcome::Skipped {
                    reason: format!("attached{on}: an attached disk is never deleted"),
                })
            }
            Attachment::Unknown(status) => Step::Done(Outcome::Skipped {
                reason: format!("status {status:?} does not say detached: not deleted"),
            }),
            Attachment::Deleting => {
                // Someone else's Delete: wait for it to leave the listing.
                Step::Wait(s.settings.poll_interval)
            }
            Attachment::Detaching => {
                let e = ApiError::RetCode {
                    action: api::disk::DESCRIBE_DISKS.into(),
                    code: api::disk::STILL_DETACHING,
                    message: "listed as detaching".into(),
                    request_id: None,
                };
                self.backoff(false, detach_policy(&s.settings), &e)
            }
            Attachment::Free => {
                if let Some(reason) = s.guard.as_ref().and_then(|g| g(&row)) {
                    return Step::Done(Outcome::Skipped { reason });
                }
                if !s.freshest_free(&row.disk_id) {
                    // A listing sent after ours showed it not free: ours is older news.
                    return Step::Wait(s.settings.poll_interval / 4);
                }
                self.delete(s, &row).await
            }
        }
    }

    /// One Delete of a disk the freshest look showed free.
    async fn delete<C: DiskCloud>(&mut self, s: &Shared<C>, row: &DiskRow) -> Step {
        // The call goes where the fresh row says the disk lives.
        self.target = DiskTarget::of(row);
        self.calls += 1;
        tracing::debug!(id = %row.disk_id, "sending Delete");
        match Self::paced(s, api::disk::DELETE_DISK, s.cloud.delete_disk(&self.target))
            .await
            .1
        {
            Ok(()) => {
                tracing::info!(id = %row.disk_id, "DeleteCompshareDisk accepted");
                self.deleted = true;
                self.deleted_at = Some(Instant::now());
                self.detach = None;
                Step::Wait(s.settings.poll_interval / 4)
            }
            Err(e) => self.on_error(s, &e),
        }
    }

    fn on_error<C: DiskCloud>(&mut self, s: &Shared<C>, e: &ApiError) -> Step {
        tracing::debug!(id = %self.target.disk_id, "{e}");
        match api::classify(e, &LockCodes::default()) {
            RetryClass::Detaching => self.backoff(false, detach_policy(&s.settings), e),
            RetryClass::Throttled => Step::Wait(Duration::from_millis(self.rng.random_range(200..600))),
            RetryClass::Transient => self.backoff(true, Policy::transient(s.settings.poll_interval), e),
            RetryClass::Ambiguous => {
                // Maybe deleted, maybe not: look before anything else.
                self.unsure = true;
                Step::Wait(s.settings.poll_interval / 4)
            }
            RetryClass::Locked | RetryClass::Fatal => Step::Done(Outcome::Failed {
                phase: self.phase(),
                error: e.to_string(),
                request_id: e.request_id().map(str::to_owned),
            }),
        }
    }

    /// The disk was not in the listing.
    fn absent<C: DiskCloud>(&mut self, s: &Shared<C>) -> Step {
        if self.deleted || self.unsure {
            return Step::Done(Outcome::Deleted { confirmed: true });
        }
        // One missing row may be a lagging replica: believe it on the second look.
        self.absent += 1;
        if self.absent < 2 {
            return Step::Wait(s.settings.poll_interval / 4);
        }
        Step::Done(if self.seen {
            Outcome::DeletedByOther
        } else {
            Outcome::AlreadyGone
        })
    }
}

/// 8434 and "detaching": 2 s doubling to 30 s (compshare-cli waits 2, 4, 6 s), for
/// `--detach-wait`.
fn detach_policy(settings: &DiskSettings) -> Policy {
    Policy {
        budget: settings.detach_wait,
        first_gap: Duration::from_secs(2).min(settings.poll_interval),
        max_gap: Duration::from_secs(30),
    }
}

fn round(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}
