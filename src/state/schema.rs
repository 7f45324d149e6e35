//! The store's schema and its migrations. `PRAGMA application_id` says the file is ours (a
//! database another program made is refused, never migrated), `PRAGMA user_version` is the
//! schema version (a newer one is refused: an old binary must not guess at new tables), and the
//! one-row `account` table binds the store to the account that created it.

use rusqlite::{Connection, OptionalExtension};

use super::{StateError, classify};
use crate::credentials::Account;

/// "CSTD" in ASCII: what `PRAGMA application_id` holds in every store this tool made.
const APPLICATION_ID: i64 = 0x4353_5444;

/// The schema version this binary writes. Migration `n` (1-based) takes the store from `n - 1`
/// to `n`; they run in order, each in its own transaction with the version bump.
pub const VERSION: i64 = 1;

const MIGRATIONS: [&str; 1] = [
    // 1: everything scheduled teardown and disk cleanup keep.
    "CREATE TABLE account (
        endpoint TEXT NOT NULL,
        project_id TEXT NOT NULL,
        key_fingerprint TEXT NOT NULL
    );
    -- The last state each instance was seen in, and since when it has been seen running
    -- (NULL while not running): the idle rule's \"running for at least D\".
    CREATE TABLE seen (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        state TEXT NOT NULL,
        running_since INTEGER,
        last_seen INTEGER NOT NULL,
        last_busy_at INTEGER,
        last_busy_util REAL
    );
    CREATE TABLE marks (
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        name TEXT NOT NULL,
        marked_at INTEGER NOT NULL,
        due_at INTEGER NOT NULL,
        reason TEXT NOT NULL,
        acting_since INTEGER,
        PRIMARY KEY (kind, id)
    );
    CREATE TABLE keeps (
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        until_at INTEGER NOT NULL,
        reason TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (kind, id)
    );
    CREATE TABLE samples (
        id TEXT NOT NULL,
        device TEXT NOT NULL,
        at INTEGER NOT NULL,
        util REAL NOT NULL,
        mem REAL,
        PRIMARY KEY (id, device, at)
    ) WITHOUT ROWID;
    CREATE TABLE disks (
        id TEXT PRIMARY KEY,
        detached_since INTEGER NOT NULL,
        last_seen INTEGER NOT NULL
    );
    CREATE TABLE history (
        seq INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        name TEXT NOT NULL,
        action TEXT NOT NULL,
        outcome TEXT NOT NULL,
        price_per_hour REAL,
        detail TEXT NOT NULL
    );
    CREATE INDEX history_at ON history (at);
    CREATE TABLE outbox (
        event_id TEXT PRIMARY KEY,
        created_at INTEGER NOT NULL,
        body TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        delivered_at INTEGER,
        last_error TEXT
    );",
];

/// Check that the file is ours, for this account, not newer; then (when `write`) migrate it
/// to [`VERSION`]. A read-only open of an older store is fine: readers only read what v1 has.
pub(super) fn check_and_migrate(
    conn: &mut Connection,
    path: &str,
    account: &Account,
    write: bool,
) -> Result<(), StateError> {
    let pragma = |conn: &Connection, name: &str| -> Result<i64, StateError> {
        conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
            .map_err(|e| classify(path, &e))
    };
    let app = pragma(conn, "application_id")?;
    let version = pragma(conn, "user_version")?;
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(|e| classify(path, &e))?;
    let fresh = app == 0 && version == 0 && tables == 0;
    if !fresh && app != APPLICATION_ID {
        return Err(StateError::Foreign {
            path: path.to_owned(),
            detail: "an SQLite database made by another program".into(),
        });
    }
    if version > VERSION {
        return Err(StateError::Newer {
            path: path.to_owned(),
            found: version,
            supported: VERSION,
        });
    }
    if !fresh {
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| classify(path, &e))?;
        if check != "ok" {
            return Err(StateError::Corrupt {
                path: path.to_owned(),
                detail: "SQLite's integrity check failed".into(),
            });
        }
        check_account(conn, path, account)?;
    }
    if !write {
        return Ok(());
    }
    conn.execute_batch("PRAGMA synchronous = FULL")
        .map_err(|e| classify(path, &e))?;
    for (n, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(version).unwrap_or(0))
    {
        let tx = conn.transaction().map_err(|e| classify(path, &e))?;
        tx.execute_batch(sql).map_err(|e| classify(path, &e))?;
        if n == 0 {
            tx.execute(
                "INSERT INTO account (endpoint, project_id, key_fingerprint) VALUES (?1, ?2, ?3)",
                (&account.endpoint, &account.project_id, &account.key_fingerprint),
            )
            .map_err(|e| classify(path, &e))?;
            tx.execute_batch(&format!("PRAGMA application_id = {APPLICATION_ID}"))
                .map_err(|e| classify(path, &e))?;
        }
        tx.execute_batch(&format!("PRAGMA user_version = {}", n + 1))
            .map_err(|e| classify(path, &e))?;
        tx.commit().map_err(|e| classify(path, &e))?;
    }
    Ok(())
}

fn check_account(conn: &Connection, path: &str, account: &Account) -> Result<(), StateError> {
    let found = conn
        .query_row("SELECT endpoint, project_id, key_fingerprint FROM account", [], |r| {
            Ok(Account {
                endpoint: r.get(0)?,
                project_id: r.get(1)?,
                key_fingerprint: r.get(2)?,
            })
        })
        .optional()
        .map_err(|e| classify(path, &e))?;
    let Some(found) = found else {
        return Err(StateError::Corrupt {
            path: path.to_owned(),
            detail: "the account record is missing".into(),
        });
    };
    let differences = found.differences(account);
    if differences.is_empty() {
        Ok(())
    } else {
        Err(StateError::OtherAccount {
            path: path.to_owned(),
            detail: differences.join(", "),
        })
    }
}

#[cfg(test)]
#[test]
fn one_migration_per_version() {
    assert_eq!(MIGRATIONS.len(), usize::try_from(VERSION).unwrap());
}
