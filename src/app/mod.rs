//! The commands' front door: run the parsed command line, map every result to an exit code,
//! and print the one-line error. Exit codes are a contract (see `--help`): 0 all gone, 1 some
//! failed, 2 nothing changed because of a usage/config/credential/selection error, 3 run lock
//! held, 4 the API could not be read, 130 interrupted.
//!
//! One room per command (`list`, `plan`, `run`, `disks`, `demo`, `sim`, and `man` for `man` and
//! `completions`), and the rooms they share: `settings` (flags + config file into validated
//! values and the account), `candidates` (the selection Describe), `source` (where a run's
//! instances come from) and `terminal` (stdout, the prompt, signals, progress bars).

mod candidates;
mod demo;
mod demo_watch;
mod disks;
mod list;
mod man;
mod plan;
mod run;
mod settings;
mod sim;
mod source;
mod terminal;
mod watch;

#[cfg(feature = "sweep")]
pub(crate) use terminal::json;
// The benchmark rebuilds the demo world.
pub use demo::demo_scenario;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::cli::{Cli, Command, GlobalArgs};
use crate::config::{self, ConfigFile};
use crate::credentials;
use crate::logging::{self, LogFormat};
use crate::workflow::Report;
use crate::{metrics, pathset, progress};

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
pub(crate) enum Failure {
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
            return finish(metrics_target(&cli, None).as_deref(), started, exit, None, None);
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
        watch: std::sync::Mutex::new(None),
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
            Command::Demo(a) if a.scheduled => ctx.demo_scheduled().await,
            Command::Demo(a) => ctx.demo(a.instances, a.seed, a.listen).await,
            Command::Disks(a) => ctx.disks(a).await,
            Command::Sim(a) => ctx.sim(a).await,
            Command::Watch(a) => ctx.watch(a).await,
            Command::Marks(a) => ctx.marks(&a),
            Command::Keep(a) => ctx.keep(&a),
            Command::History(a) => ctx.history(&a),
            Command::Completions { shell } => Ok(man::completions(shell)),
            Command::Man { dir } => man::man(dir.as_deref()),
        }
    });
    // A prompt left unanswered after an interrupt must not keep the process alive.
    runtime.shutdown_background();
    let exit = match result {
        Ok(exit) => exit,
        Err(f) => fail(&f),
    };
    let report = ctx.report.lock().map(|mut r| r.take()).unwrap_or_default();
    let watch = ctx.watch.lock().map(|mut r| r.take()).unwrap_or_default();
    finish(metrics_file.as_deref(), started, exit, report, watch)
}

/// A command line the parser refused (or `--help`, `--version`): clap's message and exit
/// code (2), with the value it quotes shortened and any private key given on the command line
/// or in the environment masked, since a key pasted into the wrong flag would come back as
/// typed.
pub fn refused(mut e: clap::Error) -> ExitCode {
    use clap::error::{ContextKind, ContextValue};
    let args: Vec<String> = std::env::args().collect();
    let mut keys: Vec<credentials::PrivateKey> = ["COMPSHARE_PRIVATE_KEY", "UCLOUD_PRIVATE_KEY"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .map(credentials::PrivateKey::new)
        .collect();
    for (i, a) in args.iter().enumerate() {
        if let Some(k) = a.strip_prefix("--private-key=") {
            keys.push(credentials::PrivateKey::new(k));
        } else if a == "--private-key"
            && let Some(k) = args.get(i + 1)
        {
            keys.push(credentials::PrivateKey::new(k.clone()));
        }
    }
    for kind in [ContextKind::InvalidValue, ContextKind::InvalidArg] {
        if let Some(ContextValue::String(v)) = e.get(kind) {
            let mut shown = crate::textfile::excerpt(v);
            for key in &keys {
                shown = key.mask(&shown).into_owned();
            }
            e.insert(kind, ContextValue::String(shown));
        }
    }
    e.exit()
}

/// The metrics file of a `run`, unless it is also one of the command's other files: then the
/// run refuses (exit 2), and the metrics must not be written over that file either.
fn metrics_target(cli: &Cli, config: Option<&ConfigFile>) -> Option<PathBuf> {
    if let Command::Watch(a) = &cli.command {
        let path = a.metrics_file.clone()?;
        let others = [
            ("--config", cli.global.config.clone()),
            ("--report", a.report.clone()),
            ("--lock-file", a.lock_file.clone()),
            ("--state-file", a.state.path.clone()),
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
        return pathset::check(&roles).is_ok().then(|| path.clone());
    }
    if let Command::Disks(crate::cli::DisksArgs {
        command: crate::cli::DisksCommand::Delete(d),
    }) = &cli.command
    {
        return disks::metrics_target(d, cli.global.config.as_ref());
    }
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
fn finish(
    metrics_file: Option<&Path>,
    started: f64,
    exit: Exit,
    report: Option<Report>,
    watch: Option<metrics::WatchCounts>,
) -> ExitCode {
    if let Some(path) = metrics_file {
        let m = metrics::RunMetrics {
            started,
            ended: now_secs(),
            exit_code: exit as u8,
            report,
            watch,
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
    // An API message quoted in the error must not drive the terminal either.
    let _ = writeln!(std::io::stderr(), "error: {}", crate::output::printable(&text));
    code
}

/// The private key, once resolved, to scrub from error messages.
static SECRET: std::sync::OnceLock<credentials::PrivateKey> = std::sync::OnceLock::new();

/// The private key, once resolved: to mask in text read from files before it is shown or
/// stored.
pub(crate) fn secret() -> Option<&'static credentials::PrivateKey> {
    SECRET.get()
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
    /// What a `watch` run did, for the metrics file.
    watch: std::sync::Mutex<Option<crate::metrics::WatchCounts>>,
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
