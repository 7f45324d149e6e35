//! Command-line arguments: plain clap data, nothing fallible beyond parsing. `app` validates
//! them (with the config file) into settings before anything touches the API.
//!
//! Doc comments here are `--help` text, so names like `CreateTime` stay bare.
#![allow(clippy::doc_markdown)]

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

mod schedule;
pub use schedule::{HistoryArgs, IdleArgs, KeepArgs, MarksArgs, StateArgs, WatchAction, WatchArgs};
mod disks;

pub(crate) use disks::DISK_CONCURRENCY;
pub use disks::{DiskDeleteArgs, DiskListArgs, DiskSelectArgs, DisksArgs, DisksCommand};

use crate::credentials::PrivateKey;
use crate::defaults;
use crate::logging::LogFormat;
use crate::output::OutputFormat;

const AFTER_HELP: &str = "\
Environment:
  COMPSHARE_PUBLIC_KEY, COMPSHARE_PRIVATE_KEY   API keys (also UCLOUD_PUBLIC_KEY / UCLOUD_PRIVATE_KEY)
  COMPSHARE_PROFILE                              profile in the key files (also UCLOUD_PROFILE)
  COMPSHARE_CONFIG_FILE                          CompShare CLI key file (default ~/.config/compshare/config.json)
  COMPSHARE_BASE_URL                             API endpoint (default https://api.compshare.cn)
  COMPSHARE_TEARDOWN_LOG, RUST_LOG               log filter, e.g. compshare_teardown=debug
  NO_COLOR                                       no colours in logs
Credentials: flag > environment > ~/.config/compshare/config.json > ~/.ucloud/credential.json.

Exit codes:
  0    every selected instance is gone (or was skipped on purpose)
  1    some instances failed, timed out, or were terminated without confirmation
  2    usage, config, credential, selection or untrusted-file error: nothing was changed
  3    another run for the same account holds the run lock
  4    the API could not be read before anything was changed (outage, network): try later
  130  interrupted (Ctrl-C / SIGTERM); the report still lists every instance

Examples:
  compshare-teardown demo
  compshare-teardown list --tag ci --older-than 12h
  compshare-teardown plan --name 'train-*' --older-than 1d --save plan.json
  compshare-teardown run --plan plan.json
  compshare-teardown run --config nightly.toml --yes --output json
  compshare-teardown run --from-file ids.txt --release-udisk --journal td.journal
  compshare-teardown run --resume td.journal --yes";

/// Safely tear down UCloud CompShare GPU instances: stop, wait for Stopped, terminate.
#[derive(Debug, Parser)]
#[command(name = "compshare-teardown", version, about, after_help = AFTER_HELP, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[expect(
    clippy::doc_markdown,
    reason = "Doc comments are help text: env var names read better without backticks there."
)]
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// API public key [env: COMPSHARE_PUBLIC_KEY, UCLOUD_PUBLIC_KEY]
    #[arg(long, global = true, value_name = "KEY")]
    pub public_key: Option<String>,
    /// API private key; prefer the environment (flags show in `ps`) [env: COMPSHARE_PRIVATE_KEY, UCLOUD_PRIVATE_KEY]
    // Parsed straight into the redacting type, so not even a `Debug` print of the arguments
    // can show it.
    #[arg(long, global = true, value_name = "KEY")]
    pub private_key: Option<PrivateKey>,
    /// Profile in the key files [env: COMPSHARE_PROFILE, UCLOUD_PROFILE]
    #[arg(long, global = true)]
    pub profile: Option<String>,
    /// API endpoint; plain http only to loopback (the simulator) [env: COMPSHARE_BASE_URL]
    #[arg(long, global = true, value_name = "URL")]
    pub base_url: Option<String>,
    /// Project ID (sub-accounts must set it)
    #[arg(long, global = true, value_name = "ID")]
    pub project_id: Option<String>,
    /// TOML config file with settings and a selection; flags override it
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// More logs (-v debug, -vv trace)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Errors only, no progress bars
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Log format on stderr
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Result format on stdout
    #[arg(long, global = true, value_enum)]
    pub output: Option<OutputFormat>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a complete teardown against a built-in simulator (no account needed)
    Demo(DemoArgs),
    /// Find and delete data disks attached to no instance (what a teardown keeps by default)
    Disks(DisksArgs),
    /// List instances matching the filters
    List(ListArgs),
    /// Show what `run` would do; changes nothing
    Plan(PlanArgs),
    /// Tear down the selected instances: stop, wait for Stopped, terminate
    Run(RunArgs),
    /// Serve a CompShare simulator, to rehearse a teardown
    Sim(SimArgs),
    /// The scheduled job: mark idle GPU instances, notify, tear down after the grace period
    Watch(WatchArgs),
    /// Show the scheduled job's marks and keeps (reads the state store)
    Marks(MarksArgs),
    /// Keep instances from the scheduled job for a while
    Keep(KeepArgs),
    /// What the scheduled job tore down, and the hourly price it freed
    History(HistoryArgs),
    /// Print shell completions
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page, or write one per command into a directory
    Man {
        /// Write `compshare-teardown.1` and one page per command here instead of printing
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// Filters and exclusions shared by list, plan and run.
#[derive(Debug, Args, Default, Clone)]
pub struct SelectArgs {
    /// Instance IDs (uhost-…, cpod-…)
    #[arg(value_name = "ID")]
    pub ids: Vec<String>,
    /// Read IDs from a file, one per line, `#` comments; `-` for stdin
    #[arg(long, value_name = "FILE")]
    pub from_file: Option<String>,
    /// Name glob, e.g. 'train-*' (repeatable: any matches)
    #[arg(long = "name", value_name = "GLOB")]
    pub names: Vec<String>,
    /// Tag (business group) (repeatable)
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Only this region
    #[arg(long)]
    pub region: Option<String>,
    /// Only this zone
    #[arg(long)]
    pub zone: Option<String>,
    /// Only instances in this state, e.g. Running, Stopped, "Install Fail" (repeatable)
    #[arg(long = "state", value_name = "STATE")]
    pub states: Vec<String>,
    /// Only instances created longer ago than this (from CreateTime), e.g. 12h, 7d; up to 100 years
    #[arg(long, value_name = "DURATION", value_parser = duration(OLDER_THAN))]
    pub older_than: Option<Duration>,
    /// Charge type, e.g. Postpay, Dynamic, Spot (repeatable)
    #[arg(long = "charge-type", value_name = "TYPE")]
    pub charge_types: Vec<String>,
    /// GPU type, e.g. 4090 (repeatable)
    #[arg(long = "gpu-type", value_name = "TYPE")]
    pub gpu_types: Vec<String>,
    /// Select every instance in scope when no ID or filter is given
    #[arg(long)]
    pub all: bool,
    /// Never touch this ID (repeatable)
    #[arg(long = "exclude", value_name = "ID")]
    pub excludes: Vec<String>,
    /// Never touch instances with this tag (repeatable)
    #[arg(long = "protect-tag", value_name = "TAG")]
    pub protect_tags: Vec<String>,
    /// Never touch instances whose name matches (repeatable)
    #[arg(long = "protect-name", value_name = "GLOB")]
    pub protect_names: Vec<String>,
    /// Allow tearing down the machine this tool runs on
    #[arg(long)]
    pub allow_self: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub select: SelectArgs,
}

/// Options that change what happens to the instances.
#[derive(Debug, Args, Default, Clone)]
pub struct EffectArgs {
    /// Delete data disks with the instances (ReleaseUDisk=true); default keeps them
    #[arg(long)]
    pub release_udisk: bool,
    /// Allow Force=true to stop spot instances
    #[arg(long)]
    pub force_stop: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    #[command(flatten)]
    pub effect: EffectArgs,
    /// Save the plan as JSON for `run --plan`
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,
}

#[derive(Debug, Args, Default)]
pub struct RunArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    #[command(flatten)]
    pub effect: EffectArgs,
    /// Run exactly this saved plan (re-checking each instance before acting)
    #[arg(long, value_name = "FILE", conflicts_with_all = ["ids", "from_file", "resume"])]
    pub plan: Option<String>,
    /// Continue the run recorded in this journal (same selection; appends to it)
    #[arg(long, value_name = "FILE", conflicts_with_all = ["ids", "from_file"])]
    pub resume: Option<PathBuf>,
    /// Do not ask for confirmation (required without a terminal)
    #[arg(short, long)]
    pub yes: bool,
    #[arg(long, value_name = "N", value_parser = number(CONCURRENCY), allow_negative_numbers = true,
        help = with_default("Mutating calls in flight at once, 1 to 1024", defaults::CONCURRENCY))]
    pub concurrency: Option<usize>,
    #[arg(long, value_name = "R", value_parser = number(RATE), allow_negative_numbers = true,
        help = with_default("Hard ceiling on requests per second, 0 = none (the pace adapts below it), up to 1000", defaults::RATE))]
    pub rate: Option<u32>,
    #[arg(long, value_name = "DURATION", value_parser = duration(POLL_INTERVAL),
        help = with_default("Longest gap between looks at a waiting instance, 10ms to 5m", as_flag(defaults::POLL_INTERVAL)))]
    pub poll_interval: Option<Duration>,
    #[arg(long, value_name = "DURATION", value_parser = duration(LOCK_WAIT),
        help = with_default("How long to retry through the operation lock (its TTL is 10m), counted from the first refusal, with a last attempt at its end; up to 1d", as_flag(defaults::LOCK_WAIT)))]
    pub lock_wait: Option<Duration>,
    #[arg(long, value_name = "DURATION", value_parser = duration(RUN_TIME),
        help = with_default("Time limit for each instance, counted from the start of the run without the time it waited in the tool's own queue (concurrency, request pace), 1s to 7d", as_flag(defaults::INSTANCE_TIMEOUT)))]
    pub instance_timeout: Option<Duration>,
    /// Time limit for the whole run, 1s to 7d
    #[arg(long, value_name = "DURATION", value_parser = duration(RUN_TIME))]
    pub deadline: Option<Duration>,
    #[arg(long, value_name = "DURATION", value_parser = duration(CONFIRM_TIMEOUT),
        help = with_default("How long to wait for a terminated instance to leave Describe, 1s to 1d", as_flag(defaults::CONFIRM_TIMEOUT)))]
    pub confirm_timeout: Option<Duration>,
    #[arg(long, value_name = "DURATION", value_parser = duration(SETTLE),
        help = with_default("After a Terminate whose answer was lost, how long the instance must stay listed before Terminate is sent again, up to 1h", as_flag(defaults::SETTLE)))]
    pub settle: Option<Duration>,
    #[arg(long, value_name = "N", value_parser = number(MAX_COUNT), allow_negative_numbers = true,
        help = with_default("Refuse to act on more instances than this, 1 to 100000", defaults::MAX_COUNT))]
    pub max_count: Option<usize>,
    /// Append every decision and call result to this JSON-lines file
    #[arg(long, value_name = "FILE")]
    pub journal: Option<PathBuf>,
    /// Also write the JSON report to this file
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Run lock file [default: one per account in $XDG_RUNTIME_DIR, else in a private
    /// per-user directory in the temp dir]
    #[arg(long, value_name = "FILE")]
    pub lock_file: Option<PathBuf>,
    /// Write Prometheus metrics of this run to this file at the end (atomically; for
    /// node_exporter's textfile collector)
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
    /// Run a plan or resume a journal made for another endpoint, project or key
    #[arg(long)]
    pub allow_other_account: bool,
    /// Extra RetCode meaning "operation lock held", 1 to 2147483647 (repeatable; 8903 is built in)
    #[arg(long = "lock-code", value_name = "CODE", value_parser = number(LOCK_CODE), allow_negative_numbers = true)]
    pub lock_codes: Vec<i64>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Instances in the demo batch, 1 to 10000
    #[arg(long, default_value_t = 40, value_parser = number(DEMO_INSTANCES), allow_negative_numbers = true)]
    pub instances: usize,
    /// Seed of the demo world, 0 to 18446744073709551615
    #[arg(long, default_value_t = 7, value_parser = number(SEED), allow_negative_numbers = true)]
    pub seed: u64,
    /// Show the scheduled job instead: six simulated hours of `watch --disks` over idle and busy GPUs and their data disks
    #[arg(long, conflicts_with_all = ["instances", "seed"])]
    pub scheduled: bool,
    /// Serve the demo's simulator on this address and keep serving after the teardown until
    /// Ctrl-C, so `disks list` and `disks delete` can clean up the data disks it kept
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Address to listen on (loopback by default)
    #[arg(long, default_value = "127.0.0.1:8700")]
    pub listen: std::net::SocketAddr,
    /// Instances to generate, 0 to 100000 (ignored with --scenario)
    #[arg(long, default_value_t = 20, value_parser = number(SIM_INSTANCES), allow_negative_numbers = true)]
    pub instances: usize,
    /// Seed for the generated world and its faults, 0 to 18446744073709551615 (ignored with --scenario)
    #[arg(long, default_value_t = 1, value_parser = number(SEED), allow_negative_numbers = true)]
    pub seed: u64,
    /// Time factor, 0.0001 to 1000: 0.01 makes the 10-minute lock TTL 6 s and every latency
    /// 100× shorter (ignored with --scenario)
    #[arg(long, default_value_t = 1.0, value_parser = number(TIME_SCALE), allow_negative_numbers = true)]
    pub time_scale: f64,
    /// JSON scenario file (see docs/simulator.md)
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<PathBuf>,
    // The keys the simulator accepts are the global --public-key/--private-key.
}

/// Durations like `90s`, `11m`, `1h30m`, `7d`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    // humantime quotes what it could not read: cut it, as any echoed value.
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!(
            "{} (use e.g. 90s, 11m, 2h, 7d)",
            crate::textfile::excerpt(&e.to_string())
        )
    })
}

// The range of every numeric setting, for flags and config keys alike. Out of range is a
// usage error (exit 2): a huge value must not abort on allocation, panic, or quietly turn a
// run into one that never looks again.

/// Mutating calls in flight: more than the gateway would ever accept at once is a typo.
pub(crate) const CONCURRENCY: (usize, usize) = (1, 1024);
/// Requests per second (0 = unlimited).
pub(crate) const RATE: (u32, u32) = (0, 1000);
/// Instances one run may act on.
pub(crate) const MAX_COUNT: (usize, usize) = (1, 100_000);
/// Under 10 ms is a busy loop; over 5 minutes an instance is practically not watched.
pub(crate) const POLL_INTERVAL: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(300));
/// Retrying through the operation lock (TTL 10 minutes): up to a day.
pub(crate) const LOCK_WAIT: (Duration, Duration) = (Duration::ZERO, Duration::from_secs(86_400));
/// Per-instance and whole-run time limits: a second to a week.
pub(crate) const RUN_TIME: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(7 * 86_400));
/// Waiting for a terminated instance to leave Describe: a second to a day.
pub(crate) const CONFIRM_TIMEOUT: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(86_400));
/// The settle after a lost Terminate answer: up to an hour.
pub(crate) const SETTLE: (Duration, Duration) = (Duration::ZERO, Duration::from_secs(3600));
/// `--older-than`: up to 100 years (anything older predates the service).
pub(crate) const OLDER_THAN: (Duration, Duration) = (Duration::ZERO, Duration::from_secs(36_500 * 86_400));
/// RetCodes are positive 32-bit numbers.
pub(crate) const LOCK_CODE: (i64, i64) = (1, i32::MAX as i64);
/// The demo world lives in memory and on a terminal: ten thousand is plenty.
const DEMO_INSTANCES: (usize, usize) = (1, 10_000);
/// The simulator's world lives in memory.
pub(crate) const SIM_INSTANCES: (usize, usize) = (0, 100_000);
/// Seeds: any 64-bit number.
const SEED: (u64, u64) = (0, u64::MAX);
/// Simulator time factor: beyond these, latencies overflow or round to nothing.
pub(crate) const TIME_SCALE: (f64, f64) = (0.0001, 1000.0);

/// Check a number against its range; the error names the range.
pub(crate) fn in_range<T: PartialOrd + std::fmt::Display + Copy>(value: T, (min, max): (T, T)) -> Result<T, String> {
    if value >= min && value <= max {
        Ok(value)
    } else {
        Err(format!("{value} is out of range: use {min} to {max}"))
    }
}

/// Check a duration against its range; the error names the range.
pub(crate) fn duration_in_range(value: Duration, (min, max): (Duration, Duration)) -> Result<Duration, String> {
    if value >= min && value <= max {
        Ok(value)
    } else {
        Err(format!(
            "{} is out of range: use {} to {}",
            humantime::format_duration(value),
            humantime::format_duration(min),
            humantime::format_duration(max)
        ))
    }
}

/// A number flag's parser. Also for `-1`, which clap would otherwise take for a flag and
/// answer with a misleading "use `-- -1`" tip (the flags set `allow_negative_numbers`).
fn number<T>(range: (T, T)) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy + Send + Sync + 'static,
{
    move |text: &str| {
        let text = text.trim();
        // The value is echoed as typed (shortened), not as parsed: `1e308` must not come
        // back as a 309-digit number.
        let out_of_range = || {
            format!(
                "{} is out of range: use {} to {}",
                crate::textfile::excerpt(text),
                range.0,
                range.1
            )
        };
        match text.parse::<T>() {
            Ok(value) => in_range(value, range).map_err(|_| out_of_range()),
            // A number of the wrong kind (`-1` for a count, `1e20` for a count) is a number
            // out of range, not "not a number".
            Err(_) if text.parse::<f64>().is_ok_and(|v| !v.is_nan()) => Err(out_of_range()),
            Err(_) => Err(format!("not a number: use {} to {}", range.0, range.1)),
        }
    }
}

/// A flag's help with its default from [`defaults`], the one definition a run also uses, so
/// `--help` and the reference generated from it cannot show another.
fn with_default(help: &str, default: impl std::fmt::Display) -> String {
    format!("{help} [default: {default}]")
}

/// A duration as a flag takes it (`3s`, `11m`).
fn as_flag(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}

/// A duration flag's parser.
fn duration(range: (Duration, Duration)) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |text: &str| duration_in_range(parse_duration(text)?, range)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn debug_of_parsed_arguments_hides_the_private_key() {
        let cli = Cli::try_parse_from(["compshare-teardown", "--private-key", "S3CRET-xyz", "list", "--all"]).unwrap();
        assert_eq!(
            cli.global.private_key.as_ref().map(PrivateKey::expose),
            Some("S3CRET-xyz")
        );
        assert!(!format!("{cli:?}").contains("S3CRET"), "{cli:?}");
    }

    #[test]
    fn numbers_out_of_range_are_named_as_typed() {
        let concurrency = number(CONCURRENCY);
        assert_eq!(concurrency("-1").unwrap_err(), "-1 is out of range: use 1 to 1024");
        assert_eq!(
            concurrency("1e308").unwrap_err(),
            "1e308 is out of range: use 1 to 1024"
        );
        assert_eq!(concurrency("5000").unwrap_err(), "5000 is out of range: use 1 to 1024");
        assert_eq!(concurrency("lots").unwrap_err(), "not a number: use 1 to 1024");
        assert_eq!(concurrency(" 8 "), Ok(8));
        let scale = number(TIME_SCALE);
        assert_eq!(scale("1e308").unwrap_err(), "1e308 is out of range: use 0.0001 to 1000");
        assert_eq!(scale("inf").unwrap_err(), "inf is out of range: use 0.0001 to 1000");
        assert!(scale("NaN").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("11m"), Ok(Duration::from_secs(660)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("3x").unwrap_err().contains("e.g. 90s"));
        // A long value (say, a key pasted into the wrong field) is not echoed whole.
        let long = format!("5{}", "k".repeat(500));
        assert!(parse_duration(&long).unwrap_err().len() < 200);
    }

    #[test]
    fn numbers_out_of_range_name_the_range() {
        for args in [
            &["run", "--concurrency", "-1", "uhost-a"][..],
            &["run", "--concurrency", "5000", "uhost-a"],
            &["run", "--rate", "-1", "uhost-a"],
            &["run", "--max-count", "0", "uhost-a"],
            &["run", "--lock-code", "-5", "uhost-a"],
            &["demo", "--instances", "99999999999999"],
            &["sim", "--time-scale", "1e308"],
            &["sim", "--time-scale", "NaN"],
            &["sim", "--seed", "-1"],
        ] {
            let err = Cli::try_parse_from(std::iter::once("compshare-teardown").chain(args.iter().copied()))
                .unwrap_err()
                .to_string();
            assert!(err.contains(" to "), "{args:?}: {err}");
            assert!(!err.contains("-- -1"), "{args:?}: {err}");
        }
        let err = Cli::try_parse_from(["compshare-teardown", "run", "--poll-interval", "1y", "uhost-a"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("use 10ms to 5m"), "{err}");
        assert!(Cli::try_parse_from(["compshare-teardown", "sim", "--time-scale", "0.01"]).is_ok());
    }

    /// `--help`, and the reference generated from it (`tests/it/docs.rs` pins that), shows the
    /// values a run falls back to (`Settings::default`, what `app` uses without a flag or a
    /// config key; `--max-count` is `app::run`'s guard).
    #[test]
    fn help_shows_the_defaults_a_run_uses() {
        use clap::CommandFactory;
        let d = crate::workflow::Settings::default();
        let cli = Cli::command();
        let run = cli.find_subcommand("run").unwrap();
        for (id, default) in [
            ("concurrency", d.concurrency.to_string()),
            ("rate", d.rate.to_string()),
            ("poll_interval", as_flag(d.poll_interval).to_string()),
            ("lock_wait", as_flag(d.lock_wait).to_string()),
            ("instance_timeout", as_flag(d.instance_timeout).to_string()),
            ("confirm_timeout", as_flag(d.confirm_timeout).to_string()),
            ("settle", as_flag(d.terminate_settle).to_string()),
            ("max_count", defaults::MAX_COUNT.to_string()),
        ] {
            let arg = run.get_arguments().find(|a| a.get_id() == id).unwrap();
            let help = arg.get_help().unwrap().to_string();
            assert!(help.ends_with(&format!(" [default: {default}]")), "--{id}: {help}");
            assert!(
                arg.get_long_help().is_none(),
                "--{id}: a long help would hide the default"
            );
        }
    }
}
