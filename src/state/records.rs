//! The store's records as data, the one function that writes a step's [`Changes`], and the
//! reads. Times are unix seconds.

use std::collections::HashMap;

use rusqlite::{OptionalExtension, Transaction, params};
use serde::Serialize;

use super::{StateError, Store};

/// What a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Instance,
    Disk,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Instance => "instance",
            Kind::Disk => "disk",
        }
    }

    fn parse(s: &str) -> rusqlite::Result<Kind> {
        match s {
            "instance" => Ok(Kind::Instance),
            "disk" => Ok(Kind::Disk),
            other => Err(rusqlite::Error::InvalidColumnType(
                0,
                format!("kind {other:?}"),
                rusqlite::types::Type::Text,
            )),
        }
    }
}

pub use crate::monitor::Sample;

/// The last look at an instance, kept between runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Seen {
    pub id: String,
    pub name: String,
    pub state: String,
    /// Since when it has been seen running without a break; `None` while not running.
    pub running_since: Option<i64>,
    pub last_seen: i64,
    /// The newest sample over a threshold, for "last busy" in the marks view.
    pub last_busy_at: Option<i64>,
    pub last_busy_util: Option<f64>,
}

/// An instance (or disk) found idle, and when it is due to be acted on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mark {
    pub kind: Kind,
    pub id: String,
    pub name: String,
    pub marked_at: i64,
    pub due_at: i64,
    pub reason: String,
    /// Set in the transaction right before the teardown is handed to the engine, so a job
    /// killed during the teardown knows on its next run that it had begun.
    pub acting_since: Option<i64>,
}

/// "Leave this one alone until then."
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Keep {
    pub kind: Kind,
    pub id: String,
    pub until_at: i64,
    pub reason: String,
    pub created_at: i64,
}

/// One teardown (or stop) the scheduled job did, and what it freed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryRow {
    pub at: i64,
    pub kind: Kind,
    pub id: String,
    pub name: String,
    /// `terminate` or `stop`.
    pub action: String,
    /// The engine's outcome label (`terminated`, `failed`, ...).
    pub outcome: String,
    /// The instance's hourly price when it was acted on, if the API gave one.
    pub price_per_hour: Option<f64>,
    pub detail: String,
}

/// A notice in the outbox: written in the same transaction as the change it reports, sent
/// after, marked delivered when a receiver took it.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub event_id: String,
    pub created_at: i64,
    /// The notice as JSON.
    pub body: String,
    pub attempts: i64,
    pub last_error: Option<String>,
}

/// Everything one step of a job changes, written in one transaction by [`Store::apply`].
#[derive(Debug, Clone, Default)]
pub struct Changes {
    pub seen: Vec<Seen>,
    pub samples: Vec<(String, Vec<Sample>)>,
    /// Drop samples older than this (the idle window and a margin).
    pub prune_samples_before: Option<i64>,
    /// Inserted or replaced.
    pub marks: Vec<Mark>,
    pub unmarks: Vec<(Kind, String)>,
    pub keeps: Vec<Keep>,
    pub unkeeps: Vec<(Kind, String)>,
    pub history: Vec<HistoryRow>,
    /// New outbox rows; an event ID already there is left as it is (one event, one row).
    pub notices: Vec<Pending>,
    /// (event ID, when) delivered.
    pub delivered: Vec<(String, i64)>,
    /// (event ID, why) not delivered this time.
    pub undelivered: Vec<(String, String)>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
            && self.samples.iter().all(|(_, s)| s.is_empty())
            && self.prune_samples_before.is_none()
            && self.marks.is_empty()
            && self.unmarks.is_empty()
            && self.keeps.is_empty()
            && self.unkeeps.is_empty()
            && self.history.is_empty()
            && self.notices.is_empty()
            && self.delivered.is_empty()
            && self.undelivered.is_empty()
    }
}

/// Write one step. Called inside the transaction [`Store::apply`] opened.
pub(super) fn write(tx: &Transaction<'_>, c: &Changes) -> rusqlite::Result<()> {
    for s in &c.seen {
        tx.execute(
            "INSERT OR REPLACE INTO seen (id, name, state, running_since, last_seen, last_busy_at, last_busy_util)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                s.id,
                s.name,
                s.state,
                s.running_since,
                s.last_seen,
                s.last_busy_at,
                s.last_busy_util
            ],
        )?;
    }
    {
        let mut add =
            tx.prepare_cached("INSERT OR IGNORE INTO samples (id, device, at, util, mem) VALUES (?1, ?2, ?3, ?4, ?5)")?;
        for (id, samples) in &c.samples {
            for s in samples {
                add.execute(params![id, s.device, s.at, s.util, s.mem])?;
            }
        }
    }
    if let Some(before) = c.prune_samples_before {
        tx.execute("DELETE FROM samples WHERE at < ?1", [before])?;
    }
    for m in &c.marks {
        tx.execute(
            "INSERT OR REPLACE INTO marks (kind, id, name, marked_at, due_at, reason, acting_since)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                m.kind.as_str(),
                m.id,
                m.name,
                m.marked_at,
                m.due_at,
                m.reason,
                m.acting_since
            ],
        )?;
    }
    for (kind, id) in &c.unmarks {
        tx.execute(
            "DELETE FROM marks WHERE kind = ?1 AND id = ?2",
            params![kind.as_str(), id],
        )?;
    }
    for k in &c.keeps {
        tx.execute(
            "INSERT OR REPLACE INTO keeps (kind, id, until_at, reason, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![k.kind.as_str(), k.id, k.until_at, k.reason, k.created_at],
        )?;
    }
    for (kind, id) in &c.unkeeps {
        tx.execute(
            "DELETE FROM keeps WHERE kind = ?1 AND id = ?2",
            params![kind.as_str(), id],
        )?;
    }
    for h in &c.history {
        tx.execute(
            "INSERT INTO history (at, kind, id, name, action, outcome, price_per_hour, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                h.at,
                h.kind.as_str(),
                h.id,
                h.name,
                h.action,
                h.outcome,
                h.price_per_hour,
                h.detail
            ],
        )?;
    }
    for n in &c.notices {
        tx.execute(
            "INSERT OR IGNORE INTO outbox (event_id, created_at, body) VALUES (?1, ?2, ?3)",
            params![n.event_id, n.created_at, n.body],
        )?;
    }
    for (id, at) in &c.delivered {
        tx.execute(
            "UPDATE outbox SET delivered_at = ?2, attempts = attempts + 1, last_error = NULL WHERE event_id = ?1",
            params![id, at],
        )?;
    }
    for (id, why) in &c.undelivered {
        tx.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?2 WHERE event_id = ?1",
            params![id, why],
        )?;
    }
    Ok(())
}

impl Store {
    /// Every instance's last look, by ID.
    pub fn seen(&self) -> Result<HashMap<String, Seen>, StateError> {
        let mut q = self.sql(
            self.conn
                .prepare("SELECT id, name, state, running_since, last_seen, last_busy_at, last_busy_util FROM seen"),
        )?;
        let rows = self.sql(q.query_map([], |r| {
            Ok(Seen {
                id: r.get(0)?,
                name: r.get(1)?,
                state: r.get(2)?,
                running_since: r.get(3)?,
                last_seen: r.get(4)?,
                last_busy_at: r.get(5)?,
                last_busy_util: r.get(6)?,
            })
        }))?;
        self.sql(rows.map(|r| r.map(|s| (s.id.clone(), s))).collect())
    }

    /// Every mark, oldest first.
    pub fn marks(&self) -> Result<Vec<Mark>, StateError> {
        let mut q = self.sql(self.conn.prepare(
            "SELECT kind, id, name, marked_at, due_at, reason, acting_since FROM marks ORDER BY marked_at, id",
        ))?;
        let rows = self.sql(q.query_map([], |r| {
            Ok(Mark {
                kind: Kind::parse(&r.get::<_, String>(0)?)?,
                id: r.get(1)?,
                name: r.get(2)?,
                marked_at: r.get(3)?,
                due_at: r.get(4)?,
                reason: r.get(5)?,
                acting_since: r.get(6)?,
            })
        }))?;
        self.sql(rows.collect())
    }

    /// Every keep (expired ones too: the caller compares with its own `now`).
    pub fn keeps(&self) -> Result<Vec<Keep>, StateError> {
        let mut q = self.sql(
            self.conn
                .prepare("SELECT kind, id, until_at, reason, created_at FROM keeps ORDER BY until_at, id"),
        )?;
        let rows = self.sql(q.query_map([], |r| {
            Ok(Keep {
                kind: Kind::parse(&r.get::<_, String>(0)?)?,
                id: r.get(1)?,
                until_at: r.get(2)?,
                reason: r.get(3)?,
                created_at: r.get(4)?,
            })
        }))?;
        self.sql(rows.collect())
    }

    /// The samples kept for `id` at or after `since`, oldest first.
    pub fn samples(&self, id: &str, since: i64) -> Result<Vec<Sample>, StateError> {
        let mut q = self.sql(self.conn.prepare_cached(
            "SELECT device, at, util, mem FROM samples WHERE id = ?1 AND at >= ?2 ORDER BY at, device",
        ))?;
        let rows = self.sql(q.query_map(params![id, since], |r| {
            Ok(Sample {
                device: r.get(0)?,
                at: r.get(1)?,
                util: r.get(2)?,
                mem: r.get(3)?,
            })
        }))?;
        self.sql(rows.collect())
    }

    /// Notices not delivered yet, oldest first.
    pub fn pending_notices(&self) -> Result<Vec<Pending>, StateError> {
        let mut q = self.sql(self.conn.prepare(
            "SELECT event_id, created_at, body, attempts, last_error FROM outbox
             WHERE delivered_at IS NULL ORDER BY created_at, event_id",
        ))?;
        let rows = self.sql(q.query_map([], |r| {
            Ok(Pending {
                event_id: r.get(0)?,
                created_at: r.get(1)?,
                body: r.get(2)?,
                attempts: r.get(3)?,
                last_error: r.get(4)?,
            })
        }))?;
        self.sql(rows.collect())
    }

    /// Whether the outbox holds `event_id` (delivered or not).
    pub fn has_notice(&self, event_id: &str) -> Result<bool, StateError> {
        let found = self.sql(
            self.conn
                .query_row("SELECT 1 FROM outbox WHERE event_id = ?1", [event_id], |_| Ok(()))
                .optional(),
        )?;
        Ok(found.is_some())
    }

    /// The teardown history at or after `since`, oldest first.
    pub fn history(&self, since: i64) -> Result<Vec<HistoryRow>, StateError> {
        let mut q = self.sql(self.conn.prepare(
            "SELECT at, kind, id, name, action, outcome, price_per_hour, detail FROM history
             WHERE at >= ?1 ORDER BY at, seq",
        ))?;
        let rows = self.sql(q.query_map([since], |r| {
            Ok(HistoryRow {
                at: r.get(0)?,
                kind: Kind::parse(&r.get::<_, String>(1)?)?,
                id: r.get(2)?,
                name: r.get(3)?,
                action: r.get(4)?,
                outcome: r.get(5)?,
                price_per_hour: r.get(6)?,
                detail: r.get(7)?,
            })
        }))?;
        self.sql(rows.collect())
    }

    /// When each disk the store knows was first seen detached, without recording anything
    /// (a dry run's view of [`Store::observe_disks`]).
    pub fn detached_since(&self) -> Result<HashMap<String, i64>, StateError> {
        let mut q = self.sql(self.conn.prepare("SELECT id, detached_since FROM disks"))?;
        let rows = self.sql(q.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))))?;
        self.sql(rows.collect())
    }

    /// Record which disks are detached now and return, for each detached one, when it was
    /// first seen detached. A disk seen attached starts over; disks not in `disks` (another
    /// region's, or gone) keep their record until not seen for [`FORGET_DISK`] seconds. One
    /// transaction.
    pub fn observe_disks(&mut self, now: i64, disks: &[(String, bool)]) -> Result<HashMap<String, i64>, StateError> {
        let path = self.path.clone();
        let fail = |e: rusqlite::Error| super::classify(&path, &e);
        let tx = self.conn.transaction().map_err(fail)?;
        let mut since = HashMap::new();
        {
            let mut get = tx
                .prepare("SELECT detached_since FROM disks WHERE id = ?1")
                .map_err(fail)?;
            let mut put = tx
                .prepare("INSERT OR REPLACE INTO disks (id, detached_since, last_seen) VALUES (?1, ?2, ?3)")
                .map_err(fail)?;
            let mut forget = tx.prepare("DELETE FROM disks WHERE id = ?1").map_err(fail)?;
            for (id, attached) in disks {
                if *attached {
                    forget.execute([id]).map_err(fail)?;
                    continue;
                }
                let known: Option<i64> = get.query_row([id], |r| r.get(0)).optional().map_err(fail)?;
                // A clock stepped back must not make a disk look detached for longer.
                let first = known.unwrap_or(now).min(now);
                put.execute(params![id, first, now]).map_err(fail)?;
                since.insert(id.clone(), first);
            }
            tx.execute("DELETE FROM disks WHERE last_seen < ?1", [now - FORGET_DISK])
                .map_err(fail)?;
        }
        tx.commit().map_err(fail)?;
        Ok(since)
    }
}

/// 30 days: a disk record not refreshed for this long belongs to a disk that is gone (or to a
/// region no job looks at any more); forgetting it only restarts its "detached since".
pub const FORGET_DISK: i64 = 30 * 24 * 3600;
