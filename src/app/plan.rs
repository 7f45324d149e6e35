//! `plan`: what `run` would do to each selected instance, shown and optionally saved for
//! `run --plan`. Changes nothing.

use std::path::{Path, PathBuf};

use anyhow::anyhow;

use super::terminal::{interrupt_token, interruptible, json, print};
use super::{CmdResult, Ctx, Exit};
use crate::cli::{EffectArgs, SelectArgs};
use crate::output::{self, OutputFormat};
use crate::pathset;
use crate::plan::Plan;

impl Ctx {
    pub(super) async fn plan(&self, a: &SelectArgs, e: &EffectArgs, save: Option<&Path>) -> CmdResult<Exit> {
        let req = self.request(a)?;
        self.check_run_section()?;
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
        let plan = Plan::build(cands, &account, release, force);
        if let Some(path) = save {
            pathset::write_file(path, json(&plan).as_bytes())
                .map_err(|e| anyhow!("cannot write plan {}: {e}", path.display()))?;
            tracing::info!("plan saved to {}", path.display());
        }
        match self.output() {
            OutputFormat::Json => print(&json(&plan)),
            OutputFormat::Table => print(&output::plan_table(&plan)),
        }
        Ok(Exit::Ok)
    }
}
