//! The sinks a notice goes to, validated offline (before the run lock and any API call), and
//! the webhook URL that never shows its secret part.

use std::fmt;
use std::time::Duration;

use url::Url;

/// Bad notice settings: the CLI maps every one to exit 2, before anything is touched. No
/// message quotes the URL or the command: either may hold a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoticeConfigError {
    #[error("the webhook URL is not a valid URL ({0})")]
    WebhookSyntax(String),
    #[error("the webhook URL must start with http:// or https://, not {0}://")]
    WebhookScheme(String),
    #[error("the webhook URL has no host")]
    WebhookHost,
    #[error("the notice command is empty")]
    EmptyCommand,
    #[error("the notice command contains a NUL byte")]
    CommandNul,
    #[error("the notice timeout must be between {} ms and {} s, not {} ms", .min.as_millis(), .max.as_secs(), .given.as_millis())]
    Timeout {
        given: Duration,
        min: Duration,
        max: Duration,
    },
    #[error("notice attempts must be between 1 and {max}, not {given}")]
    Attempts { given: u32, max: u32 },
    #[error("the first retry delay must be between 1 ms and {} s", .max.as_secs())]
    FirstDelay { max: Duration },
}

/// A webhook URL. Its path and query usually are the secret (Slack's
/// `hooks.slack.com/services/T…/B…/X…`), so `Display` and `Debug` show the scheme, host and
/// port only: `https://hooks.slack.com/***`.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl(Url);

impl WebhookUrl {
    pub fn parse(text: &str) -> Result<WebhookUrl, NoticeConfigError> {
        // The parser's message names the problem ("relative URL without a base"), never the text.
        let url = Url::parse(text.trim()).map_err(|e| NoticeConfigError::WebhookSyntax(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            // A scheme is not secret, but a long one is most likely a paste gone wrong.
            return Err(NoticeConfigError::WebhookScheme(crate::textfile::excerpt(url.scheme())));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(NoticeConfigError::WebhookHost);
        }
        Ok(WebhookUrl(url))
    }

    /// The full URL, for the request only.
    pub(crate) fn expose(&self) -> &Url {
        &self.0
    }

    /// `text` with every secret part of the URL replaced by `***`: for text from outside (an
    /// error, a response body) before it is logged or returned, since a server or a library
    /// may echo the URL. Parts shorter than 8 characters are left alone: they could match
    /// innocent text (a path `/` or `/hook`), and they are no secret worth the name.
    pub fn mask(&self, text: &str) -> String {
        let url = &self.0;
        let path_query = &url[url::Position::BeforePath..];
        let mut out = text.replace(url.as_str(), &self.to_string());
        for secret in [
            path_query,
            url.path(),
            url.query().unwrap_or_default(),
            url.password().unwrap_or_default(),
        ] {
            if secret.len() >= 8 {
                out = out.replace(secret, "***");
            }
        }
        out
    }
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = &self.0;
        write!(f, "{}://{}", url.scheme(), url.host_str().unwrap_or_default())?;
        if let Some(port) = url.port() {
            write!(f, ":{port}")?;
        }
        f.write_str("/***")
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookUrl({self})")
    }
}

/// Where notices go and how hard delivery tries. Empty (no webhook, no command) means no
/// notices. `Debug` masks the URL and hides the command line (it may carry a token).
#[derive(Clone)]
pub struct NoticeConfig {
    pub(crate) webhook: Option<WebhookUrl>,
    pub(crate) command: Option<String>,
    pub(crate) timeout: Duration,
    pub(crate) attempts: u32,
    pub(crate) first_delay: Duration,
    #[cfg(feature = "sweep")]
    pub(crate) inbox: Option<super::Inbox>,
}

impl NoticeConfig {
    /// The shortest timeout: below it nothing real answers, not even a local receiver.
    pub const MIN_TIMEOUT: Duration = Duration::from_millis(10);
    /// The longest, as `watch --notify-timeout` allows: a receiver that slow is broken, and the
    /// job's overall notice deadline bounds what a run spends on notices whatever this is.
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);
    /// Slack and a local command answer in well under a second; 10 s leaves room for a slow
    /// proxy without holding a run up for long.
    pub const DEFAULT_TIMEOUT: Duration = crate::defaults::NOTICE_TIMEOUT;
    /// Three attempts ride out a dropped connection or a restarting receiver; what they do
    /// not deliver is retried on the next run.
    pub const DEFAULT_ATTEMPTS: u32 = 3;
    pub const MAX_ATTEMPTS: u32 = 10;
    /// The first backoff delay; each next one doubles (with jitter).
    pub const DEFAULT_FIRST_DELAY: Duration = Duration::from_secs(1);
    /// The longest wait between attempts, also the longest `Retry-After` honoured: a
    /// receiver asking for more is left for the next run rather than holding this one.
    pub const LONGEST_WAIT: Duration = Duration::from_secs(30);

    /// Checked offline, before any lock or API call: a malformed or non-http(s) URL, an empty
    /// command, an out-of-range timeout are a [`NoticeConfigError`] (exit 2). The command is
    /// run by `sh -c`, so it is one shell command line, as in a crontab.
    pub fn new(webhook: Option<&str>, command: Option<&str>, timeout: Duration) -> Result<Self, NoticeConfigError> {
        let webhook = webhook.map(WebhookUrl::parse).transpose()?;
        let command = match command {
            None => None,
            Some(c) if c.trim().is_empty() => return Err(NoticeConfigError::EmptyCommand),
            Some(c) if c.contains('\0') => return Err(NoticeConfigError::CommandNul),
            Some(c) => Some(c.to_owned()),
        };
        if !(Self::MIN_TIMEOUT..=Self::MAX_TIMEOUT).contains(&timeout) {
            return Err(NoticeConfigError::Timeout {
                given: timeout,
                min: Self::MIN_TIMEOUT,
                max: Self::MAX_TIMEOUT,
            });
        }
        Ok(NoticeConfig {
            webhook,
            command,
            timeout,
            attempts: Self::DEFAULT_ATTEMPTS,
            first_delay: Self::DEFAULT_FIRST_DELAY,
            #[cfg(feature = "sweep")]
            inbox: None,
        })
    }

    /// How many times each sink is tried per event (1 = no retry).
    pub fn with_attempts(mut self, attempts: u32) -> Result<Self, NoticeConfigError> {
        if !(1..=Self::MAX_ATTEMPTS).contains(&attempts) {
            return Err(NoticeConfigError::Attempts {
                given: attempts,
                max: Self::MAX_ATTEMPTS,
            });
        }
        self.attempts = attempts;
        Ok(self)
    }

    /// The first wait between attempts (tests use milliseconds).
    pub fn with_first_delay(mut self, delay: Duration) -> Result<Self, NoticeConfigError> {
        if delay < Duration::from_millis(1) || delay > Self::LONGEST_WAIT {
            return Err(NoticeConfigError::FirstDelay {
                max: Self::LONGEST_WAIT,
            });
        }
        self.first_delay = delay;
        Ok(self)
    }

    /// Deliver to an in-memory [`Inbox`](super::Inbox) too (feature `sweep`: tests only).
    #[cfg(feature = "sweep")]
    #[must_use]
    pub fn with_inbox(mut self, inbox: super::Inbox) -> Self {
        self.inbox = Some(inbox);
        self
    }

    /// No sink: nothing to deliver.
    pub fn is_empty(&self) -> bool {
        #[cfg(feature = "sweep")]
        if self.inbox.is_some() {
            return false;
        }
        self.webhook.is_none() && self.command.is_none()
    }

    pub fn webhook(&self) -> Option<&WebhookUrl> {
        self.webhook.as_ref()
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

impl fmt::Debug for NoticeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoticeConfig")
            .field("webhook", &self.webhook)
            .field("command", &self.command.as_ref().map(|_| "***"))
            .field("timeout", &self.timeout)
            .field("attempts", &self.attempts)
            .field("first_delay", &self.first_delay)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "https://hooks.slack.com/services/T0001/B0002/XXXXSECRETXXXX";

    #[test]
    fn urls_print_masked() {
        let url = WebhookUrl::parse(SECRET).unwrap();
        assert_eq!(url.to_string(), "https://hooks.slack.com/***");
        assert_eq!(format!("{url:?}"), "WebhookUrl(https://hooks.slack.com/***)");
        let local = WebhookUrl::parse("http://127.0.0.1:8080/hook?token=abcdefgh").unwrap();
        assert_eq!(local.to_string(), "http://127.0.0.1:8080/***");
        let said = format!("error sending request for url ({SECRET}) and /services/T0001/B0002/XXXXSECRETXXXX");
        let masked = url.mask(&said);
        assert!(!masked.contains("SECRET"), "{masked}");
        assert!(!local.mask("got ?token=abcdefgh").contains("abcdefgh"));
        assert!(!local.mask("got token=abcdefgh").contains("abcdefgh"));
        let config = NoticeConfig::new(
            Some(SECRET),
            Some("curl -d @- https://x/TOKEN123"),
            Duration::from_secs(1),
        )
        .unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("SECRET") && !debug.contains("TOKEN123"), "{debug}");
    }

    #[test]
    fn bad_settings_are_refused_without_quoting_them() {
        let t = Duration::from_secs(1);
        for (webhook, command, timeout) in [
            (Some("hooks.slack.com/services/SECRETPATH"), None, t),
            (Some("ftp://host/SECRETPATH"), None, t),
            (Some("http://exa mple.com/SECRETPATH"), None, t),
            (Some("http://[::1/SECRETPATH"), None, t),
            (Some(""), None, t),
            (None, Some("  "), t),
            (None, Some("echo SECRETPATH\0"), t),
            (None, Some("true"), Duration::ZERO),
            (None, Some("true"), Duration::from_secs(301)),
        ] {
            let err = NoticeConfig::new(webhook, command, timeout).unwrap_err();
            assert!(!err.to_string().contains("SECRETPATH"), "{err}");
        }
        assert!(NoticeConfig::new(None, None, t).unwrap().is_empty());
        // Both ends of the `--notify-timeout` range (1s to 5m) pass.
        for t in [Duration::from_secs(1), Duration::from_secs(300)] {
            assert!(NoticeConfig::new(None, Some("true"), t).is_ok(), "{t:?}");
        }
        let ok = NoticeConfig::new(Some("https://example.com/h"), Some("cat"), t).unwrap();
        assert!(!ok.is_empty());
        assert!(ok.clone().with_attempts(0).is_err() && ok.clone().with_attempts(11).is_err());
        assert!(ok.clone().with_first_delay(Duration::ZERO).is_err());
        assert_eq!(ok.with_attempts(1).unwrap().attempts(), 1);
    }
}
