//! One attempt at the command sink: `sh -c <command>` with the payload on stdin; exit 0 means
//! delivered. A timeout kills the command's whole process group (a shell line such as
//! `curl … | logger` is several processes), so nothing it started outlives the attempt.

use std::fmt::Write as _;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::notifier::Failure;

/// How much of the command's stdout and stderr is kept for the log: enough for an error
/// message, bounded whatever the command prints (the rest is read and dropped, so a chatty
/// command never blocks on a full pipe).
const OUTPUT_LIMIT: usize = 4096;

/// After the command exits, how long its output pipes may stay open. A process it left in
/// the background may hold them; its output is not worth holding the run for.
const OUTPUT_GRACE: Duration = Duration::from_millis(200);

/// After a kill, how long to wait for the process to be reaped: SIGKILL is not refusable, but
/// a process stuck in the kernel (a dead NFS mount) can take a while; the reaper finishes it.
const REAP_GRACE: Duration = Duration::from_secs(1);

/// Run `command` once with `input` on stdin, within `timeout`.
pub(super) async fn run(command: &str, input: &[u8], timeout: Duration) -> Result<(), Failure> {
    let mut cmd = shell(command);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // If this attempt is dropped (the caller's deadline), the command must not run on.
        .kill_on_drop(true);
    #[cfg(unix)]
    cmd.process_group(0);
    let mut child = cmd.spawn().map_err(|e| Failure::Spawn(e.to_string()))?;
    let mut group = Group::of(&child);
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().map(Captured::start);
    let stderr = child.stderr.take().map(Captured::start);
    let input = input.to_vec();
    let feed = async move {
        if let Some(mut stdin) = stdin {
            // A command that does not read its input (`true`) closes the pipe: not an error.
            let _ = stdin.write_all(&input).await;
        } // dropped here: the command sees end of input
    };
    let waited = tokio::time::timeout(timeout, async { tokio::join!(feed, child.wait()).1 }).await;
    let status = match waited {
        Ok(Ok(status)) => {
            // Reaped: its ID may be reused from now on, so it is never signalled again.
            group.disarm();
            status
        }
        Ok(Err(e)) => {
            group.kill();
            return Err(Failure::Spawn(e.to_string()));
        }
        Err(_) => {
            group.kill();
            let _ = child.start_kill();
            let _ = tokio::time::timeout(REAP_GRACE, child.wait()).await;
            group.disarm();
            abort([stdout, stderr]);
            return Err(Failure::Timeout(timeout));
        }
    };
    if status.success() {
        abort([stdout, stderr]);
        return Ok(());
    }
    let mut said = String::new();
    // One grace for both pipes: they close together when nothing holds them open.
    let grace_ends = tokio::time::Instant::now() + OUTPUT_GRACE;
    for (name, captured) in [("stderr", stderr), ("stdout", stdout)] {
        let Some(captured) = captured else { continue };
        let text = one_line(&captured.finish(grace_ends).await);
        if !text.is_empty() {
            let _ = write!(said, "; {name}: {text}");
        }
    }
    Err(Failure::Exit {
        status: status.to_string(),
        output: said,
    })
}

/// The command line as a shell runs it: `sh -c` on Unix (what cron does with a crontab
/// line), `cmd /C` elsewhere.
fn shell(command: &str) -> Command {
    #[cfg(unix)]
    {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(command);
        cmd
    }
    #[cfg(not(unix))]
    {
        let mut cmd = Command::new("cmd");
        cmd.arg("/C").arg(command);
        cmd
    }
}

/// One output pipe, read to its end by a task of its own (so the command never blocks on a
/// full pipe), the first [`OUTPUT_LIMIT`] bytes kept where they can be taken at any time: a
/// process left in the background may hold the pipe open long after the command exited.
struct Captured {
    task: tokio::task::JoinHandle<()>,
    kept: Arc<Mutex<Vec<u8>>>,
}

impl Captured {
    fn start(mut reader: impl AsyncRead + Unpin + Send + 'static) -> Captured {
        let kept = Arc::new(Mutex::new(Vec::new()));
        let into = Arc::clone(&kept);
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let mut kept = into.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let room = OUTPUT_LIMIT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        });
        Captured { task, kept }
    }

    /// What was read by the end of the pipe or `until`, whichever comes first; the reading
    /// stops there.
    async fn finish(mut self, until: tokio::time::Instant) -> Vec<u8> {
        let _ = tokio::time::timeout_at(until, &mut self.task).await;
        self.task.abort();
        std::mem::take(&mut *self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

fn abort(pipes: [Option<Captured>; 2]) {
    for captured in pipes.into_iter().flatten() {
        captured.task.abort();
    }
}

/// Output as one log-safe line: control characters (a newline could forge a log line) become
/// spaces, at most 300 characters.
pub(super) fn one_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let flat: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let flat = flat.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(300) {
        Some((at, _)) => format!("{}…", &flat[..at]),
        None => flat,
    }
}

/// The command's process group, killed when an attempt times out or is dropped while the
/// command still runs. Only while the leader is not yet reaped: until then its ID, which is
/// the group's, cannot be reused by an unrelated process.
struct Group {
    #[cfg(unix)]
    leader: Option<rustix::process::Pid>,
}

impl Group {
    fn of(child: &tokio::process::Child) -> Group {
        #[cfg(unix)]
        {
            let leader = child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .and_then(rustix::process::Pid::from_raw);
            Group { leader }
        }
        #[cfg(not(unix))]
        {
            let _ = child;
            Group {}
        }
    }

    fn kill(&mut self) {
        #[cfg(unix)]
        if let Some(leader) = self.leader {
            // ESRCH (already gone) is fine: there is nothing left to stop.
            let _ = rustix::process::kill_process_group(leader, rustix::process::Signal::KILL);
        }
    }

    fn disarm(&mut self) {
        #[cfg(unix)]
        {
            self.leader = None;
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_becomes_one_short_line() {
        assert_eq!(one_line(b"  error:\n\tforged log line\r\n"), "error: forged log line");
        let long = one_line(&[b'x'; 5000]);
        assert_eq!(long.chars().count(), 301, "300 characters and an ellipsis");
        assert_eq!(one_line(b"bad \xff byte"), "bad \u{fffd} byte");
    }
}
