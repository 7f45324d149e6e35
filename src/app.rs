//! The commands: turn parsed arguments (and the config file) into validated settings, then
//! list, plan, run, demo or serve the simulator. Exit codes are a contract (see `--help`):
//! 0 all gone, 1 some failed, 2 nothing changed because of a usage/config/credential/selection
//! error, 3 run lock held, 130 interrupted.
//!
//! `run` checks everything it can offline before the lock and the API (the files it reads are
//! bounded and validated, the files it writes must not overlap, the count of explicit IDs is
//! held against `--max-count`), and writes and syncs its journal's start line before the
//! first mutating call, so a journal that cannot be written exits 2 with nothing changed.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use tokio_util::sync::CancellationToken;

use crate::api::{self, Client, ClientConfig, Instance, ListingError, LockCodes, RetryClass, State};
use crate::cli::{self, Cli, Command, EffectArgs, GlobalArgs, OutputFormat, RunArgs, SelectArgs, parse_duration};
use crate::config::{self, ConfigFile};
use crate::credentials::{self, Account, Sources};
use crate::logging::{self, LogFormat};
use crate::plan::Plan;
use crate::selection::{self, Candidate, Filters, IdSource, Protections, Verdict};
use crate::workflow::{self, Controls, Outcome, Report, Settings};
use crate::{metrics, output, pathset, progress, runlock};

/// The exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Failed = 1,
    Usage = 2,
    Locked = 3,
    /// The API could not be read (outage, network, inconsistent answers) before anything was
    /// changed: a cron job can simply try again later, unlike exit 2.
    Unavailable = 4,
    Interrupted = 130,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// An error that ends the command before anything changed.
#[derive(Debug)]
pub enum Failure {
    /// Exit 2.
    Usage(anyhow::Error),
    /// Exit 3.
    Locked(anyhow::Error),
    /// Exit 4.
    Unavailable(anyhow::Error),
    /// Exit 130: interrupted before anything was sent.
    Interrupted,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Failure {
        Failure::Usage(e.into())
    }
}

type CmdResult<T> = Result<T, Failure>;

/// Run the parsed command line; the binary's whole life.
pub fn main(cli: Cli) -> ExitCode {
    let started = now_secs();
    let config = match cli.global.config.as_deref().map(config::load).transpose() {
        Ok(c) => c.unwrap_or_default(),
        Err(e) => {
            let exit = fail(&Failure::Usage(e.into()));
            return finish(metrics_target(&cli, None).as_deref(), started, exit, None);
        }
    };
    let metrics_file = metrics_target(&cli, Some(&config));
    let quiet = cli.global.quiet;
    let log_format = cli.global.log_format.or(config.log_format).unwrap_or(LogFormat::Text);
    let stderr_tty = std::io::stderr().is_terminal();
    let bars_visible = stderr_tty
        && !quiet
        && log_format == LogFormat::Text
        && matches!(cli.command, Command::Run(_) | Command::Demo(_));
    let multi = progress::area(bars_visible);
    let color = stderr_tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let verbosity = if quiet {
        -1
    } else {
        i8::try_from(cli.global.verbose).unwrap_or(i8::MAX)
    };
    logging::init(log_format, verbosity, &multi, color);

    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(&Failure::Usage(e.into())).into(),
    };
    let ctx = Ctx {
        global: cli.global,
        config,
        multi,
        report: std::sync::Mutex::new(None),
    };
    // Known up front so that no error, whatever file its text came from, can print it.
    if let Ok(creds) = ctx.credentials() {
        let _ = SECRET.set(creds.private_key);
    }
    let result = runtime.block_on(async {
        match cli.command {
            Command::List(a) => ctx.list(&a.select).await,
            Command::Plan(a) => ctx.plan(&a.select, &a.effect, a.save.as_deref()).await,
            Command::Run(a) => ctx.run(a).await,
            Command::Demo(a) => ctx.demo(a.instances, a.seed).await,
            Command::Sim(a) => ctx.sim(a).await,
            Command::Completions { shell } => {
                let mut cmd = <Cli as clap::CommandFactory>::command();
                clap_complete::generate(shell, &mut cmd, "compshare-teardown", &mut std::io::stdout());
                Ok(Exit::Ok)
            }
            Command::Man { dir } => man(dir.as_deref()),
        }
    });
    // A prompt left unanswered after an interrupt must not keep the process alive.
    runtime.shutdown_background();
    let exit = match result {
        Ok(exit) => exit,
        Err(f) => fail(&f),
    };
    let report = ctx.report.lock().map(|mut r| r.take()).unwrap_or_default();
    finish(metrics_file.as_deref(), started, exit, report)
}

/// The metrics file of a `run`, unless it is also one of the command's other files: then the
/// run refuses (exit 2), and the metrics must not be written over that file either.
fn metrics_target(cli: &Cli, config: Option<&ConfigFile>) -> Option<PathBuf> {
    let Command::Run(a) = &cli.command else { return None };
    let r = config.map(|c| &c.run);
    let path = a
        .metrics_file
        .clone()
        .or_else(|| r.and_then(|r| r.metrics_file.clone()))?;
    let from_file = a
        .select
        .from_file
        .clone()
        .or_else(|| config.and_then(|c| c.selection.from_file.clone()));
    let others = [
        ("--config", cli.global.config.clone()),
        ("--from-file", from_file.map(PathBuf::from)),
        ("--plan", a.plan.clone().map(PathBuf::from)),
        ("--resume", a.resume.clone()),
        (
            "--journal",
            a.journal.clone().or_else(|| r.and_then(|r| r.journal.clone())),
        ),
        (
            "--report",
            a.report.clone().or_else(|| r.and_then(|r| r.report.clone())),
        ),
        (
            "--lock-file",
            a.lock_file.clone().or_else(|| r.and_then(|r| r.lock_file.clone())),
        ),
    ];
    let mut roles = vec![pathset::Role {
        flag: "--metrics-file",
        path: &path,
        written: true,
    }];
    roles.extend(others.iter().filter_map(|(flag, p)| {
        p.as_deref().map(|path| pathset::Role {
            flag,
            path,
            written: false,
        })
    }));
    pathset::check(&roles).is_ok().then(|| path.clone())
}

/// Write the metrics file, if asked for, whatever the outcome; then exit.
fn finish(metrics_file: Option<&Path>, started: f64, exit: Exit, report: Option<Report>) -> ExitCode {
    if let Some(path) = metrics_file {
        let m = metrics::RunMetrics {
            started,
            ended: now_secs(),
            exit_code: exit as u8,
            report,
        };
        // The run already happened: metrics that cannot be written are reported, not fatal.
        if let Err(e) = metrics::write(path, &m) {
            let _ = writeln!(std::io::stderr(), "error: cannot write metrics {}: {e}", path.display());
        }
    }
    exit.into()
}

fn fail(f: &Failure) -> Exit {
    let (e, code) = match f {
        Failure::Usage(e) => (e, Exit::Usage),
        Failure::Locked(e) => (e, Exit::Locked),
        Failure::Unavailable(e) => (e, Exit::Unavailable),
        Failure::Interrupted => {
            let _ = writeln!(std::io::stderr(), "interrupted: nothing was changed");
            return Exit::Interrupted;
        }
    };
    // One line: the chain joined, as users paste it into tickets.
    let mut text = format!("{e:#}").replace('\n', " ");
    // Belt and braces: a key pasted into an ID list, a plan or a config value would be
    // echoed back by the error about it. Shorter strings could match innocent text.
    if let Some(key) = SECRET.get().map(credentials::PrivateKey::expose)
        && key.len() >= 8
    {
        text = text.replace(key, "***");
    }
    let _ = writeln!(std::io::stderr(), "error: {text}");
    code
}

/// The private key, once resolved, to scrub from error messages.
static SECRET: std::sync::OnceLock<credentials::PrivateKey> = std::sync::OnceLock::new();

/// Write to stdout; a closed pipe (`| head`) is not an error.
pub(crate) fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

pub(crate) fn json<T: serde::Serialize>(value: &T) -> String {
    let mut s = serde_json::to_string_pretty(value).expect("serializable");
    s.push('\n');
    s
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

struct Ctx {
    global: GlobalArgs,
    config: ConfigFile,
    multi: indicatif::MultiProgress,
    /// The last report of `run`, for the metrics file.
    report: std::sync::Mutex<Option<Report>>,
}

/// A validated selection request.
struct Request {
    ids: Option<Vec<String>>,
    filters: Filters,
    protections: Protections,
}

fn pick<T: Clone>(flag: &[T], config: &[T]) -> Vec<T> {
    if flag.is_empty() {
        config.to_vec()
    } else {
        flag.to_vec()
    }
}

impl Ctx {
    fn output(&self) -> OutputFormat {
        self.global.output.or(self.config.output).unwrap_or(OutputFormat::Table)
    }

    fn base_url(&self) -> CmdResult<url::Url> {
        let text = self
            .global
            .base_url
            .clone()
            .or_else(|| std::env::var("COMPSHARE_BASE_URL").ok().filter(|s| !s.is_empty()))
            .or_else(|| self.config.base_url.clone())
            .unwrap_or_else(|| credentials::DEFAULT_BASE_URL.to_owned());
        Ok(credentials::parse_base_url(&text)?)
    }

    fn credentials(&self) -> Result<credentials::Credentials, credentials::CredentialError> {
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

    fn client(&self) -> CmdResult<(Client, Account)> {
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
    fn request(&self, a: &SelectArgs) -> CmdResult<Request> {
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
                    Err(anyhow!("unknown state {u:?}: use Running, Stopped, Stopping, Starting, Initializing, Rebooting, Resizing or \"Install Fail\""))
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

    /// Describe the candidates and judge them. Named IDs are looked up everywhere, whatever
    /// `--region`/`--zone` say: one that lives outside the scope is refused by name (exit 2),
    /// never taken for gone.
    async fn candidates(&self, client: &Client, req: &Request) -> CmdResult<Vec<Candidate>> {
        use backon::Retryable;
        let fetch = || async {
            match &req.ids {
                Some(ids) => api::describe_ids(client, ids).await.map_err(ListingError::from),
                None => api::describe_all(client, req.filters.region.as_deref(), req.filters.zone.as_deref()).await,
            }
        };
        // A read-only call: retry a few quick times through a 5xx, a dropped connection or
        // throttling, but fail fast (about 2-4 s) on an endpoint that is simply wrong.
        let policy = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(300))
            .with_max_times(3)
            .with_jitter();
        let rows: Vec<Instance> = fetch
            .retry(policy)
            .sleep(tokio::time::sleep)
            .when(|e| {
                e.api().is_some_and(|e| {
                    matches!(
                        api::classify(e, &LockCodes::default()),
                        RetryClass::Transient | RetryClass::Throttled
                    )
                })
            })
            // Quiet by default: if the retries fail too, the one-line error says it all.
            .notify(|e, d| tracing::debug!("{e}; retrying in {} ms", d.as_millis()))
            .await
            .map_err(|e| selection_failure(&e))?;
        if let Some(ids) = &req.ids {
            let outside: Vec<String> = rows
                .iter()
                .filter(|r| ids.contains(&r.uhost_id))
                .filter_map(|r| req.filters.outside_scope(r))
                .collect();
            if !outside.is_empty() {
                return Err(Failure::Usage(anyhow!(
                    "{}; nothing was changed (drop the scope or the IDs)",
                    outside.join("; ")
                )));
            }
        }
        Ok(selection::select(
            &rows,
            req.ids.as_deref(),
            &req.filters,
            &req.protections,
            now_unix(),
        ))
    }

    async fn list(&self, a: &SelectArgs) -> CmdResult<Exit> {
        let req = self.request(&SelectArgs { all: true, ..a.clone() })?;
        let (client, _) = self.client()?;
        let cancel = interrupt_token();
        let cands = interruptible(&cancel, self.candidates(&client, &req)).await?;
        let rows: Vec<Instance> = cands
            .into_iter()
            .filter(|c| c.verdict == Verdict::Act)
            .filter_map(|c| c.row)
            .collect();
        match self.output() {
            OutputFormat::Json => print(&json(&rows)),
            OutputFormat::Table => print(&output::list_table(&rows, now_unix())),
        }
        Ok(Exit::Ok)
    }

    /// Protections for a run whose selection is fixed (by a plan or a journal): filters and
    /// IDs would be ignored there, so they are refused rather than silently dropped.
    fn fixed_selection_protections(&self, a: &SelectArgs, what: &str) -> CmdResult<Protections> {
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

    fn effect(&self, e: &EffectArgs) -> (bool, bool) {
        let r = &self.config.run;
        (
            e.release_udisk || r.release_udisk.unwrap_or(false),
            e.force_stop || r.force_stop.unwrap_or(false),
        )
    }

    async fn plan(&self, a: &SelectArgs, e: &EffectArgs, save: Option<&Path>) -> CmdResult<Exit> {
        let req = self.request(a)?;
        if let Some(path) = save {
            let config = self.global.config.clone();
            let from_file = a.from_file.clone().or_else(|| self.config.selection.from_file.clone());
            let from_file = from_file.map(PathBuf::from);
            let mut roles = vec![pathset::Role {
                flag: "--save",
                path,
                written: true,
            }];
            roles.extend(config.as_deref().map(|p| pathset::Role {
                flag: "--config",
                path: p,
                written: false,
            }));
            roles.extend(from_file.as_deref().map(|p| pathset::Role {
                flag: "--from-file",
                path: p,
                written: false,
            }));
            pathset::check(&roles)?;
        }
        let (client, account) = self.client()?;
        let cancel = interrupt_token();
        let cands = interruptible(&cancel, self.candidates(&client, &req)).await?;
        let (release, force) = self.effect(e);
        let plan = Plan::build(&cands, &account, release, force);
        if let Some(path) = save {
            std::fs::write(path, json(&plan)).map_err(|e| anyhow!("cannot write plan {}: {e}", path.display()))?;
            tracing::info!("plan saved to {}", path.display());
        }
        match self.output() {
            OutputFormat::Json => print(&json(&plan)),
            OutputFormat::Table => print(&output::plan_table(&plan)),
        }
        Ok(Exit::Ok)
    }

    fn settings(&self, a: &RunArgs, release_udisk: bool, force_stop: bool) -> CmdResult<Settings> {
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

    async fn run(&self, a: RunArgs) -> CmdResult<Exit> {
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

    async fn demo(&self, instances: usize, seed: u64) -> CmdResult<Exit> {
        crate::demo::run(self.output(), &self.multi, instances, seed).await
    }

    async fn sim(&self, a: crate::cli::SimArgs) -> CmdResult<Exit> {
        crate::demo::serve(&self.global, a).await
    }
}

/// A selection that could not be read: exit 4 when the API was down, throttling or
/// inconsistent (try later), exit 2 when it refused the request itself (keys, endpoint,
/// parameters: fix the job).
fn selection_failure(e: &ListingError) -> Failure {
    let error = anyhow!("cannot describe instances: {e}");
    match e.api().map(|a| api::classify(a, &LockCodes::default())) {
        Some(RetryClass::Fatal) => Failure::Usage(error),
        _ => Failure::Unavailable(error),
    }
}

/// `man`: the root page on stdout, or every page into `dir`.
fn man(dir: Option<&Path>) -> CmdResult<Exit> {
    let pages = crate::reference::man_pages();
    match dir {
        None => {
            let root = pages
                .first()
                .map(|(_, text)| String::from_utf8_lossy(text).into_owned());
            print(&root.unwrap_or_default());
        }
        Some(dir) => {
            for (name, text) in &pages {
                let path = dir.join(name);
                std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
            }
        }
    }
    Ok(Exit::Ok)
}

/// The exit code a report earns.
pub(crate) fn exit_for(report: &Report) -> Exit {
    if report.interrupted() {
        Exit::Interrupted
    } else if report.all_ok() {
        Exit::Ok
    } else {
        Exit::Failed
    }
}

/// Shared bars: the runner's observer and the command both hold them.
#[derive(Clone)]
pub(crate) struct BarsHandle(Arc<std::sync::Mutex<progress::Bars>>);

impl BarsHandle {
    pub(crate) fn new(multi: &indicatif::MultiProgress, total: usize) -> BarsHandle {
        BarsHandle(Arc::new(std::sync::Mutex::new(progress::Bars::new(multi, total))))
    }

    pub(crate) fn finish(&self) {
        self.0.lock().expect("bars").finish();
    }

    fn finished_elsewhere(&self, id: &str, outcome: &Outcome) {
        workflow::Observer::finished(&mut *self.0.lock().expect("bars"), id, outcome);
    }
}

impl workflow::Observer for BarsHandle {
    fn activity(&mut self, id: &str, activity: &workflow::Activity) {
        self.0.lock().expect("bars").activity(id, activity);
    }
    fn finished(&mut self, id: &str, outcome: &Outcome) {
        self.0.lock().expect("bars").finished(id, outcome);
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
    let pace = s.pace.clone();
    *report = Report::new(instances, s.seconds, s.api_calls.clone(), s.throttled);
    report.summary.pace = pace;
}

/// Ask on the terminal; refuse without one. The answer is read on a blocking thread, so an
/// interrupt at the prompt still ends the command.
async fn confirm(plan: &Plan, count: usize) -> CmdResult<()> {
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Err(Failure::Usage(anyhow!(
            "refusing to tear down {count} instance(s) without a terminal to confirm on; pass --yes (nothing was changed)"
        )));
    }
    let mut err = std::io::stderr();
    let _ = write!(
        err,
        "{}\nType {count} to tear down {count} instance(s): ",
        output::plan_table(plan)
    );
    let _ = err.flush();
    let line = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await
    .context("cannot read the confirmation")?
    .context("cannot read the confirmation")?;
    if line.trim() != count.to_string() {
        return Err(Failure::Usage(anyhow!(
            "not confirmed (expected {count}, got {:?}): nothing was changed",
            crate::textfile::excerpt(line.trim())
        )));
    }
    Ok(())
}

/// A token cancelled by the first Ctrl-C or SIGTERM while nothing has been sent yet. The
/// handlers are installed here, synchronously, so they hold from this point on, also when
/// the signal was inherited as ignored.
fn interrupt_token() -> CancellationToken {
    let cancel = CancellationToken::new();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
            let c = cancel.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                c.cancel();
            });
        }
    }
    #[cfg(not(unix))]
    {
        let c = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                c.cancel();
            }
        });
    }
    cancel
}

/// Run a step that sends nothing; an interrupt meanwhile ends the command (exit 130).
async fn interruptible<T>(cancel: &CancellationToken, step: impl Future<Output = CmdResult<T>>) -> CmdResult<T> {
    tokio::select! {
        biased;
        () = cancel.cancelled() => Err(Failure::Interrupted),
        r = step => r,
    }
}

/// First Ctrl-C or SIGTERM: cancel (finish calls in flight, report). Second: exit at once.
pub(crate) fn spawn_signal_handler(cancel: CancellationToken) {
    tokio::spawn(async move {
        let mut count = 0;
        loop {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{SignalKind, signal};
                let Ok(mut term) = signal(SignalKind::terminate()) else {
                    return;
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            #[cfg(not(unix))]
            {
                if tokio::signal::ctrl_c().await.is_err() {
                    return;
                }
            }
            count += 1;
            if count >= 2 {
                let _ = writeln!(std::io::stderr(), "second interrupt: exiting now");
                std::process::exit(Exit::Interrupted as i32);
            }
            let _ = writeln!(
                std::io::stderr(),
                "interrupt: finishing calls in flight (press Ctrl-C again to exit now)"
            );
            cancel.cancel();
        }
    });
}
