//! Plans: what `run` would do to each candidate, shown by `plan`, saved with `plan --save`, and
//! replayed exactly by `run --plan`, which re-checks each instance right before acting and
//! skips any that drifted in a way that matters.

use serde::{Deserialize, Serialize};

use crate::api::{Instance, State};
use crate::selection::{Candidate, Verdict};

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
pub struct Entry {
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
    pub release_udisk: bool,
    pub force_stop: bool,
    pub entries: Vec<Entry>,
}

/// The plan file's schema version.
pub const PLAN_SCHEMA: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("cannot read plan {path}: {detail}")]
    Read { path: String, detail: String },
    #[error("plan {path} is not a plan file: {detail}")]
    Malformed { path: String, detail: String },
    #[error("plan {path} was made against {planned}, not {actual}")]
    OtherEndpoint {
        path: String,
        planned: String,
        actual: String,
    },
}

impl Plan {
    pub fn build(candidates: &[Candidate], base_url: &str, release_udisk: bool, force_stop: bool) -> Plan {
        let entries = candidates.iter().map(|c| entry(c, release_udisk, force_stop)).collect();
        Plan {
            schema: PLAN_SCHEMA,
            base_url: base_url.to_owned(),
            release_udisk,
            force_stop,
            entries,
        }
    }

    /// IDs `run` will act on.
    pub fn acting_ids(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|e| e.action.acts())
            .map(|e| e.uhost_id.clone())
            .collect()
    }

    /// Hourly price of the instances to be torn down, where reported.
    pub fn hourly_price(&self) -> f64 {
        self.entries.iter().filter(|e| e.action.acts()).map(|e| e.price).sum()
    }

    pub fn load(path: &str, base_url: &str) -> Result<Plan, PlanError> {
        let text = std::fs::read_to_string(path).map_err(|e| PlanError::Read {
            path: path.into(),
            detail: e.to_string(),
        })?;
        let plan: Plan = serde_json::from_str(&text).map_err(|e| PlanError::Malformed {
            path: path.into(),
            detail: e.to_string(),
        })?;
        if plan.schema != PLAN_SCHEMA {
            let detail = format!("schema {} (this build reads {PLAN_SCHEMA})", plan.schema);
            return Err(PlanError::Malformed {
                path: path.into(),
                detail,
            });
        }
        if plan.base_url.trim_end_matches('/') != base_url.trim_end_matches('/') {
            return Err(PlanError::OtherEndpoint {
                path: path.into(),
                planned: plan.base_url,
                actual: base_url.into(),
            });
        }
        Ok(plan)
    }

    /// Why `row` no longer matches what was planned for it, if it changed in a way that matters:
    /// renamed, re-tagged, or started again after the plan saw it stopped.
    pub fn drift(&self, row: &Instance) -> Option<String> {
        let planned = self.entries.iter().find(|e| e.uhost_id == row.uhost_id)?;
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

fn entry(c: &Candidate, release_udisk: bool, force_stop: bool) -> Entry {
    let row = c.row.clone().unwrap_or_default();
    let (action, reason) = match &c.verdict {
        Verdict::NotFound => (Action::AlreadyGone, Some("not found".to_owned())),
        Verdict::Skip { reason } => (Action::Skip, Some(reason.clone())),
        Verdict::Act => match row.state {
            State::Running if row.is_spot() && !force_stop => (Action::NeedsForceStop, None),
            State::Running => (Action::StopThenTerminate, None),
            State::Stopped | State::InstallFail => (Action::TerminateOnly, None),
            _ => (Action::WaitThenTerminate, None),
        },
    };
    let data_disks: Vec<String> = row.data_disks().map(|d| d.disk_id.clone()).collect();
    let disks = if data_disks.is_empty() {
        "none".to_owned()
    } else if release_udisk {
        "released".to_owned()
    } else {
        "kept".to_owned()
    };
    Entry {
        uhost_id: c.id.clone(),
        name: row.name,
        tag: row.tag,
        state: if c.row.is_some() {
            row.state.as_str().to_owned()
        } else {
            String::new()
        },
        region: row.region,
        zone: row.zone,
        charge_type: row.charge_type,
        gpu_type: row.gpu_type,
        gpu: row.gpu,
        price: row.instance_price,
        action,
        reason,
        data_disks,
        disks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::model::Disk;

    fn cand(id: &str, state: State, charge: &str, verdict: Verdict) -> Candidate {
        let row = Instance {
            uhost_id: id.into(),
            name: format!("n-{id}"),
            state,
            charge_type: charge.into(),
            instance_price: 2.5,
            disk_set: vec![
                Disk {
                    disk_id: "boot".into(),
                    is_boot: "True".into(),
                    ..Disk::default()
                },
                Disk {
                    disk_id: "bsi-data".into(),
                    is_boot: "False".into(),
                    ..Disk::default()
                },
            ],
            ..Instance::default()
        };
        Candidate {
            id: id.into(),
            row: Some(row),
            verdict,
        }
    }

    #[test]
    fn actions_by_state_and_options() {
        let cands = vec![
            cand("a-1", State::Running, "Postpay", Verdict::Act),
            cand("a-2", State::Stopped, "Postpay", Verdict::Act),
            cand("a-3", State::Stopping, "Postpay", Verdict::Act),
            cand("a-4", State::Running, "Spot", Verdict::Act),
            cand(
                "a-5",
                State::Running,
                "Postpay",
                Verdict::Skip {
                    reason: "protected".into(),
                },
            ),
            Candidate {
                id: "a-6".into(),
                row: None,
                verdict: Verdict::NotFound,
            },
        ];
        let p = Plan::build(&cands, "u", false, false);
        let actions: Vec<Action> = p.entries.iter().map(|e| e.action).collect();
        assert_eq!(
            actions,
            vec![
                Action::StopThenTerminate,
                Action::TerminateOnly,
                Action::WaitThenTerminate,
                Action::NeedsForceStop,
                Action::Skip,
                Action::AlreadyGone
            ]
        );
        assert_eq!(p.acting_ids(), vec!["a-1", "a-2", "a-3"]);
        assert!((p.hourly_price() - 7.5).abs() < 1e-9);
        assert_eq!(p.entries[0].disks, "kept");
        assert_eq!(p.entries[0].data_disks, vec!["bsi-data"]);
        let forced = Plan::build(&cands, "u", true, true);
        assert_eq!(forced.entries[3].action, Action::StopThenTerminate);
        assert_eq!(forced.entries[0].disks, "released");
    }

    #[test]
    fn drift_detection() {
        let p = Plan::build(
            &[cand("a-1", State::Stopped, "Postpay", Verdict::Act)],
            "u",
            false,
            false,
        );
        let mut row = cand("a-1", State::Stopped, "Postpay", Verdict::Act).row.unwrap();
        assert_eq!(p.drift(&row), None);
        row.state = State::Running;
        assert!(p.drift(&row).unwrap().contains("restarted"));
        row.state = State::Stopped;
        row.tag = "new".into();
        assert!(p.drift(&row).unwrap().contains("re-tagged"));
        row.name = "other".into();
        assert!(p.drift(&row).unwrap().contains("renamed"));
    }
}
