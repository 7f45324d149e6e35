//! Notices: what the scheduled job tells people (an instance marked, unmarked, kept, torn
//! down, stopped, a teardown failed, a run summary), and their delivery to a webhook and/or a
//! command. This room only delivers: which events exist, and retrying the undelivered ones on
//! the next run (the outbox), belong to the caller and its state store.
//!
//! - `event`: the [`Event`] and its stable ID; `payload`: the JSON every sink receives;
//! - `config`: the sinks as validated offline ([`NoticeConfig`]), the webhook URL that never
//!   prints its secret part;
//! - `notifier`: delivery with timeouts and retries ([`Notifier`]); `webhook` and `command`:
//!   one attempt at each sink; `inbox` (feature `sweep`): an in-memory receiver for tests.
//!
//! Wall-clock times are unix seconds given by the caller; nothing here reads the system clock.

mod command;
mod config;
mod event;
#[cfg(feature = "sweep")]
mod inbox;
mod notifier;
mod payload;
mod webhook;

pub use config::{NoticeConfig, NoticeConfigError, WebhookUrl};
pub use event::{Event, EventKind, Target};
#[cfg(feature = "sweep")]
pub use inbox::Inbox;
pub use notifier::{Failure, NoticeError, Notifier, Sink};
pub use payload::{SCHEMA, payload};
