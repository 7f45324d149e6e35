//! `watch`, the scheduled job, and the views of what it keeps: `marks`, `keep`, `history`.
//!
//! `watch` takes `run`'s gates in `run`'s order (the selection flags validated offline, the
//! files checked, the run lock, the selection read and judged with its protections), adds its
//! own offline checks (the idle rule, the notice sinks, the state store), and hands the due
//! instances to the same engine with the same guard. It needs `--yes` to change anything: it
//! is meant for cron, and `--dry-run` shows its decisions through the same code path.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::anyhow;
use tokio_util::sync::CancellationToken;

use super::run::Prepared;
use super::source::Source;
use super::terminal::{interrupt_token, interruptible, json, print, spawn_signal_handler};
use super::{CmdResult, Ctx, Exit, Failure, exit_for, now_unix};
use crate::cli::{HistoryArgs, KeepArgs, MarksArgs, RunArgs, StateArgs, WatchAction, WatchArgs};
use crate::credentials::Account;
use crate::defaults;
use crate::monitor::IdleRule;
use crate::notice::{Event, EventKind, NoticeConfig, Notifier, Target};
use crate::output::{self, OutputFormat};
use crate::pathset;
use crate::schedule::{self, Action, JobError};
use crate::state::{Changes, Keep, Kind, Pending, StateError, Store};
use crate::workflow::Controls;
use crate::workflow::disks::DiskSettings;

impl Ctx {
    pub(super) async fn watch(&self, a: WatchArgs) -> CmdResult<Exit> {
        let cancel = interrupt_token();
        if !a.yes && !a.dry_run {
            return Err(Failure::Usage(anyhow!(
                "watch changes things only with --yes (it is meant for cron); use --dry-run to see what it would do (nothing was changed)"
            )));
        }
        // `run`'s own offline checks, on the flags the two share.
        let run_args = RunArgs {
            select: a.select.clone(),
            effect: a.effect.clone(),
            yes: true,
            max_count: a.max_count,
            deadline: a.deadline,
            report: a.report.clone(),
            lock_file: a.lock_file.clone(),
            metrics_file: a.metrics_file.clone(),
            ..RunArgs::default()
        };
        let prepared = self.prepare(&run_args)?;
        let (cfg, notices, state_path) = watch_config(&a, &prepared)?;
        let Source::Fresh(req) = &prepared.source else {
            unreachable!("watch never reads a plan or a journal")
        };
        let (filters, protections) = (req.filters.clone(), req.protections.clone());
        // The disks' selection, checked offline with the rest.
        let disk_req = a.disks.disks.then(|| self.watch_disk_request(&a)).transpose()?;
        pathset::check(
            &[
                pathset::Role {
                    flag: "--state-file",
                    path: &state_path,
                    written: !a.dry_run,
                },
                pathset::Role {
                    flag: "--report",
                    path: prepared.report.as_deref().unwrap_or(Path::new("")),
                    written: prepared.report.is_some(),
                },
            ]
            .into_iter()
            .filter(|r| !r.path.as_os_str().is_empty())
            .collect::<Vec<_>>(),
        )?;
        // The dry run takes no lock and writes nothing, like `plan`.
        let _lock = if a.dry_run {
            None
        } else {
            Some(self.lock(&run_args, &prepared)?)
        };
        let mut store = if a.dry_run {
            match Store::open_read_only(&state_path, &prepared.account).map_err(state_refused)? {
                Some(s) => s,
                None => Store::in_memory(&prepared.account).map_err(state_refused)?,
            }
        } else {
            Store::open(&state_path, &prepared.account).map_err(state_refused)?
        };
        let cands = interruptible(&cancel, self.candidates(&prepared.client, req)).await?;
        let disks = match disk_req {
            Some(dr) => Some(interruptible(&cancel, self.watch_disks(&prepared, dr, &a)).await?),
            None => None,
        };
        let notifier = (!notices.is_empty()).then(|| Notifier::new(notices));
        // From here on an interrupt lets calls in flight finish and still reports.
        let cancel = CancellationToken::new();
        spawn_signal_handler(cancel.clone());
        let ctl = Controls {
            guard: Some(Box::new(move |row| {
                protections.refuse(row).or_else(|| filters.outside_scope(row))
            })),
            cancel,
            ..Controls::default()
        };
        let result = schedule::run_once(
            Arc::new(prepared.client),
            &mut store,
            notifier.as_ref(),
            &cfg,
            now_unix(),
            schedule::Targets {
                instances: cands,
                disks,
            },
            ctl,
        )
        .await;
        let report = match result {
            Ok(r) => r,
            Err(JobError::TooMany { due, max }) => {
                return Err(Failure::Usage(anyhow!(
                    "{due} instances are due, more than --max-count {max}; marks were written, nothing was torn down; raise --max-count to proceed"
                )));
            }
            Err(JobError::State(e)) => {
                // Like a failed journal write: halt, say so, exit 1.
                tracing::error!("{e}; the job stopped");
                return Ok(Exit::Failed);
            }
        };
        Ok(self.watch_done(&report, prepared.report.as_deref()))
    }

    /// `watch --disks`'s selection: its scope (`--region`, `--zone`, `--disk-name`) and the
    /// protections `run` has (`--exclude`, `--protect-name` and the config's), checked offline.
    fn watch_disk_request(&self, a: &WatchArgs) -> CmdResult<super::disks::DiskRequest> {
        self.disk_request(
            &crate::cli::DiskSelectArgs {
                names: a.disks.disk_names.clone(),
                region: a.select.region.clone(),
                zone: a.select.zone.clone(),
                excludes: a.select.excludes.clone(),
                protect_names: a.select.protect_names.clone(),
                ..crate::cli::DiskSelectArgs::default()
            },
            false,
        )
    }

    /// The disk listing judged, with the guard each Delete re-checks.
    async fn watch_disks(
        &self,
        prepared: &Prepared,
        req: super::disks::DiskRequest,
        a: &WatchArgs,
    ) -> CmdResult<schedule::Disks> {
        let (found, own) = self
            .disk_candidates(&prepared.client, &prepared.account, &req, false, None)
            .await?;
        Ok(schedule::Disks {
            rows: found
                .into_iter()
                .filter_map(|c| c.row.map(|r| (r, c.verdict)))
                .collect(),
            detached_for: a.disks.disk_detached_for.unwrap_or(defaults::DISK_DETACHED_FOR),
            settings: DiskSettings {
                concurrency: crate::cli::DISK_CONCURRENCY,
                rate: prepared.settings.rate,
                deadline: prepared.settings.deadline,
                ..DiskSettings::default()
            },
            // The protections again on each disk's fresh row, right before its Delete.
            guard: Some(Box::new(move |row| req.refuse(row, &own))),
        })
    }

    /// A finished run: the report file, stdout, and what the metrics file will say; the exit
    /// code the teardown earned.
    fn watch_done(&self, report: &schedule::JobReport, file: Option<&Path>) -> Exit {
        if let Some(path) = file
            && let Err(e) = pathset::write_file(path, json(report).as_bytes())
        {
            tracing::error!("cannot write report {}: {e}", path.display());
        }
        match self.output() {
            OutputFormat::Json => print(&json(report)),
            OutputFormat::Table => print(&output::watch_table(report)),
        }
        if let Ok(mut slot) = self.report.lock() {
            slot.clone_from(&report.teardown);
        }
        if let Ok(mut slot) = self.watch.lock() {
            *slot = Some(crate::metrics::WatchCounts::of(report));
        }
        // The worse of the two drivers' exits: an interrupt, then a failure.
        let exits: Vec<Exit> = [&report.teardown, &report.disk_deletion]
            .into_iter()
            .flatten()
            .map(exit_for)
            .collect();
        [Exit::Interrupted, Exit::Failed]
            .into_iter()
            .find(|e| exits.contains(e))
            .unwrap_or(Exit::Ok)
    }

    /// `marks`: every mark and keep, read-only, without the run lock.
    pub(super) fn marks(&self, a: &MarksArgs) -> CmdResult<Exit> {
        let (path, account) = self.state_for(&a.state)?;
        let Some(store) = Store::open_read_only(&path, &account).map_err(state_refused)? else {
            tracing::info!("no state store yet at {}: no marks", path.display());
            return Ok(Exit::Ok);
        };
        let view = output::MarksView {
            now: now_unix(),
            marks: store.marks().map_err(state_refused)?,
            keeps: store.keeps().map_err(state_refused)?,
            seen: store.seen().map_err(state_refused)?,
        };
        match self.output() {
            OutputFormat::Json => print(&json(&view)),
            OutputFormat::Table => print(&output::marks_table(&view)),
        }
        Ok(Exit::Ok)
    }

    /// `keep`: record (or drop) a keep, with a notice in the outbox for the next job run to
    /// deliver. Under the run lock, like every write to the store.
    pub(super) fn keep(&self, a: &KeepArgs) -> CmdResult<Exit> {
        let now = now_unix();
        let until = match (&a.keep_for, &a.until) {
            (Some(d), _) => Some(now.saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))),
            (None, Some(t)) => {
                let at = humantime::parse_rfc3339_weak(t).map_err(|e| {
                    anyhow!(
                        "--until {}: {e}; use RFC 3339, e.g. 2026-12-24T18:00:00Z",
                        crate::textfile::excerpt(t)
                    )
                })?;
                let at = at
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_err(|_| anyhow!("--until is before 1970"))?;
                let at = i64::try_from(at.as_secs()).unwrap_or(i64::MAX);
                if at <= now {
                    return Err(Failure::Usage(anyhow!("--until is in the past (nothing was changed)")));
                }
                Some(at)
            }
            (None, None) => None,
        };
        for id in &a.ids {
            if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(Failure::Usage(anyhow!(
                    "{} is not an instance or disk ID (nothing was changed)",
                    crate::textfile::excerpt(id)
                )));
            }
        }
        let (path, account) = self.state_for(&a.state)?;
        pathset::writable("--state-file", &path)?;
        let lock_path = crate::runlock::default_path(&account)?;
        let _lock = crate::runlock::acquire(&lock_path).map_err(|e| match e {
            crate::runlock::RunLockError::Held(_) => Failure::Locked(e.into()),
            _ => Failure::Usage(e.into()),
        })?;
        let mut store = Store::open(&path, &account).map_err(state_refused)?;
        // The kind is a label for `marks` (a keep holds by ID): a disk if the job marked a
        // disk of that ID, else an instance.
        let disks: std::collections::HashSet<String> = store
            .marks()
            .map_err(state_refused)?
            .into_iter()
            .filter(|m| m.kind == Kind::Disk)
            .map(|m| m.id)
            .collect();
        let kind_of = |id: &String| if disks.contains(id) { Kind::Disk } else { Kind::Instance };
        let mut changes = Changes::default();
        for id in &a.ids {
            match until {
                None => {
                    // Dropped under either label.
                    changes.unkeeps.push((Kind::Instance, id.clone()));
                    changes.unkeeps.push((Kind::Disk, id.clone()));
                }
                Some(until_at) => {
                    changes.keeps.push(Keep {
                        kind: kind_of(id),
                        id: id.clone(),
                        until_at,
                        reason: a.reason.clone(),
                        created_at: now,
                    });
                    let e = Event {
                        id: Event::stable_id(&["kept", &account.slug(), id, &now.to_string()]),
                        kind: EventKind::Kept,
                        at: now,
                        account: account.slug(),
                        target: Some(Target {
                            kind: kind_of(id).as_str().into(),
                            id: id.clone(),
                            name: String::new(),
                            region: String::new(),
                            zone: String::new(),
                        }),
                        due: Some(until_at),
                        reason: if a.reason.is_empty() {
                            "kept by a person".into()
                        } else {
                            format!("kept: {}", a.reason)
                        },
                        details: serde_json::Map::new(),
                    };
                    changes.notices.push(Pending {
                        event_id: e.id.clone(),
                        created_at: now,
                        body: serde_json::to_string(&e).expect("an event serializes"),
                        attempts: 0,
                        last_error: None,
                    });
                }
            }
        }
        store.apply(&changes).map_err(|e| anyhow!("{e}"))?;
        for id in &a.ids {
            match until {
                Some(u) => tracing::info!("kept {id} until {}", output::when(u)),
                None => tracing::info!("keep dropped for {id}"),
            }
        }
        Ok(Exit::Ok)
    }

    /// `history`: what the job tore down since then, and what it freed per hour.
    pub(super) fn history(&self, a: &HistoryArgs) -> CmdResult<Exit> {
        let (path, account) = self.state_for(&a.state)?;
        let since = now_unix().saturating_sub(i64::try_from(a.since.as_secs()).unwrap_or(i64::MAX));
        let rows = match Store::open_read_only(&path, &account).map_err(state_refused)? {
            Some(store) => store.history(since).map_err(state_refused)?,
            None => Vec::new(),
        };
        match self.output() {
            OutputFormat::Json => print(&json(&rows)),
            OutputFormat::Table => print(&output::history_table(&rows)),
        }
        Ok(Exit::Ok)
    }

    /// The account and its store path, for the views (no API call is made).
    fn state_for(&self, a: &StateArgs) -> CmdResult<(PathBuf, Account)> {
        let (_client, account) = self.client()?;
        Ok((state_path(a, &account)?, account))
    }
}

/// `watch`'s own offline checks: the idle rule, the notice sinks, the store's path.
fn watch_config(a: &WatchArgs, prepared: &Prepared) -> CmdResult<(schedule::Config, NoticeConfig, PathBuf)> {
    let rule = IdleRule {
        window: a.idle.idle_for.unwrap_or(defaults::IDLE_WINDOW),
        util_max: a.idle.gpu_util_max.unwrap_or(defaults::IDLE_UTIL_MAX),
        mem_max: a.idle.gpu_mem_max.unwrap_or(defaults::IDLE_MEM_MAX),
        max_gap: a.idle.max_gap.unwrap_or(defaults::IDLE_MAX_GAP),
    };
    rule.check().map_err(|e| anyhow!("{e} (nothing was changed)"))?;
    let action = match a.action {
        WatchAction::Terminate => Action::Terminate,
        WatchAction::Stop => Action::Stop,
    };
    let hours = match &a.act_hours {
        Some(w) => Some(
            crate::schedule::ActingHours::parse(w, a.act_timezone.as_deref(), &a.skip_days)
                .map_err(|e| anyhow!("--act-hours: {e} (nothing was changed)"))?,
        ),
        None if a.act_timezone.is_some() || !a.skip_days.is_empty() => {
            return Err(Failure::Usage(anyhow!(
                "--act-timezone and --skip-days need --act-hours (nothing was changed)"
            )));
        }
        None => None,
    };
    if let Some(h) = &hours {
        tracing::info!("acting hours: {}", h.describe());
    }
    // A stopped instance keeps its disks by nature: releasing them belongs to a teardown.
    if action == Action::Stop && prepared.settings.release_udisk {
        return Err(Failure::Usage(anyhow!(
            "--action stop keeps the instance and its disks; --release-udisk only goes with --action terminate (nothing was changed)"
        )));
    }
    let notices = NoticeConfig::new(
        a.notify_webhook.as_deref(),
        a.notify_command.as_deref(),
        a.notify_timeout.unwrap_or(defaults::NOTICE_TIMEOUT),
    )
    .map_err(|e| anyhow!("{e} (nothing was changed)"))?;
    let state_path = state_path(&a.state, &prepared.account)?;
    let cfg = schedule::Config {
        rule,
        grace: a.grace.unwrap_or(defaults::GRACE),
        action,
        hours,
        max_count: prepared.max_count,
        settings: prepared.settings.clone(),
        notice_deadline: defaults::NOTICE_DEADLINE,
        account: prepared.account.slug(),
        dry_run: a.dry_run,
    };
    Ok((cfg, notices, state_path))
}

fn state_path(a: &StateArgs, account: &Account) -> CmdResult<PathBuf> {
    match &a.path {
        Some(p) => Ok(p.clone()),
        None => crate::state::default_path(account).map_err(|e| Failure::Usage(e.into())),
    }
}

/// A store refused as it is: exit 2, nothing changed. A failure while reading it: exit 2 too
/// (nothing was changed yet either).
fn state_refused(e: StateError) -> Failure {
    Failure::Usage(e.into())
}
