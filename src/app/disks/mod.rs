//! `disks list` and `disks delete`: the data disks a teardown keeps by default (no
//! `ReleaseUDisk`), found, shown and deleted with the guard rails of `run`:
//!
//! 1. **prepare** (offline, before the lock and the API): IDs and globs checked, a bounded
//!    selection (IDs, `--name`, `--min-size` or `--all-detached`), the files the command
//!    writes distinct, a terminal to ask on unless `--yes` or `--dry-run`;
//! 2. **select**: the disk listing (and, for self-protection, the instances holding this
//!    machine's addresses), every disk judged ([`select`]); `--dry-run` prints that and stops;
//! 3. **gate**: the account's run lock (shared with `run`), `--max-count`, the typed count;
//! 4. **execute**: [`workflow::disks::delete_disks`]: a fresh look right before each Delete,
//!    never a Delete of a disk that look shows attached or detaching; with `--journal`, each
//!    Delete's intent synced to the journal before it leaves, and `--resume` continues a
//!    journal's deletion ([`journaled`]);
//! 5. **report**: table or JSON, `--report`, metrics, and the exit code of `run`.

mod journaled;
mod select;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use tokio_util::sync::CancellationToken;

use super::terminal::{can_confirm, interrupt_token, interruptible, json, print, spawn_signal_handler};
use super::{CmdResult, Ctx, Exit, Failure, exit_for};
use crate::api::{self, Client, DiskRow, LockCodes, RetryClass};
use crate::cli::{self, DiskDeleteArgs, DiskSelectArgs, DisksArgs, DisksCommand};
use crate::credentials::Account;
use crate::output::{self, OutputFormat};
use crate::selection::{self, IdSource, Protections, Verdict};
use crate::workflow::disks::{DiskControls, DiskSettings, delete_disks};
use crate::workflow::journal::Resume;
use crate::workflow::{InstanceReport, Outcome, Report, TargetKind};
use crate::{defaults, pathset, runlock, state};
pub(super) use select::DiskRequest;
use select::{Context as Judged, DiskCandidate};

impl Ctx {
    pub(super) async fn disks(&self, a: DisksArgs) -> CmdResult<Exit> {
        match a.command {
            DisksCommand::List(l) => self.disks_list(&l.select).await,
            DisksCommand::Delete(d) => self.disks_delete(d).await,
        }
    }

    /// The selection flags (and the config's exclusions and protected names), checked offline.
    pub(super) fn disk_request(&self, a: &DiskSelectArgs, deleting: bool) -> CmdResult<DiskRequest> {
        let c = &self.config.selection;
        let sources = |ids: &[String], at: &str| -> Vec<IdSource> {
            ids.iter()
                .map(|id| IdSource {
                    id: id.clone(),
                    at: at.to_owned(),
                })
                .collect()
        };
        let ids = selection::check_ids(&sources(&a.ids, ""))?;
        // Protections add up: the config's are never dropped by a flag.
        let mut excludes = a.excludes.clone();
        excludes.extend(c.exclude.iter().filter(|e| !a.excludes.contains(e)).cloned());
        let exclude = selection::check_ids(&sources(&excludes, " (--exclude)"))?;
        let mut protect = a.protect_names.clone();
        protect.extend(c.protect_name.iter().cloned());
        let req = DiskRequest {
            ids: (!ids.is_empty()).then_some(ids),
            names: selection::globs(&a.names)?,
            region: a.region.clone(),
            zone: a.zone.clone(),
            min_size: a.min_size,
            detached: a.detached || a.all_detached || a.detached_for.is_some(),
            detached_for: a.detached_for,
            exclude: exclude.into_iter().collect(),
            protect_names: selection::globs(&protect)?,
        };
        let bounded = req.ids.is_some()
            || !req.names.is_empty()
            || req.min_size.is_some()
            || req.detached_for.is_some()
            || a.all_detached;
        if deleting && !bounded {
            return Err(Failure::Usage(anyhow!(
                "no disks named and no filter given: name disk IDs, use --name or --min-size, or pass --all-detached to delete every detached disk in scope"
            )));
        }
        Ok(req)
    }

    /// The listing, this machine's instances, when the store first saw each disk detached
    /// (recorded now, when `--detached-for` asks or a deletion runs), and every disk judged.
    pub(super) async fn disk_candidates(
        &self,
        client: &Client,
        account: &Account,
        req: &DiskRequest,
        deleting: bool,
        journaled: Option<&[String]>,
    ) -> CmdResult<(Vec<DiskCandidate>, HashSet<String>)> {
        use backon::Retryable;
        let region = req.region.as_deref();
        let rows: Vec<DiskRow> = (|| api::describe_disks_all(client, region))
            .retry(read_policy())
            .sleep(tokio::time::sleep)
            .when(|e| {
                matches!(
                    api::classify(e, &LockCodes::default()),
                    RetryClass::Transient | RetryClass::Throttled
                )
            })
            .await
            .map_err(|e| listing_failure(anyhow!("cannot describe disks: {e}"), Some(&e)))?;
        let own = own_instances(client).await?;
        if let Some(ids) = journaled {
            let cands = journaled::candidates(ids, &rows, req, &own);
            return Ok((cands, own));
        }
        let now = super::now_unix();
        let detached_since = if req.detached_for.is_some() {
            observe(account, &rows, now)?
        } else {
            std::collections::HashMap::default()
        };
        let ctx = Judged {
            own_instances: own,
            detached_since,
            now,
        };
        Ok((select::select(&rows, req, &ctx, deleting), ctx.own_instances))
    }

    async fn disks_list(&self, a: &DiskSelectArgs) -> CmdResult<Exit> {
        let req = self.disk_request(a, false)?;
        let (client, account) = self.client()?;
        let cancel = interrupt_token();
        let (cands, _) = interruptible(&cancel, self.disk_candidates(&client, &account, &req, false, None)).await?;
        let shown: Vec<&DiskCandidate> = cands
            .iter()
            .filter(|c| req.ids.is_some() || c.verdict == Verdict::Act || matches!(c.verdict, Verdict::Skip { .. }))
            .collect();
        match self.output() {
            OutputFormat::Json => print(&json(&shown)),
            OutputFormat::Table => {
                let gb: i64 = shown.iter().filter_map(|c| c.row.as_ref()).map(|r| r.size_gb).sum();
                let detached = shown
                    .iter()
                    .filter(|c| c.row.as_ref().is_some_and(select::detached))
                    .count();
                let summary = format!("{} disk(s), {gb} GB; {detached} detached", shown.len());
                print(&output::disk_table(&table_rows(&shown), &summary));
            }
        }
        Ok(Exit::Ok)
    }

    /// The journal resumed, if any, and the request: the journal's disks, or the flags'.
    fn delete_request(&self, a: &DiskDeleteArgs) -> CmdResult<(Option<Resume>, DiskRequest)> {
        let Some(path) = &a.resume else {
            return Ok((None, self.disk_request(&a.select, true)?));
        };
        let resume = journaled::read(path, &a.select)?;
        // The journal fixes the selection; exclusions and protections still apply.
        let protections = DiskSelectArgs {
            all_detached: true,
            ..a.select.clone()
        };
        let req = DiskRequest {
            ids: Some(resume.ids.clone()),
            ..self.disk_request(&protections, true)?
        };
        Ok((Some(resume), req))
    }

    /// No file `disks delete` writes may be another of its files.
    fn delete_files(
        &self,
        a: &DiskDeleteArgs,
        lock_path: &std::path::Path,
        journal_path: Option<&(&'static str, PathBuf)>,
    ) -> CmdResult<()> {
        let files = [
            ("--config", self.global.config.clone(), false),
            ("--report", a.report.clone(), true),
            ("--metrics-file", a.metrics_file.clone(), true),
            ("--lock-file", Some(lock_path.to_path_buf()), true),
            (
                journal_path.map_or("--journal", |(flag, _)| *flag),
                journal_path.map(|(_, p)| p.clone()),
                true,
            ),
        ];
        let roles: Vec<pathset::Role<'_>> = files
            .iter()
            .filter_map(|(flag, path, written)| {
                path.as_deref().map(|path| pathset::Role {
                    flag,
                    path,
                    written: *written,
                })
            })
            .collect();
        pathset::check(&roles)?;
        Ok(())
    }

    async fn disks_delete(&self, a: DiskDeleteArgs) -> CmdResult<Exit> {
        let cancel = interrupt_token();
        // 1. Offline.
        let journal_path = journaled::path(&a)?;
        let (resume, req) = self.delete_request(&a)?;
        let journaled_ids = resume.as_ref().map(|r| r.ids.as_slice());
        let max_count = a.max_count.unwrap_or(defaults::MAX_COUNT);
        if let Some(ids) = &req.ids {
            let named = ids.iter().filter(|id| !req.exclude.contains(*id)).count();
            if named > max_count {
                return Err(Failure::Usage(anyhow!(
                    "{named} disks named, more than --max-count {max_count}; raise --max-count to proceed"
                )));
            }
        }
        let settings = disk_settings(&a);
        let (client, account) = self.client()?;
        if let (Some(r), Some(path)) = (&resume, &a.resume) {
            journaled::bind(r, &account, path)?;
        }
        let lock_path = match &a.lock_file {
            Some(p) => p.clone(),
            None => runlock::default_path(&account)?,
        };
        self.delete_files(&a, &lock_path, journal_path.as_ref())?;
        if !a.yes && !a.dry_run && !can_confirm() {
            return Err(Failure::Usage(anyhow!(
                "refusing to delete disks without a terminal to confirm on; pass --yes (nothing was changed)"
            )));
        }
        // 2. The selection; a dry run ends here, through the same code as the real one.
        if a.dry_run {
            let (cands, _) = interruptible(
                &cancel,
                self.disk_candidates(&client, &account, &req, true, journaled_ids),
            )
            .await?;
            self.print_disk_plan(&cands);
            return Ok(Exit::Ok);
        }
        // 3. The lock (the account's, shared with `run`), then the selection under it.
        let _lock = runlock::acquire(&lock_path).map_err(|e| match e {
            runlock::RunLockError::Held(_) => Failure::Locked(e.into()),
            _ => Failure::Usage(e.into()),
        })?;
        let (cands, own) = interruptible(
            &cancel,
            self.disk_candidates(&client, &account, &req, true, journaled_ids),
        )
        .await?;
        let acting: Vec<DiskRow> = cands
            .iter()
            .filter(|c| c.verdict == Verdict::Act)
            .filter_map(|c| c.row.clone())
            .collect();
        let count = acting.len();
        if count > max_count {
            return Err(Failure::Usage(anyhow!(
                "{count} disks selected, more than --max-count {max_count}; raise --max-count to proceed"
            )));
        }
        if count > 0 && !a.yes {
            interruptible(&cancel, confirm_disks(&cands, count)).await?;
        }
        // The start line is written and synced before any Delete: a journal that cannot be
        // written stops here, with nothing changed.
        let journal = match &journal_path {
            Some((_, path)) => Some(journaled::begin(path, &account, resume.as_ref(), &acting)?),
            None => None,
        };
        if cancel.is_cancelled() {
            return Err(Failure::Interrupted);
        }
        // 4. Execute: the guard is re-checked on each disk's fresh row.
        let run_cancel = CancellationToken::new();
        spawn_signal_handler(run_cancel.clone());
        let guard_req = req.clone();
        let ctl = DiskControls {
            guard: Some(Box::new(move |row| guard_req.refuse(row, &own))),
            cancel: run_cancel,
            journal,
            resume,
        };
        let mut report = delete_disks(Arc::new(client), acting, settings, ctl).await;
        super::terminal::drained();
        add_not_acted(&mut report, &cands);
        // 5. Report.
        if let Some(path) = &a.report
            && let Err(e) = pathset::write_file(path, json(&report).as_bytes())
        {
            tracing::error!("cannot write report {}: {e}", path.display());
        }
        match self.output() {
            OutputFormat::Json => print(&json(&report)),
            OutputFormat::Table => print(&output::report_table(&report)),
        }
        let exit = exit_for(&report);
        if let Ok(mut slot) = self.report.lock() {
            *slot = Some(report);
        }
        Ok(exit)
    }

    fn print_disk_plan(&self, cands: &[DiskCandidate]) {
        match self.output() {
            OutputFormat::Json => print(&json(&cands)),
            OutputFormat::Table => {
                let refs: Vec<&DiskCandidate> = cands.iter().collect();
                print(&output::disk_table(&table_rows(&refs), &plan_summary(cands)));
            }
        }
    }
}

/// The deletion's settings from its flags.
fn disk_settings(a: &DiskDeleteArgs) -> DiskSettings {
    DiskSettings {
        concurrency: a.concurrency.unwrap_or(cli::DISK_CONCURRENCY),
        rate: a.rate.unwrap_or(defaults::RATE),
        detach_wait: a.detach_wait.unwrap_or(DiskSettings::default().detach_wait),
        deadline: a.deadline,
        ..DiskSettings::default()
    }
}

/// The metrics file of `disks delete`, unless it is also one of its other files.
pub(super) fn metrics_target(a: &DiskDeleteArgs, config: Option<&PathBuf>) -> Option<PathBuf> {
    let path = a.metrics_file.clone()?;
    let mut roles = vec![pathset::Role {
        flag: "--metrics-file",
        path: &path,
        written: true,
    }];
    for (flag, p) in [
        ("--config", config),
        ("--report", a.report.as_ref()),
        ("--lock-file", a.lock_file.as_ref()),
    ] {
        if let Some(p) = p {
            roles.push(pathset::Role {
                flag,
                path: p,
                written: false,
            });
        }
    }
    pathset::check(&roles).is_ok().then(|| path.clone())
}

/// What the plan does, in one line: the count the prompt asks for and `--max-count` limits.
fn plan_summary(cands: &[DiskCandidate]) -> String {
    let acting: Vec<&DiskRow> = cands
        .iter()
        .filter(|c| c.verdict == Verdict::Act)
        .filter_map(|c| c.row.as_ref())
        .collect();
    let gb: i64 = acting.iter().map(|r| r.size_gb).sum();
    let skipped = cands
        .iter()
        .filter(|c| matches!(c.verdict, Verdict::Skip { .. }))
        .count();
    let missing = cands.iter().filter(|c| c.verdict == Verdict::NotFound).count();
    format!(
        "{} disk(s) to delete ({gb} GB); {skipped} skipped; {missing} not found",
        acting.len()
    )
}

fn table_rows<'a>(cands: &[&'a DiskCandidate]) -> Vec<(&'a str, Option<&'a DiskRow>, String)> {
    cands
        .iter()
        .map(|c| {
            let note = match &c.verdict {
                Verdict::Act => String::new(),
                Verdict::NotFound => "not found".to_owned(),
                Verdict::Skip { reason } => format!("skip: {reason}"),
            };
            (c.id.as_str(), c.row.as_ref(), note)
        })
        .collect()
}

/// Ask for the count on the terminal, as `run` does.
async fn confirm_disks(cands: &[DiskCandidate], count: usize) -> CmdResult<()> {
    let refs: Vec<&DiskCandidate> = cands.iter().collect();
    let table = output::disk_table(&table_rows(&refs), &plan_summary(cands));
    super::terminal::ask_count(&table, count, "delete", "disk(s)").await
}

/// Instances holding one of this machine's addresses: a disk attached to one is never
/// touched (it is attached, so never deleted anyway; this names the reason).
async fn own_instances(client: &Client) -> CmdResult<HashSet<String>> {
    use backon::Retryable;
    let own = selection::own_addresses();
    if own.is_empty() {
        return Ok(HashSet::new());
    }
    let rows = (|| api::describe_all(client, None, None))
        .retry(read_policy())
        .sleep(tokio::time::sleep)
        .when(|e| {
            e.api().is_none_or(|e| {
                matches!(
                    api::classify(e, &LockCodes::default()),
                    RetryClass::Transient | RetryClass::Throttled
                )
            })
        })
        .await
        .map_err(|e| listing_failure(anyhow!("cannot describe instances: {e}"), e.api()))?;
    let p = Protections {
        own_addresses: own,
        ..Protections::default()
    };
    Ok(rows
        .iter()
        .filter(|r| p.refuse(r).is_some())
        .map(|r| r.uhost_id.clone())
        .collect())
}

/// Record what this look saw in the account's state store (its default path), and read when
/// each detached disk was first seen detached. A disk in a status no rule knows counts as
/// attached: its clock starts over, so "detached for D" is never overstated.
fn observe(account: &Account, rows: &[DiskRow], now: i64) -> CmdResult<std::collections::HashMap<String, i64>> {
    let path = state::default_path(account)?;
    let mut store = state::Store::open(&path, account)?;
    let seen: Vec<(String, bool)> = rows.iter().map(|r| (r.disk_id.clone(), !select::detached(r))).collect();
    Ok(store.observe_disks(now, &seen)?)
}

/// A read-only listing: a few quick retries through 5xx, drops and throttling (about 2-4 s),
/// as the instance selection does.
fn read_policy() -> backon::ExponentialBuilder {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(300))
        .with_max_times(3)
        .with_jitter()
}

/// Exit 2 when the API refused the request itself, else 4 (try later), as for instances.
fn listing_failure(error: anyhow::Error, api_error: Option<&api::ApiError>) -> Failure {
    match api_error.map(|a| api::classify(a, &LockCodes::default())) {
        Some(RetryClass::Fatal) => Failure::Usage(error),
        _ => Failure::Unavailable(error),
    }
}

/// Named disks that were not acted on join the report: skipped with their reason, or
/// already gone.
fn add_not_acted(report: &mut Report, cands: &[DiskCandidate]) {
    let mut rows = std::mem::take(&mut report.instances);
    for c in cands.iter().filter(|c| c.verdict != Verdict::Act) {
        let outcome = match &c.verdict {
            Verdict::Skip { reason } => Outcome::Skipped { reason: reason.clone() },
            _ => Outcome::AlreadyGone,
        };
        let row = c.row.clone().unwrap_or_default();
        rows.push(InstanceReport {
            kind: TargetKind::Disk,
            uhost_id: c.id.clone(),
            name: row.name.clone(),
            region: row.home_region().to_owned(),
            zone: row.zone.clone(),
            last_state: row.status.clone(),
            outcome,
            seconds: 0.0,
            calls: 0,
            calls_before_resume: 0,
            release_udisk: false,
            size_gb: c.row.as_ref().map(|r| r.size_gb),
        });
    }
    let s = &report.summary;
    let pace = s.pace.clone();
    let before = s.calls_before_resume.clone();
    *report = Report::new(rows, s.seconds, s.api_calls.clone(), s.throttled);
    report.summary.pace = pace;
    report.summary.calls_before_resume = before;
}
