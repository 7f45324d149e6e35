//! The journal: an append-only JSON-lines record of every decision and every call result,
//! flushed before and after each mutating call, from which `run --resume` rebuilds where each
//! instance stood after a crash or kill.
//!
//! Resume ([`replay`]) rebuilds memory with the same `after_call` the run used. A call whose intent was
//! written but whose result was not counts as [`Effect::Unsure`]: it may have reached the API,
//! so an accepted Terminate is never repeated blindly.
//!
//! Durability: the start line and every `call` line are written *and synced to disk*
//! (`fdatasync`) before the call is sent, so even a power loss cannot lose the record of a
//! call that may have reached the API. Other lines are flushed to the OS only: losing one
//! costs a repeated look, never a repeated call. A call line's sync runs on tokio's blocking
//! pool ([`Journal::write_intent`] hands back a [`Synced`] the sender awaits), so a slow disk
//! delays that one call, not every request of the run.
//!
//! Trust: a journal decides what a resumed run tears down, so its start line carries the
//! account it was made for (endpoint, project, public-key fingerprint) and a SHA-1 checksum
//! over the selection; [`replay`] checks both, and checks the IDs like the command line does.
//! A torn last line (a crash mid-write) is repaired when the journal is reopened.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::machine::{Call, Effect};
use super::outcome::Outcome;
use crate::credentials::{Account, sha1_hex_json};
use crate::textfile;

mod decision;
mod replay;

pub use decision::{Decided, DecisionField, Refused};
pub use replay::{DiskJournaled, Resume, replay, replay_disks};

/// Version of the journal format this build writes (2: the start line carries `account` and
/// `checksum`; 3: a decision line's `decision` is a [`Decided`] object, no longer text).
pub const JOURNAL_VERSION: u32 = 3;

/// The oldest version this build still reads: version 2 differs only in the decision text,
/// which resume never used, so a run interrupted before an upgrade can still be resumed (and
/// its unsure Terminates are not forgotten).
pub(crate) const OLDEST_READ_VERSION: u32 = 2;

/// What a journal's selection is made of: which command wrote it, and which resumes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalKind {
    /// Instances, by `run` (the default: journals written before disks had one say nothing).
    #[default]
    Instance,
    /// Data disks, by `disks delete`.
    Disk,
}

impl JournalKind {
    #[expect(
        clippy::trivially_copy_pass_by_ref,
        reason = "serde's skip_serializing_if passes a reference"
    )]
    fn is_instance(&self) -> bool {
        *self == JournalKind::Instance
    }

    /// The command that writes (and resumes) a journal of this kind.
    pub fn command(self) -> &'static str {
        match self {
            JournalKind::Instance => "run",
            JournalKind::Disk => "disks delete",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            JournalKind::Instance => "an instance journal",
            JournalKind::Disk => "a disk journal",
        }
    }
}

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Entry {
    /// The selection and the options that change what happens to it.
    Start {
        version: u32,
        /// Not written for instances, so an instance journal's start line (and the checksum
        /// over it) reads the same as before disks had journals.
        #[serde(default, skip_serializing_if = "JournalKind::is_instance")]
        kind: JournalKind,
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
        decision: DecisionField,
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
    /// About to send `DeleteCompshareDisk` for a data disk (a disk journal's call line;
    /// written and synced before sending).
    DiskCall { id: String, region: String, zone: String },
    /// The answer to that Delete.
    DiskResult {
        id: String,
        effect: Effect,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// The instance's (or disk's) final outcome in this run.
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
    #[error(
        "journal {path} is {}, written by `{}`: resume it with `{} --resume`",
        found.noun(),
        found.command(),
        found.command()
    )]
    Kind { path: String, found: JournalKind },
}

/// Runs on the syncing thread right before each sync (tests slow the disk down with it).
type SyncHook = Arc<dyn Fn() + Send + Sync>;

/// An open journal.
pub struct Journal {
    path: PathBuf,
    file: Arc<File>,
    /// Bytes written so far (the end of the last line).
    written: u64,
    /// Bytes known synced to disk: every line ending at or before it survives a power loss.
    synced: Arc<AtomicU64>,
    sync_hook: Option<SyncHook>,
    /// Lines left before writes fail, for crash tests (`None` = unlimited).
    budget: Option<usize>,
    /// Stamped on the start line.
    account: Account,
    /// This run's start line is written (by [`Journal::begin`]).
    started: bool,
    /// Intents are synced on the writing thread (see [`Journal::sync_in_place`]).
    in_place: bool,
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
        let written = file.metadata().map_err(io)?.len();
        let mut journal = Journal {
            path: path.to_path_buf(),
            file: Arc::new(file),
            written,
            synced: Arc::new(AtomicU64::new(0)),
            sync_hook: None,
            in_place: false,
            budget: None,
            account: Account::default(),
            started: false,
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
        let mut file: &File = &self.file;
        if serde_json::from_slice::<Entry>(&bytes[cut..]).is_ok() {
            file.write_all(b"\n").and_then(|()| file.sync_data()).map_err(io)?;
            self.written += 1;
        } else {
            file.set_len(cut as u64).and_then(|()| file.sync_data()).map_err(io)?;
            self.written = cut as u64;
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

    /// Run `hook` on the syncing thread right before each sync: a test makes the disk slow
    /// (or holds a sync until it has seen the runtime go on) with it.
    #[must_use]
    pub fn before_sync(mut self, hook: impl Fn() + Send + Sync + 'static) -> Journal {
        self.sync_hook = Some(Arc::new(hook));
        self
    }

    /// Sync intents on the writing thread, as [`Journal::write`] does: the seed sweep runs a
    /// whole world on one thread in virtual time, where a sync finishing on another thread
    /// would order the events of one instant by the OS scheduler, and a seed would no longer
    /// replay the same run.
    #[must_use]
    pub fn sync_in_place(mut self) -> Journal {
        self.in_place = true;
        self
    }

    /// How many bytes of the file are known synced to disk, shared: a test checks with it
    /// that a call's intent was synced before the call reached the API.
    pub fn synced_bytes(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.synced)
    }

    /// Append one entry and flush it to the OS (it survives a kill of this process); the
    /// start line and call intents are also synced to disk (they survive a power loss)
    /// before this returns. The sync runs on this thread: for the start line before a run,
    /// and for tests; a running batch writes its intents with [`Journal::write_intent`].
    pub fn write(&mut self, entry: &Entry) -> Result<(), JournalError> {
        if !self.append(entry)? {
            return Ok(());
        }
        if durable(entry) {
            let sync = self.sync_job();
            sync().map_err(|e| self.io_error(e))?;
        }
        Ok(())
    }

    /// Append a call's intent, flushed to the OS, and start its sync to disk on tokio's
    /// blocking pool (on this thread outside a runtime). The caller sends the call only once
    /// the [`Synced`] it gets resolves: the rule "the intent is on disk before the call is
    /// sent" holds, and a slow disk (an `fdatasync` can take seconds on a busy one) stalls
    /// only this call, never the runtime thread that every request and timer shares.
    pub fn write_intent(&mut self, entry: &Entry) -> Result<Synced, JournalError> {
        if !self.append(entry)? || !durable(entry) {
            return Ok(Synced(None));
        }
        let sync = self.sync_job();
        let path = self.path.display().to_string();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) if !self.in_place => Ok(Synced(Some((rt.spawn_blocking(sync), path)))),
            _ => {
                sync().map_err(|e| self.io_error(e))?;
                Ok(Synced(None))
            }
        }
    }

    /// The sync of everything written so far, to run anywhere: on success it records how far
    /// the file is known synced.
    fn sync_job(&self) -> impl FnOnce() -> std::io::Result<()> + Send + 'static {
        let file = Arc::clone(&self.file);
        let synced = Arc::clone(&self.synced);
        let hook = self.sync_hook.clone();
        let through = self.written;
        move || {
            if let Some(hook) = hook {
                hook();
            }
            file.sync_data()?;
            synced.fetch_max(through, Ordering::SeqCst);
            Ok(())
        }
    }

    fn io_error(&self, error: std::io::Error) -> JournalError {
        JournalError::Io {
            path: self.path.display().to_string(),
            error,
        }
    }

    /// Write one line and flush it to the OS; `false` if it is a start line this run
    /// already wrote (nothing written).
    fn append(&mut self, entry: &Entry) -> Result<bool, JournalError> {
        if self.started && matches!(entry, Entry::Start { .. }) {
            return Ok(false);
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
        let mut file: &File = &self.file;
        file.write_all(&line)
            .and_then(|()| file.flush())
            .map_err(|e| self.io_error(e))?;
        self.written += line.len() as u64;
        Ok(true)
    }
}

/// A call intent's sync to disk, under way: the call may be sent once [`Synced::wait`] says
/// it is done.
#[must_use = "a call may be sent only once its intent is synced"]
pub struct Synced(Option<(tokio::task::JoinHandle<std::io::Result<()>>, String)>);

impl Synced {
    /// Nothing to wait for (no journal, or a line that is not synced).
    pub fn done() -> Synced {
        Synced(None)
    }

    /// Wait for the sync; an error means the intent may not survive a power loss, so the
    /// call must not be sent.
    pub async fn wait(self) -> Result<(), JournalError> {
        let Some((task, path)) = self.0 else { return Ok(()) };
        match task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(JournalError::Io { path, error }),
            Err(e) => Err(JournalError::Io {
                path,
                error: std::io::Error::other(format!("the sync did not finish: {e}")),
            }),
        }
    }
}

/// Whether a line is synced to disk, not only flushed to the OS: the start line and call
/// intents must survive a power loss (a lost intent could hide a call that reached the API);
/// losing any other line costs a repeated look, never a repeated call.
fn durable(entry: &Entry) -> bool {
    matches!(entry, Entry::Start { .. } | Entry::Call { .. } | Entry::DiskCall { .. })
}

/// A start line as written: the entry, the account, and a checksum over both.
fn start_line(entry: &Entry, account: &Account) -> Vec<u8> {
    let mut value = stamped(entry, account);
    let sum = sha1_hex_json(&value);
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

#[cfg(test)]
mod tests;
