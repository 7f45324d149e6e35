//! Where a run's instances come from: a fresh selection, a saved plan or a journal. Each
//! is read offline, then tied to the account, and fixes what it fixes (a plan or a journal
//! fixes the effect; a flag may not widen it).

use std::path::Path;

use anyhow::anyhow;

use super::settings::Request;
use super::{CmdResult, Ctx, Failure};
use crate::cli::{EffectArgs, RunArgs};
use crate::credentials::Account;
use crate::plan::Plan;
use crate::workflow::journal::{self, Resume};

/// Where a run's instances come from. `P` is the saved plan: named by its path until the
/// account is known, then loaded for that account (a plan is tied to one).
pub(super) enum Source<P = Plan> {
    /// IDs and filters, judged against a fresh Describe.
    Fresh(Request),
    /// A plan saved by `plan --save`: exactly its instances, each checked for drift.
    SavedPlan(P),
    /// The journal of an earlier run: its instances, and what was already done to them.
    Journal(Resume),
}

impl<'a> Source<&'a str> {
    /// Read the source offline: the journal replayed, or the selection flags validated.
    pub(super) fn read(ctx: &Ctx, a: &'a RunArgs) -> CmdResult<Self> {
        Ok(match (&a.resume, &a.plan) {
            (Some(path), _) => Source::Journal(journal::replay(path)?),
            (None, Some(path)) => Source::SavedPlan(path.as_str()),
            (None, None) => Source::Fresh(ctx.request(&a.select)?),
        })
    }

    /// Tie the source to the account: a journal written for another one is refused, a plan
    /// is loaded for this one (both unless `--allow-other-account`).
    pub(super) fn bind(self, a: &RunArgs, account: &Account) -> CmdResult<Source> {
        Ok(match self {
            Source::Fresh(req) => Source::Fresh(req),
            Source::SavedPlan(path) => {
                let mut plan = Plan::load(path, account, a.allow_other_account)?;
                // A plan's text reaches the table, the report and drift reasons.
                if let Some(key) = super::secret() {
                    plan.mask(key);
                }
                Source::SavedPlan(plan)
            }
            Source::Journal(res) => {
                let differences = res.account.differences(account);
                if !differences.is_empty() && !a.allow_other_account {
                    return Err(Failure::Usage(anyhow!(
                        "journal {} was written for another account: {}; pass --allow-other-account to resume it here",
                        a.resume.as_deref().unwrap_or(Path::new("")).display(),
                        differences.join(", ")
                    )));
                }
                Source::Journal(res)
            }
        })
    }
}

impl Source {
    /// `(release_udisk, force_stop)` for the run: a plan or a journal fixes them, and a flag
    /// may not ask for more than it was made with.
    pub(super) fn effect(&self, flags: &EffectArgs, merged: (bool, bool)) -> CmdResult<(bool, bool)> {
        let (what, release, force) = match self {
            Source::Fresh(_) => return Ok(merged),
            Source::SavedPlan(p) => ("plan", p.release_udisk, p.force_stop),
            Source::Journal(r) => ("journal", r.release_udisk, r.force_stop),
        };
        if (flags.release_udisk && !release) || (flags.force_stop && !force) {
            return Err(Failure::Usage(anyhow!(
                "the {what} was made with release_udisk={release}, force_stop={force}; it cannot be changed on resume"
            )));
        }
        Ok((release, force))
    }
}
