//! The JSON every sink receives: a Slack-compatible `text` line for people and the event's
//! structured fields for programs, under a `schema` version (docs/notices.md).

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::event::{Event, EventKind};

/// The payload's format version. Raised when a field changes meaning or goes away; new fields
/// may appear without a raise, so receivers should ignore fields they do not know.
pub const SCHEMA: u32 = 1;

/// The payload of one event. `text` alone is what Slack, Mattermost and similar incoming
/// webhooks show; the other fields are the event itself, times also in RFC 3339 (UTC).
pub fn payload(e: &Event) -> Value {
    json!({
        "schema": SCHEMA,
        "text": text(e),
        "id": e.id,
        "kind": e.kind,
        "at": e.at,
        "at_rfc3339": rfc3339(e.at),
        "account": e.account,
        "target": e.target,
        "due": e.due,
        "due_rfc3339": e.due.map(rfc3339),
        "reason": e.reason,
        "details": e.details,
    })
}

/// One line for people. Names and reasons are escaped for Slack (`&`, `<`, `>`): an instance
/// named `<!channel>` must not ping a whole channel.
fn text(e: &Event) -> String {
    let who = match &e.target {
        Some(t) => {
            let place = if t.zone.is_empty() { &t.region } else { &t.zone };
            let mut who = format!("{} {}", t.kind, t.id);
            if !t.name.is_empty() {
                let _ = write!(who, " \"{}\"", t.name);
            }
            if !place.is_empty() {
                let _ = write!(who, " ({place})");
            }
            who
        }
        None => "run".to_owned(),
    };
    let when = |prefix: &str| e.due.map(|t| format!("{prefix}{}", rfc3339(t))).unwrap_or_default();
    // A disk is deleted, not torn down: the words say which, the `kind` field stays one.
    let disk = e.target.as_ref().is_some_and(|t| t.kind == "disk");
    let what = match e.kind {
        EventKind::Marked if disk => format!("marked for deletion{}", when(", due ")),
        EventKind::Marked => format!("marked for teardown{}", when(", due ")),
        EventKind::Unmarked => "unmarked".to_owned(),
        EventKind::Kept => format!("kept{}", when(" until ")),
        EventKind::TornDown if disk => "deleted".to_owned(),
        EventKind::TornDown => "torn down".to_owned(),
        EventKind::Stopped => "stopped (not terminated; its disks still bill)".to_owned(),
        EventKind::Failed if disk => "deletion failed".to_owned(),
        EventKind::Failed => "teardown failed".to_owned(),
        EventKind::Summary => "summary".to_owned(),
    };
    let mut line = format!("[compshare-teardown] {who} {what}");
    if !e.reason.is_empty() {
        line.push_str(": ");
        line.push_str(&e.reason);
    }
    slack_escaped(&line)
}

/// Slack's three control characters escaped as its docs ask; nothing else is special.
fn slack_escaped(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Unix seconds as RFC 3339 UTC; the bare number for a time before 1970 (never expected).
fn rfc3339(unix: i64) -> String {
    match u64::try_from(unix) {
        Ok(secs) => {
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)).to_string()
        }
        Err(_) => unix.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notice::Target;

    fn marked() -> Event {
        Event {
            id: Event::stable_id(&["marked", "a", "uhost-1", "1"]),
            kind: EventKind::Marked,
            at: 1_800_000_000,
            account: "0123456789ab".into(),
            target: Some(Target {
                kind: "instance".into(),
                id: "uhost-1".into(),
                name: "<!channel> & co".into(),
                region: "cn-wlcb".into(),
                zone: "cn-wlcb-01".into(),
            }),
            due: Some(1_800_003_600),
            reason: "idle for 4h".into(),
            details: serde_json::Map::new(),
        }
    }

    #[test]
    fn the_payload_carries_the_event_and_an_escaped_line() {
        let p = payload(&marked());
        assert_eq!(p["schema"], 1);
        assert_eq!(p["kind"], "marked");
        assert_eq!(p["id"], marked().id);
        assert_eq!(p["target"]["name"], "<!channel> & co", "structured fields stay raw");
        assert_eq!(p["at_rfc3339"], "2027-01-15T08:00:00Z");
        assert_eq!(p["due_rfc3339"], "2027-01-15T09:00:00Z");
        assert_eq!(
            p["text"],
            "[compshare-teardown] instance uhost-1 \"&lt;!channel&gt; &amp; co\" (cn-wlcb-01) \
             marked for teardown, due 2027-01-15T09:00:00Z: idle for 4h"
        );
    }

    #[test]
    fn a_summary_has_no_target() {
        let e = Event {
            kind: EventKind::Summary,
            target: None,
            due: None,
            reason: "2 torn down".into(),
            ..marked()
        };
        let p = payload(&e);
        assert_eq!(p["text"], "[compshare-teardown] run summary: 2 torn down");
        assert!(p["target"].is_null() && p["due_rfc3339"].is_null());
    }

    #[test]
    fn a_disk_is_marked_for_deletion_and_deleted() {
        let mut e = marked();
        e.target = Some(Target {
            kind: "disk".into(),
            id: "bsi-1".into(),
            name: "data".into(),
            region: "cn-wlcb".into(),
            zone: String::new(),
        });
        e.reason = "attached to no instance for 7days".into();
        assert_eq!(
            payload(&e)["text"],
            "[compshare-teardown] disk bsi-1 \"data\" (cn-wlcb) marked for deletion, due \
             2027-01-15T09:00:00Z: attached to no instance for 7days"
        );
        e.kind = EventKind::TornDown;
        assert!(
            payload(&e)["text"]
                .as_str()
                .unwrap()
                .contains("bsi-1 \"data\" (cn-wlcb) deleted: ")
        );
        e.kind = EventKind::Failed;
        assert!(payload(&e)["text"].as_str().unwrap().contains("deletion failed"));
    }
}
