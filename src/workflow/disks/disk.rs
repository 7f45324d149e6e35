//! One disk's run: look, then delete, wait or end (the rules are in the parent module's
//! header); each Delete's intent journaled and synced before it leaves, its answer journaled
//! after.

use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;
use tokio::time::Instant;

use super::super::journal::{DiskJournaled, Entry};
use super::super::machine::{Effect, Phase};
use super::super::outcome::{InstanceReport, Outcome, TargetKind};
use super::super::retry::{Episode, Next, Policy};
use super::{DiskSettings, Shared};
use crate::api::{self, ApiError, Attachment, DiskCloud, DiskQuery, DiskRow, DiskTarget, LockCodes, RetryClass};

/// One disk's run.
pub(super) struct Disk {
    row: DiskRow,
    target: DiskTarget,
    rng: StdRng,
    /// Deletes this process sent.
    calls: u32,
    /// Deletes earlier processes sent, per the journal.
    calls_before: u32,
    /// Our Delete was accepted (or a look after a lost answer showed it deleting).
    deleted: bool,
    /// A Delete whose answer was lost (or is still on its way: if the run stops then, it
    /// may have happened): resend only after a look shows the disk still free.
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
    /// `journaled`: what an earlier process's Delete came to, per the journal; `calls_before`:
    /// how many it sent; `seen`: whether a look of this process (or a call of an earlier one)
    /// has shown the disk.
    pub(super) fn new(
        row: DiskRow,
        rng: StdRng,
        journaled: Option<DiskJournaled>,
        calls_before: u32,
        seen: bool,
    ) -> Disk {
        Disk {
            target: DiskTarget::of(&row),
            row,
            rng,
            calls: 0,
            calls_before,
            deleted: journaled == Some(DiskJournaled::Accepted),
            unsure: journaled == Some(DiskJournaled::Unsure),
            detach: None,
            transient: None,
            deleted_at: None,
            absent: 0,
            seen,
        }
    }

    pub(super) async fn run<C: DiskCloud>(mut self, s: &Shared<C>) -> InstanceReport {
        let outcome = loop {
            let step = tokio::select! {
                () = s.cancel.cancelled() => Step::Done(Outcome::Interrupted { phase: self.phase() }),
                () = s.halt.cancelled() => Step::Done(s.halted(self.phase())),
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
                        () = s.halt.cancelled() => break s.halted(self.phase()),
                        () = tokio::time::sleep(d) => {}
                    }
                }
            }
        };
        s.journal(&Entry::Outcome {
            id: self.row.disk_id.clone(),
            outcome: outcome.clone(),
        });
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
            calls_before_resume: self.calls_before,
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
        // The intent is on disk before the Delete leaves: a resume then knows it may have
        // happened and looks before anything else. A failed write sends nothing.
        let intent = Entry::DiskCall {
            id: row.disk_id.clone(),
            region: self.target.region.clone(),
            zone: self.target.zone.clone(),
        };
        let synced = match s.intent(&intent) {
            Ok(synced) => synced.wait().await.map_err(|e| {
                s.journal_failed(e.to_string());
                e.to_string()
            }),
            Err(e) => Err(e),
        };
        if let Err(e) = synced {
            return Step::Done(Outcome::Failed {
                phase: self.phase(),
                error: format!("journal write failed: {e}"),
                request_id: None,
            });
        }
        self.calls += 1;
        // Unsure while it is on its way; a refusal puts back what was known before.
        let was_unsure = std::mem::replace(&mut self.unsure, true);
        tracing::debug!(id = %row.disk_id, "sending Delete");
        let answer = Self::paced(s, api::disk::DELETE_DISK, s.cloud.delete_disk(&self.target))
            .await
            .1;
        let effect = match &answer {
            Ok(()) => Effect::Accepted,
            Err(e) if api::classify(e, &LockCodes::default()) == RetryClass::Ambiguous => Effect::Unsure,
            Err(_) => Effect::NotApplied,
        };
        if effect == Effect::NotApplied {
            self.unsure = was_unsure;
        }
        s.journal(&Entry::DiskResult {
            id: row.disk_id.clone(),
            effect,
            error: answer.as_ref().err().map(ToString::to_string),
        });
        match answer {
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
