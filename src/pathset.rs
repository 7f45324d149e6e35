//! The files one command reads and writes, and the rule that no file the tool writes is also
//! another of its files: `--journal X --report X` would destroy the journal, `--report` over
//! the config or the ID list would destroy the job, a journal that is also the lock file
//! breaks resume. Files are compared by identity (device and inode) when they exist, else by
//! canonical directory and name, so `./x`, `dir/../x`, a symlink or a hard link to the same
//! file all count as the same.

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

#[derive(Debug, thiserror::Error)]
#[error("{first} and {second} name the same file {path}; choose different files (nothing was changed)")]
pub struct Overlap {
    pub first: &'static str,
    pub second: &'static str,
    pub path: String,
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

/// Refuse any written file that is also another of the roles.
pub fn check(roles: &[Role<'_>]) -> Result<(), Overlap> {
    // `-` is stdin for `--from-file`, not a file.
    let roles: Vec<(&Role<'_>, Identity)> = roles
        .iter()
        .filter(|r| r.path != Path::new("-"))
        .map(|r| (r, identity(r.path)))
        .collect();
    for (i, (a, ia)) in roles.iter().enumerate() {
        for (b, ib) in &roles[i + 1..] {
            if (a.written || b.written) && ia == ib {
                return Err(Overlap {
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
        assert_eq!((err.first, err.second), ("--config", "--report"));
        #[cfg(unix)]
        {
            let link = dir.path().join("link");
            std::os::unix::fs::symlink(&a, &link).unwrap();
            assert!(check(&[role("--journal", &a, true), role("--report", &link, true)]).is_err());
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
}
