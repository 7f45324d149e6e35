//! Logs: `tracing` to stderr, as text (printed above the progress bars without tearing them)
//! or as JSON lines for journald and log collectors. The filter comes from
//! `COMPSHARE_TEARDOWN_LOG` or `RUST_LOG` (`EnvFilter` syntax) when set, else from `-q`/`-v`.
//!
//! Text lines show every field through [`crate::output::printable`]: a message may quote an
//! instance name or an API message, and a control character in it must not drive the
//! terminal. JSON lines escape them by themselves.

use std::io::{self, Write};

use indicatif::MultiProgress;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Writes log lines to stderr with the bars suspended, so lines land above them.
#[derive(Clone)]
struct BarWriter {
    multi: MultiProgress,
}

impl Write for BarWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.multi.suspend(|| io::stderr().write_all(buf))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for BarWriter {
    type Writer = BarWriter;
    fn make_writer(&'a self) -> BarWriter {
        self.clone()
    }
}

/// The default filter: `verbosity` -1 (`-q`) errors only, 0 info (warn while bars are
/// drawn, since the bars carry the progress), 1 debug, 2+ trace; other crates stay at warn.
fn default_filter(verbosity: i8, bars_visible: bool) -> String {
    let level = match verbosity {
        i8::MIN..=-1 => "error",
        0 if bars_visible => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    format!("warn,compshare_teardown={level}")
}

/// The text format's fields, as the default writes them (the message bare, other fields as
/// `name=value`), each made printable.
fn printable_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        let text = format!("{value:?}");
        let text = crate::output::printable(&text);
        if field.name() == "message" {
            write!(w, "{text}")
        } else {
            write!(w, "{field}={text}")
        }
    })
    .delimited(" ")
}

/// Install the global subscriber. Safe to call once per process.
pub fn init(format: LogFormat, verbosity: i8, multi: &MultiProgress, color: bool) {
    let env = std::env::var("COMPSHARE_TEARDOWN_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok();
    let filter = env
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(default_filter(verbosity, !multi.is_hidden())));
    let writer = BarWriter { multi: multi.clone() };
    let result = match format {
        LogFormat::Text => tracing_subscriber::fmt()
            .fmt_fields(printable_fields())
            .with_env_filter(filter)
            .with_writer(writer)
            .with_ansi(color)
            .with_target(false)
            .try_init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_env_filter(filter)
            .with_writer(writer)
            .try_init(),
    };
    // A second init (tests calling the app twice in one process) keeps the first subscriber.
    drop(result);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lines_escape_control_characters() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl Write for Buf {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(printable_fields())
            .with_ansi(false)
            .with_writer(move || out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let name = "evil\x1b[2J\r\nFAKE LINE";
            tracing::warn!(id = "uhost-1", name, "skipping {name}");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(!text.contains('\x1b') && !text.contains('\r'), "{text:?}");
        assert!(text.contains("skipping evil\\u{1b}[2J\\r\\nFAKE LINE"), "{text}");
        assert!(text.contains("id=\"uhost-1\""), "{text}");
    }

    #[test]
    fn filters_by_verbosity() {
        assert_eq!(default_filter(-1, false), "warn,compshare_teardown=error");
        assert_eq!(default_filter(0, false), "warn,compshare_teardown=info");
        assert_eq!(default_filter(0, true), "warn,compshare_teardown=warn");
        assert_eq!(default_filter(2, true), "warn,compshare_teardown=trace");
    }
}
