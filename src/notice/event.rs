//! The event a notice tells of, and its stable ID.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What happened. Serialized in `snake_case` (`torn_down`), the `kind` field of the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// First found idle: marked, with the time its teardown is due (`Event::due`).
    Marked,
    /// A mark withdrawn: the instance was seen busy, started again or moved into protection.
    Unmarked,
    /// A person kept it (`Event::due`: kept until then, if bounded).
    Kept,
    /// Terminated by the job.
    TornDown,
    /// Stopped, not terminated (the job's stop-instead mode).
    Stopped,
    /// The job tried to act and could not (the reason says why).
    Failed,
    /// One per run: what the run did (`Event::details` carries the counts).
    Summary,
}

impl EventKind {
    /// The `snake_case` name, as in the payload.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Marked => "marked",
            EventKind::Unmarked => "unmarked",
            EventKind::Kept => "kept",
            EventKind::TornDown => "torn_down",
            EventKind::Stopped => "stopped",
            EventKind::Failed => "failed",
            EventKind::Summary => "summary",
        }
    }
}

/// What an event is about: an instance or a disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// `instance` or `disk`.
    pub kind: String,
    pub id: String,
    pub name: String,
    pub region: String,
    pub zone: String,
}

/// One notice's content. The caller builds it (and stores it in its outbox before acting, so a
/// crash cannot lose it); [`payload`](super::payload) turns it into what the sinks receive.
///
/// Text fields hold plain text as found (an instance name is whatever its owner typed): the
/// payload escapes what Slack would interpret, JSON escapes the rest, and a log line should
/// quote them with `{:?}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Stable across retries and runs: receivers drop duplicates by it ([`Event::stable_id`]).
    pub id: String,
    pub kind: EventKind,
    /// When it happened, unix seconds.
    pub at: i64,
    /// A non-secret label of the account (`Account::slug()`).
    pub account: String,
    /// `None` for a run summary.
    pub target: Option<Target>,
    /// `Marked`: when the teardown is due; `Kept`: kept until then (`None`: no end). Unix s.
    pub due: Option<i64>,
    /// Why, for people: "idle for 4h (every GPU at or under 2%)".
    pub reason: String,
    /// Structured extras: last busy sample, hourly price, outcome, a summary's counts.
    pub details: Map<String, Value>,
}

impl Event {
    /// A stable event ID from the parts that make an event unique, for example
    /// `["marked", account, instance_id, marked_at]`: the same parts give the same ID in every
    /// run and on every machine, so a notice sent again after a crash carries the ID of the
    /// first. `ev-` and 20 hex digits (80 bits) of the SHA-1 of the parts, each length-prefixed
    /// so `["ab", "c"]` and `["a", "bc"]` differ.
    pub fn stable_id(parts: &[&str]) -> String {
        use sha1::Digest;
        let mut hash = sha1::Sha1::new();
        for part in parts {
            hash.update(format!("{}:", part.len()).as_bytes());
            hash.update(part.as_bytes());
        }
        format!("ev-{}", &crate::credentials::hex(&hash.finalize())[..20])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_ids_depend_on_every_part_and_its_boundaries() {
        let id = Event::stable_id(&["marked", "acct", "uhost-1", "1700000000"]);
        assert_eq!(id, Event::stable_id(&["marked", "acct", "uhost-1", "1700000000"]));
        assert!(id.starts_with("ev-") && id.len() == 23, "{id}");
        assert!(id[3..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(id, Event::stable_id(&["marked", "acct", "uhost-1", "1700000001"]));
        assert_ne!(Event::stable_id(&["ab", "c"]), Event::stable_id(&["a", "bc"]));
        assert_ne!(Event::stable_id(&[]), Event::stable_id(&[""]));
    }

    #[test]
    fn kinds_serialize_as_their_names() {
        for kind in [
            EventKind::Marked,
            EventKind::Unmarked,
            EventKind::Kept,
            EventKind::TornDown,
            EventKind::Stopped,
            EventKind::Failed,
            EventKind::Summary,
        ] {
            assert_eq!(serde_json::to_value(kind).unwrap(), Value::from(kind.as_str()));
        }
    }
}
