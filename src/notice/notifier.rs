//! Delivery: one event to every configured sink, each attempt under the timeout, retried with
//! exponential backoff (backon, on tokio's clock) while the failure may pass; many events with
//! bounded concurrency under one deadline. A notice never aborts anything: the caller gets a
//! result per event, logged here, and keeps the undelivered ones for its next run.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use super::config::{NoticeConfig, WebhookUrl};
use super::event::Event;
use super::payload::payload;
use super::{command, webhook};

/// Events delivered at once by [`Notifier::deliver_all`]: enough to finish a run's handful of
/// notices quickly, few enough that a receiver's rate limit (Slack allows about one message a
/// second per webhook) sees a trickle, not a flood.
const CONCURRENCY: usize = 4;

/// Where a notice went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// Boxed: a URL is large, and errors travel by value.
    Webhook(Box<WebhookUrl>),
    Command,
    /// The in-memory [`Inbox`](super::Inbox) (feature `sweep`).
    #[cfg(feature = "sweep")]
    Inbox,
}

impl fmt::Display for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sink::Webhook(url) => write!(f, "webhook {url}"),
            // Never the command line: it may carry a token.
            Sink::Command => f.write_str("notice command"),
            #[cfg(feature = "sweep")]
            Sink::Inbox => f.write_str("inbox"),
        }
    }
}

/// Why one attempt failed. Texts from outside (a body, a command's output) are cut to one
/// line of at most 300 characters; anything from the webhook side is masked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("answered HTTP {status}{}{}", wait_said(*.retry_after), body_said(.body))]
    Status {
        status: u16,
        body: String,
        retry_after: Option<u64>,
    },
    #[error("answered HTTP {0}, a redirect (not followed: point the webhook at the final URL)")]
    Redirect(u16),
    #[error("no answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("{0}")]
    Transport(String),
    #[error("exited with {status}{output}")]
    Exit { status: String, output: String },
    #[error("could not start: {0}")]
    Spawn(String),
    #[error("no HTTP client: {0}")]
    Client(String),
}

fn wait_said(retry_after: Option<u64>) -> String {
    retry_after
        .map(|s| format!(", asked to wait {s} s"))
        .unwrap_or_default()
}

fn body_said(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

impl Failure {
    /// Whether trying again may help. 4xx but 408 and 429 say the request itself is wrong; a
    /// redirect is a configuration to fix; a command that cannot start will not start on the
    /// next try. A receiver asking to wait longer than [`NoticeConfig::LONGEST_WAIT`] is left
    /// for the next run.
    pub fn is_retryable(&self) -> bool {
        match self {
            Failure::Status {
                status, retry_after, ..
            } => {
                let asks_too_much = retry_after.is_some_and(|s| s > NoticeConfig::LONGEST_WAIT.as_secs());
                matches!(status, 408 | 429 | 500..=599) && !asks_too_much
            }
            Failure::Timeout(_) | Failure::Transport(_) | Failure::Exit { .. } => true,
            Failure::Redirect(_) | Failure::Spawn(_) | Failure::Client(_) => false,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Failure::Status { retry_after, .. } => retry_after.map(Duration::from_secs),
            _ => None,
        }
    }
}

/// A notice not delivered. `Display` and `Debug` never show a webhook's secret part or the
/// command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoticeError {
    /// A sink refused or failed after `attempts` attempts; `failure` is the last one's.
    #[error("{sink}: {failure} (attempts: {attempts})")]
    Sink {
        sink: Sink,
        attempts: u32,
        failure: Failure,
    },
    /// More than one sink failed.
    #[error("{0}; {1}")]
    Both(Box<NoticeError>, Box<NoticeError>),
    /// [`Notifier::deliver_all`]'s deadline passed first.
    #[error("not delivered before the deadline of {} ms", .0.as_millis())]
    Deadline(Duration),
    /// The delivery task ended without a result (a bug: it was not expected to panic).
    #[error("delivery ended without a result")]
    Lost,
}

impl NoticeError {
    /// Attempts made, over both sinks.
    pub fn attempts(&self) -> u32 {
        match self {
            NoticeError::Sink { attempts, .. } => *attempts,
            NoticeError::Both(a, b) => a.attempts() + b.attempts(),
            NoticeError::Deadline(_) | NoticeError::Lost => 0,
        }
    }
}

/// Delivers events to the sinks of a [`NoticeConfig`]. Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    config: NoticeConfig,
    http: Result<reqwest::Client, String>,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Notifier {
    pub fn new(config: NoticeConfig) -> Notifier {
        let http = webhook::client(config.timeout);
        Notifier {
            inner: Arc::new(Inner { config, http }),
        }
    }

    pub fn config(&self) -> &NoticeConfig {
        &self.inner.config
    }

    /// Deliver one event to every configured sink (both at once), each attempt within the
    /// timeout, retried with backoff while retryable. Ok only if every sink accepted it (no
    /// sink: Ok). A failure is logged here, with the event ID and the sink, masked.
    pub async fn deliver(&self, e: &Event) -> Result<(), NoticeError> {
        let config = &self.inner.config;
        if config.is_empty() {
            return Ok(());
        }
        let body = payload(e).to_string().into_bytes();
        let body = body.as_slice();
        let to_webhook = async {
            let url = config.webhook.as_ref()?;
            let attempt = || async {
                match &self.inner.http {
                    Ok(http) => webhook::post(http, url, body).await,
                    Err(why) => Err(Failure::Client(why.clone())),
                }
            };
            Some(self.with_retries(Sink::Webhook(Box::new(url.clone())), attempt).await)
        };
        let to_command = async {
            let line = config.command.as_deref()?;
            let attempt = || command::run(line, body, config.timeout);
            Some(self.with_retries(Sink::Command, attempt).await)
        };
        let to_inbox = async {
            #[cfg(feature = "sweep")]
            if let Some(inbox) = &config.inbox {
                let attempt = || async { inbox.accept(body) };
                return Some(self.with_retries(Sink::Inbox, attempt).await);
            }
            None
        };
        let (webhook, command, inbox) = tokio::join!(to_webhook, to_command, to_inbox);
        let result = [webhook, command, inbox]
            .into_iter()
            .flatten()
            .filter_map(Result::err)
            .reduce(|a, b| NoticeError::Both(Box::new(a), Box::new(b)))
            .map_or(Ok(()), Err);
        match &result {
            Ok(()) => tracing::debug!(event = %e.id, kind = e.kind.as_str(), "notice delivered"),
            Err(err) => tracing::warn!(event = %e.id, kind = e.kind.as_str(), "notice not delivered: {err}"),
        }
        result
    }

    /// Deliver many, at most [`CONCURRENCY`] at once, all within `deadline` (on tokio's clock):
    /// what is not delivered by then is `NoticeError::Deadline` (a command still running is
    /// killed). Results in input order; never panics.
    pub async fn deliver_all(&self, events: &[Event], deadline: Duration) -> Vec<Result<(), NoticeError>> {
        let end = tokio::time::Instant::now() + deadline;
        let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
        let mut tasks = tokio::task::JoinSet::new();
        for (i, e) in events.iter().enumerate() {
            let (me, e, permits) = (self.clone(), e.clone(), Arc::clone(&permits));
            tasks.spawn(async move {
                let delivered = tokio::time::timeout_at(end, async {
                    let Ok(_permit) = permits.acquire_owned().await else {
                        return Err(NoticeError::Lost);
                    };
                    me.deliver(&e).await
                })
                .await;
                if delivered.is_err() {
                    tracing::warn!(event = %e.id, kind = e.kind.as_str(), "notice not delivered before the deadline");
                }
                (i, delivered.unwrap_or(Err(NoticeError::Deadline(deadline))))
            });
        }
        let mut results: Vec<Option<Result<(), NoticeError>>> = (0..events.len()).map(|_| None).collect();
        while let Some(joined) = tasks.join_next().await {
            if let Ok((i, result)) = joined {
                results[i] = Some(result);
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(NoticeError::Lost)))
            .collect()
    }

    /// One sink: `attempt` under the timeout, up to `attempts` times, exponential backoff from
    /// the first delay (doubling, jittered, at most `LONGEST_WAIT`), a longer `Retry-After`
    /// honoured.
    async fn with_retries<F, Fut>(&self, sink: Sink, mut attempt: F) -> Result<(), NoticeError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), Failure>>,
    {
        let config = &self.inner.config;
        let timeout = config.timeout;
        let tries = AtomicU32::new(0);
        let once = || {
            tries.fetch_add(1, Ordering::Relaxed);
            let fut = attempt();
            async move {
                tokio::time::timeout(timeout, fut)
                    .await
                    .unwrap_or(Err(Failure::Timeout(timeout)))
            }
        };
        let policy = ExponentialBuilder::default()
            .with_min_delay(config.first_delay)
            .with_max_delay(NoticeConfig::LONGEST_WAIT)
            .with_max_times(config.attempts.saturating_sub(1) as usize)
            .with_jitter();
        once.retry(policy)
            .sleep(tokio::time::sleep)
            .when(Failure::is_retryable)
            // `None` means the attempts are used up: keep it so.
            .adjust(|failure, delay| delay.map(|d| failure.retry_after().map_or(d, |asked| d.max(asked))))
            .notify(|failure, delay| tracing::info!("{sink}: {failure}; trying again in {} ms", delay.as_millis()))
            .await
            .map_err(|failure| NoticeError::Sink {
                sink: sink.clone(),
                attempts: tries.load(Ordering::Relaxed),
                failure,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, retry_after: Option<u64>) -> Failure {
        Failure::Status {
            status,
            body: String::new(),
            retry_after,
        }
    }

    #[test]
    fn what_is_retried() {
        for (failure, retried) in [
            (status(500, None), true),
            (status(502, None), true),
            (status(503, Some(30)), true),
            (status(408, None), true),
            (status(429, Some(1)), true),
            (status(429, Some(31)), false),
            (status(400, None), false),
            (status(403, None), false),
            (status(404, None), false),
            (status(410, None), false),
            (Failure::Redirect(301), false),
            (Failure::Timeout(Duration::from_secs(1)), true),
            (Failure::Transport("connection refused".into()), true),
            (
                Failure::Exit {
                    status: "exit status: 1".into(),
                    output: String::new(),
                },
                true,
            ),
            (Failure::Spawn("no such file".into()), false),
            (Failure::Client("no TLS".into()), false),
        ] {
            assert_eq!(failure.is_retryable(), retried, "{failure}");
        }
    }
}
