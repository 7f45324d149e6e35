//! The text files the tool reads and trusts (ID lists, the config, plans, journals, key
//! files): bounded reads, and parse-error details that never quote a value.
//!
//! Every read is capped, because a path can name a runaway log (or, through a race, an
//! endless stream): the tool must refuse it in milliseconds, not grow to gigabytes. Non-UTF-8 input is refused
//! at once. Values echoed back in errors are shortened, and parse errors from files that can
//! hold a key say where and what was expected, never what was found.
//!
//! Only regular files are read. The file is opened without blocking and its type checked on
//! the open file before a byte is read: a named pipe would otherwise block the `open` itself
//! forever (holding the run lock, deaf to signals), and a device or socket is no text file.
//! `--from-file -` reads standard input as the stream it is, through [`read_from`].

use std::io::Read;
use std::path::Path;

/// 1 MiB: an ID list of 10,000 IDs is ~200 KiB; a config or key file is a few hundred bytes.
pub const SMALL_FILE: u64 = 1 << 20;
/// 16 MiB: a saved plan holds ~400 bytes per instance, so tens of thousands of instances.
pub const PLAN_FILE: u64 = 16 << 20;
/// 256 MiB: a journal writes a few hundred bytes per call; a run of 10,000 instances with
/// every retry imaginable stays far below.
pub const JOURNAL_FILE: u64 = 256 << 20;
/// Characters of a value echoed in an error: enough to recognise it, never a screenful.
const ECHO_CHARS: usize = 60;

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TextFileError {
    /// The OS error, once (callers add the path).
    #[error("{0}")]
    Io(std::io::Error),
    #[error("is a directory")]
    Directory,
    /// A FIFO, device, socket: never read (see the module header).
    #[error("is {0}, not a regular file")]
    NotRegular(&'static str),
    #[error("larger than {} KiB; refusing to read it", .0 / 1024)]
    TooLarge(u64),
    #[error("not UTF-8 text (invalid byte at offset {0})")]
    NotUtf8(usize),
}

/// Read a whole text file of at most `limit` bytes (`-` is not special here).
pub fn read(path: &Path, limit: u64) -> Result<String, TextFileError> {
    let bytes = read_bytes(path, limit)?;
    String::from_utf8(bytes).map_err(|e| TextFileError::NotUtf8(e.utf8_error().valid_up_to()))
}

/// Read a whole file of at most `limit` bytes, as bytes (a journal torn by a crash may end in
/// half a character).
pub fn read_bytes(path: &Path, limit: u64) -> Result<Vec<u8>, TextFileError> {
    capped(open_regular(path)?, limit)
}

/// Open a file for reading, refusing anything but a regular file. On Unix the open itself
/// never blocks (`O_NONBLOCK`: a FIFO with no writer opens at once, and is then refused by
/// its type); the flag changes nothing for the regular file that is read.
pub fn open_regular(path: &Path) -> Result<std::fs::File, TextFileError> {
    #[cfg(unix)]
    let file = {
        use rustix::fs::{Mode, OFlags};
        let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC;
        std::fs::File::from(rustix::fs::open(path, flags, Mode::empty()).map_err(|e| TextFileError::Io(e.into()))?)
    };
    #[cfg(not(unix))]
    let file = std::fs::File::open(path).map_err(TextFileError::Io)?;
    let kind = file.metadata().map_err(TextFileError::Io)?.file_type();
    if kind.is_dir() {
        return Err(TextFileError::Directory);
    }
    if !kind.is_file() {
        return Err(TextFileError::NotRegular(kind_name(kind)));
    }
    Ok(file)
}

/// What a file that is not a regular file is, for an error ("is a named pipe").
pub fn kind_name(kind: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return "a named pipe (FIFO)";
        }
        if kind.is_socket() {
            return "a socket";
        }
        if kind.is_char_device() || kind.is_block_device() {
            return "a device";
        }
    }
    if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

fn capped(reader: impl Read, limit: u64) -> Result<Vec<u8>, TextFileError> {
    let mut bytes = Vec::new();
    // One byte more than allowed tells "exactly at the limit" from "beyond it".
    reader
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(TextFileError::Io)?;
    if bytes.len() as u64 > limit {
        return Err(TextFileError::TooLarge(limit));
    }
    Ok(bytes)
}

/// Read at most `limit` bytes of text from any reader (stdin for `--from-file -`).
pub fn read_from(reader: impl Read, limit: u64) -> Result<String, TextFileError> {
    let bytes = capped(reader, limit)?;
    String::from_utf8(bytes).map_err(|e| TextFileError::NotUtf8(e.utf8_error().valid_up_to()))
}

/// A value as echoed in an error: at most [`ECHO_CHARS`] characters, with the full length
/// said when cut.
pub fn excerpt(value: &str) -> String {
    if value.chars().count() <= ECHO_CHARS {
        return value.to_owned();
    }
    let head: String = value.chars().take(ECHO_CHARS).collect();
    format!("{head}… ({} bytes)", value.len())
}

/// A serde error message with the offending value removed. Type and value errors quote what
/// they found (`invalid type: string "…", expected usize`), and what they found may be a key
/// pasted into the wrong field: keep only what was expected. Messages that name keys, not
/// values (`unknown field`, `missing field`, `duplicate key`), and syntax errors (which quote
/// nothing) pass through.
pub fn redacted(message: &str) -> String {
    let message = message.lines().next().unwrap_or_default();
    let quotes_value = ["invalid type", "invalid value", "invalid length", "unknown variant"]
        .iter()
        .any(|p| message.starts_with(p));
    if !quotes_value {
        return message.to_owned();
    }
    match message.rfind("expected ") {
        Some(at) => format!("wrong value here ({})", &message[at..]),
        None => "wrong value here".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endless_and_binary_inputs_are_refused_quickly() {
        let zeros = std::io::repeat(0).take(u64::MAX);
        assert!(matches!(read_from(zeros, 1000), Err(TextFileError::TooLarge(1000))));
        assert!(matches!(read_from(&[b'a'; 1000][..], 1000), Ok(s) if s.len() == 1000));
        assert!(matches!(
            read_from(&b"ok\n\xff\xfe"[..], 1000),
            Err(TextFileError::NotUtf8(3))
        ));
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(read(dir.path(), 10), Err(TextFileError::Directory)));
    }

    #[cfg(unix)]
    #[test]
    fn pipes_and_devices_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        // A blocking open of a FIFO with no writer would hang this test forever.
        let err = read(&fifo, 10).unwrap_err();
        assert_eq!(err.to_string(), "is a named pipe (FIFO), not a regular file");
        let err = read(Path::new("/dev/null"), 10).unwrap_err();
        assert!(matches!(err, TextFileError::NotRegular("a device")), "{err}");
    }

    #[test]
    fn values_are_shortened_and_redacted() {
        let long = "x".repeat(50_000_000);
        assert!(excerpt(&long).len() < 100, "{}", excerpt(&long));
        assert_eq!(excerpt("uhost-1"), "uhost-1");
        let msg = "invalid type: string \"SECRET\", expected usize";
        assert_eq!(redacted(msg), "wrong value here (expected usize)");
        let msg = "unknown variant `SECRET`, expected `table` or `json`";
        assert!(!redacted(msg).contains("SECRET"));
        let msg = "unknown field `nmae`, expected one of `ids`, `name`";
        assert_eq!(redacted(msg), msg);
    }
}
