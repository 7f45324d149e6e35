//! Flags and the config file merged into validated values (flags win, then the environment
//! where one applies, then the file): the output format, the endpoint, the credentials and
//! the account they identify, the selection request, the run's effect and settings. Nothing
//! here calls the API.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow};

use super::{CmdResult, Ctx, Failure};
use crate::api::{Client, ClientConfig, LockCodes, State};
use crate::cli::{self, EffectArgs, RunArgs, SelectArgs, parse_duration};
use crate::credentials::{self, Account, Sources};
use crate::output::OutputFormat;
use crate::selection::{self, Filters, IdSource, Protections};
use crate::workflow::Settings;

/// A validated selection request.
pub(super) struct Request {
    pub(super) ids: Option<Vec<String>>,
    pub(super) filters: Filters,
    pub(super) protections: Protections,
}

fn pick<T: Clone>(flag: &[T], config: &[T]) -> Vec<T> {
    if flag.is_empty() {
        config.to_vec()
    } else {
        flag.to_vec()
    }
}

impl Ctx {
    pub(super) fn output(&self) -> OutputFormat {
        self.global.output.or(self.config.output).unwrap_or(OutputFormat::Table)
    }

    pub(super) fn base_url(&self) -> CmdResult<url::Url> {
        let text = self
            .global
            .base_url
            .clone()
            .or_else(|| std::env::var("COMPSHARE_BASE_URL").ok().filter(|s| !s.is_empty()))
            .or_else(|| self.config.base_url.clone())
            .unwrap_or_else(|| credentials::DEFAULT_BASE_URL.to_owned());
        Ok(credentials::parse_base_url(&text)?)
    }

    pub(super) fn credentials(&self) -> Result<credentials::Credentials, credentials::CredentialError> {
        let env = |k: &str| std::env::var(k).ok();
        credentials::resolve(&Sources {
            flag_public: self.global.public_key.clone(),
            flag_private: self.global.private_key.as_ref().map(|k| k.expose().to_owned()),
            // flag > environment > config file, as for every other setting.
            profile: self
                .global
                .profile
                .clone()
                .or_else(|| std::env::var("COMPSHARE_PROFILE").ok().filter(|p| !p.is_empty()))
                .or_else(|| std::env::var("UCLOUD_PROFILE").ok().filter(|p| !p.is_empty()))
                .or_else(|| self.config.profile.clone()),
            env: &env,
            home: std::env::var_os("HOME").map(PathBuf::from),
        })
    }

    pub(super) fn client(&self) -> CmdResult<(Client, Account)> {
        let base_url = self.base_url()?;
        let creds = self.credentials()?;
        tracing::debug!(source = %creds.source, url = %base_url, "credentials");
        let project_id = self
            .global
            .project_id
            .clone()
            .or_else(|| self.config.project_id.clone());
        let account = Account::new(&base_url, project_id.as_deref(), &creds.public_key);
        let mut cfg = ClientConfig::new(base_url, creds);
        cfg.project_id = project_id;
        Ok((Client::new(cfg).context("cannot build the HTTP client")?, account))
    }

    /// Validate the selection flags (merged with the config file) without calling the API.
    pub(super) fn request(&self, a: &SelectArgs) -> CmdResult<Request> {
        let c = &self.config.selection;
        let mut sources: Vec<IdSource> = pick(&a.ids, &c.ids)
            .into_iter()
            .map(|id| IdSource { id, at: String::new() })
            .collect();
        if let Some(f) = a.from_file.as_ref().or(c.from_file.as_ref()) {
            sources.extend(selection::read_id_file(f)?);
        }
        let ids = selection::check_ids(&sources)?;
        let older_than = match (a.older_than, &c.older_than) {
            (Some(d), _) => Some(d),
            (None, Some(text)) => Some(
                parse_duration(text)
                    .and_then(|d| cli::duration_in_range(d, cli::OLDER_THAN))
                    .map_err(|e| anyhow!("config: older_than: {e}"))?,
            ),
            (None, None) => None,
        };
        let states = pick(&a.states, &c.state)
            .iter()
            .map(|s| match State::parse(s) {
                State::Unknown(u) if !u.is_empty() && !["Install", "Pending", "Reinstalling"].contains(&u.as_str()) => {
                    Err(anyhow!("unknown state {:?}: use Running, Stopped, Stopping, Starting, Initializing, Rebooting, Resizing or \"Install Fail\"", crate::textfile::excerpt(&u)))
                }
                st => Ok(st),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let filters = Filters {
            names: selection::globs(&pick(&a.names, &c.name))?,
            tags: pick(&a.tags, &c.tag),
            region: a.region.clone().or_else(|| c.region.clone()),
            zone: a.zone.clone().or_else(|| c.zone.clone()),
            states,
            older_than,
            charge_types: pick(&a.charge_types, &c.charge_type),
            gpu_types: pick(&a.gpu_types, &c.gpu_type),
        };
        let excludes = selection::check_ids(
            &pick(&a.excludes, &c.exclude)
                .into_iter()
                .map(|id| IdSource {
                    id,
                    at: " (--exclude)".into(),
                })
                .collect::<Vec<_>>(),
        )?;
        let protections = Protections {
            exclude: excludes.into_iter().collect(),
            protect_tags: pick(&a.protect_tags, &c.protect_tag),
            protect_names: selection::globs(&pick(&a.protect_names, &c.protect_name))?,
            own_addresses: selection::own_addresses(),
            allow_self: a.allow_self || c.allow_self,
        };
        if ids.is_empty() && !filters.narrows() && !(a.all || c.all) {
            return Err(selection::SelectionError::Unbounded.into());
        }
        Ok(Request {
            ids: (!ids.is_empty()).then_some(ids),
            filters,
            protections,
        })
    }

    /// Protections for a run whose selection is fixed (by a plan or a journal): filters and
    /// IDs would be ignored there, so they are refused rather than silently dropped.
    pub(super) fn fixed_selection_protections(&self, a: &SelectArgs, what: &str) -> CmdResult<Protections> {
        // Only flags are refused: a job file's own `[selection]` is what the plan or journal
        // was made from, so `--config job.toml --resume j` keeps working (and keeps the
        // job's protections).
        let narrowed = !(a.ids.is_empty()
            && a.from_file.is_none()
            && a.names.is_empty()
            && a.tags.is_empty()
            && a.region.is_none()
            && a.zone.is_none()
            && a.states.is_empty()
            && a.older_than.is_none()
            && a.charge_types.is_empty()
            && a.gpu_types.is_empty()
            && !a.all);
        if narrowed {
            return Err(Failure::Usage(anyhow!(
                "{what} fixes the selection; IDs and filters cannot be combined with it (exclusions and protections can)"
            )));
        }
        Ok(self.request(&SelectArgs { all: true, ..a.clone() })?.protections)
    }

    pub(super) fn effect(&self, e: &EffectArgs) -> (bool, bool) {
        let r = &self.config.run;
        (
            e.release_udisk || r.release_udisk.unwrap_or(false),
            e.force_stop || r.force_stop.unwrap_or(false),
        )
    }

    /// The config file's `[run]` section checked as `run` would check it with no flags: `plan
    /// --config job.toml` is the documented check of a job file, so it must check the whole
    /// file, not pass a section the nightly `run` then refuses.
    pub(super) fn check_run_section(&self) -> CmdResult<()> {
        let a = RunArgs::default();
        let (release, force) = self.effect(&a.effect);
        self.settings(&a, release, force)?;
        let max_count = self.config.run.max_count.unwrap_or(cli::MAX_COUNT.0);
        cli::in_range(max_count, cli::MAX_COUNT).map_err(|e| anyhow!("run.max_count: {e}"))?;
        let r = &self.config.run;
        for (flag, path) in [
            ("run.journal", &r.journal),
            ("run.report", &r.report),
            ("run.metrics_file", &r.metrics_file),
            ("run.lock_file", &r.lock_file),
        ] {
            if let Some(path) = path {
                crate::pathset::writable(flag, path)?;
            }
        }
        Ok(())
    }

    pub(super) fn settings(&self, a: &RunArgs, release_udisk: bool, force_stop: bool) -> CmdResult<Settings> {
        let r = &self.config.run;
        let dur = |flag: Option<Duration>, conf: &Option<String>, key: &str| -> CmdResult<Option<Duration>> {
            match (flag, conf) {
                (Some(d), _) => Ok(Some(d)),
                (None, Some(t)) => Ok(Some(parse_duration(t).map_err(|e| anyhow!("config: run.{key}: {e}"))?)),
                (None, None) => Ok(None),
            }
        };
        let d = Settings::default();
        let mut lock_codes = LockCodes::default();
        lock_codes.0.extend(a.lock_codes.iter().chain(&r.lock_codes));
        let s = Settings {
            release_udisk,
            force_stop,
            stop_only: false,
            concurrency: a.concurrency.or(r.concurrency).unwrap_or(d.concurrency),
            rate: a.rate.or(r.rate).unwrap_or(d.rate),
            poll_interval: dur(a.poll_interval, &r.poll_interval, "poll_interval")?.unwrap_or(d.poll_interval),
            lock_wait: dur(a.lock_wait, &r.lock_wait, "lock_wait")?.unwrap_or(d.lock_wait),
            instance_timeout: dur(a.instance_timeout, &r.instance_timeout, "instance_timeout")?
                .unwrap_or(d.instance_timeout),
            deadline: dur(a.deadline, &r.deadline, "deadline")?,
            confirm_timeout: dur(a.confirm_timeout, &r.confirm_timeout, "confirm_timeout")?
                .unwrap_or(d.confirm_timeout),
            terminate_settle: dur(a.settle, &r.settle, "settle")?.unwrap_or(d.terminate_settle),
            max_restarts: d.max_restarts,
            lock_codes,
            jitter_seed: None,
            // Filled in by `run` from the selection's `--region`.
            describe_region: None,
        };
        // Flags are checked by clap already; this also holds the config file's values.
        let usage =
            |what: &str, e: String| Failure::Usage(anyhow!("--{what} (or run.{}): {e}", what.replace('-', "_")));
        cli::in_range(s.concurrency, cli::CONCURRENCY).map_err(|e| usage("concurrency", e))?;
        cli::in_range(s.rate, cli::RATE).map_err(|e| usage("rate", e))?;
        for (what, d, range) in [
            ("poll-interval", Some(s.poll_interval), cli::POLL_INTERVAL),
            ("lock-wait", Some(s.lock_wait), cli::LOCK_WAIT),
            ("instance-timeout", Some(s.instance_timeout), cli::RUN_TIME),
            ("deadline", s.deadline, cli::RUN_TIME),
            ("confirm-timeout", Some(s.confirm_timeout), cli::CONFIRM_TIMEOUT),
            ("settle", Some(s.terminate_settle), cli::SETTLE),
        ] {
            if let Some(d) = d {
                cli::duration_in_range(d, range).map_err(|e| usage(what, e))?;
            }
        }
        for code in &r.lock_codes {
            cli::in_range(*code, cli::LOCK_CODE).map_err(|e| usage("lock-code", e))?;
        }
        Ok(s)
    }
}
