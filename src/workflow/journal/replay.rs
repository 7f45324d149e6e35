//! Reading a journal back into a [`Resume`]: one pass over the lines, the start line checked
//! (checksum, version, account, IDs) before anything it says is believed, calls without a
//! written result counted as unsure. A line that could not have come from the run the start
//! line describes (a result without its call, any line for an ID outside the selection) makes
//! the journal damaged: it is refused, never half believed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;

use super::{DecisionField, Entry, JOURNAL_VERSION, JournalError, JournalKind, OLDEST_READ_VERSION, stamped};
use crate::credentials::{Account, sha1_hex_json};
use crate::selection::{IdSource, check_ids};
use crate::textfile;
use crate::workflow::machine::{Call, Effect, Memory, after_call};

/// What a journal says about a run that did not finish.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resume {
    /// What the selection is made of (instances or data disks).
    pub kind: JournalKind,
    /// The account the journal was written for.
    pub account: Account,
    pub ids: Vec<String>,
    pub release_udisk: bool,
    pub force_stop: bool,
    /// Rebuilt memory per instance.
    pub memory: BTreeMap<String, Memory>,
    /// Calls the earlier processes sent, per instance (or disk).
    pub calls: BTreeMap<String, u32>,
    /// The same calls by action, for the report's `calls_before_resume`.
    pub calls_by_action: BTreeMap<String, u32>,
    /// Disk journals: what became of each disk's last Delete (absent: none sent, or refused).
    pub disks: BTreeMap<String, DiskJournaled>,
}

/// A disk's Delete, as its journal tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskJournaled {
    /// Accepted: the disk is only confirmed gone, never deleted again.
    Accepted,
    /// Written but not answered (or answered ambiguously): it may have reached the API, so a
    /// fresh look comes first, and a Delete is sent again only if the disk is still listed
    /// and free.
    Unsure,
}

/// The error text of a call the batch journaled but never sent (its intent was written,
/// then the run halted or the look before it went stale): not a call of that process.
const NOT_SENT: &str = "not sent";

/// The parts of a start line outside [`Entry`].
#[derive(Deserialize)]
struct Stamp {
    account: Option<Account>,
    checksum: Option<String>,
}

/// Read an instance journal back (`run --resume`). A torn last line (the process died
/// mid-write) is ignored; a malformed line anywhere else is an error, and so is a start line
/// whose checksum does not match or whose IDs the command line would refuse, and a disk
/// journal.
pub fn replay(path: &Path) -> Result<Resume, JournalError> {
    replay_kind(path, JournalKind::Instance)
}

/// Read a disk journal back (`disks delete --resume`), with the same rules as [`replay`]; an
/// instance journal is refused.
pub fn replay_disks(path: &Path) -> Result<Resume, JournalError> {
    replay_kind(path, JournalKind::Disk)
}

fn replay_kind(path: &Path, want: JournalKind) -> Result<Resume, JournalError> {
    let p = path.display().to_string();
    let bytes = textfile::read_bytes(path, textfile::JOURNAL_FILE).map_err(|e| match e {
        textfile::TextFileError::Io(source) => JournalError::Io {
            path: p.clone(),
            error: source,
        },
        e => JournalError::Unreadable {
            path: p.clone(),
            detail: e.to_string(),
        },
    })?;
    let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    let last = lines
        .iter()
        .rposition(|l| !l.trim_ascii().is_empty())
        .map_or(0, |i| i + 1);
    let mut reader = Reader {
        path: p,
        resume: None,
        version: JOURNAL_VERSION,
        pending: BTreeMap::new(),
        disk_pending: BTreeSet::new(),
        selected: BTreeSet::new(),
    };
    for (n, line) in lines.iter().enumerate() {
        if line.trim_ascii().is_empty() {
            continue;
        }
        let entry: Entry = match serde_json::from_slice(line) {
            Ok(e) => e,
            // Only the very last line may be torn, and only if the file does not end in a
            // newline: a complete line that does not parse was written by someone else.
            Err(_) if n + 1 == last && bytes.last() != Some(&b'\n') => break,
            Err(e) => return Err(reader.malformed(n, textfile::excerpt(&e.to_string()))),
        };
        reader.read(n, line, entry)?;
        // A journal of the other kind is refused at its first start line, before any of its
        // lines is read as this kind's.
        if let Some(found) = reader.resume.as_ref().map(|r| r.kind)
            && found != want
        {
            return Err(JournalError::Kind {
                path: reader.path,
                found,
            });
        }
    }
    reader.finish()
}

/// The pass over the lines: what has been read so far.
struct Reader {
    path: String,
    resume: Option<Resume>,
    /// The version of the last start line read: the format of the lines after it.
    version: u32,
    /// Calls whose intent was written and whose result was not (yet).
    pending: BTreeMap<String, Call>,
    /// Disk Deletes whose intent was written and whose result was not (yet).
    disk_pending: BTreeSet<String>,
    /// The first start line's IDs.
    selected: BTreeSet<String>,
}

impl Reader {
    fn malformed(&self, n: usize, detail: String) -> JournalError {
        JournalError::Malformed {
            path: self.path.clone(),
            line: n + 1,
            detail,
        }
    }

    /// The resume so far; a line before any start line is an error.
    fn resume(&mut self) -> Result<&mut Resume, JournalError> {
        let path = self.path.clone();
        self.resume.as_mut().ok_or(JournalError::NoStart { path })
    }

    /// Line `n` (0-based), whose text is `line`.
    fn read(&mut self, n: usize, line: &[u8], entry: Entry) -> Result<(), JournalError> {
        if let Entry::Call { id, .. }
        | Entry::Result { id, .. }
        | Entry::Outcome { id, .. }
        | Entry::Decision { id, .. }
        | Entry::DiskCall { id, .. }
        | Entry::DiskResult { id, .. } = &entry
        {
            // Only the selection's instances have lines: any other ID was written by someone
            // else, and believing it could end an instance the run never looked at.
            let kind = self.resume()?.kind;
            if !self.selected.contains(id) {
                return Err(self.malformed(n, format!("a line for {id}, which is not in the selection")));
            }
            // A disk's Delete in an instance journal (or a Stop in a disk journal) was not
            // written by the command the start line names.
            let disk_line = matches!(entry, Entry::DiskCall { .. } | Entry::DiskResult { .. });
            let instance_line = matches!(
                entry,
                Entry::Call { .. } | Entry::Result { .. } | Entry::Decision { .. }
            );
            if (disk_line && kind != JournalKind::Disk) || (instance_line && kind != JournalKind::Instance) {
                return Err(self.malformed(n, format!("a line for {id} that {} does not hold", kind.noun())));
            }
        }
        match entry {
            Entry::Start { .. } => self.start(n, line, &entry)?,
            Entry::Call { id, call, .. } => {
                let r = self.resume()?;
                *r.calls.entry(id.clone()).or_default() += 1;
                *r.calls_by_action.entry(call.action().to_owned()).or_default() += 1;
                self.pending.insert(id, call);
            }
            Entry::DiskCall { id, .. } => {
                let r = self.resume()?;
                *r.calls.entry(id.clone()).or_default() += 1;
                *r.calls_by_action
                    .entry(crate::api::disk::DELETE_DISK.to_owned())
                    .or_default() += 1;
                self.disk_pending.insert(id);
            }
            Entry::DiskResult { id, effect, .. } => {
                // As for instances: a result is believed only after its own call line.
                if !self.disk_pending.remove(&id) {
                    return Err(self.malformed(
                        n,
                        format!(
                            "a {} result for {id} without its call line before it",
                            crate::api::disk::DELETE_DISK
                        ),
                    ));
                }
                let r = self.resume()?;
                match effect {
                    Effect::Accepted => {
                        r.disks.insert(id, DiskJournaled::Accepted);
                    }
                    Effect::Unsure => {
                        r.disks.entry(id).or_insert(DiskJournaled::Unsure);
                    }
                    // Refused: nothing happened, unless an earlier Delete of it did.
                    Effect::NotApplied => {}
                }
            }
            Entry::Result {
                id,
                call,
                effect,
                error,
            } => {
                // A result is written only after its call line, by the same process: one with
                // no call pending would make an instance "terminate accepted" with no
                // Terminate ever sent.
                if self.pending.get(&id) != Some(&call) {
                    return Err(self.malformed(
                        n,
                        format!("a {} result for {id} without its call line before it", call.action()),
                    ));
                }
                let r = self.resume()?;
                if effect == Effect::NotApplied && error.as_deref().is_some_and(|e| e.starts_with(NOT_SENT)) {
                    // Journaled, then never sent: the earlier process made no such call.
                    uncount(&mut r.calls, &id);
                    uncount(&mut r.calls_by_action, call.action());
                }
                let m = r.memory.entry(id.clone()).or_default();
                *m = after_call(*m, call, effect);
                self.pending.remove(&id);
            }
            // For people and audits: a resumed run decides each outcome afresh.
            Entry::Outcome { .. } => {
                self.resume()?;
            }
            // Only version 2 wrote a decision as text: under a later start line, text is a
            // line this build did not write.
            Entry::Decision {
                decision: DecisionField::Text(_),
                ..
            } if self.version > 2 => {
                return Err(self.malformed(
                    n,
                    format!(
                        "a decision written as text, which only version 2 wrote, under a version {} start line",
                        self.version
                    ),
                ));
            }
            Entry::Decision { .. } => {}
        }
        Ok(())
    }

    /// A start line: the first one sets the selection, a resumed run's must repeat it.
    fn start(&mut self, n: usize, line: &[u8], entry: &Entry) -> Result<(), JournalError> {
        let Entry::Start {
            version,
            kind,
            ids,
            release_udisk,
            force_stop,
            ..
        } = entry
        else {
            unreachable!("called on start lines only");
        };
        let stamp: Stamp = serde_json::from_slice(line).map_err(|e| self.malformed(n, e.to_string()))?;
        let account = stamp.account.unwrap_or_default();
        // The checksum covers the selection and the account: a journal edited by hand (or by
        // anyone else) would decide what gets torn down, so it is refused.
        let sum = sha1_hex_json(&stamped(entry, &account));
        if stamp.checksum.as_deref() != Some(sum.as_str()) {
            return Err(self.malformed(
                n,
                "the start line's checksum does not match: the selection was not written by `run` (edited or damaged); start a new run instead".to_owned(),
            ));
        }
        if !(OLDEST_READ_VERSION..=JOURNAL_VERSION).contains(version) {
            return Err(self.malformed(
                n,
                format!(
                    "journal version {version}, this build reads versions {OLDEST_READ_VERSION} to {JOURNAL_VERSION}"
                ),
            ));
        }
        self.version = *version;
        if self.resume.as_ref().is_some_and(|r| r.account != account) {
            return Err(self.malformed(n, "a later start line names another account".to_owned()));
        }
        let first = self.resume.is_none();
        if first {
            // The IDs decide what gets torn down: the same checks as the command line.
            let sources: Vec<IdSource> = ids
                .iter()
                .map(|id| IdSource {
                    id: id.clone(),
                    at: format!(" (journal line {})", n + 1),
                })
                .collect();
            let ids = check_ids(&sources).map_err(|e| self.malformed(n, e.to_string()))?;
            self.selected = ids.iter().cloned().collect();
            self.resume = Some(Resume {
                kind: *kind,
                account,
                ids,
                release_udisk: *release_udisk,
                force_stop: *force_stop,
                ..Resume::default()
            });
        } else if self.resume.as_ref().is_some_and(|r| {
            (r.kind, &r.ids, r.release_udisk, r.force_stop) != (*kind, ids, *release_udisk, *force_stop)
        }) {
            return Err(self.malformed(n, "a later start line changes the selection or its options".to_owned()));
        }
        // A resumed run writes its own start line: calls left pending by an earlier process
        // stay unsure.
        self.settle_pending()
    }

    /// Calls without a written result may have reached the API: unsure.
    fn settle_pending(&mut self) -> Result<(), JournalError> {
        let pending = std::mem::take(&mut self.pending);
        let disk_pending = std::mem::take(&mut self.disk_pending);
        let r = self.resume()?;
        for (id, call) in pending {
            let m = r.memory.entry(id).or_default();
            *m = after_call(*m, call, Effect::Unsure);
        }
        for id in disk_pending {
            r.disks.entry(id).or_insert(DiskJournaled::Unsure);
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Resume, JournalError> {
        self.settle_pending()?;
        let mut r = self.resume.take().ok_or(JournalError::NoStart { path: self.path })?;
        // An instance an earlier process sent a call to was seen by it: gone now, someone
        // else deleted it. One that never had a call of ours is, if gone, gone before this
        // run: `already_gone`, as for a fresh run.
        for (id, m) in &mut r.memory {
            m.seen = r.calls.get(id).is_some_and(|&c| c > 0);
        }
        Ok(r)
    }
}

/// One call fewer for `key` (a key at zero is dropped).
fn uncount(counts: &mut BTreeMap<String, u32>, key: &str) {
    if let Some(c) = counts.get_mut(key) {
        *c = c.saturating_sub(1);
        if *c == 0 {
            counts.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Journal;
    use super::*;

    /// A journal holding a start line for `u-a` and `u-b`, then `lines`.
    fn journal_with(lines: &[Entry]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let mut j = Journal::open(&path).unwrap();
        j.write(&Entry::Start {
            version: JOURNAL_VERSION,
            kind: JournalKind::Instance,
            ids: vec!["u-a".into(), "u-b".into()],
            release_udisk: true,
            force_stop: false,
            resumed: false,
        })
        .unwrap();
        for e in lines {
            j.write(e).unwrap();
        }
        (dir, path)
    }

    fn call(id: &str, call: Call) -> Entry {
        Entry::Call {
            id: id.into(),
            call,
            region: "r".into(),
            zone: "z".into(),
        }
    }

    fn result(id: &str, call: Call) -> Entry {
        Entry::Result {
            id: id.into(),
            call,
            effect: Effect::Accepted,
            error: None,
        }
    }

    fn refusal(lines: &[Entry]) -> String {
        let (_dir, path) = journal_with(lines);
        match replay(&path) {
            Err(e @ JournalError::Malformed { .. }) => e.to_string(),
            other => panic!("accepted a damaged journal: {other:?}"),
        }
    }

    #[test]
    fn a_result_without_its_call_is_refused() {
        let e = refusal(&[result("u-a", Call::Terminate)]);
        assert!(
            e.ends_with("line 2: a TerminateCompShareInstance result for u-a without its call line before it"),
            "{e}"
        );
        // The call of another kind, or of another instance, is not its call.
        refusal(&[call("u-a", Call::Stop), result("u-a", Call::Terminate)]);
        refusal(&[call("u-b", Call::Terminate), result("u-a", Call::Terminate)]);
        // Nor is a call whose result was already written.
        refusal(&[
            call("u-a", Call::Terminate),
            result("u-a", Call::Terminate),
            result("u-a", Call::Terminate),
        ]);
        // Its own call line before it: believed.
        let (_dir, path) = journal_with(&[call("u-a", Call::Stop), result("u-a", Call::Stop)]);
        assert_eq!(replay(&path).unwrap().calls["u-a"], 1);
    }

    #[test]
    fn lines_for_ids_outside_the_selection_are_refused() {
        let outcome = Entry::Outcome {
            id: "u-zz".into(),
            outcome: crate::workflow::outcome::Outcome::Skipped { reason: String::new() },
        };
        for line in [call("u-zz", Call::Stop), outcome] {
            let e = refusal(&[call("u-a", Call::Stop), line]);
            assert!(
                e.ends_with("line 3: a line for u-zz, which is not in the selection"),
                "{e}"
            );
        }
    }
}
