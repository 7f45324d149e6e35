//! The run lock: one teardown per account at a time, so an overlapping cron run exits 3 at
//! once instead of racing the first one, while jobs for other accounts or projects on the same
//! host go ahead. `std::fs::File::try_lock` (an advisory `flock`) is released by the OS when
//! the process dies, so a crash never leaves a stale lock behind.
//!
//! The lock file is a place another local user may try to turn against us, so: the default
//! lives in a directory private to the user (`$XDG_RUNTIME_DIR`, else a per-user directory
//! created 0700 and checked for ownership), never in a world-writable one; the file is never
//! opened through a symbolic link, never anything but a regular file, and never truncated or
//! written unless it is ours (created by us, owned by us, one link).

use std::fs::{File, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::credentials::Account;

/// A held run lock; dropping it releases the lock.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum RunLockError {
    #[error("another compshare-teardown run for this account holds the lock {0}")]
    Held(String),
    // `error`, not `source`: a chained source would print the OS error twice.
    #[error("cannot open lock file {path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("refusing lock file {path}: {detail}")]
    Unsafe { path: String, detail: String },
    #[error("refusing lock directory {path}: {detail}")]
    UnsafeDir { path: String, detail: String },
}

/// The default lock path for `account`: `compshare-teardown-<account>.lock` in
/// `$XDG_RUNTIME_DIR`, else in `<temp dir>/compshare-teardown-<uid>` (created 0700). The
/// file name is a hash of endpoint, project and public-key fingerprint: one lock per account.
/// Local paths only: advisory locks are unreliable on NFS.
pub fn default_path(account: &Account) -> Result<PathBuf, RunLockError> {
    Ok(private_dir()?.join(format!("compshare-teardown-{}.lock", account.slug())))
}

#[cfg(unix)]
fn private_dir() -> Result<PathBuf, RunLockError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let uid = rustix::process::geteuid().as_raw();
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => {
            let d = std::env::temp_dir().join(format!("compshare-teardown-{uid}"));
            match std::fs::DirBuilder::new().mode(0o700).create(&d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(source) => {
                    return Err(RunLockError::Io {
                        path: d.display().to_string(),
                        error: source,
                    });
                }
            }
            d
        }
    };
    let refuse = |detail: &str| RunLockError::UnsafeDir {
        path: dir.display().to_string(),
        detail: format!("{detail}; pass --lock-file in a directory only you can write"),
    };
    // `symlink_metadata`: a symlink planted in place of the directory is itself refused.
    let meta = std::fs::symlink_metadata(&dir).map_err(|source| RunLockError::Io {
        path: dir.display().to_string(),
        error: source,
    })?;
    if !meta.is_dir() {
        return Err(refuse("the lock directory is not a directory"));
    }
    if meta.uid() != uid {
        return Err(refuse("the lock directory belongs to another user"));
    }
    // Group or others able to write could plant or swap the lock file.
    if meta.mode() & 0o022 != 0 {
        return Err(refuse("the lock directory is writable by others"));
    }
    Ok(dir)
}

#[cfg(not(unix))]
fn private_dir() -> Result<PathBuf, RunLockError> {
    Ok(std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(std::env::temp_dir, PathBuf::from))
}

/// Open the lock file without following a symlink; `true` when it may be written (we
/// created it, or it is a plain file of ours with a single link).
#[cfg(unix)]
fn open(path: &Path) -> Result<(File, bool), RunLockError> {
    use rustix::fs::{Mode, OFlags};
    use rustix::io::Errno;
    use std::os::unix::fs::MetadataExt;
    let io = |e: Errno| RunLockError::Io {
        path: path.display().to_string(),
        error: e.into(),
    };
    let unsafe_lock = |detail: &str| RunLockError::Unsafe {
        path: path.display().to_string(),
        detail: detail.to_owned(),
    };
    let base = OFlags::NOFOLLOW | OFlags::CLOEXEC;
    // O_CREAT|O_EXCL never follows a symlink, not even a dangling one.
    match rustix::fs::open(
        path,
        base | OFlags::RDWR | OFlags::CREATE | OFlags::EXCL,
        Mode::from_raw_mode(0o600),
    ) {
        Ok(fd) => return Ok((File::from(fd), true)),
        Err(Errno::EXIST) => {}
        Err(e) => return Err(io(e)),
    }
    // It exists: open without following a symlink, and without blocking on a FIFO.
    let existing = base | OFlags::NONBLOCK;
    let fd = match rustix::fs::open(path, existing | OFlags::RDWR, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ACCESS) => rustix::fs::open(path, existing | OFlags::RDONLY, Mode::empty()).map_err(io)?,
        Err(e) => return Err(io(e)),
    };
    let file = File::from(fd);
    let meta = file.metadata().map_err(|e| RunLockError::Io {
        path: path.display().to_string(),
        error: e,
    })?;
    if !meta.is_file() {
        return Err(unsafe_lock("not a regular file"));
    }
    let ours = meta.uid() == rustix::process::geteuid().as_raw() && meta.nlink() == 1;
    Ok((file, ours))
}

#[cfg(not(unix))]
fn open(path: &Path) -> Result<(File, bool), RunLockError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(false)
        .open(path)
        .map_err(|source| RunLockError::Io {
            path: path.display().to_string(),
            error: source,
        })?;
    Ok((file, false))
}

/// Take the lock without waiting.
pub fn acquire(path: &Path) -> Result<RunLock, RunLockError> {
    let is_link = || std::fs::symlink_metadata(path).is_ok_and(|m| m.is_symlink());
    let symlink = || RunLockError::Unsafe {
        path: path.display().to_string(),
        detail: "it is a symbolic link".to_owned(),
    };
    if is_link() {
        return Err(symlink());
    }
    let (mut file, ours) = match open(path) {
        // A link planted between the check and the open (O_NOFOLLOW said ELOOP).
        Err(RunLockError::Io { .. }) if is_link() => return Err(symlink()),
        r => r?,
    };
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Err(RunLockError::Held(path.display().to_string())),
        Err(TryLockError::Error(source)) => {
            return Err(RunLockError::Io {
                path: path.display().to_string(),
                error: source,
            });
        }
    }
    if ours {
        // Note the holder for whoever finds the lock taken.
        let _ = file
            .set_len(0)
            .and_then(|()| writeln!(file, "pid {}", std::process::id()));
    }
    Ok(RunLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_until_the_first_drops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l");
        let first = acquire(&path).unwrap();
        assert!(matches!(acquire(&path), Err(RunLockError::Held(_))));
        drop(first);
        assert!(acquire(&path).is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("bashrc");
        std::fs::write(&target, "export PATH=precious\n").unwrap();
        let path = dir.path().join("l");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert!(matches!(acquire(&path), Err(RunLockError::Unsafe { .. })));
        // A dangling link is refused too, and creates nothing.
        let dangling = dir.path().join("d");
        std::os::unix::fs::symlink(dir.path().join("nothing"), &dangling).unwrap();
        assert!(matches!(acquire(&dangling), Err(RunLockError::Unsafe { .. })));
        assert!(!dir.path().join("nothing").exists());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "export PATH=precious\n");
    }

    #[cfg(unix)]
    #[test]
    fn a_file_that_is_not_ours_is_locked_but_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l");
        std::fs::write(&path, "someone else's\n").unwrap();
        // A second link: as if another user hard-linked one of our files here.
        std::fs::hard_link(&path, dir.path().join("other")).unwrap();
        let lock = acquire(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "someone else's\n");
        drop(lock);
        let fifo = dir.path().join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        assert!(matches!(acquire(&fifo), Err(RunLockError::Unsafe { .. })));
    }
}
