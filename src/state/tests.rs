use super::*;
use crate::credentials::Account;

fn account(key: &str) -> Account {
    Account::new(&"https://api.compshare.cn".parse().unwrap(), None, key)
}

fn mark(id: &str, due: i64) -> Mark {
    Mark {
        kind: Kind::Instance,
        id: id.into(),
        name: format!("{id}-name"),
        marked_at: 100,
        due_at: due,
        reason: "idle".into(),
        acting_since: None,
    }
}

fn sample(at: i64, util: f64) -> Sample {
    Sample {
        at,
        device: "0000:01:00.0".into(),
        util,
        mem: Some(1.0),
    }
}

#[test]
fn a_new_store_is_created_private_and_reopens_with_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/sub/store.sqlite3");
    let mut s = Store::open(&path, &account("pk")).unwrap();
    s.apply(&Changes {
        marks: vec![mark("uhost-1", 500)],
        samples: vec![(
            "uhost-1".into(),
            vec![sample(10, 1.0), sample(70, 2.0), sample(70, 9.0)],
        )],
        notices: vec![Pending {
            event_id: "ev-1".into(),
            created_at: 100,
            body: "{}".into(),
            attempts: 0,
            last_error: None,
        }],
        ..Changes::default()
    })
    .unwrap();
    drop(s);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the store's directory is private");
    }
    let r = Store::open_read_only(&path, &account("pk")).unwrap().unwrap();
    assert_eq!(r.marks().unwrap(), vec![mark("uhost-1", 500)]);
    // One sample per (device, time): the second copy of t=70 is ignored.
    assert_eq!(r.samples("uhost-1", 0).unwrap(), vec![sample(10, 1.0), sample(70, 2.0)]);
    assert_eq!(r.samples("uhost-1", 11).unwrap(), vec![sample(70, 2.0)]);
    assert_eq!(r.pending_notices().unwrap().len(), 1);
}

#[test]
fn a_read_only_open_of_a_missing_store_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("none.sqlite3");
    assert!(Store::open_read_only(&path, &account("pk")).unwrap().is_none());
    assert!(!path.exists());
}

#[test]
fn a_step_is_written_whole_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sqlite3");
    let mut s = Store::open(&path, &account("pk")).unwrap();
    s.crash_after(1);
    s.apply(&Changes {
        marks: vec![mark("uhost-1", 500)],
        ..Changes::default()
    })
    .unwrap();
    let e = s
        .apply(&Changes {
            unmarks: vec![(Kind::Instance, "uhost-1".into())],
            marks: vec![mark("uhost-2", 600)],
            ..Changes::default()
        })
        .unwrap_err();
    assert!(!e.is_refusal());
    drop(s);
    let s = Store::open(&path, &account("pk")).unwrap();
    assert_eq!(s.marks().unwrap(), vec![mark("uhost-1", 500)]);
}

#[test]
fn an_outbox_event_is_one_row_and_delivery_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("s"), &account("pk")).unwrap();
    let n = |body: &str| Pending {
        event_id: "ev-1".into(),
        created_at: 5,
        body: body.into(),
        attempts: 0,
        last_error: None,
    };
    s.apply(&Changes {
        notices: vec![n("first")],
        ..Changes::default()
    })
    .unwrap();
    // The same event again (a job that crashed before recording delivery): still one row,
    // with the first body.
    s.apply(&Changes {
        notices: vec![n("second")],
        undelivered: vec![("ev-1".into(), "HTTP 500".into())],
        ..Changes::default()
    })
    .unwrap();
    let p = s.pending_notices().unwrap();
    assert_eq!((p.len(), p[0].body.as_str(), p[0].attempts), (1, "first", 1));
    assert_eq!(p[0].last_error.as_deref(), Some("HTTP 500"));
    s.apply(&Changes {
        delivered: vec![("ev-1".into(), 9)],
        ..Changes::default()
    })
    .unwrap();
    assert!(s.pending_notices().unwrap().is_empty());
    assert!(s.has_notice("ev-1").unwrap());
}

#[test]
fn disks_are_detached_since_first_seen_detached_and_start_over_when_attached() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("s"), &account("pk")).unwrap();
    let d = |id: &str, attached: bool| (id.to_owned(), attached);
    let got = s.observe_disks(100, &[d("bsm-1", false), d("bsm-2", true)]).unwrap();
    assert_eq!(got.get("bsm-1"), Some(&100));
    assert_eq!(got.get("bsm-2"), None);
    // Not listed this time (another region's listing): remembered.
    let got = s.observe_disks(200, &[d("bsm-2", false)]).unwrap();
    assert_eq!(got.get("bsm-2"), Some(&200));
    let got = s.observe_disks(300, &[d("bsm-1", false), d("bsm-2", true)]).unwrap();
    assert_eq!(got.get("bsm-1"), Some(&100));
    let got = s.observe_disks(400, &[d("bsm-2", false)]).unwrap();
    assert_eq!(got.get("bsm-2"), Some(&400), "attached in between: starts over");
    // Not seen for 30 days: forgotten.
    let later = 300 + records::FORGET_DISK + 1;
    s.observe_disks(later, &[]).unwrap();
    let got = s.observe_disks(later + 1, &[d("bsm-1", false)]).unwrap();
    assert_eq!(got.get("bsm-1"), Some(&(later + 1)));
}

#[test]
fn another_accounts_store_is_refused_and_left_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    Store::open(&path, &account("pk-a")).unwrap();
    let before = std::fs::read(&path).unwrap();
    let e = Store::open(&path, &account("pk-b")).unwrap_err();
    assert!(matches!(e, StateError::OtherAccount { .. }), "{e}");
    assert!(e.is_refusal());
    assert!(e.to_string().contains("public key"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn foreign_damaged_and_newer_files_are_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    // Another program's SQLite database.
    let other = dir.path().join("other.db");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    // Not a database at all.
    let text = dir.path().join("text");
    std::fs::write(&text, "x".repeat(4096)).unwrap();
    // A store from a newer version.
    let newer = dir.path().join("newer");
    Store::open(&newer, &account("pk")).unwrap();
    rusqlite::Connection::open(&newer)
        .unwrap()
        .execute_batch(&format!("PRAGMA user_version = {}", VERSION + 1))
        .unwrap();
    for (path, want) in [(&other, "another program"), (&text, "not an SQLite"), (&newer, "newer")] {
        let before = std::fs::read(path).unwrap();
        let e = Store::open(path, &account("pk")).unwrap_err();
        assert!(e.is_refusal() && e.to_string().contains(want), "{e}");
        assert!(e.to_string().contains("nothing was changed"), "{e}");
        assert_eq!(&std::fs::read(path).unwrap(), &before);
        assert!(Store::open_read_only(path, &account("pk")).is_err());
    }
}

#[cfg(unix)]
#[test]
fn links_and_odd_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    Store::open(&real, &account("pk")).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let e = Store::open(&link, &account("pk")).unwrap_err();
    assert!(
        matches!(
            e,
            StateError::NotRegular {
                kind: "a symbolic link",
                ..
            }
        ),
        "{e}"
    );
    let e = Store::open(dir.path(), &account("pk")).unwrap_err();
    assert!(matches!(e, StateError::NotRegular { .. }), "{e}");
    let e = Store::open(std::path::Path::new("/dev/null"), &account("pk")).unwrap_err();
    assert!(matches!(e, StateError::NotRegular { kind: "a device", .. }), "{e}");
}

#[test]
fn history_and_keeps_read_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("s"), &account("pk")).unwrap();
    let h = |at: i64, id: &str| HistoryRow {
        at,
        kind: Kind::Instance,
        id: id.into(),
        name: "n".into(),
        action: "terminate".into(),
        outcome: "terminated".into(),
        price_per_hour: Some(2.5),
        detail: String::new(),
    };
    let k = Keep {
        kind: Kind::Instance,
        id: "uhost-9".into(),
        until_at: 1000,
        reason: "demo tomorrow".into(),
        created_at: 10,
    };
    s.apply(&Changes {
        history: vec![h(50, "uhost-2"), h(20, "uhost-1")],
        keeps: vec![k.clone()],
        ..Changes::default()
    })
    .unwrap();
    let ids: Vec<_> = s.history(0).unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(ids, ["uhost-1", "uhost-2"]);
    assert_eq!(s.history(30).unwrap().len(), 1);
    assert_eq!(s.keeps().unwrap(), vec![k]);
    s.apply(&Changes {
        unkeeps: vec![(Kind::Instance, "uhost-9".into())],
        ..Changes::default()
    })
    .unwrap();
    assert!(s.keeps().unwrap().is_empty());
}
