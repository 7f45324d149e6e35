//! The terminal: results to stdout, the confirmation prompt, signal handling, and the
//! progress bars shared between a command and the runner.

use std::io::{IsTerminal, Write};
use std::sync::Arc;

use anyhow::{Context, anyhow};
use tokio_util::sync::CancellationToken;

use super::{CmdResult, Exit, Failure};
use crate::output;
use crate::plan::Plan;
use crate::progress;
use crate::workflow::{self, Outcome};

/// Write to stdout; a closed pipe (`| head`) is not an error.
pub(super) fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

pub(crate) fn json<T: serde::Serialize>(value: &T) -> String {
    let mut s = serde_json::to_string_pretty(value).expect("serializable");
    s.push('\n');
    s
}

/// Shared bars: the runner's observer and the command both hold them.
#[derive(Clone)]
pub(super) struct BarsHandle(Arc<std::sync::Mutex<progress::Bars>>);

impl BarsHandle {
    pub(super) fn new(multi: &indicatif::MultiProgress, total: usize) -> BarsHandle {
        BarsHandle(Arc::new(std::sync::Mutex::new(progress::Bars::new(multi, total))))
    }

    pub(super) fn finish(&self) {
        self.0.lock().expect("bars").finish();
    }

    pub(super) fn finished_elsewhere(&self, id: &str, outcome: &Outcome) {
        workflow::Observer::finished(&mut *self.0.lock().expect("bars"), id, outcome);
    }
}

impl workflow::Observer for BarsHandle {
    fn activity(&mut self, id: &str, activity: &workflow::Activity) {
        self.0.lock().expect("bars").activity(id, activity);
    }
    fn finished(&mut self, id: &str, outcome: &Outcome) {
        self.0.lock().expect("bars").finished(id, outcome);
    }
}

/// Whether there is a terminal to ask on: stdin to read the answer, stderr to show the plan.
pub(super) fn can_confirm() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// Ask on the terminal; refuse without one. The answer is read on a blocking thread, so an
/// interrupt at the prompt still ends the command.
pub(super) async fn confirm(plan: &Plan, count: usize) -> CmdResult<()> {
    ask_count(&output::plan_table(plan), count, "tear down", "instance(s)").await
}

/// Show `table` and ask for `count` to be typed back before `verb`ing `count` `things`;
/// refuse without a terminal. The one prompt of every command that changes things.
pub(super) async fn ask_count(table: &str, count: usize, verb: &str, things: &str) -> CmdResult<()> {
    if !can_confirm() {
        return Err(Failure::Usage(anyhow!(
            "refusing to {verb} {count} {things} without a terminal to confirm on; pass --yes (nothing was changed)"
        )));
    }
    let mut err = std::io::stderr();
    let _ = write!(err, "{table}\nType {count} to {verb} {count} {things}: ");
    let _ = err.flush();
    let line = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await
    .context("cannot read the confirmation")?
    .context("cannot read the confirmation")?;
    if line.trim() != count.to_string() {
        return Err(Failure::Usage(anyhow!(
            "not confirmed (expected {count}, got {:?}): nothing was changed",
            crate::textfile::excerpt(line.trim())
        )));
    }
    Ok(())
}

/// Whether a run is draining: calls were sent, and the first interrupt lets those in flight
/// finish and still reports (see [`spawn_signal_handler`]). Outside of it an interrupt ends
/// the process.
static DRAINING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// How long the command has to end by itself after an interrupt (and write its metrics)
/// before the watchdog ends the process: under the one second a signal is promised to take.
const WATCHDOG_GRACE: std::time::Duration = std::time::Duration::from_millis(800);

/// Start, once, the thread that guarantees an interrupt ends the process with 130 whatever
/// the command's thread is blocked on (a stdin that never closes, a write to a stalled
/// pipe): the command's own handlers run on its runtime, which a blocked thread starves. The
/// thread has a runtime of its own; tokio delivers each signal to every listener, so the
/// command still sees it first and normally ends itself well within the grace.
fn start_watchdog() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            return;
        };
        // Registered here, before the thread starts, so they hold from now on.
        #[cfg(unix)]
        let signals = {
            use tokio::signal::unix::{SignalKind, signal};
            let _guard = rt.enter();
            match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
                (Ok(int), Ok(term)) => (int, term),
                _ => return,
            }
        };
        let _ = std::thread::Builder::new().name("interrupts".into()).spawn(move || {
            rt.block_on(async move {
                #[cfg(unix)]
                let (mut int, mut term) = signals;
                let mut count = 0;
                loop {
                    #[cfg(unix)]
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                    #[cfg(not(unix))]
                    if tokio::signal::ctrl_c().await.is_err() {
                        return;
                    }
                    count += 1;
                    if count >= 2 || !DRAINING.load(std::sync::atomic::Ordering::SeqCst) {
                        tokio::spawn(async move {
                            if count < 2 {
                                tokio::time::sleep(WATCHDOG_GRACE).await;
                                if DRAINING.load(std::sync::atomic::Ordering::SeqCst) {
                                    return;
                                }
                            }
                            std::process::exit(Exit::Interrupted as i32);
                        });
                    }
                }
            });
        });
    });
}

/// The run's calls are done (or were never sent): an interrupt ends the process again.
pub(super) fn drained() {
    DRAINING.store(false, std::sync::atomic::Ordering::SeqCst);
}

/// A token cancelled by the first Ctrl-C or SIGTERM while nothing has been sent yet. The
/// handlers are installed here, synchronously, so they hold from this point on, also when
/// the signal was inherited as ignored.
pub(super) fn interrupt_token() -> CancellationToken {
    start_watchdog();
    let cancel = CancellationToken::new();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
            let c = cancel.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                c.cancel();
            });
        }
    }
    #[cfg(not(unix))]
    {
        let c = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                c.cancel();
            }
        });
    }
    cancel
}

/// Run a step that sends nothing; an interrupt meanwhile ends the command (exit 130).
pub(super) async fn interruptible<T>(
    cancel: &CancellationToken,
    step: impl Future<Output = CmdResult<T>>,
) -> CmdResult<T> {
    tokio::select! {
        biased;
        () = cancel.cancelled() => Err(Failure::Interrupted),
        r = step => r,
    }
}

/// First Ctrl-C or SIGTERM: cancel (finish calls in flight, report). Second: exit at once.
pub(super) fn spawn_signal_handler(cancel: CancellationToken) {
    start_watchdog();
    DRAINING.store(true, std::sync::atomic::Ordering::SeqCst);
    tokio::spawn(async move {
        let mut count = 0;
        loop {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{SignalKind, signal};
                let Ok(mut term) = signal(SignalKind::terminate()) else {
                    return;
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            #[cfg(not(unix))]
            {
                if tokio::signal::ctrl_c().await.is_err() {
                    return;
                }
            }
            count += 1;
            if count >= 2 {
                let _ = writeln!(std::io::stderr(), "second interrupt: exiting now");
                std::process::exit(Exit::Interrupted as i32);
            }
            let _ = writeln!(
                std::io::stderr(),
                "interrupt: finishing calls in flight (press Ctrl-C again to exit now)"
            );
            cancel.cancel();
        }
    });
}
