//! One event to a command: stdin, exit status, output, timeout and the process group.

use std::time::Duration;

use compshare_teardown::notice::{EventKind, Failure, NoticeError};
use tokio::time::Instant;

use super::*;

#[tokio::test]
async fn a_command_gets_the_payload_on_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("payload.json");
    let line = format!("cat > '{}'", out.display());
    let e = event(EventKind::Unmarked, "uhost-9");
    notifier(None, Some(&line), 2000, 3).deliver(&e).await.unwrap();
    let got: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(got["id"], e.id);
    assert_eq!(got["kind"], "unmarked");
    assert_eq!(got["target"]["name"], "train-1");
}

#[tokio::test]
async fn a_failing_command_is_retried_and_its_stderr_reported() {
    let dir = tempfile::tempdir().unwrap();
    let tries = dir.path().join("tries");
    let line = format!("echo x >> '{}'; echo 'receiver said no' >&2; exit 3", tries.display());
    let err = notifier(None, Some(&line), 2000, 2)
        .deliver(&event(EventKind::Marked, "uhost-10"))
        .await
        .unwrap_err();
    assert_eq!(std::fs::read_to_string(&tries).unwrap().lines().count(), 2);
    let said = err.to_string();
    assert!(said.starts_with("notice command: exited with exit status: 3"), "{said}");
    assert!(said.contains("stderr: receiver said no"), "{said}");
    assert!(!said.contains("tries"), "the command line is never shown: {said}");
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_command_that_hangs_is_killed_with_its_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let (line, pid) = sleeper(dir.path());
    let started = Instant::now();
    let err = notifier(None, Some(&line), 500, 1)
        .deliver(&event(EventKind::Marked, "uhost-11"))
        .await
        .unwrap_err();
    // Far under the command's 30 s: the timeout (500 ms) cut it, with room for a loaded
    // machine's process start.
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(
        matches!(
            &err,
            NoticeError::Sink {
                failure: Failure::Timeout(_),
                attempts: 1,
                ..
            }
        ),
        "{err:?}"
    );
    let left = survivor(&pid).await;
    assert!(left.is_none(), "the command's child {left:?} outlived the timeout");
}

#[tokio::test]
async fn a_chatty_failing_command_neither_blocks_nor_floods_the_error() {
    // 1 MiB on each pipe, far beyond a pipe's buffer and the 4 KiB kept: a reader that
    // stopped reading would block the command until the timeout, or (closing the pipe) kill
    // its writer with SIGPIPE, and the line would exit 9 instead of 7.
    let line = "head -c 1048576 /dev/zero | tr '\\0' a || exit 9; \
                head -c 1048576 /dev/zero | tr '\\0' b >&2 || exit 9; exit 7";
    let started = Instant::now();
    let err = notifier(None, Some(line), 5000, 1)
        .deliver(&event(EventKind::Marked, "uhost-13"))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    let said = err.to_string();
    assert!(said.contains("exited with exit status: 7"), "{said}");
    assert!(said.len() < 800, "{} bytes", said.len());
}

#[tokio::test]
async fn a_process_left_in_the_background_does_not_hold_the_delivery() {
    // `sleep` keeps the command's stdout and stderr open after the shell exits: a reader
    // waiting for the pipes to close would wait the 3 s out.
    for (line, delivered) in [
        ("sleep 3 & exit 0", true),
        ("sleep 3 & echo gave up >&2; exit 1", false),
    ] {
        let started = Instant::now();
        let result = notifier(None, Some(line), 10_000, 1)
            .deliver(&event(EventKind::Marked, "uhost-15"))
            .await;
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{line}: {:?}",
            started.elapsed()
        );
        assert_eq!(result.is_ok(), delivered, "{line}: {result:?}");
        if let Err(err) = result {
            assert!(err.to_string().contains("stderr: gave up"), "{err}");
        }
    }
}
