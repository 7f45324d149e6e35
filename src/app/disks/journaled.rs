//! `disks delete --journal` and `--resume`: the disk journal with the rules of `run`'s (one
//! file per run, a non-empty file refused without `--resume`, links and odd files refused,
//! the account and the selection checked), and a resumed deletion's selection: exactly the
//! journal's disks, each looked at afresh, the protections applied again.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::anyhow;

use super::select::{DiskCandidate, DiskRequest};
use crate::api::DiskRow;
use crate::app::{CmdResult, Failure};
use crate::cli::{DiskDeleteArgs, DiskSelectArgs};
use crate::credentials::Account;
use crate::pathset;
use crate::selection::Verdict;
use crate::workflow::journal::{self, Journal, JournalKind, Resume};

/// The journal file and its flag: the one resumed, or a new one that holds no run yet.
pub(super) fn path(a: &DiskDeleteArgs) -> CmdResult<Option<(&'static str, PathBuf)>> {
    let (flag, path) = match (&a.resume, &a.journal) {
        (Some(p), _) => ("--resume", p.clone()),
        (None, Some(p)) => ("--journal", p.clone()),
        (None, None) => return Ok(None),
    };
    pathset::writable(flag, &path)?;
    if a.resume.is_none() && std::fs::metadata(&path).is_ok_and(|m| m.len() > 0) {
        // One journal per run: a second run appended would make `--resume` ambiguous.
        return Err(Failure::Usage(anyhow!(
            "journal {} already holds a run; resume it with --resume, or choose a new file",
            path.display()
        )));
    }
    Ok(Some((flag, path)))
}

/// A disk journal read back, offline: an instance journal, a damaged one or one whose
/// checksum does not match is refused (exit 2) before the lock and the API.
pub(super) fn read(path: &Path, select: &DiskSelectArgs) -> CmdResult<Resume> {
    let narrowed = !(select.ids.is_empty()
        && select.names.is_empty()
        && select.region.is_none()
        && select.zone.is_none()
        && select.min_size.is_none()
        && !select.detached
        && select.detached_for.is_none()
        && !select.all_detached);
    if narrowed {
        return Err(Failure::Usage(anyhow!(
            "--resume fixes the selection; IDs and filters cannot be combined with it (exclusions and protections can)"
        )));
    }
    Ok(journal::replay_disks(path)?)
}

/// A journal written for another account is refused: its disks are that account's.
pub(super) fn bind(resume: &Resume, account: &Account, path: &Path) -> CmdResult<()> {
    let differences = resume.account.differences(account);
    if differences.is_empty() {
        Ok(())
    } else {
        Err(Failure::Usage(anyhow!(
            "journal {} was written for another account: {}",
            path.display(),
            differences.join(", ")
        )))
    }
}

/// A resumed deletion's candidates: every journaled disk, with its row if the listing shows
/// it. A disk not listed is still handed to the deletion (its journaled Delete is then
/// confirmed, or it was already gone); only the protections skip one here. Whether a disk is
/// free is judged by the fresh look right before any Delete, not by this listing.
pub(super) fn candidates(
    ids: &[String],
    rows: &[DiskRow],
    req: &DiskRequest,
    own_instances: &HashSet<String>,
) -> Vec<DiskCandidate> {
    ids.iter()
        .map(|id| {
            let row = rows.iter().find(|r| &r.disk_id == id).cloned();
            let stub = DiskRow {
                disk_id: id.clone(),
                ..DiskRow::default()
            };
            let verdict = match req.refuse(row.as_ref().unwrap_or(&stub), own_instances) {
                Some(reason) => Verdict::Skip { reason },
                None => Verdict::Act,
            };
            DiskCandidate {
                id: id.clone(),
                row: Some(row.unwrap_or(stub)),
                verdict,
            }
        })
        .collect()
}

/// Open the journal and write its start line, synced, before any Delete: a journal that
/// cannot be written stops the command here, with nothing changed (exit 2). A resume repeats
/// the journal's selection; a new run's is the disks it deletes.
pub(super) fn begin(path: &Path, account: &Account, resume: Option<&Resume>, acting: &[DiskRow]) -> CmdResult<Journal> {
    let start = journal::Entry::Start {
        version: journal::JOURNAL_VERSION,
        kind: JournalKind::Disk,
        ids: resume.map_or_else(|| acting.iter().map(|r| r.disk_id.clone()).collect(), |r| r.ids.clone()),
        release_udisk: false,
        force_stop: false,
        resumed: resume.is_some(),
    };
    Journal::begin(path, account, &start).map_err(|e| Failure::Usage(anyhow!("{e} (nothing was changed)")))
}
