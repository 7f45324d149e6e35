//! The run lock: one teardown per lock file at a time, so an overlapping cron run exits 3 at
//! once instead of racing the first one. `std::fs::File::try_lock` (an advisory `flock`) is
//! released by the OS when the process dies, so a crash never leaves a stale lock behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A held run lock; dropping it releases the lock.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum RunLockError {
    #[error("another compshare-teardown run holds the lock {0}")]
    Held(String),
    #[error("cannot open lock file {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// The default lock path: `$XDG_RUNTIME_DIR/compshare-teardown.lock`, else
/// `/tmp/compshare-teardown.lock`. Local paths only: advisory locks are unreliable on NFS.
pub fn default_path() -> PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(std::env::temp_dir, PathBuf::from)
        .join("compshare-teardown.lock")
}

/// Take the lock without waiting.
pub fn acquire(path: &Path) -> Result<RunLock, RunLockError> {
    let io = |source| RunLockError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(false)
        .open(path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Err(RunLockError::Held(path.display().to_string())),
        Err(TryLockError::Error(e)) => return Err(io(e)),
    }
    // Note the holder for whoever finds the lock taken.
    let _ = file
        .set_len(0)
        .and_then(|()| writeln!(file, "pid {}", std::process::id()));
    Ok(RunLock {
        _file: file,
        path: path.to_path_buf(),
    })
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
}
