//! `run`: the teardown itself, in four steps over one [`Source`] of instances:
//!
//! 1. **prepare**: everything that can be checked offline is checked before the lock and the
//!    API (the files it reads are bounded and validated, the count of explicit IDs is held
//!    against `--max-count`, the settings are in range, a new journal holds no run yet);
//! 2. **gate**: the files it writes must not overlap its other files, a terminal to ask on
//!    unless `--yes` (both before anything else is touched), the run lock, the
//!    selection and the guard re-checked before each instance's first call, the count, the
//!    prompt, and the journal's start line, written and synced before the first mutating
//!    call (a journal that cannot be written exits 2 with nothing changed);
//! 3. **execute**: the batch driver takes every instance to an outcome;
//! 4. **report**: printed, written to `--report`, kept for the metrics file, exit code.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::anyhow;
use tokio_util::sync::CancellationToken;

use super::settings::Request;
use super::source::Source;
use super::terminal::{
    BarsHandle, can_confirm, confirm, interrupt_token, interruptible, json, print, spawn_signal_handler,
};
use super::{CmdResult, Ctx, Exit, Failure, exit_for};
use crate::api::Client;
use crate::cli::{self, RunArgs};
use crate::credentials::Account;
use crate::defaults;
use crate::output::{self, OutputFormat};
use crate::plan::Plan;
use crate::selection::{Candidate, Protections, Verdict};
use crate::workflow::journal::{self, Journal, Resume};
use crate::workflow::{self, Controls, Outcome, Report, Settings};
use crate::{pathset, runlock};

/// A run checked offline, with the client and the account it acts for.
pub(super) struct Prepared {
    pub(super) source: Source,
    pub(super) client: Client,
    pub(super) account: Account,
    pub(super) settings: Settings,
    /// Re-checked on each instance's fresh row right before its first call.
    protections: Protections,
    pub(super) max_count: usize,
    journal: Option<PathBuf>,
    pub(super) report: Option<PathBuf>,
}

/// What to act on, and what is skipped on purpose.
struct Selection {
    plan: Plan,
    /// The instances the run works on: the plan's acting entries, or the journal's.
    ids: Vec<String>,
    guard: workflow::Guard,
    resume: Option<Resume>,
    /// Data disk sizes (GB) from the selection's rows, for the report's kept disks.
    disk_sizes: std::collections::HashMap<String, i64>,
}

/// A run past every gate: nothing sent yet, the journal's start line on disk.
struct Approved {
    client: Client,
    settings: Settings,
    selection: Selection,
    journal: Option<Journal>,
}

impl Ctx {
    pub(super) async fn run(&self, a: RunArgs) -> CmdResult<Exit> {
        // Installed first: until the first call is sent, an interrupt ends the command at once
        // with nothing changed, even where SIGINT was inherited as ignored (cron, `nohup`, `&`).
        let cancel = interrupt_token();
        let prepared = self.prepare(&a)?;
        let report_path = prepared.report.clone();
        // Held until the report is out.
        let (_lock, approved) = self.gate(&a, prepared, &cancel).await?;
        let report = self.execute(approved).await;
        let exit = self.finish_report(&report, report_path.as_deref());
        if let Ok(mut slot) = self.report.lock() {
            *slot = Some(report);
        }
        Ok(exit)
    }

    /// Everything that can be checked offline, checked before the lock and the API.
    pub(super) fn prepare(&self, a: &RunArgs) -> CmdResult<Prepared> {
        let r = &self.config.run;
        let source = Source::read(self, a)?;
        let max_count = a.max_count.or(r.max_count).unwrap_or(defaults::MAX_COUNT);
        cli::in_range(max_count, cli::MAX_COUNT).map_err(|e| anyhow!("--max-count (or run.max_count): {e}"))?;
        if let Source::Fresh(req) = &source {
            named_within(req, max_count)?;
        }
        let (client, account) = self.client()?;
        let source = source.bind(a, &account)?;
        let (release, force) = source.effect(&a.effect, self.effect(&a.effect))?;
        let mut settings = self.settings(a, release, force)?;
        let journal = self.journal_path(a)?;
        let protections = match &source {
            Source::Fresh(req) => {
                // A run scoped with `--region` keeps that scope in every Describe.
                settings.describe_region.clone_from(&req.filters.region);
                req.protections.clone()
            }
            Source::Journal(_) => self.fixed_selection_protections(&a.select, "--resume")?,
            Source::SavedPlan(_) => self.fixed_selection_protections(&a.select, "--plan")?,
        };
        Ok(Prepared {
            source,
            client,
            account,
            settings,
            protections,
            max_count,
            journal,
            report: a.report.clone().or_else(|| r.report.clone()),
        })
    }

    /// Everything between the offline checks and the first call: the files, the lock, the
    /// selection and its guard, the count, the prompt, the journal's start line. An
    /// interrupt until the end of it changes nothing.
    async fn gate(
        &self,
        a: &RunArgs,
        prepared: Prepared,
        cancel: &CancellationToken,
    ) -> CmdResult<(runlock::RunLock, Approved)> {
        let lock = self.lock(a, &prepared)?;
        let approved = self.approve(a, prepared, cancel).await?;
        if cancel.is_cancelled() {
            return Err(Failure::Interrupted);
        }
        Ok((lock, approved))
    }

    /// The journal: the one resumed, or a new file that holds no run yet.
    fn journal_path(&self, a: &RunArgs) -> CmdResult<Option<PathBuf>> {
        let path = a
            .resume
            .clone()
            .or_else(|| a.journal.clone())
            .or_else(|| self.config.run.journal.clone());
        if let Some(path) = &path {
            let flag = if a.resume.is_some() { "--resume" } else { "--journal" };
            pathset::writable(flag, path)?;
        }
        if a.resume.is_none()
            && let Some(path) = &path
            && std::fs::metadata(path).is_ok_and(|m| m.len() > 0)
        {
            // One journal per run: appending a second run would make `--resume` ambiguous.
            return Err(Failure::Usage(anyhow!(
                "journal {} already holds a run; resume it with --resume, or choose a new file",
                path.display()
            )));
        }
        Ok(path)
    }

    /// No file the run writes may be another of its files, and without `--yes` there must be
    /// a terminal to ask on; then the run lock, held until the run ends.
    pub(super) fn lock(&self, a: &RunArgs, p: &Prepared) -> CmdResult<runlock::RunLock> {
        let r = &self.config.run;
        let lock_path = match a.lock_file.clone().or_else(|| r.lock_file.clone()) {
            Some(p) => p,
            None => runlock::default_path(&p.account)?,
        };
        let metrics_path = a.metrics_file.clone().or_else(|| r.metrics_file.clone());
        let from_file = a
            .select
            .from_file
            .clone()
            .or_else(|| self.config.selection.from_file.clone())
            .map(PathBuf::from);
        let plan_path = a.plan.clone().map(PathBuf::from);
        let files = [
            ("--config", self.global.config.as_deref(), false),
            ("--from-file", from_file.as_deref(), false),
            ("--plan", plan_path.as_deref(), false),
            ("--journal", p.journal.as_deref(), true),
            ("--report", p.report.as_deref(), true),
            ("--metrics-file", metrics_path.as_deref(), true),
            ("--lock-file", Some(lock_path.as_path()), true),
        ];
        let roles: Vec<pathset::Role<'_>> = files
            .into_iter()
            .filter_map(|(flag, path, written)| path.map(|path| pathset::Role { flag, path, written }))
            .collect();
        pathset::check(&roles)?;
        // Without `--yes` a run must ask, so it needs a terminal. Refused after every other
        // offline check (a bad input is named first) and before the lock and the API: a cron
        // job that forgot `--yes` fails the same way (exit 2) every night, also on nights
        // with nothing to do, and not as a held lock or an API outage.
        if !a.yes && !can_confirm() {
            return Err(Failure::Usage(anyhow!(
                "refusing to run without a terminal to confirm on; pass --yes (nothing was changed)"
            )));
        }
        runlock::acquire(&lock_path).map_err(|e| match e {
            runlock::RunLockError::Held(_) => Failure::Locked(e.into()),
            runlock::RunLockError::Io { .. }
            | runlock::RunLockError::Unsafe { .. }
            | runlock::RunLockError::UnsafeDir { .. } => Failure::Usage(e.into()),
        })
    }

    /// The gates after the lock: the selection, the count, the prompt, the journal's start.
    async fn approve(&self, a: &RunArgs, p: Prepared, cancel: &CancellationToken) -> CmdResult<Approved> {
        let selection = self
            .select(p.source, &p.client, &p.account, &p.settings, p.protections, cancel)
            .await?;
        let count = selection.ids.len();
        // One count for the plan's headline, the prompt and the limit: what the run works on.
        // A resumed run is held to the limit too (its journal may not be ours).
        if count > p.max_count {
            return Err(Failure::Usage(anyhow!(
                "{count} instances selected, more than --max-count {}; raise --max-count to proceed",
                p.max_count
            )));
        }
        if count == 0 {
            tracing::info!("nothing to tear down");
        } else if !a.yes {
            interruptible(cancel, confirm(&selection.plan, count)).await?;
        }
        // The start line is written and synced before any call: a journal that cannot be
        // written (a full disk, `/dev/full`) stops here, with nothing changed.
        let start = journal::Entry::Start {
            version: journal::JOURNAL_VERSION,
            kind: crate::workflow::journal::JournalKind::Instance,
            ids: selection.ids.clone(),
            release_udisk: p.settings.release_udisk,
            force_stop: p.settings.force_stop,
            resumed: selection.resume.is_some(),
        };
        let journal = p
            .journal
            .as_deref()
            .map(|path| Journal::begin(path, &p.account, &start))
            .transpose()
            .map_err(|e| anyhow!("{e} (nothing was changed)"))?;
        Ok(Approved {
            client: p.client,
            settings: p.settings,
            selection,
            journal,
        })
    }

    /// What to act on, and the guard each instance's fresh row must pass right before its
    /// first call of this run: the protections, and per source what could have changed.
    async fn select(
        &self,
        source: Source,
        client: &Client,
        account: &Account,
        settings: &Settings,
        protections: Protections,
        cancel: &CancellationToken,
    ) -> CmdResult<Selection> {
        let (release, force) = (settings.release_udisk, settings.force_stop);
        Ok(match source {
            Source::Fresh(req) => {
                let cands = interruptible(cancel, self.candidates(client, &req)).await?;
                // A named ID the selection could not see yet may still turn up outside the scope.
                let filters = req.filters;
                // Data disks only: the report's kept-disk lines are the only reader.
                let disk_sizes = cands
                    .iter()
                    .filter_map(|c| c.row.as_ref())
                    .flat_map(|r| r.data_disks().map(|d| (d.disk_id.clone(), d.size)))
                    .collect();
                let plan = Plan::build(cands, account, release, force);
                Selection {
                    ids: plan.acting_ids(),
                    plan,
                    guard: Box::new(move |row| protections.refuse(row).or_else(|| filters.outside_scope(row))),
                    resume: None,
                    disk_sizes,
                }
            }
            Source::SavedPlan(plan) => {
                let drift = plan.drift();
                Selection {
                    ids: plan.acting_ids(),
                    plan,
                    guard: Box::new(move |row| protections.refuse(row).or_else(|| drift.check(row))),
                    resume: None,
                    disk_sizes: std::collections::HashMap::default(),
                }
            }
            Source::Journal(res) => {
                let cands: Vec<Candidate> = res
                    .ids
                    .iter()
                    .map(|id| Candidate {
                        id: id.clone(),
                        row: None,
                        verdict: Verdict::Act,
                    })
                    .collect();
                // The journal fixes the selection; protections still apply right before acting.
                Selection {
                    plan: Plan::build(cands, account, release, force),
                    ids: res.ids.clone(),
                    guard: Box::new(move |row| protections.refuse(row)),
                    resume: Some(res),
                    disk_sizes: std::collections::HashMap::default(),
                }
            }
        })
    }

    /// Drive every instance to an outcome; the plan's skipped entries join the report as
    /// they are.
    async fn execute(&self, run: Approved) -> Report {
        let Approved {
            client,
            settings,
            selection:
                Selection {
                    plan,
                    ids,
                    guard,
                    resume,
                    disk_sizes,
                },
            journal,
        } = run;
        // From here on an interrupt lets calls in flight finish and still reports.
        let cancel = CancellationToken::new();
        spawn_signal_handler(cancel.clone());
        // The plan is taken apart before the run: the entries it skips join the report as
        // they are, the data disks of the others are kept for the kept-disk lines, and the
        // names and places move into the engine's records. (Kept whole, it was a copy of
        // every instance's strings for the whole run.)
        // `ids` are the plan's entries that are not skipped (`Plan::acting_ids`; a journal's
        // plan skips none), so the action alone tells them apart.
        let mut skipped: Vec<crate::plan::Item> = Vec::new();
        let mut known: Vec<workflow::Known> = Vec::with_capacity(ids.len());
        let mut data_disks: Vec<(String, Vec<String>)> = Vec::new();
        for mut e in plan.entries {
            // Skipped entries never reach the runner; the bars count them as done.
            if e.action == crate::plan::Action::Skip {
                skipped.push(e);
                continue;
            }
            if !e.data_disks.is_empty() {
                data_disks.push((e.uhost_id.clone(), std::mem::take(&mut e.data_disks)));
            }
            known.push(workflow::Known {
                id: e.uhost_id,
                name: e.name,
                region: e.region,
                zone: e.zone,
                ..workflow::Known::default()
            });
        }
        let bars = BarsHandle::new(&self.multi, ids.len() + skipped.len());
        for e in &skipped {
            bars.finished_elsewhere(&e.uhost_id, &Outcome::Skipped { reason: String::new() });
        }
        let ctl = Controls {
            journal,
            resume,
            guard: Some(guard),
            observer: Box::new(bars.clone()),
            cancel,
            known,
        };
        let release = settings.release_udisk;
        let mut report = workflow::run(Arc::new(client), ids, settings, ctl).await;
        super::terminal::drained();
        bars.finish();
        add_skipped(&mut report, skipped, release);
        report.kept_disks = kept_disks(&report, &data_disks, &disk_sizes);
        report
    }

    fn finish_report(&self, report: &Report, file: Option<&Path>) -> Exit {
        if let Some(path) = file {
            // The run already happened: a report that cannot be written is logged, not fatal.
            if let Err(e) = pathset::write_file(path, json(report).as_bytes()) {
                tracing::error!("cannot write report {}: {e}", path.display());
            }
        }
        match self.output() {
            OutputFormat::Json => print(&json(report)),
            OutputFormat::Table => print(&format!(
                "{}{}",
                output::report_table(report),
                output::kept_disks_text(&report.kept_disks)
            )),
        }
        exit_for(report)
    }
}

/// Explicit IDs without a narrowing filter are the selection (less the exclusions): refuse
/// too many before the first Describe, not after a hundred.
fn named_within(req: &Request, max_count: usize) -> CmdResult<()> {
    if let Some(ids) = &req.ids
        && !req.filters.narrows()
    {
        let named = ids.iter().filter(|id| !req.protections.exclude.contains(*id)).count();
        if named > max_count {
            return Err(Failure::Usage(anyhow!(
                "{named} instances named, more than --max-count {max_count}; raise --max-count to proceed"
            )));
        }
    }
    Ok(())
}

/// The data disks of the instances this run terminated without `ReleaseUDisk`: kept, and
/// still billed.
fn kept_disks(
    report: &Report,
    data_disks: &[(String, Vec<String>)],
    sizes: &std::collections::HashMap<String, i64>,
) -> Vec<workflow::KeptDisk> {
    let terminated: std::collections::HashSet<&str> = report
        .instances
        .iter()
        .filter(|i| !i.release_udisk && matches!(i.outcome, Outcome::Terminated { .. }))
        .map(|i| i.uhost_id.as_str())
        .collect();
    data_disks
        .iter()
        .filter(|(id, _)| terminated.contains(id.as_str()))
        .flat_map(|(id, disks)| {
            disks.iter().map(|d| workflow::KeptDisk {
                disk_id: d.clone(),
                uhost_id: id.clone(),
                size_gb: sizes.get(d).copied(),
            })
        })
        .collect()
}

fn add_skipped(report: &mut Report, skipped: Vec<crate::plan::Item>, release_udisk: bool) {
    if skipped.is_empty() {
        return;
    }
    let mut instances = std::mem::take(&mut report.instances);
    instances.extend(skipped.into_iter().map(|e| workflow::InstanceReport {
        kind: workflow::TargetKind::Instance,
        uhost_id: e.uhost_id,
        name: e.name,
        region: e.region,
        zone: e.zone,
        last_state: e.state,
        outcome: Outcome::Skipped {
            reason: e.reason.unwrap_or_default(),
        },
        seconds: 0.0,
        calls: 0,
        calls_before_resume: 0,
        release_udisk,
        size_gb: None,
    }));
    let s = &report.summary;
    let pace = s.pace.clone();
    let before = s.calls_before_resume.clone();
    *report = Report::new(instances, s.seconds, s.api_calls.clone(), s.throttled);
    report.summary.pace = pace;
    report.summary.calls_before_resume = before;
}
