//! The state store: what scheduled teardown must remember between cron runs. One SQLite file
//! per account (the bundled SQLite, so a fresh machine needs nothing installed), schema
//! versioned with migrations, bound to the account that created it. This room is its one
//! owner: no other module opens the file or writes SQL.
//!
//! - Marks (found idle, due at), keeps (a person said "not before"), when each instance was
//!   first seen running, the GPU samples the idle rule needs, when each disk was first seen
//!   detached, a history of every teardown, and the outbox of notices not yet delivered.
//! - Every change of one job step is one transaction ([`Store::apply`]), written under the run
//!   lock: a job killed between two writes leaves the store as it was after the last one.
//!   `synchronous = FULL` because a mark or a delivered notice lost to a power cut would be
//!   sent again or forgotten, and the writes are a handful per run.
//! - Readers (`marks`, `history`) open it read-only without the run lock; the rollback
//!   journal lets them read while a job holds the lock (SQLite's own locks cover the few
//!   milliseconds of a commit, and a busy timeout waits them out).
//! - A file that is not ours is never written: a symbolic link, a device or FIFO, another
//!   program's database, another account's store, a store from a newer version of the tool,
//!   or a damaged file is refused before anything is changed (the CLI exits 2).

mod records;
mod schema;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::credentials::Account;

pub use records::{Changes, HistoryRow, Keep, Kind, Mark, Pending, Sample, Seen};
pub use schema::VERSION;

/// Why the state store cannot be used. Every variant says the path; none quotes file content.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store {path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("state store {path} is {kind}; the store must be a regular file (nothing was changed)")]
    NotRegular { path: String, kind: &'static str },
    #[error("state store {path} is not a compshare-teardown state store ({detail}); nothing was changed")]
    Foreign { path: String, detail: String },
    #[error(
        "state store {path} belongs to another account ({detail}); pass --state for this account's store (nothing was changed)"
    )]
    OtherAccount { path: String, detail: String },
    #[error(
        "state store {path} has schema version {found}, newer than this tool's {supported}; upgrade compshare-teardown (nothing was changed)"
    )]
    Newer { path: String, found: i64, supported: i64 },
    #[error("state store {path} is damaged ({detail}); move it aside to start a new one (nothing was changed)")]
    Corrupt { path: String, detail: String },
    #[error("state store {path}: {detail}")]
    Sql { path: String, detail: String },
}

impl StateError {
    /// True when the store was refused as it is (bad input: exit 2); false when a write
    /// failed on the way (the job halts like a failed journal write).
    pub fn is_refusal(&self) -> bool {
        !matches!(self, StateError::Sql { .. } | StateError::Io { .. })
    }
}

/// The default store for `account`: `<state dir>/compshare-teardown/<account slug>.sqlite3`,
/// where the state dir is `$XDG_STATE_HOME`, else `~/.local/state` (the XDG base directory
/// rule: state that should survive a reboot but is not worth backing up).
pub fn default_path(account: &Account) -> Result<PathBuf, StateError> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|d| !d.is_empty())
                .map(|h| PathBuf::from(h).join(".local/state"))
        })
        .ok_or_else(|| StateError::Io {
            path: "(state directory)".into(),
            error: std::io::Error::other("neither XDG_STATE_HOME nor HOME is set; pass --state"),
        })?;
    Ok(base
        .join("compshare-teardown")
        .join(format!("{}.sqlite3", account.slug())))
}

/// An open state store.
pub struct Store {
    conn: Connection,
    path: String,
    /// Commits left before a simulated crash (tests: "killed between any two writes").
    #[cfg(any(test, feature = "sweep"))]
    crash_after: Option<u32>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// How long a reader or writer waits for the other's short transaction.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

impl Store {
    /// Open (creating it and its directory if absent) the store at `path` for `account`, for
    /// writing. Run under the run lock.
    pub fn open(path: &Path, account: &Account) -> Result<Store, StateError> {
        let shown = path.display().to_string();
        let exists = check_file(path, &shown)?;
        if !exists && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir).map_err(|error| StateError::Io {
                path: dir.display().to_string(),
                error,
            })?;
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NOFOLLOW
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| classify(&shown, &e))?;
        let mut store = Store::wrap(conn, shown)?;
        schema::check_and_migrate(&mut store.conn, &store.path, account, true)?;
        Ok(store)
    }

    /// Open an existing store read-only (the `marks` and `history` views); `None` if there is
    /// none yet. Needs no run lock.
    pub fn open_read_only(path: &Path, account: &Account) -> Result<Option<Store>, StateError> {
        let shown = path.display().to_string();
        if !check_file(path, &shown)? {
            return Ok(None);
        }
        let flags =
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NOFOLLOW | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| classify(&shown, &e))?;
        let mut store = Store::wrap(conn, shown)?;
        schema::check_and_migrate(&mut store.conn, &store.path, account, false)?;
        Ok(Some(store))
    }

    fn wrap(conn: Connection, path: String) -> Result<Store, StateError> {
        conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| classify(&path, &e))?;
        Ok(Store {
            conn,
            path,
            #[cfg(any(test, feature = "sweep"))]
            crash_after: None,
        })
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// Tests: let `commits` more transactions through, then fail every later one as if the
    /// process had died just before it.
    #[cfg(any(test, feature = "sweep"))]
    pub fn crash_after(&mut self, commits: u32) {
        self.crash_after = Some(commits);
    }

    /// Apply one step's changes in one transaction: all of them or none.
    pub fn apply(&mut self, changes: &Changes) -> Result<(), StateError> {
        if changes.is_empty() {
            return Ok(());
        }
        #[cfg(any(test, feature = "sweep"))]
        if let Some(left) = self.crash_after.as_mut() {
            if *left == 0 {
                return Err(StateError::Sql {
                    path: self.path.clone(),
                    detail: "simulated crash before this write".into(),
                });
            }
            *left -= 1;
        }
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| classify(&path, &e))?;
        records::write(&tx, changes).map_err(|e| classify(&path, &e))?;
        tx.commit().map_err(|e| classify(&path, &e))
    }

    fn sql<T>(&self, r: rusqlite::Result<T>) -> Result<T, StateError> {
        r.map_err(|e| classify(&self.path, &e))
    }
}

/// `Ok(true)` if a regular file is there, `Ok(false)` if nothing is; anything else refused.
fn check_file(path: &Path, shown: &str) -> Result<bool, StateError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() => Ok(true),
        Ok(m) => Err(StateError::NotRegular {
            path: shown.to_owned(),
            kind: crate::textfile::kind_name(m.file_type()),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(StateError::Io {
            path: shown.to_owned(),
            error,
        }),
    }
}

/// The store's directory holds what the team's job decided about their machines: private to
/// the user, like the run lock's.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

/// SQLite's "not a database" and "corrupt" are damage (exit 2, nothing written); the rest are
/// failures on the way.
fn classify(path: &str, e: &rusqlite::Error) -> StateError {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    match e.sqlite_error_code() {
        Some(NotADatabase) => StateError::Foreign {
            path: path.to_owned(),
            detail: "not an SQLite database".into(),
        },
        Some(DatabaseCorrupt) => StateError::Corrupt {
            path: path.to_owned(),
            detail: "SQLite reports the file corrupt".into(),
        },
        _ => StateError::Sql {
            path: path.to_owned(),
            detail: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests;
