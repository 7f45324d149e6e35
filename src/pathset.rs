//! The files one command reads and writes, and the rule that no file the tool writes is also
//! another of its files: `--journal X --report X` would destroy the journal, `--report` over
//! the config or the ID list would destroy the job, a journal that is also the lock file
//! breaks resume. Files are compared by identity (device and inode) when they exist, else by
//! canonical directory and name, so `./x`, `dir/../x`, a symlink or a hard link to the same
//! file all count as the same.
//!
//! It also owns the rule for every file the tool writes (`--journal`, `--report`,
//! `--metrics-file`, `plan --save`, the lock file): it is a regular file or absent. A device,
//! FIFO, socket, directory or symbolic link is refused before the lock and the API (exit 2),
//! because writing would replace a device node, block forever on a FIFO, or follow a link
//! planted in a shared directory into someone else's file. [`write_file`] is the one way the
//! tool writes such a file, with the same rule checked again on the open file.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// One file a command uses.
#[derive(Debug, Clone)]
pub struct Role<'a> {
    /// The flag (or config key) that names it, e.g. `--journal`.
    pub flag: &'static str,
    pub path: &'a Path,
    /// The tool writes (or locks) it.
    pub written: bool,
}

/// Why a command's files are refused.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("{first} and {second} name the same file {path}; choose different files (nothing was changed)")]
    Overlap {
        first: &'static str,
        second: &'static str,
        path: String,
    },
    #[error("{flag} {path} is {kind}; the tool writes only regular files (nothing was changed)")]
    NotRegular {
        flag: &'static str,
        path: String,
        kind: &'static str,
    },
}

/// Refuse a file the tool would write unless it is a regular file (not a link to one) or
/// absent.
pub fn writable(flag: &'static str, path: &Path) -> Result<(), PathError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() => Ok(()),
        Ok(m) => Err(PathError::NotRegular {
            flag,
            path: path.display().to_string(),
            kind: crate::textfile::kind_name(m.file_type()),
        }),
        // Absent (or not reachable: then the write itself reports why).
        Err(_) => Ok(()),
    }
}

/// Create or replace the contents of a file the tool writes, never through a symbolic link,
/// never blocking on a FIFO, never truncating anything but a regular file: the checks of
/// [`writable`], made again on the open file, since the path may have changed since.
pub fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    #[cfg(unix)]
    let mut file = {
        use rustix::fs::{Mode, OFlags};
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        match rustix::fs::open(path, flags, Mode::from_raw_mode(0o644)) {
            Ok(fd) => std::fs::File::from(fd),
            // ELOOP (O_NOFOLLOW on a link), ENXIO (a FIFO nobody reads, a socket), EISDIR:
            // say what is there.
            Err(e) => {
                return Err(match std::fs::symlink_metadata(path) {
                    Ok(m) if !m.file_type().is_file() => not_regular(crate::textfile::kind_name(m.file_type())),
                    _ => e.into(),
                });
            }
        }
    };
    #[cfg(not(unix))]
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        return Err(not_regular(crate::textfile::kind_name(kind)));
    }
    file.set_len(0)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn not_regular(kind: &str) -> std::io::Error {
    std::io::Error::other(format!("it is {kind}; the tool writes only regular files"))
}

#[derive(Debug, PartialEq, Eq)]
enum Identity {
    #[cfg(unix)]
    Inode(u64, u64),
    Path(PathBuf),
}

fn identity(path: &Path) -> Identity {
    #[cfg(unix)]
    if let Ok(m) = std::fs::metadata(path) {
        use std::os::unix::fs::MetadataExt;
        return Identity::Inode(m.dev(), m.ino());
    }
    if let Ok(p) = std::fs::canonicalize(path) {
        return Identity::Path(p);
    }
    // Not there yet: its directory's canonical path and its name.
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    Identity::Path(dir.join(path.file_name().unwrap_or_default()))
}

/// Refuse any written file that is not a regular file or absent, or that is also another of
/// the roles.
pub fn check(roles: &[Role<'_>]) -> Result<(), PathError> {
    for r in roles.iter().filter(|r| r.written) {
        writable(r.flag, r.path)?;
    }
    // `-` is stdin for `--from-file`, not a file.
    let roles: Vec<(&Role<'_>, Identity)> = roles
        .iter()
        .filter(|r| r.path != Path::new("-"))
        .map(|r| (r, identity(r.path)))
        .collect();
    for (i, (a, ia)) in roles.iter().enumerate() {
        for (b, ib) in &roles[i + 1..] {
            if (a.written || b.written) && ia == ib {
                return Err(PathError::Overlap {
                    first: a.flag,
                    second: b.flag,
                    path: b.path.display().to_string(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role<'a>(flag: &'static str, path: &'a Path, written: bool) -> Role<'a> {
        Role { flag, path, written }
    }

    #[test]
    fn the_same_file_by_any_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, "x").unwrap();
        let other = dir.path().join("sub/../a");
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let err = check(&[role("--config", &a, false), role("--report", &other, true)]).unwrap_err();
        assert!(matches!(
            err,
            PathError::Overlap {
                first: "--config",
                second: "--report",
                ..
            }
        ));
        #[cfg(unix)]
        {
            let link = dir.path().join("link");
            std::os::unix::fs::symlink(&a, &link).unwrap();
            assert!(check(&[role("--journal", &a, true), role("--config", &link, false)]).is_err());
            let hard = dir.path().join("hard");
            std::fs::hard_link(&a, &hard).unwrap();
            assert!(check(&[role("--journal", &a, true), role("--lock-file", &hard, true)]).is_err());
        }
        // Files not there yet compare by canonical directory and name.
        let new = dir.path().join("new");
        let new2 = dir.path().join("sub/../new");
        assert!(check(&[role("--journal", &new, true), role("--report", &new2, true)]).is_err());
        // Two files only read may be the same; different files are fine.
        assert!(check(&[role("--config", &a, false), role("--from-file", &a, false)]).is_ok());
        assert!(check(&[role("--journal", &a, true), role("--report", &new, true)]).is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn only_regular_files_are_written() {
        use rustix::fs::{FileType, Mode, mknodat};
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("someone-elses");
        std::fs::write(&target, "precious").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let fifo = dir.path().join("fifo");
        mknodat(rustix::fs::CWD, &fifo, FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
        let sock = dir.path().join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let cases = [
            (link.as_path(), "a symbolic link"),
            (fifo.as_path(), "a named pipe (FIFO)"),
            (sock.as_path(), "a socket"),
            (dir.path(), "a directory"),
            (Path::new("/dev/null"), "a device"),
        ];
        for (path, kind) in cases {
            let err = check(&[role("--report", path, true)]).unwrap_err();
            assert!(err.to_string().contains(kind), "{}: {err}", path.display());
            // Only read: not this rule's business.
            assert!(check(&[role("--config", path, false)]).is_ok());
            // Written anyway (the path changed after the check): refused on the open file,
            // without blocking on the FIFO.
            let err = write_file(path, b"x").unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("it is {kind}; the tool writes only regular files")
            );
        }
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
        // A regular file is replaced whole; a new one is created.
        let out = dir.path().join("out");
        write_file(&out, b"long text").unwrap();
        write_file(&out, b"short").unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "short");
        assert!(
            check(&[
                role("--report", &out, true),
                role("--journal", &dir.path().join("new"), true)
            ])
            .is_ok()
        );
    }
}
