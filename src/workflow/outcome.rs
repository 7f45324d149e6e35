//! Outcomes and the run report: what happened to every selected instance, as data.
//!
//! The JSON form of [`Report`] is a stable, documented schema (`docs/report-schema.md`);
//! change it only by adding fields.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::machine::{Gone, Phase};

/// The end of one instance's teardown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// Terminated by this run (or a run it resumed); `confirmed` once Describe no longer lists it.
    Terminated {
        confirmed: bool,
        /// `InRecycle` from the Terminate answer (`"Yes"`: moved to the recycle bin).
        #[serde(skip_serializing_if = "Option::is_none")]
        in_recycle: Option<String>,
    },
    /// Stop-only mode: stopped and left in place (by this run, or it already was).
    Stopped,
    /// A data disk deleted by this run; `confirmed` once the listing no longer shows it.
    Deleted { confirmed: bool },
    /// Not there when we first looked.
    AlreadyGone,
    /// Someone else deleted it while we worked on it.
    DeletedByOther,
    /// Gave up: the error (with the API's request id when there is one).
    Failed {
        phase: Phase,
        error: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
    },
    /// `--instance-timeout` or `--deadline` ran out first.
    TimedOut { phase: Phase },
    /// Not acted on, on purpose.
    Skipped { reason: String },
    /// The run was interrupted (Ctrl-C / SIGTERM) before this instance finished.
    Interrupted { phase: Phase },
}

impl Outcome {
    /// Gone, or left alone on purpose: what exit code 0 requires of every instance.
    pub fn is_ok(&self) -> bool {
        matches!(
            self,
            Outcome::Terminated { confirmed: true, .. }
                | Outcome::Stopped
                | Outcome::Deleted { confirmed: true }
                | Outcome::AlreadyGone
                | Outcome::DeletedByOther
                | Outcome::Skipped { .. }
        )
    }

    /// Whether the instance is known to be gone (or on its way out after an accepted Terminate).
    pub fn is_gone(&self) -> bool {
        matches!(
            self,
            Outcome::Terminated { .. } | Outcome::Deleted { .. } | Outcome::AlreadyGone | Outcome::DeletedByOther
        )
    }

    /// A short word for tables and bars.
    pub(crate) fn word(&self) -> &'static str {
        match self {
            Outcome::Terminated { confirmed: true, .. } => "terminated",
            Outcome::Terminated { confirmed: false, .. } => "terminated (unconfirmed)",
            Outcome::Stopped => "stopped",
            Outcome::Deleted { confirmed: true } => "deleted",
            Outcome::Deleted { confirmed: false } => "deleted (unconfirmed)",
            Outcome::AlreadyGone => "already gone",
            Outcome::DeletedByOther => "deleted by someone else",
            Outcome::Failed { .. } => "failed",
            Outcome::TimedOut { .. } => "timed out",
            Outcome::Skipped { .. } => "skipped",
            Outcome::Interrupted { .. } => "interrupted",
        }
    }

    /// The detail worth printing beside the word.
    pub fn detail(&self) -> String {
        match self {
            Outcome::Failed { error, .. } => error.clone(),
            Outcome::TimedOut { phase } | Outcome::Interrupted { phase } => format!("while {}", phase.label()),
            Outcome::Skipped { reason } => reason.clone(),
            Outcome::Terminated {
                in_recycle: Some(r), ..
            } if r.eq_ignore_ascii_case("yes") => "in recycle bin".into(),
            _ => String::new(),
        }
    }
}

impl From<Gone> for Outcome {
    fn from(g: Gone) -> Outcome {
        match g {
            Gone::Terminated => Outcome::Terminated {
                confirmed: true,
                in_recycle: None,
            },
            Gone::TerminatedUnconfirmed => Outcome::Terminated {
                confirmed: false,
                in_recycle: None,
            },
            Gone::AlreadyGone => Outcome::AlreadyGone,
            Gone::DeletedByOther => Outcome::DeletedByOther,
            Gone::Stopped => Outcome::Stopped,
        }
    }
}

/// What a report row is about: the target kinds the tool tears down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// A GPU instance (the default: rows and journals written before disks existed).
    #[default]
    Instance,
    /// A data disk.
    Disk,
}

impl TargetKind {
    #[expect(
        clippy::trivially_copy_pass_by_ref,
        reason = "serde's skip_serializing_if passes a reference"
    )]
    fn is_instance(&self) -> bool {
        *self == TargetKind::Instance
    }
}

/// One instance (or, with `kind: disk`, one data disk) in the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceReport {
    /// `instance` when absent.
    #[serde(default, skip_serializing_if = "TargetKind::is_instance")]
    pub kind: TargetKind,
    /// The target's ID (a disk's `ResourceId` for `kind: disk`).
    pub uhost_id: String,
    pub name: String,
    pub region: String,
    pub zone: String,
    /// The last state Describe showed (empty if never seen).
    pub last_state: String,
    pub outcome: Outcome,
    /// Seconds from the start of the run to this instance's outcome.
    pub seconds: f64,
    /// Mutating calls this process sent for this instance (Stop, Terminate; Delete for a
    /// disk), retries included.
    pub calls: u32,
    /// Mutating calls earlier processes sent for it, per the journal this run resumed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub calls_before_resume: u32,
    /// Whether data disks were to be released with the instance.
    pub release_udisk: bool,
    /// A disk's size in GB (disks only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_gb: Option<i64>,
}

/// The whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Schema version of this JSON.
    pub schema: u32,
    pub instances: Vec<InstanceReport>,
    pub summary: Summary,
    /// Data disks the terminated instances left behind (no `ReleaseUDisk`): still billed
    /// until deleted (`disks delete`). Absent when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept_disks: Vec<KeptDisk>,
}

/// A data disk a teardown kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeptDisk {
    pub disk_id: String,
    /// The terminated instance it was attached to.
    pub uhost_id: String,
    /// GB, when the selection's Describe row said (not for a plan or a resumed journal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_gb: Option<i64>,
}

/// Counts and totals.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub selected: usize,
    pub terminated: usize,
    pub unconfirmed: usize,
    /// Stop-only mode: stopped and left in place.
    #[serde(default)]
    pub stopped: usize,
    /// Data disks deleted and confirmed gone (a disk deleted without confirmation counts in
    /// `unconfirmed`).
    #[serde(default)]
    pub deleted: usize,
    pub already_gone: usize,
    pub deleted_by_other: usize,
    pub failed: usize,
    pub timed_out: usize,
    pub skipped: usize,
    pub interrupted: usize,
    pub seconds: f64,
    /// API calls this process sent, by action, all instances together.
    pub api_calls: BTreeMap<String, u32>,
    /// Mutating calls earlier processes sent, by action, per the journal this run resumed
    /// (absent unless it resumed one that holds calls).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub calls_before_resume: BTreeMap<String, u32>,
    /// Throttling answers (RetCode 153) seen.
    pub throttled: u32,
    /// What the request pace did.
    #[serde(default)]
    pub pace: PaceSummary,
}

/// The request pace over the run (see `workflow::pace`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PaceSummary {
    /// Throttling answers (RetCode 153) the pace was told of, the last look before a delayed
    /// Terminate included.
    pub throttles: u32,
    /// Times the pace lowered its rate (at most one per window of requests).
    pub decreases: u32,
    /// Requests per second in force at the end; `null` = no client-side limit.
    pub final_rate: Option<f64>,
    /// The lowest rate the pace set; `null` = never lowered.
    pub min_rate: Option<f64>,
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The report's JSON schema version.
pub(crate) const REPORT_SCHEMA: u32 = 1;

impl Report {
    pub fn new(
        instances: Vec<InstanceReport>,
        seconds: f64,
        api_calls: BTreeMap<String, u32>,
        throttled: u32,
    ) -> Report {
        let mut s = Summary {
            selected: instances.len(),
            seconds,
            api_calls,
            throttled,
            ..Summary::default()
        };
        for i in &instances {
            match &i.outcome {
                Outcome::Terminated { confirmed: true, .. } => s.terminated += 1,
                Outcome::Stopped => s.stopped += 1,
                Outcome::Terminated { confirmed: false, .. } | Outcome::Deleted { confirmed: false } => {
                    s.unconfirmed += 1;
                }
                Outcome::Deleted { confirmed: true } => s.deleted += 1,
                Outcome::AlreadyGone => s.already_gone += 1,
                Outcome::DeletedByOther => s.deleted_by_other += 1,
                Outcome::Failed { .. } => s.failed += 1,
                Outcome::TimedOut { .. } => s.timed_out += 1,
                Outcome::Skipped { .. } => s.skipped += 1,
                Outcome::Interrupted { .. } => s.interrupted += 1,
            }
        }
        Report {
            schema: REPORT_SCHEMA,
            instances,
            summary: s,
            kept_disks: Vec::new(),
        }
    }

    /// Everything gone or skipped on purpose.
    pub fn all_ok(&self) -> bool {
        self.instances.iter().all(|i| i.outcome.is_ok())
    }

    pub fn interrupted(&self) -> bool {
        self.summary.interrupted > 0
    }
}
