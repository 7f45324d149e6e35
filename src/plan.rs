//! Plans: what `run` would do to each candidate, shown by `plan`, saved with `plan --save`, and
//! replayed exactly by `run --plan`, which re-checks each instance right before acting and
//! skips any that drifted in a way that matters.
//!
//! A saved plan is protected like a journal's start line: a SHA-1 checksum over everything
//! else in it, and every field validated on load. An entry added by hand would otherwise be
//! terminated although `plan` never selected it, and a flipped `release_udisk` would delete
//! data disks the plan said it would keep.

use serde::{Deserialize, Serialize};

use crate::api::{Instance, State};
use crate::credentials::Account;
use crate::selection::{Candidate, IdSource, Verdict, check_ids};
use crate::textfile;

/// What `run` will do to one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Running: Stop, wait for Stopped, Terminate.
    StopThenTerminate,
    /// Stopped (or Install Fail): Terminate only.
    TerminateOnly,
    /// Mid-operation (Stopping, Starting, ...): wait for a settled state, then as above.
    WaitThenTerminate,
    /// A spot instance that cannot be stopped without `--force-stop`.
    NeedsForceStop,
    /// Not found: nothing to do.
    AlreadyGone,
    /// Left alone (see `reason`).
    Skip,
}

impl Action {
    pub fn text(self) -> &'static str {
        match self {
            Action::StopThenTerminate => "stop, then terminate",
            Action::TerminateOnly => "terminate",
            Action::WaitThenTerminate => "wait, then terminate",
            Action::NeedsForceStop => "needs --force-stop (spot)",
            Action::AlreadyGone => "already gone",
            Action::Skip => "skip",
        }
    }

    /// Whether `run` sends anything for it.
    pub fn acts(self) -> bool {
        matches!(
            self,
            Action::StopThenTerminate | Action::TerminateOnly | Action::WaitThenTerminate
        )
    }
}

/// One line of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub uhost_id: String,
    pub name: String,
    pub tag: String,
    pub state: String,
    pub region: String,
    pub zone: String,
    pub charge_type: String,
    pub gpu_type: String,
    pub gpu: i64,
    /// Hourly price, where the API reports it.
    pub price: f64,
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Data disks, and what happens to them: `released` or `kept`.
    pub data_disks: Vec<String>,
    pub disks: String,
}

/// A whole plan (the `plan --save` file; JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub schema: u32,
    /// The API endpoint the plan was made against; `run --plan` refuses another one.
    pub base_url: String,
    /// The project it was made for (empty: the account's default project).
    pub project_id: String,
    /// A fingerprint of the public key it was made with (never the key itself).
    pub key_fingerprint: String,
    pub release_udisk: bool,
    pub force_stop: bool,
    pub entries: Vec<Item>,
    /// SHA-1 (hex) of the plan's compact JSON with this field empty.
    pub checksum: String,
}

/// The plan file's schema version (2: `project_id` and `key_fingerprint`; 3: `checksum`).
pub const PLAN_SCHEMA: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("cannot read plan {path}: {detail}")]
    Read { path: String, detail: String },
    #[error("plan {path} is not a plan file: {detail}")]
    Malformed { path: String, detail: String },
    #[error(
        "plan {path} was made against another account: {}; make a new plan, or pass --allow-other-account",
        .differences.join(", ")
    )]
    OtherAccount { path: String, differences: Vec<String> },
}

impl Plan {
    /// Takes the candidates by value: each entry keeps its row's strings rather than copies,
    /// and the rest of the row is freed as the entry is made (at 100,000 instances the rows
    /// and a copy of their strings were the run's peak of memory).
    pub fn build(candidates: Vec<Candidate>, account: &Account, release_udisk: bool, force_stop: bool) -> Plan {
        let entries = candidates
            .into_iter()
            .map(|c| entry(c, release_udisk, force_stop))
            .collect();
        let mut plan = Plan {
            schema: PLAN_SCHEMA,
            base_url: account.endpoint.clone(),
            project_id: account.project_id.clone(),
            key_fingerprint: account.key_fingerprint.clone(),
            release_udisk,
            force_stop,
            entries,
            checksum: String::new(),
        };
        plan.seal();
        plan
    }

    /// The checksum the plan should carry: SHA-1 over its compact JSON with an empty
    /// checksum field. Hashed as it is written, without a copy of the plan or of its text
    /// (at 100,000 entries each would be tens of MiB, at the run's peak).
    fn sum(&mut self) -> String {
        let carried = std::mem::take(&mut self.checksum);
        let sum = crate::credentials::sha1_hex_json(&*self);
        self.checksum = carried;
        sum
    }

    /// Replace the private key by `***` in every text of the entries (after the checksum was
    /// checked): a plan file is text from outside, and a key in a name or a reason would
    /// otherwise reach the table, the report and the log.
    pub fn mask(&mut self, key: &crate::credentials::PrivateKey) {
        for e in &mut self.entries {
            for text in [
                &mut e.name,
                &mut e.tag,
                &mut e.state,
                &mut e.region,
                &mut e.zone,
                &mut e.charge_type,
                &mut e.gpu_type,
            ]
            .into_iter()
            .chain(e.reason.as_mut())
            .chain(e.data_disks.iter_mut())
            {
                if let std::borrow::Cow::Owned(masked) = key.mask(text) {
                    *text = masked;
                }
            }
        }
    }

    /// Set the checksum over the plan as it is now.
    pub fn seal(&mut self) {
        self.checksum = self.sum();
    }

    /// IDs `run` will act on: every entry not skipped. Instances not found are watched until
    /// confirmed gone, and a spot instance may be found stopped and terminated, so they count:
    /// this one number is the plan's headline, the count the prompt asks for, and what
    /// `--max-count` limits.
    pub fn acting_ids(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|e| e.action != Action::Skip)
            .map(|e| e.uhost_id.clone())
            .collect()
    }

    /// The account the plan was made for.
    pub fn account(&self) -> Account {
        Account {
            endpoint: self.base_url.trim_end_matches('/').to_owned(),
            project_id: self.project_id.clone(),
            key_fingerprint: self.key_fingerprint.clone(),
        }
    }

    /// Hourly price of the instances to be torn down, where reported.
    pub fn hourly_price(&self) -> f64 {
        self.entries.iter().filter(|e| e.action.acts()).map(|e| e.price).sum()
    }

    /// Read a saved plan made for `account` (any account with `allow_other_account`), with its
    /// IDs checked like the command line's.
    pub fn load(path: &str, account: &Account, allow_other_account: bool) -> Result<Plan, PlanError> {
        let text = textfile::read(std::path::Path::new(path), textfile::PLAN_FILE).map_err(|e| PlanError::Read {
            path: path.into(),
            detail: e.to_string(),
        })?;
        let malformed = |detail: String| PlanError::Malformed {
            path: path.into(),
            detail,
        };
        let mut plan: Plan = serde_json::from_str(&text).map_err(|e| malformed(textfile::excerpt(&e.to_string())))?;
        if plan.schema != PLAN_SCHEMA {
            return Err(malformed(format!(
                "schema {} (this build reads {PLAN_SCHEMA})",
                plan.schema
            )));
        }
        let sources: Vec<IdSource> = plan
            .entries
            .iter()
            .enumerate()
            .map(|(n, e)| IdSource {
                id: e.uhost_id.clone(),
                at: format!(" (entry {})", n + 1),
            })
            .collect();
        check_ids(&sources).map_err(|e| malformed(e.to_string()))?;
        for (n, e) in plan.entries.iter().enumerate() {
            e.validate(plan.release_udisk)
                .map_err(|detail| malformed(format!("{detail} (entry {})", n + 1)))?;
        }
        let differences = plan.account().differences(account);
        if !differences.is_empty() && !allow_other_account {
            return Err(PlanError::OtherAccount {
                path: path.into(),
                differences,
            });
        }
        // Last, so that the errors above name what is wrong; but nothing edited gets past it.
        let expected = plan.sum();
        if plan.checksum != expected {
            return Err(malformed(
                "its checksum does not match: it was not written by `plan --save` (edited or damaged); make a new plan"
                    .into(),
            ));
        }
        Ok(plan)
    }

    /// What the plan said of each instance, by ID, for the guard of a run from a saved plan
    /// ([`Drift::check`] on each first call).
    pub fn drift(&self) -> Drift {
        let planned = self.entries.iter().map(|e| {
            let seen = Planned {
                name: e.name.clone(),
                tag: e.tag.clone(),
                state: e.state.clone(),
            };
            (e.uhost_id.clone(), seen)
        });
        Drift(planned.collect())
    }
}

/// What a saved plan said of each instance, found by ID: a scan of the plan for every
/// instance's first call was quadratic in the plan's size (10^10 comparisons at 100,000).
pub struct Drift(std::collections::HashMap<String, Planned>);

struct Planned {
    name: String,
    tag: String,
    state: String,
}

impl Drift {
    /// Why `row` no longer matches what was planned for it, if it changed in a way that matters:
    /// renamed, re-tagged, or started again after the plan saw it stopped.
    pub fn check(&self, row: &Instance) -> Option<String> {
        let planned = self.0.get(&row.uhost_id)?;
        if planned.name != row.name {
            return Some(format!(
                "changed since the plan: renamed {:?} → {:?}",
                planned.name, row.name
            ));
        }
        if planned.tag != row.tag {
            return Some(format!(
                "changed since the plan: re-tagged {:?} → {:?}",
                planned.tag, row.tag
            ));
        }
        let was_down = matches!(State::parse(&planned.state), State::Stopped | State::Stopping);
        if was_down && matches!(row.state, State::Running | State::Starting) {
            return Some(format!(
                "changed since the plan: restarted ({} → {})",
                planned.state, row.state
            ));
        }
        None
    }
}

impl Item {
    /// Whether the entry is one `plan` could have written: a known state, an action that
    /// follows from it, a disk fate that follows from `release_udisk`, sane numbers.
    fn validate(&self, release_udisk: bool) -> Result<(), String> {
        let state = State::parse(&self.state);
        if let State::Unknown(s) = &state
            && !s.is_empty()
        {
            return Err(format!("unknown state {:?}", textfile::excerpt(s)));
        }
        let fits = match self.action {
            // Not found: no row, so no state.
            Action::AlreadyGone => self.state.is_empty(),
            Action::Skip => true,
            Action::StopThenTerminate | Action::NeedsForceStop => state == State::Running,
            Action::TerminateOnly => matches!(state, State::Stopped | State::InstallFail),
            Action::WaitThenTerminate => !matches!(
                state,
                State::Running | State::Stopped | State::InstallFail | State::Unknown(_)
            ),
        };
        if !fits {
            return Err(format!(
                "action {:?} does not follow from state {:?}",
                self.action.text(),
                self.state
            ));
        }
        let disks = match (self.data_disks.is_empty(), release_udisk) {
            (true, _) => "none",
            (false, true) => "released",
            (false, false) => "kept",
        };
        if self.disks != disks {
            return Err(format!(
                "disks {:?} does not follow from release_udisk={release_udisk} and {} data disk(s)",
                textfile::excerpt(&self.disks),
                self.data_disks.len()
            ));
        }
        if !(self.price.is_finite() && self.price >= 0.0) || self.gpu < 0 {
            return Err("price or gpu out of range".to_owned());
        }
        Ok(())
    }
}

fn entry(c: Candidate, release_udisk: bool, force_stop: bool) -> Item {
    let found = c.row.is_some();
    let row = c.row.unwrap_or_default();
    let (action, reason) = match c.verdict {
        Verdict::NotFound => (Action::AlreadyGone, Some("not found".to_owned())),
        Verdict::Skip { reason } => (Action::Skip, Some(reason)),
        Verdict::Act => match row.state {
            State::Running if row.is_spot() && !force_stop => (Action::NeedsForceStop, None),
            State::Running => (Action::StopThenTerminate, None),
            State::Stopped | State::InstallFail => (Action::TerminateOnly, None),
            _ => (Action::WaitThenTerminate, None),
        },
    };
    let data_disks: Vec<String> = row
        .disk_set
        .into_iter()
        .filter(crate::api::model::Disk::is_data)
        .map(|d| d.disk_id)
        .collect();
    let disks = match (data_disks.is_empty(), release_udisk) {
        (true, _) => "none",
        (false, true) => "released",
        (false, false) => "kept",
    };
    let state = if found {
        row.state.as_str().to_owned()
    } else {
        String::new()
    };
    Item {
        uhost_id: c.id,
        state,
        price: row.instance_price,
        gpu: row.gpu,
        action,
        reason,
        disks: disks.to_owned(),
        data_disks,
        name: row.name,
        tag: row.tag,
        region: row.region,
        zone: row.zone,
        charge_type: row.charge_type,
        gpu_type: row.gpu_type,
    }
}

#[cfg(test)]
mod tests;
