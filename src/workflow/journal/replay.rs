//! Reading a journal back into a [`Resume`]: one pass over the lines, the start line checked
//! (checksum, version, account, IDs) before anything it says is believed, calls without a
//! written result counted as unsure.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::{DecisionField, Entry, JOURNAL_VERSION, JournalError, OLDEST_READ_VERSION, stamped};
use crate::credentials::{Account, sha1_hex};
use crate::selection::{IdSource, check_ids};
use crate::textfile;
use crate::workflow::machine::{Call, Effect, Memory, after_call};

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
}

/// The parts of a start line outside [`Entry`].
#[derive(Deserialize)]
struct Stamp {
    account: Option<Account>,
    checksum: Option<String>,
}

/// Read a journal back. A torn last line (the process died mid-write) is ignored; a malformed
/// line anywhere else is an error, and so is a start line whose checksum does not match or
/// whose IDs the command line would refuse.
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
    let last = lines
        .iter()
        .rposition(|l| !l.trim_ascii().is_empty())
        .map_or(0, |i| i + 1);
    let mut reader = Reader {
        path: p,
        resume: None,
        version: JOURNAL_VERSION,
        pending: BTreeMap::new(),
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
        match entry {
            Entry::Start { .. } => self.start(n, line, &entry)?,
            Entry::Call { id, call, .. } => {
                *self.resume()?.calls.entry(id.clone()).or_default() += 1;
                self.pending.insert(id, call);
            }
            Entry::Result { id, call, effect, .. } => {
                let r = self.resume()?;
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
        let sum = sha1_hex(&serde_json::to_vec(&stamped(entry, &account)).expect("serializes"));
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
            self.resume = Some(Resume {
                account,
                ids,
                release_udisk: *release_udisk,
                force_stop: *force_stop,
                ..Resume::default()
            });
        } else if self
            .resume
            .as_ref()
            .is_some_and(|r| (&r.ids, r.release_udisk, r.force_stop) != (ids, *release_udisk, *force_stop))
        {
            return Err(self.malformed(n, "a later start line changes the selection or its options".to_owned()));
        }
        // A resumed run writes its own start line: calls left pending by an earlier process
        // stay unsure.
        self.settle_pending()
    }

    /// Calls without a written result may have reached the API: unsure.
    fn settle_pending(&mut self) -> Result<(), JournalError> {
        let pending = std::mem::take(&mut self.pending);
        let r = self.resume()?;
        for (id, call) in pending {
            let m = r.memory.entry(id).or_default();
            *m = after_call(*m, call, Effect::Unsure);
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Resume, JournalError> {
        self.settle_pending()?;
        let mut r = self.resume.take().ok_or(JournalError::NoStart { path: self.path })?;
        // Memory rebuilt from a journal has been seen (the run described it before acting).
        for m in r.memory.values_mut() {
            m.seen = true;
        }
        Ok(r)
    }
}
