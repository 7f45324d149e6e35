//! The journal: an append-only JSON-lines record of every decision and every call result,
//! flushed before and after each mutating call, from which `run --resume` rebuilds where each
//! instance stood after a crash or kill.
//!
//! Resume rebuilds memory with the same [`after_call`] the run used. A call whose intent was
//! written but whose result was not counts as [`Effect::Unsure`]: it may have reached the API,
//! so an accepted Terminate is never repeated blindly.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::machine::{Call, Effect, Memory, after_call};
use super::outcome::Outcome;

/// Version of the journal format.
pub const JOURNAL_VERSION: u32 = 1;

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
    #[error("journal {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("journal {path}, line {line}: {detail}")]
    Malformed { path: String, line: usize, detail: String },
    #[error("journal {path} has no start line: nothing to resume")]
    NoStart { path: String },
}

/// An open journal.
pub struct Journal {
    path: PathBuf,
    file: File,
    /// Lines left before writes fail, for crash tests (`None` = unlimited).
    budget: Option<usize>,
}

impl Journal {
    /// Open for appending (creating it if needed).
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| JournalError::Io {
                path: path.display().to_string(),
                source,
            })?;
        Ok(Journal {
            path: path.to_path_buf(),
            file,
            budget: None,
        })
    }

    /// Make every write after the first `lines` fail, as if the process had died there: the
    /// crash-and-resume tests cut a run's journal at every line this way.
    #[must_use]
    pub fn fail_after(mut self, lines: usize) -> Journal {
        self.budget = Some(lines);
        self
    }

    /// Append one entry and flush it to the OS (it survives a kill of this process).
    pub fn write(&mut self, entry: &Entry) -> Result<(), JournalError> {
        if let Some(left) = self.budget.as_mut() {
            if *left == 0 {
                let source = std::io::Error::other("simulated crash");
                return Err(JournalError::Io {
                    path: self.path.display().to_string(),
                    source,
                });
            }
            *left -= 1;
        }
        let mut line = serde_json::to_vec(entry).expect("journal entries serialize");
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|()| self.file.flush())
            .map_err(|source| JournalError::Io {
                path: self.path.display().to_string(),
                source,
            })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What a journal says about a run that did not finish.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resume {
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
/// line anywhere else is an error.
pub fn replay(path: &Path) -> Result<Resume, JournalError> {
    let p = path.display().to_string();
    let file = File::open(path).map_err(|source| JournalError::Io {
        path: p.clone(),
        source,
    })?;
    let lines: Vec<String> = BufReader::new(file)
        .lines()
        .collect::<Result<_, _>>()
        .map_err(|source| JournalError::Io {
            path: p.clone(),
            source,
        })?;
    let mut resume: Option<Resume> = None;
    let mut pending: BTreeMap<String, Call> = BTreeMap::new();
    let last = lines.len();
    for (n, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let entry: Entry = match serde_json::from_str(line) {
            Ok(e) => e,
            Err(_) if n + 1 == last => break,
            Err(e) => {
                return Err(JournalError::Malformed {
                    path: p,
                    line: n + 1,
                    detail: e.to_string(),
                });
            }
        };
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
                    r.ids = ids;
                    r.release_udisk = release_udisk;
                    r.force_stop = force_stop;
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
            ids: vec!["a".into(), "b".into()],
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
                    id: "a".into(),
                    call: Call::Stop,
                    region: "r".into(),
                    zone: "z".into(),
                },
                Entry::Result {
                    id: "a".into(),
                    call: Call::Stop,
                    effect: Effect::Accepted,
                    error: None,
                },
                Entry::Call {
                    id: "a".into(),
                    call: Call::Terminate,
                    region: "r".into(),
                    zone: "z".into(),
                },
                Entry::Result {
                    id: "a".into(),
                    call: Call::Terminate,
                    effect: Effect::Accepted,
                    error: None,
                },
                Entry::Call {
                    id: "b".into(),
                    call: Call::Terminate,
                    region: "r".into(),
                    zone: "z".into(),
                },
            ],
        );
        let r = replay(&path).unwrap();
        assert_eq!(r.ids, vec!["a", "b"]);
        assert!(r.release_udisk);
        assert_eq!(r.memory["a"].phase, Phase::TerminateSent);
        assert_eq!(r.memory["b"].phase, Phase::TerminateUnsure);
        assert_eq!(r.calls["a"], 2);
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
}
