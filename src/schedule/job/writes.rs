//! What a run writes besides its decisions: the outcomes of the engine (the second write), the
//! delivery of the outbox (the third), and the marks, events and history rows they are made
//! of. See the write order in [`super`].

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::{Action, Config, JobReport, secs};
use crate::api::Instance;
use crate::notice::{Event, EventKind, Notifier, Target};
use crate::state::{Changes, HistoryRow, Kind, Mark, Pending, StateError, Store};
use crate::workflow::{self, Outcome, Report};

/// The second write: what the engine did to each instance acted on.
pub(super) fn outcomes(
    cfg: &Config,
    now: i64,
    marks: &HashMap<String, Mark>,
    teardown: &Report,
    report: &mut JobReport,
) -> Changes {
    let mut c = Changes::default();
    let by_id: HashMap<&str, &workflow::InstanceReport> =
        teardown.instances.iter().map(|i| (i.uhost_id.as_str(), i)).collect();
    for entry in &mut report.entries {
        let Some(r) = by_id.get(entry.uhost_id.as_str()) else {
            continue;
        };
        report.acted += 1;
        entry.outcome = Some(r.outcome.clone());
        let key = marks
            .get(&entry.uhost_id)
            .map_or_else(|| now.to_string(), |m| m.marked_at.to_string());
        let id = entry.uhost_id.clone();
        let label = r.outcome.word();
        let (kind, reason) = match &r.outcome {
            Outcome::Terminated { .. } => (EventKind::TornDown, format!("idle until the end of its grace; {label}")),
            Outcome::Stopped => (
                EventKind::Stopped,
                "idle until the end of its grace; stopped".to_owned(),
            ),
            Outcome::AlreadyGone | Outcome::DeletedByOther => (EventKind::Unmarked, label.to_owned()),
            Outcome::Skipped { reason } => (EventKind::Unmarked, format!("not torn down: {reason}")),
            _ => (EventKind::Failed, label.to_owned()),
        };
        // Done with: torn down, stopped, gone, or refused by the guard (protected since). A
        // failure keeps its mark for the next run to judge again.
        let done = r.outcome.is_gone() || matches!(r.outcome, Outcome::Stopped | Outcome::Skipped { .. });
        if done {
            c.unmarks.push((Kind::Instance, id.clone()));
        } else if let Some(m) = marks
            .get(&id)
            .cloned()
            .or_else(|| Some(new_mark_at(&id, &entry.name, now, cfg)))
        {
            // Failed: kept marked and judged again next run.
            c.marks.push(Mark {
                acting_since: None,
                ..m
            });
        }
        let price = entry.price_per_hour;
        if matches!(kind, EventKind::TornDown | EventKind::Stopped | EventKind::Failed) {
            c.history.push(history(
                now,
                cfg.action,
                &id,
                &entry.name,
                label,
                price,
                &r.outcome.detail(),
            ));
        }
        // A failure is its own event each time; the rest happen once per mark.
        let key = if kind == EventKind::Failed {
            format!("{key}/{now}")
        } else {
            key
        };
        let mut details = Map::new();
        details.insert("outcome".into(), json!(label));
        if let Some(p) = price {
            details.insert("price_per_hour".into(), json!(p));
        }
        let t = instance_target(&id, &entry.name, None);
        let e = event_for(cfg, now, kind, &key, t, reason, None, details);
        c.notices.push(pending(&e, now));
    }
    c
}

/// The last step: deliver every notice not yet delivered (this run's and earlier runs'),
/// within the deadline, and record which were. `told`: the event IDs this run wrote, which
/// the summary tells of.
pub(super) async fn deliver(
    store: &mut Store,
    notifier: Option<&Notifier>,
    cfg: &Config,
    now: i64,
    told: &[String],
    report: &mut JobReport,
) -> Result<(), StateError> {
    let Some(notifier) = notifier else { return Ok(()) };
    if report.marked + report.unmarked + report.acted > 0 {
        let mut details = Map::new();
        for (k, v) in [
            ("marked", report.marked),
            ("unmarked", report.unmarked),
            ("waiting", report.waiting),
            ("kept", report.kept),
            ("acted", report.acted),
        ] {
            details.insert(k.into(), json!(v));
        }
        let reason = format!(
            "scheduled teardown: {} marked, {} unmarked, {} acted on, {} waiting",
            report.marked, report.unmarked, report.acted, report.waiting
        );
        // Keyed by the events it tells of, not only the second: two runs within one second
        // (the next cron run, a manual one) are two summaries, and the outbox would take the
        // second for a resend of the first and drop it.
        let mut key = vec!["summary", &cfg.account];
        let at = now.to_string();
        key.push(&at);
        key.extend(told.iter().map(String::as_str));
        let e = Event {
            id: Event::stable_id(&key),
            kind: EventKind::Summary,
            at: now,
            account: cfg.account.clone(),
            target: None,
            due: None,
            reason,
            details,
        };
        store.apply(&Changes {
            notices: vec![pending(&e, now)],
            ..Changes::default()
        })?;
    }
    let pending = store.pending_notices()?;
    let mut events = Vec::with_capacity(pending.len());
    let mut unreadable = Vec::new();
    for p in &pending {
        match serde_json::from_str::<Event>(&p.body) {
            Ok(e) => events.push(e),
            Err(e) => unreadable.push((p.event_id.clone(), format!("unreadable notice: {e}"))),
        }
    }
    let results = notifier.deliver_all(&events, cfg.notice_deadline).await;
    let mut c = Changes {
        undelivered: unreadable,
        ..Changes::default()
    };
    for (e, r) in events.iter().zip(results) {
        match r {
            Ok(()) => {
                report.notices_sent += 1;
                c.delivered.push((e.id.clone(), now));
            }
            Err(err) => {
                // The notifier already logged why; the next run sends it again.
                report.notices_failed += 1;
                c.undelivered.push((e.id.clone(), err.to_string()));
            }
        }
    }
    store.apply(&c)
}

pub(super) fn new_mark(id: &str, name: &str, now: i64, due_at: i64, cfg: &Config) -> Mark {
    Mark {
        due_at,
        ..new_mark_at(id, name, now, cfg)
    }
}

pub(super) fn new_mark_at(id: &str, name: &str, now: i64, cfg: &Config) -> Mark {
    Mark {
        kind: Kind::Instance,
        id: id.to_owned(),
        name: name.to_owned(),
        marked_at: now,
        due_at: now.saturating_add(secs(cfg.grace)),
        reason: format!(
            "idle for {}: every GPU at or under {}% utilisation and {}% memory",
            humantime::format_duration(cfg.rule.window),
            cfg.rule.util_max,
            cfg.rule.mem_max
        ),
        acting_since: None,
    }
}

#[expect(clippy::too_many_arguments, reason = "one event's fields, named at the call site")]
pub(super) fn event_for(
    cfg: &Config,
    now: i64,
    kind: EventKind,
    key: &str,
    target: Target,
    reason: String,
    due: Option<i64>,
    details: Map<String, Value>,
) -> Event {
    Event {
        id: Event::stable_id(&[kind.as_str(), &cfg.account, &target.id, key]),
        kind,
        at: now,
        account: cfg.account.clone(),
        target: Some(target),
        due,
        reason,
        details,
    }
}

/// An instance's notice target.
pub(super) fn instance_target(id: &str, name: &str, row: Option<&Instance>) -> Target {
    Target {
        kind: "instance".into(),
        id: id.to_owned(),
        name: name.to_owned(),
        region: row.map(|r| r.home_region().to_owned()).unwrap_or_default(),
        zone: row.map(|r| r.zone.clone()).unwrap_or_default(),
    }
}

pub(super) fn pending(e: &Event, now: i64) -> Pending {
    Pending {
        event_id: e.id.clone(),
        created_at: now,
        body: serde_json::to_string(e).expect("an event serializes"),
        attempts: 0,
        last_error: None,
    }
}

pub(super) fn price(row: Option<&Instance>) -> Map<String, Value> {
    let mut m = Map::new();
    if let Some(p) = row.map(|r| r.instance_price).filter(|p| *p > 0.0) {
        m.insert("price_per_hour".into(), json!(p));
    }
    m
}

pub(super) fn history(
    now: i64,
    action: Action,
    id: &str,
    name: &str,
    outcome: &str,
    price: Option<f64>,
    detail: &str,
) -> HistoryRow {
    HistoryRow {
        at: now,
        kind: Kind::Instance,
        id: id.to_owned(),
        name: name.to_owned(),
        action: action.as_str().to_owned(),
        outcome: outcome.to_owned(),
        price_per_hour: price,
        detail: detail.to_owned(),
    }
}
