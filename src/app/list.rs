//! `list`: the instances the filters select, as a table or JSON. Changes nothing.

use super::terminal::{interrupt_token, interruptible, json, print};
use super::{CmdResult, Ctx, Exit, now_unix};
use crate::api::Instance;
use crate::cli::SelectArgs;
use crate::output::{self, OutputFormat};
use crate::selection::Verdict;

impl Ctx {
    pub(super) async fn list(&self, a: &SelectArgs) -> CmdResult<Exit> {
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
}
