//! `man` and `completions`: the pages and shell completions generated from the clap
//! definitions, written out.

use std::path::Path;

use anyhow::Context;

use super::terminal::print;
use super::{CmdResult, Exit};
use crate::cli::Cli;

/// `completions`: the script for `shell` on stdout.
pub(super) fn completions(shell: clap_complete::Shell) -> Exit {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(shell, &mut cmd, "compshare-teardown", &mut std::io::stdout());
    Exit::Ok
}

/// `man`: the root page on stdout, or every page into `dir`.
pub(super) fn man(dir: Option<&Path>) -> CmdResult<Exit> {
    let pages = crate::reference::man_pages();
    match dir {
        None => {
            let root = pages
                .first()
                .map(|(_, text)| String::from_utf8_lossy(text).into_owned());
            print(&root.unwrap_or_default());
        }
        Some(dir) => {
            for (name, text) in &pages {
                let path = dir.join(name);
                std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
            }
        }
    }
    Ok(Exit::Ok)
}
