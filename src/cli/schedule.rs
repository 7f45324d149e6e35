//! The scheduled-teardown commands' arguments: `watch` (the job), `marks`, `keep`, `history`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{EffectArgs, MAX_COUNT, RUN_TIME, SelectArgs, as_flag, duration, number, with_default};
use crate::defaults;

/// Idle window: 10 minutes (below that, a pause between epochs looks idle) to 30 days.
pub(crate) const IDLE_FOR: (Duration, Duration) = (Duration::from_secs(600), Duration::from_secs(30 * 86_400));
/// Grace: none to 30 days.
pub(crate) const GRACE: (Duration, Duration) = (Duration::ZERO, Duration::from_secs(30 * 86_400));
/// Largest sample gap: a minute to a day (and less than the idle window, checked later).
pub(crate) const MAX_GAP: (Duration, Duration) = (Duration::from_secs(60), Duration::from_secs(86_400));
/// Thresholds in percent, below 100 (100 would call a saturated GPU idle).
pub(crate) const PERCENT: (f64, f64) = (0.0, 99.0);
/// A notice delivery's timeout: 1 s to 5 min.
pub(crate) const NOTICE_TIMEOUT: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(300));
/// How long a disk must be seen detached before it is marked: 10 minutes to a year.
pub(crate) const DETACHED_FOR: (Duration, Duration) = (Duration::from_secs(600), Duration::from_secs(366 * 86_400));
/// How long a keep may last: a minute to a year.
pub(crate) const KEEP_FOR: (Duration, Duration) = (Duration::from_secs(60), Duration::from_secs(366 * 86_400));
/// How far back `history` looks: up to ten years.
pub(crate) const SINCE: (Duration, Duration) = (Duration::ZERO, Duration::from_secs(3660 * 86_400));

/// `watch --action`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum WatchAction {
    #[default]
    Terminate,
    Stop,
}

/// The idle rule.
#[derive(Debug, Args, Default, Clone)]
pub struct IdleArgs {
    #[arg(long, value_name = "DURATION", value_parser = duration(IDLE_FOR),
        help = with_default("Idle only when every GPU stayed at or under the thresholds this long, 10m to 30d", as_flag(defaults::IDLE_WINDOW)))]
    pub idle_for: Option<Duration>,
    #[arg(long, value_name = "PERCENT", value_parser = number(PERCENT),
        help = with_default("GPU utilisation at or under this is idle, 0 to 99", defaults::IDLE_UTIL_MAX))]
    pub gpu_util_max: Option<f64>,
    #[arg(long, value_name = "PERCENT", value_parser = number(PERCENT),
        help = with_default("GPU memory use at or under this is idle, 0 to 99", defaults::IDLE_MEM_MAX))]
    pub gpu_mem_max: Option<f64>,
    #[arg(long, value_name = "DURATION", value_parser = duration(MAX_GAP),
        help = with_default("Longest gap between samples still counted as covered, 1m to 1d (less than --idle-for)", as_flag(defaults::IDLE_MAX_GAP)))]
    pub max_gap: Option<Duration>,
}

/// `watch --disks`: the data disks the job watches besides the instances.
#[derive(Debug, Args, Default, Clone)]
pub struct WatchDiskArgs {
    /// Also watch data disks: mark each one attached to no instance for --disk-detached-for,
    /// tell, give it the grace, look again, delete it (scope: --region and --zone; --exclude,
    /// --protect-name and the config's protections cover disks too)
    #[arg(long)]
    pub disks: bool,
    #[arg(long, value_name = "DURATION", value_parser = duration(DETACHED_FOR), requires = "disks",
        help = with_default("Mark a disk once the job has seen it attached to nothing this long, 10m to 366d", as_flag(defaults::DISK_DETACHED_FOR)))]
    pub disk_detached_for: Option<Duration>,
    /// Only disks whose name matches, e.g. 'data-*' (repeatable: any matches)
    #[arg(long = "disk-name", value_name = "GLOB", requires = "disks")]
    pub disk_names: Vec<String>,
}

/// Where the state store is.
#[derive(Debug, Args, Default, Clone)]
pub struct StateArgs {
    /// The state store [default: one per account in $XDG_STATE_HOME/compshare-teardown, else
    /// ~/.local/state/compshare-teardown]
    // Not `--state`: `watch` takes the selection's `--state STATE` filter too.
    #[arg(long = "state-file", value_name = "FILE")]
    pub path: Option<PathBuf>,
}

#[derive(Debug, Args, Default)]
pub struct WatchArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    #[command(flatten)]
    pub effect: EffectArgs,
    #[command(flatten)]
    pub idle: IdleArgs,
    #[arg(long, value_name = "DURATION", value_parser = duration(GRACE),
        help = with_default("Between marking an idle instance (and telling its owner) and tearing it down, 0 to 30d", as_flag(defaults::GRACE)))]
    pub grace: Option<Duration>,
    /// What to do with an instance still idle when its grace ends: terminate it, or stop it
    /// and leave it stopped (its GPU and CPU stop billing; its disks do not)
    #[arg(long, value_enum, default_value_t = WatchAction::Terminate)]
    pub action: WatchAction,
    /// Tear down only inside this daily window, e.g. 09:00-18:00 (22:00-06:00 runs over
    /// midnight); marks and notices happen at any time [default: any time]
    #[arg(long, value_name = "HH:MM-HH:MM")]
    pub act_hours: Option<String>,
    /// The time zone of --act-hours, an IANA name such as Asia/Shanghai [default: the system's]
    #[arg(long, value_name = "ZONE")]
    pub act_timezone: Option<String>,
    /// Days --act-hours never opens on, e.g. sat,sun (repeatable)
    #[arg(long, value_name = "DAYS")]
    pub skip_days: Vec<String>,
    #[command(flatten)]
    pub disks: WatchDiskArgs,
    #[command(flatten)]
    pub state: StateArgs,
    /// POST each notice as JSON to this URL (Slack-compatible `text`)
    #[arg(long, value_name = "URL")]
    pub notify_webhook: Option<String>,
    /// Run this shell command for each notice, the JSON on its stdin
    #[arg(long, value_name = "COMMAND")]
    pub notify_command: Option<String>,
    #[arg(long, value_name = "DURATION", value_parser = duration(NOTICE_TIMEOUT),
        help = with_default("Time limit of one notice delivery, 1s to 5m", as_flag(defaults::NOTICE_TIMEOUT)))]
    pub notify_timeout: Option<Duration>,
    /// Show what the job would mark, unmark, keep and tear down; change and send nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Act without asking (required: the job is meant for cron; use --dry-run to look)
    #[arg(short, long)]
    pub yes: bool,
    #[arg(long, value_name = "N", value_parser = number(MAX_COUNT), allow_negative_numbers = true,
        help = with_default("Refuse to tear down more instances than this in one run, 1 to 100000", defaults::MAX_COUNT))]
    pub max_count: Option<usize>,
    /// Time limit for the teardown part of the run, 1s to 7d
    #[arg(long, value_name = "DURATION", value_parser = duration(RUN_TIME))]
    pub deadline: Option<Duration>,
    /// Also write the JSON report to this file
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Run lock file [default: the same per-account lock as `run`]
    #[arg(long, value_name = "FILE")]
    pub lock_file: Option<PathBuf>,
    /// Write Prometheus metrics of this run to this file at the end
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct MarksArgs {
    #[command(flatten)]
    pub state: StateArgs,
}

#[derive(Debug, Args)]
pub struct KeepArgs {
    /// Instance or disk IDs to keep
    #[arg(value_name = "ID", required = true)]
    pub ids: Vec<String>,
    /// Keep for this long, e.g. 8h, 3d (1m to 366d)
    #[arg(long = "for", value_name = "DURATION", value_parser = duration(KEEP_FOR),
        required_unless_present_any = ["until", "remove"], conflicts_with_all = ["until", "remove"])]
    pub keep_for: Option<Duration>,
    /// Keep until this time, RFC 3339 (e.g. 2026-12-24T18:00:00Z)
    #[arg(long, value_name = "TIME", conflicts_with = "remove")]
    pub until: Option<String>,
    /// Why (shown in `marks` and the notice)
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub reason: String,
    /// Drop the keep instead
    #[arg(long)]
    pub remove: bool,
    #[command(flatten)]
    pub state: StateArgs,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// How far back, e.g. 7d, 24h
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = duration(SINCE))]
    pub since: Duration,
    #[command(flatten)]
    pub state: StateArgs,
}
