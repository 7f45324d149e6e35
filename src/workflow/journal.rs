//! The journal: an append-only JSON-lines record of every decision and every call result,
//! flushed before and after each mutating call, from which `run --resume` rebuilds where each
//! instance stood after a crash or kill.
//!
//! Resume rebuilds memory with the same [`after_call`] the run used. A call whose intent was
//! written but whose result was not counts as [`Effect::Unsure`]: it may have reached the API,
//! so an accepted Terminate is never repeated blindly.
//!
//! Durability: the start line and every `call` line are written *and synced to disk*
//! (`fdatasync`) before the call is sent, so even a power loss cannot lose the record of a
//! call that may have reached the API. Other lines are flushed to the OS only: losing one
//! costs a repeated look, never a repeated call.
//!
//! Trust: a journal decides what a resumed run tears down, so its start line carries the
//! account it was made for (endpoint, project, public-key fingerprint) and a SHA-1 checksum
//! over the selection; [`replay`] checks both, and checks the IDs like the command line does.
//! A torn last line (a crash mid-write) is repaired when the journal is reopened.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::machine::{Call, Effect, Memory, after_call};
use super::outcome::Outcome;
use crate::credentials::{Account, sha1_hex};
use crate::selection::{IdSource, check_ids};
use crate::textfile;

/// Version of the journal format (2: the start line carries `account` and `checksum`).
pub const JOURNAL_VERSION: u32 = 2;

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Entry {
    /// The selection and the options that change what happens to it.
    Start {
        version: u32,
        ids: Vec<String>,
        release_udisk: bool,
        force_stop: bool,
        resumed: bool,
    },
    /// A decision taken on a fresh observation.
    Decision {
        id: String,
        state: Option<String>,
        phase: super::machine::Phase,
        decision: String,
    },
    /// About to send a mutating call (written and flushed before sending).
    Call {
        id: String,
        call: Call,
        region: String,
        zone: String,
    },
    /// The answer to that call (written and flushed on receipt).
    Result {
        id: String,
        call: Call,
        effect: Effect,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// The instance's final outcome in this run.
    Outcome { id: String, outcome: Outcome },
}

/// Why a journal could not be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    // `error`, not `source`: the message already says it, and a chained source would print
    // the OS error twice.
    #[error("journal {path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("journal {path}, line {line}: {detail}")]
    Malformed { path: String, line: usize, detail: String },
    #[error("journal {path} has no start line: nothing to resume")]
    NoStart { path: String },
    #[error("journal {path}: {detail}")]
    Unreadable { path: String, detail: String },
}

/// An open journal.
pub struct Journal {
    path: PathBuf,
    file: File,
    /// Lines left before writes fail, for crash tests (`None` = unlimited).
    budget: Option<usize>,
    /// Stamped on the start line.
    account: Account,
    /// This run's start line is written (by [`Journal::begin`]).
    started: bool,
    /// Lines synced to disk so far.
    synced: usize,
}

impl Journal {
    /// Open for appending (creating it if needed). A torn last line left by a crash is
    /// repaired first, with a warning, so the next line does not get glued onto it.
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        let io = |source| JournalError::Io {
            path: path.display().to_string(),
            error: source,
        };
        if path.is_dir() {
            return Err(io(std::io::Error::other("is a directory")));
        }
        let created = !path.exists();
        let file = OpenOptions::new().create(true).append(true).open(path).map_err(io)?;
        if created {
            // A new file's name lives in its directory: sync that too, or a power loss could
            // lose the whole journal along with the synced lines in it.
            #[cfg(unix)]
            if let Some(dir) = path
                .parent()
                .map(|d| if d.as_os_str().is_empty() { Path::new(".") } else { d })
            {
                File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
            }
        }
        let mut journal = Journal {
            path: path.to_path_buf(),
            file,
            budget: None,
            account: Account::default(),
            started: false,
            synced: 0,
        };
        journal.repair()?;
        Ok(journal)
    }

    /// Open, and write and sync this run's start line before anything is sent: a journal that
    /// cannot be written stops the run here, with nothing changed. The runner's own start
    /// line is then not written again.
    pub fn begin(path: &Path, account: &Account, start: &Entry) -> Result<Journal, JournalError> {
        let mut journal = Journal::open(path)?;
        journal.account = account.clone();
        journal.write(start)?;
        journal.started = matches!(start, Entry::Start { .. });
        Ok(journal)
    }

    /// Cut a torn last line (or end a complete one that lost its newline).
    fn repair(&mut self) -> Result<(), JournalError> {
        let io = |source| JournalError::Io {
            path: self.path.display().to_string(),
            error: source,
        };
        // Only a regular file can hold a torn line (and reading a device could never end).
        if !std::fs::metadata(&self.path).is_ok_and(|m| m.is_file()) {
            return Ok(());
        }
        let bytes = match textfile::read_bytes(&self.path, textfile::JOURNAL_FILE) {
            Ok(b) => b,
            Err(textfile::TextFileError::Io(e)) => return Err(io(e)),
            Err(e) => {
                return Err(JournalError::Unreadable {
                    path: self.path.display().to_string(),
                    detail: e.to_string(),
                });
            }
        };
        if bytes.last().is_none_or(|b| *b == b'\n') {
            return Ok(());
        }
        let cut = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if serde_json::from_slice::<Entry>(&bytes[cut..]).is_ok() {
            self.file
                .write_all(b"\n")
                .and_then(|()| self.file.sync_data())
                .map_err(io)?;
        } else {
            self.file
                .set_len(cut as u64)
                .and_then(|()| self.file.sync_data())
                .map_err(io)?;
            tracing::warn!(
                "journal {}: removed a torn last line ({} bytes) left by an interrupted write",
                self.path.display(),
                bytes.len() - cut
            );
        }
        Ok(())
    }

    /// Make every write after the first `lines` fail, as if the process had died there: the
    /// crash-and-resume tests cut a run's journal at every line this way.
    #[must_use]
    pub fn fail_after(mut self, lines: usize) -> Journal {
        self.budget = Some(lines);
        self
    }

    /// Append one entry and flush it to the OS (it survives a kill of this process); the
    /// start line and call intents are also synced to disk (they survive a power loss).
    pub fn write(&mut self, entry: &Entry) -> Result<(), JournalError> {
        if self.started && matches!(entry, Entry::Start { .. }) {
            return Ok(());
        }
        if let Some(left) = self.budget.as_mut() {
            if *left == 0 {
                let source = std::io::Error::other("simulated crash");
                return Err(JournalError::Io {
                    path: self.path.display().to_string(),
                    error: source,
                });
            }
            *left -= 1;
        }
        let mut line = match entry {
            Entry::Start { .. } => start_line(entry, &self.account),
            _ => serde_json::to_vec(entry).expect("journal entries serialize"),
        };
        line.push(b'\n');
        let durable = matches!(entry, Entry::Start { .. } | Entry::Call { .. });
        self.file
            .write_all(&line)
            .and_then(|()| self.file.flush())
            .and_then(|()| if durable { self.file.sync_data() } else { Ok(()) })
            .map_err(|source| JournalError::Io {
                path: self.path.display().to_string(),
                error: source,
            })?;
        self.synced += usize::from(durable);
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A start line as written: the entry, the account, and a checksum over both.
fn start_line(entry: &Entry, account: &Account) -> Vec<u8> {
    let mut value = stamped(entry, account);
    let sum = sha1_hex(&serde_json::to_vec(&value).expect("serializes"));
    value.insert("checksum".into(), sum.into());
    serde_json::to_vec(&value).expect("serializes")
}

/// The start entry with its account, as the checksum covers it.
fn stamped(entry: &Entry, account: &Account) -> serde_json::Map<String, serde_json::Value> {
    let serde_json::Value::Object(mut map) = serde_json::to_value(entry).expect("serializes") else {
        unreachable!("a tagged enum serializes to an object");
    };
    map.insert("account".into(), serde_json::to_value(account).expect("serializes"));
    map
}

/// The parts of a start line outside [`Entry`].
#[derive(Deserialize)]
struct Stamp {
    account: Option<Account>,
    checksum: Option<String>,
}

/// What a journal says about a run that did not finish.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resume {
    /// The account the journal was written for.
    pub account: Account,
    pub ids: Vec<String>,
    pub release_udisk: bool,
    pub force_stop: bool,
    /// Rebuilt memory per instance.
    pub memory: BTreeMap<String, Memory>,
    /// Calls already sent per instance.
    pub calls: BTreeMap<String, u32>,
    /// The last outcome written per instance.
    pub outcomes: BTreeMap<String, Outcome>,
}

/// Read a journal back. A torn last line (the process died mid-write) is ignored; a malformed
/// line anywhere else is an error, and so is a start line whose checksum does not match or
/// whose IDs the command line would refuse.
#[expect(
    clippy::too_many_lines,
    reason = "one pass over the lines, each check beside the line it reads; to be split with the workflow (issue 9, item 2)"
)]
pub fn replay(path: &Path) -> Result<Resume, JournalError> {
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
    let mut resume: Option<Resume> = None;
    let mut pending: BTreeMap<String, Call> = BTreeMap::new();
    let last = lines
        .iter()
        .rposition(|l| !l.trim_ascii().is_empty())
        .map_or(0, |i| i + 1);
    for (n, line) in lines.iter().enumerate() {
        if line.trim_ascii().is_empty() {
            continue;
        }
        let malformed = |detail: String| JournalError::Malformed {
            path: p.clone(),
            line: n + 1,
            detail,
        };
        let entry: Entry = match serde_json::from_slice(line) {
            Ok(e) => e,
            Err(_) if n + 1 == last && bytes.last() != Some(&b'\n') => break,
            Err(e) => return Err(malformed(textfile::excerpt(&e.to_string()))),
        };
        if let Entry::Start { .. } = &entry {
            let stamp: Stamp = serde_json::from_slice(line).map_err(|e| malformed(e.to_string()))?;
            let account = stamp.account.unwrap_or_default();
            if stamp.checksum.as_deref()
                != Some(sha1_hex(&serde_json::to_vec(&stamped(&entry, &account)).expect("serializes")).as_str())
            {
                return Err(malformed(
                    "the start line's checksum does not match: the selection was not written by `run` (edited or damaged); start a new run instead".to_owned(),
                ));
            }
            if let Some(r) = &resume
                && r.account != account
            {
                return Err(malformed("a later start line names another account".to_owned()));
            }
            resume.get_or_insert_with(|| Resume {
                account,
                ..Resume::default()
            });
        }
        match entry {
            Entry::Start {
                version,
                ids,
                release_udisk,
                force_stop,
                ..
            } => {
                if version != JOURNAL_VERSION {
                    return Err(JournalError::Malformed {
                        path: p,
                        line: n + 1,
                        detail: format!("journal version {version}, this build reads {JOURNAL_VERSION}"),
                    });
                }
                // A resumed run writes its own start line with the same selection.
                let r = resume.get_or_insert_with(Resume::default);
                if r.ids.is_empty() {
                    // The IDs decide what gets torn down: the same checks as the command line.
                    let sources: Vec<IdSource> = ids
                        .iter()
                        .map(|id| IdSource {
                            id: id.clone(),
                            at: format!(" (journal line {})", n + 1),
                        })
                        .collect();
                    r.ids = check_ids(&sources).map_err(|e| JournalError::Malformed {
                        path: p.clone(),
                        line: n + 1,
                        detail: e.to_string(),
                    })?;
                    r.release_udisk = release_udisk;
                    r.force_stop = force_stop;
                } else if (&r.ids, r.release_udisk, r.force_stop) != (&ids, release_udisk, force_stop) {
                    return Err(JournalError::Malformed {
                        path: p,
                        line: n + 1,
                        detail: "a later start line changes the selection or its options".to_owned(),
                    });
                }
                // Calls left pending by an earlier process stay unsure.
                for (id, call) in std::mem::take(&mut pending) {
                    let m = r.memory.entry(id).or_default();
                    *m = after_call(*m, call, Effect::Unsure);
                }
            }
            Entry::Call { id, call, .. } => {
                let r = resume
                    .as_mut()
                    .ok_or_else(|| JournalError::NoStart { path: p.clone() })?;
                *r.calls.entry(id.clone()).or_default() += 1;
                pending.insert(id, call);
            }
            Entry::Result { id, call, effect, .. } => {
                let r = resume
                    .as_mut()
                    .ok_or_else(|| JournalError::NoStart { path: p.clone() })?;
                pending.remove(&id);
                let m = r.memory.entry(id).or_default();
                *m = after_call(*m, call, effect);
            }
            Entry::Outcome { id, outcome } => {
                let r = resume
                    .as_mut()
                    .ok_or_else(|| JournalError::NoStart { path: p.clone() })?;
                r.outcomes.insert(id, outcome);
            }
            Entry::Decision { .. } => {}
        }
    }
    let mut r = resume.ok_or(JournalError::NoStart { path: p })?;
    for (id, call) in pending {
        let m = r.memory.entry(id).or_default();
        *m = after_call(*m, call, Effect::Unsure);
    }
    // Memory rebuilt from a journal has been seen (the run described it before acting).
    for m in r.memory.values_mut() {
        m.seen = true;
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::super::machine::Phase;
    use super::*;

    fn write_all(path: &Path, entries: &[Entry]) {
        let mut j = Journal::open(path).unwrap();
        for e in entries {
            j.write(e).unwrap();
        }
    }

    fn start() -> Entry {
        Entry::Start {
            version: JOURNAL_VERSION,
            ids: vec!["u-a".into(), "u-b".into()],
            release_udisk: true,
            force_stop: false,
            resumed: false,
        }
    }

    #[test]
    fn replay_rebuilds_phases_and_treats_pending_calls_as_unsure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        write_all(
            &path,
            &[
                start(),
                Entry::Call {
                    id: "u-a".into(),
                    call: Call::Stop,
                    region: "r".into(),
                    zone: "z".into(),
                },
                Entry::Result {
                    id: "u-a".into(),
                    call: Call::Stop,
                    effect: Effect::Accepted,
                    error: None,
                },
                Entry::Call {
                    id: "u-a".into(),
                    call: Call::Terminate,
                    region: "r".into(),
                    zone: "z".into(),
                },
                Entry::Result {
                    id: "u-a".into(),
                    call: Call::Terminate,
                    effect: Effect::Accepted,
                    error: None,
                },
                Entry::Call {
                    id: "u-b".into(),
                    call: Call::Terminate,
                    region: "r".into(),
                    zone: "z".into(),
                },
            ],
        );
        let r = replay(&path).unwrap();
        assert_eq!(r.ids, vec!["u-a", "u-b"]);
        assert!(r.release_udisk);
        assert_eq!(r.memory["u-a"].phase, Phase::TerminateSent);
        assert_eq!(r.memory["u-b"].phase, Phase::TerminateUnsure);
        assert_eq!(r.calls["u-a"], 2);
    }

    #[test]
    fn torn_last_line_is_ignored_but_corruption_inside_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        write_all(&path, &[start()]);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"event\":\"ca")
            .unwrap();
        assert_eq!(replay(&path).unwrap().ids.len(), 2);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"\n")
            .unwrap();
        write_all(&path, &[start()]);
        assert!(matches!(replay(&path), Err(JournalError::Malformed { line: 2, .. })));
    }

    #[test]
    fn empty_journal_has_nothing_to_resume() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        std::fs::write(&path, "").unwrap();
        assert!(matches!(replay(&path), Err(JournalError::NoStart { .. })));
    }

    fn call(id: &str) -> Entry {
        Entry::Call {
            id: id.into(),
            call: Call::Stop,
            region: "r".into(),
            zone: "z".into(),
        }
    }

    #[test]
    fn a_torn_tail_is_repaired_so_a_second_resume_works() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        write_all(&path, &[start(), call("u-a")]);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        // Half a line, ending inside a multi-byte character.
        f.write_all("{\"event\":\"result\",\"error\":\"→".as_bytes().split_last().unwrap().1)
            .unwrap();
        drop(f);
        assert_eq!(replay(&path).unwrap().calls["u-a"], 1);
        // The resume appends its own lines: they must not be glued onto the fragment.
        write_all(&path, &[start(), call("u-b")]);
        let r = replay(&path).unwrap();
        assert_eq!((r.calls["u-a"], r.calls["u-b"]), (1, 1));
        write_all(&path, &[call("u-b")]);
        assert_eq!(replay(&path).unwrap().calls["u-b"], 2);
        // A complete last line that only lost its newline is kept.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&serde_json::to_vec(&call("u-a")).unwrap()).unwrap();
        drop(f);
        write_all(&path, &[call("u-a")]);
        assert_eq!(replay(&path).unwrap().calls["u-a"], 3);
    }

    #[test]
    fn an_edited_start_line_or_bad_ids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        write_all(&path, &[start()]);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("\"u-b\"", "\"u-b\",\"u-c\"")).unwrap();
        let err = replay(&path).unwrap_err().to_string();
        assert!(err.contains("checksum"), "{err}");
        for ids in [vec!["u-a", "u-a"], vec!["u-a", "bad;id"], vec![""]] {
            std::fs::remove_file(&path).unwrap();
            write_all(
                &path,
                &[Entry::Start {
                    version: JOURNAL_VERSION,
                    ids: ids.iter().map(|s| (*s).to_owned()).collect(),
                    release_udisk: false,
                    force_stop: false,
                    resumed: false,
                }],
            );
            let err = replay(&path).unwrap_err().to_string();
            assert!(err.contains("journal line 1"), "{ids:?}: {err}");
        }
    }

    #[test]
    fn the_account_is_recorded_and_intents_are_synced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let account = Account {
            endpoint: "https://api.compshare.cn".into(),
            project_id: "p".into(),
            key_fingerprint: "sha1:0123".into(),
        };
        let mut j = Journal::begin(&path, &account, &start()).unwrap();
        // The runner's own start line is not written twice.
        j.write(&start()).unwrap();
        j.write(&call("u-a")).unwrap();
        j.write(&Entry::Result {
            id: "u-a".into(),
            call: Call::Stop,
            effect: Effect::Accepted,
            error: None,
        })
        .unwrap();
        // The start line and the call intent reached the disk; the result only the OS.
        assert_eq!(j.synced, 2);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3);
        assert_eq!(replay(&path).unwrap().account, account);
    }
}
