//! `run`: the teardown itself.
//!
//! `run` checks everything it can offline before the lock and the API (the files it reads are
//! bounded and validated, the files it writes must not overlap, the count of explicit IDs is
//! held against `--max-count`), and writes and syncs its journal's start line before the
//! first mutating call, so a journal that cannot be written exits 2 with nothing changed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::anyhow;
use tokio_util::sync::CancellationToken;

use super::terminal::{BarsHandle, confirm, interrupt_token, interruptible, json, print, spawn_signal_handler};
use super::{CmdResult, Ctx, Exit, Failure, exit_for};
use crate::api::Instance;
use crate::cli::{self, RunArgs};
use crate::output::{self, OutputFormat};
use crate::plan::Plan;
use crate::selection::{Candidate, Verdict};
use crate::workflow::{self, Controls, Outcome, Report};
use crate::{pathset, runlock};

impl Ctx {
    pub(super) async fn run(&self, a: RunArgs) -> CmdResult<Exit> {
        let r = &self.config.run;
        // Installed first: until the first call is sent, an interrupt ends the command at once
        // with nothing changed, even where SIGINT was inherited as ignored (cron, `nohup`, `&`).
        let cancel = interrupt_token();
        // Everything that can be checked offline is checked before the lock and the API.
        let (mut release, mut force) = self.effect(&a.effect);
        let resume = a.resume.as_deref().map(workflow::journal::replay).transpose()?;
        let req = if resume.is_some() || a.plan.is_some() {
            None
        } else {
            Some(self.request(&a.select)?)
        };
        let max_count = a.max_count.or(r.max_count).unwrap_or(20);
        cli::in_range(max_count, cli::MAX_COUNT).map_err(|e| anyhow!("--max-count (or run.max_count): {e}"))?;
        // Explicit IDs without a narrowing filter are the selection (less the exclusions):
        // refuse too many before the first Describe, not after a hundred.
        if let Some(q) = &req
            && let Some(ids) = &q.ids
            && !q.filters.narrows()
        {
            let named = ids.iter().filter(|id| !q.protections.exclude.contains(*id)).count();
            if named > max_count {
                return Err(Failure::Usage(anyhow!(
                    "{named} instances named, more than --max-count {max_count}; raise --max-count to proceed"
                )));
            }
        }
        let (client, account) = self.client()?;
        if let Some(res) = &resume {
            let differences = res.account.differences(&account);
            if !differences.is_empty() && !a.allow_other_account {
                return Err(Failure::Usage(anyhow!(
                    "journal {} was written for another account: {}; pass --allow-other-account to resume it here",
                    a.resume.as_deref().unwrap_or(Path::new("")).display(),
                    differences.join(", ")
                )));
            }
        }
        let plan_file = a
            .plan
            .as_deref()
            .map(|p| Plan::load(p, &account, a.allow_other_account))
            .transpose()?;
        for (what, (r2, f2)) in [
            ("journal", resume.as_ref().map(|r| (r.release_udisk, r.force_stop))),
            ("plan", plan_file.as_ref().map(|p| (p.release_udisk, p.force_stop))),
        ]
        .into_iter()
        .filter_map(|(w, v)| v.map(|v| (w, v)))
        {
            if (a.effect.release_udisk && !r2) || (a.effect.force_stop && !f2) {
                return Err(Failure::Usage(anyhow!(
                    "the {what} was made with release_udisk={r2}, force_stop={f2}; it cannot be changed on resume"
                )));
            }
            (release, force) = (r2, f2);
        }
        let mut settings = self.settings(&a, release, force)?;
        // A run scoped with `--region` keeps that scope in every Describe.
        settings.describe_region = req.as_ref().and_then(|q| q.filters.region.clone());
        let journal_path = a
            .resume
            .clone()
            .or_else(|| a.journal.clone())
            .or_else(|| r.journal.clone());
        if let Some(path) = &journal_path
            && path.is_dir()
        {
            return Err(Failure::Usage(anyhow!("journal {} is a directory", path.display())));
        }
        if a.resume.is_none()
            && let Some(path) = &journal_path
            && std::fs::metadata(path).is_ok_and(|m| m.len() > 0)
        {
            // One journal per run: appending a second run would make `--resume` ambiguous.
            return Err(Failure::Usage(anyhow!(
                "journal {} already holds a run; resume it with --resume, or choose a new file",
                path.display()
            )));
        }
        let fixed_protections = match (&resume, &a.plan) {
            (Some(_), _) => Some(self.fixed_selection_protections(&a.select, "--resume")?),
            (None, Some(_)) => Some(self.fixed_selection_protections(&a.select, "--plan")?),
            (None, None) => None,
        };
        let lock_path = match a.lock_file.clone().or_else(|| r.lock_file.clone()) {
            Some(p) => p,
            None => runlock::default_path(&account)?,
        };
        let report_path = a.report.clone().or_else(|| r.report.clone());
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
            ("--journal", journal_path.as_deref(), true),
            ("--report", report_path.as_deref(), true),
            ("--metrics-file", metrics_path.as_deref(), true),
            ("--lock-file", Some(lock_path.as_path()), true),
        ];
        let roles: Vec<pathset::Role<'_>> = files
            .into_iter()
            .filter_map(|(flag, path, written)| path.map(|path| pathset::Role { flag, path, written }))
            .collect();
        pathset::check(&roles)?;
        let _lock = runlock::acquire(&lock_path).map_err(|e| match e {
            runlock::RunLockError::Held(_) => Failure::Locked(e.into()),
            runlock::RunLockError::Io { .. } | runlock::RunLockError::Unsafe { .. } => Failure::Usage(e.into()),
        })?;

        // What to act on, and what is skipped on purpose.
        let (plan, guard): (Plan, Option<workflow::Guard>) = if let Some(res) = &resume {
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
            let protections = fixed_protections.clone().unwrap_or_default();
            let guard: workflow::Guard = Box::new(move |row| protections.refuse(row));
            (Plan::build(&cands, &account, release, force), Some(guard))
        } else if let Some(p) = plan_file {
            let drift = p.clone();
            let protections = fixed_protections.clone().unwrap_or_default();
            let guard: workflow::Guard = Box::new(move |row| protections.refuse(row).or_else(|| drift.drift(row)));
            (p, Some(guard))
        } else {
            let req = req.expect("request built above");
            let cands = interruptible(&cancel, self.candidates(&client, &req)).await?;
            let protections = req.protections.clone();
            // A named ID the selection could not see yet may still turn up outside the scope.
            let filters = req.filters.clone();
            let guard: workflow::Guard =
                Box::new(move |row| protections.refuse(row).or_else(|| filters.outside_scope(row)));
            (Plan::build(&cands, &account, release, force), Some(guard))
        };
        let ids: Vec<String> = if let Some(res) = &resume {
            res.ids.clone()
        } else {
            plan.acting_ids()
        };
        // One count for the plan's headline, the prompt and the limit: what the run works on.
        // A resumed run is held to the limit too (its journal may not be ours).
        if ids.len() > max_count {
            return Err(Failure::Usage(anyhow!(
                "{} instances selected, more than --max-count {max_count}; raise --max-count to proceed",
                ids.len()
            )));
        }
        if ids.is_empty() {
            tracing::info!("nothing to tear down");
        } else if !a.yes {
            interruptible(&cancel, confirm(&plan, ids.len())).await?;
        }

        // The start line is written and synced before any call: a journal that cannot be
        // written (a full disk, `/dev/full`) stops here, with nothing changed.
        let journal = journal_path
            .as_deref()
            .map(|path| {
                workflow::journal::Journal::begin(
                    path,
                    &account,
                    &workflow::journal::Entry::Start {
                        version: workflow::journal::JOURNAL_VERSION,
                        ids: ids.clone(),
                        release_udisk: release,
                        force_stop: force,
                        resumed: resume.is_some(),
                    },
                )
            })
            .transpose()
            .map_err(|e| anyhow!("{e} (nothing was changed)"))?;
        if cancel.is_cancelled() {
            return Err(Failure::Interrupted);
        }
        // From here on an interrupt lets calls in flight finish and still reports.
        let cancel = CancellationToken::new();
        spawn_signal_handler(cancel.clone());
        let skipped_count = plan
            .entries
            .iter()
            .filter(|e| e.action == crate::plan::Action::Skip)
            .count();
        let bars = BarsHandle::new(&self.multi, ids.len() + skipped_count);
        let known: Vec<Instance> = plan
            .entries
            .iter()
            .map(|e| Instance {
                uhost_id: e.uhost_id.clone(),
                name: e.name.clone(),
                region: e.region.clone(),
                zone: e.zone.clone(),
                ..Instance::default()
            })
            .collect();
        // Skipped entries never reach the runner; the bars count them as done.
        let skipped: Vec<&crate::plan::Entry> = plan
            .entries
            .iter()
            .filter(|e| e.action == crate::plan::Action::Skip && !ids.contains(&e.uhost_id))
            .collect();
        for e in &skipped {
            bars.finished_elsewhere(&e.uhost_id, &Outcome::Skipped { reason: String::new() });
        }
        let ctl = Controls {
            journal,
            resume,
            guard,
            observer: Box::new(bars.clone()),
            cancel,
            known,
        };
        let mut report = workflow::run(Arc::new(client), ids, settings, ctl).await;
        bars.finish();
        add_skipped(&mut report, &skipped, release);
        let exit = self.finish_report(&report, report_path.as_deref());
        if let Ok(mut slot) = self.report.lock() {
            *slot = Some(report);
        }
        Ok(exit)
    }

    fn finish_report(&self, report: &Report, file: Option<&Path>) -> Exit {
        if let Some(path) = file {
            // The run already happened: a report that cannot be written is logged, not fatal.
            if let Err(e) = std::fs::write(path, json(report)) {
                tracing::error!("cannot write report {}: {e}", path.display());
            }
        }
        match self.output() {
            OutputFormat::Json => print(&json(report)),
            OutputFormat::Table => print(&output::report_table(report)),
        }
        exit_for(report)
    }
}

fn add_skipped(report: &mut Report, skipped: &[&crate::plan::Entry], release_udisk: bool) {
    if skipped.is_empty() {
        return;
    }
    let mut instances = std::mem::take(&mut report.instances);
    instances.extend(skipped.iter().map(|e| workflow::InstanceReport {
        uhost_id: e.uhost_id.clone(),
        name: e.name.clone(),
        region: e.region.clone(),
        zone: e.zone.clone(),
        last_state: e.state.clone(),
        outcome: Outcome::Skipped {
            reason: e.reason.clone().unwrap_or_default(),
        },
        seconds: 0.0,
        calls: 0,
        release_udisk,
    }));
    let s = &report.summary;
    *report = Report::new(instances, s.seconds, s.api_calls.clone(), s.throttled);
}
