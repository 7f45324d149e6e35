//! An in-memory receiver (feature `sweep`: tests, examples and the seed sweep only). It
//! records every payload it accepts and refuses as told, without I/O, so a paused-time run can
//! check which notices arrived (at least once per event, none for an event that did not
//! happen) and exercise retries on tokio's clock; real sockets and paused time do not mix.

use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::notifier::Failure;

/// A shared inbox: clones see the same record.
#[derive(Debug, Clone, Default)]
pub struct Inbox {
    inner: Arc<Mutex<Record>>,
}

#[derive(Debug, Default)]
struct Record {
    received: Vec<Value>,
    attempts: u32,
    refuse_next: u32,
    refuse_all: bool,
}

impl Inbox {
    pub fn new() -> Inbox {
        Inbox::default()
    }

    /// Every payload accepted, in order of arrival (duplicates included).
    pub fn received(&self) -> Vec<Value> {
        self.record().received.clone()
    }

    /// The `id` of every payload accepted, in order of arrival.
    pub fn ids(&self) -> Vec<String> {
        let record = self.record();
        record
            .received
            .iter()
            .filter_map(|p| p["id"].as_str().map(str::to_owned))
            .collect()
    }

    /// Attempts made, accepted or refused.
    pub fn attempts(&self) -> u32 {
        self.record().attempts
    }

    /// Refuse the next `n` attempts (a retryable failure, like a 503).
    pub fn refuse_next(&self, n: u32) {
        self.record().refuse_next = n;
    }

    /// Refuse every attempt until told otherwise (a receiver that is down).
    pub fn refuse_all(&self, refuse: bool) {
        self.record().refuse_all = refuse;
    }

    pub(super) fn accept(&self, body: &[u8]) -> Result<(), Failure> {
        let mut record = self.record();
        record.attempts += 1;
        if record.refuse_all || record.refuse_next > 0 {
            record.refuse_next = record.refuse_next.saturating_sub(1);
            return Err(Failure::Status {
                status: 503,
                body: "inbox refusing".into(),
                retry_after: None,
            });
        }
        record
            .received
            .push(serde_json::from_slice(body).unwrap_or(Value::Null));
        Ok(())
    }

    fn record(&self) -> std::sync::MutexGuard<'_, Record> {
        // A test that panicked while holding the lock has failed already; its record is
        // still the best evidence to read.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
