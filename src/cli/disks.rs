//! `disks`: the data disk commands' arguments (clap data only).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::{CONCURRENCY, MAX_COUNT, OLDER_THAN, RATE, RUN_TIME, duration, number, with_default};
use crate::defaults;

#[derive(Debug, Args)]
pub struct DisksArgs {
    #[command(subcommand)]
    pub command: DisksCommand,
}

#[derive(Debug, Subcommand)]
pub enum DisksCommand {
    /// List data disks matching the filters (attached ones too, unless --detached)
    List(DiskListArgs),
    /// Delete detached data disks: a fresh look right before each Delete, never an attached disk
    Delete(DiskDeleteArgs),
}

/// The disk selection shared by `disks list` and `disks delete`.
#[derive(Debug, Args, Default, Clone)]
pub struct DiskSelectArgs {
    /// Disk IDs (the ResourceId, e.g. bsi-…)
    #[arg(value_name = "ID")]
    pub ids: Vec<String>,
    /// Disk name glob, e.g. 'data-*' (repeatable: any matches)
    #[arg(long = "name", value_name = "GLOB")]
    pub names: Vec<String>,
    /// Only this region (a disk's region is its Region, else its zone's prefix)
    #[arg(long)]
    pub region: Option<String>,
    /// Only this zone
    #[arg(long)]
    pub zone: Option<String>,
    /// Only disks of at least this many GB
    #[arg(long, value_name = "GB", value_parser = number(MIN_SIZE), allow_negative_numbers = true)]
    pub min_size: Option<i64>,
    /// Only disks attached to no instance (detaching ones included)
    #[arg(long)]
    pub detached: bool,
    /// Only disks seen detached for at least this long, e.g. 7d (measured by the account's
    /// state store, which every look with this flag updates; a disk seen attached starts over)
    #[arg(long, value_name = "DURATION", value_parser = duration(OLDER_THAN))]
    pub detached_for: Option<Duration>,
    /// Select every detached disk in scope when no ID or filter is given
    #[arg(long)]
    pub all_detached: bool,
    /// Never touch this disk ID (repeatable; also the config's selection.exclude)
    #[arg(long = "exclude", value_name = "ID")]
    pub excludes: Vec<String>,
    /// Never touch disks whose name matches (repeatable; also the config's selection.protect_name)
    #[arg(long = "protect-name", value_name = "GLOB")]
    pub protect_names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DiskListArgs {
    #[command(flatten)]
    pub select: DiskSelectArgs,
}

#[derive(Debug, Args, Default)]
pub struct DiskDeleteArgs {
    #[command(flatten)]
    pub select: DiskSelectArgs,
    /// Continue the deletion recorded in this disk journal (its disks; appends to it)
    #[arg(long, value_name = "FILE", conflicts_with_all = ["journal", "dry_run"])]
    pub resume: Option<PathBuf>,
    /// Append every Delete and its answer to this JSON-lines file (a new file per run)
    #[arg(long, value_name = "FILE")]
    pub journal: Option<PathBuf>,
    /// Show what would be deleted and stop (no lock, no Delete)
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation (required without a terminal)
    #[arg(short, long)]
    pub yes: bool,
    #[arg(long, value_name = "N", value_parser = number(MAX_COUNT), allow_negative_numbers = true,
        help = with_default("Refuse to delete more disks than this, 1 to 100000", defaults::MAX_COUNT))]
    pub max_count: Option<usize>,
    #[arg(long, value_name = "N", value_parser = number(CONCURRENCY), allow_negative_numbers = true,
        help = with_default("Disks worked on at once, 1 to 1024", DISK_CONCURRENCY))]
    pub concurrency: Option<usize>,
    #[arg(long, value_name = "R", value_parser = number(RATE), allow_negative_numbers = true,
        help = with_default("Hard ceiling on requests per second, 0 = none (the pace adapts below it), up to 1000", defaults::RATE))]
    pub rate: Option<u32>,
    #[arg(long, value_name = "DURATION", value_parser = duration(DETACH_WAIT),
        help = with_default("How long a disk may stay detaching (RetCode 8434) before it fails, up to 1d", "5m"))]
    pub detach_wait: Option<Duration>,
    /// Time limit for the whole run, 1s to 7d
    #[arg(long, value_name = "DURATION", value_parser = duration(RUN_TIME))]
    pub deadline: Option<Duration>,
    /// Also write the JSON report to this file
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Run lock file [default: the account's, shared with `run`]
    #[arg(long, value_name = "FILE")]
    pub lock_file: Option<PathBuf>,
    /// Write Prometheus metrics of this run to this file at the end (atomically)
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
}

/// `--min-size`: a disk is at most a few tens of TB.
const MIN_SIZE: (i64, i64) = (0, 1_000_000);
/// `--detach-wait`: up to a day.
pub(crate) const DETACH_WAIT: (Duration, Duration) = (Duration::ZERO, Duration::from_secs(86_400));
/// Disks worked on at once by default: a deletion is one look and one call, so a few at a
/// time finish a typical account's orphans in seconds without a burst at the gateway.
pub(crate) const DISK_CONCURRENCY: usize = 8;
