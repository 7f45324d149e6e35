//! The journal's round trips, repairs and refusals.

use super::super::machine::Phase;
use super::*;

fn write_all(path: &Path, entries: &[Entry]) {
    let mut j = Journal::open(path).unwrap();
    for e in entries {
        j.write(e).unwrap();
    }
}

fn start() -> Entry {
    Entry::Start {
        version: JOURNAL_VERSION,
        kind: JournalKind::Instance,
        ids: vec!["u-a".into(), "u-b".into()],
        release_udisk: true,
        force_stop: false,
        resumed: false,
    }
}

#[test]
fn replay_rebuilds_phases_and_treats_pending_calls_as_unsure() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    write_all(
        &path,
        &[
            start(),
            Entry::Call {
                id: "u-a".into(),
                call: Call::Stop,
                region: "r".into(),
                zone: "z".into(),
            },
            Entry::Result {
                id: "u-a".into(),
                call: Call::Stop,
                effect: Effect::Accepted,
                error: None,
            },
            Entry::Call {
                id: "u-a".into(),
                call: Call::Terminate,
                region: "r".into(),
                zone: "z".into(),
            },
            Entry::Result {
                id: "u-a".into(),
                call: Call::Terminate,
                effect: Effect::Accepted,
                error: None,
            },
            Entry::Call {
                id: "u-b".into(),
                call: Call::Terminate,
                region: "r".into(),
                zone: "z".into(),
            },
        ],
    );
    let r = replay(&path).unwrap();
    assert_eq!(r.ids, vec!["u-a", "u-b"]);
    assert!(r.release_udisk);
    assert_eq!(r.memory["u-a"].phase, Phase::TerminateSent);
    assert_eq!(r.memory["u-b"].phase, Phase::TerminateUnsure);
    assert_eq!(r.calls["u-a"], 2);
}

#[test]
fn torn_last_line_is_ignored_but_corruption_inside_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    write_all(&path, &[start()]);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"{\"event\":\"ca")
        .unwrap();
    assert_eq!(replay(&path).unwrap().ids.len(), 2);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"\n")
        .unwrap();
    write_all(&path, &[start()]);
    assert!(matches!(replay(&path), Err(JournalError::Malformed { line: 2, .. })));
}

#[test]
fn empty_journal_has_nothing_to_resume() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    std::fs::write(&path, "").unwrap();
    assert!(matches!(replay(&path), Err(JournalError::NoStart { .. })));
}

fn call(id: &str) -> Entry {
    Entry::Call {
        id: id.into(),
        call: Call::Stop,
        region: "r".into(),
        zone: "z".into(),
    }
}

#[test]
fn a_torn_tail_is_repaired_so_a_second_resume_works() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    write_all(&path, &[start(), call("u-a")]);
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    // Half a line, ending inside a multi-byte character.
    f.write_all("{\"event\":\"result\",\"error\":\"→".as_bytes().split_last().unwrap().1)
        .unwrap();
    drop(f);
    assert_eq!(replay(&path).unwrap().calls["u-a"], 1);
    // The resume appends its own lines: they must not be glued onto the fragment.
    write_all(&path, &[start(), call("u-b")]);
    let r = replay(&path).unwrap();
    assert_eq!((r.calls["u-a"], r.calls["u-b"]), (1, 1));
    write_all(&path, &[call("u-b")]);
    assert_eq!(replay(&path).unwrap().calls["u-b"], 2);
    // A complete last line that only lost its newline is kept.
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&serde_json::to_vec(&call("u-a")).unwrap()).unwrap();
    drop(f);
    write_all(&path, &[call("u-a")]);
    assert_eq!(replay(&path).unwrap().calls["u-a"], 3);
}

#[test]
fn an_edited_start_line_or_bad_ids_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    write_all(&path, &[start()]);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("\"u-b\"", "\"u-b\",\"u-c\"")).unwrap();
    let err = replay(&path).unwrap_err().to_string();
    assert!(err.contains("checksum"), "{err}");
    for ids in [vec!["u-a", "u-a"], vec!["u-a", "bad;id"], vec![""]] {
        std::fs::remove_file(&path).unwrap();
        write_all(
            &path,
            &[Entry::Start {
                version: JOURNAL_VERSION,
                kind: JournalKind::Instance,
                ids: ids.iter().map(|s| (*s).to_owned()).collect(),
                release_udisk: false,
                force_stop: false,
                resumed: false,
            }],
        );
        let err = replay(&path).unwrap_err().to_string();
        assert!(err.contains("journal line 1"), "{ids:?}: {err}");
    }
}

#[test]
fn the_account_is_recorded_and_intents_are_synced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let account = Account {
        endpoint: "https://api.compshare.cn".into(),
        project_id: "p".into(),
        key_fingerprint: "sha1:0123".into(),
    };
    let mut j = Journal::begin(&path, &account, &start()).unwrap();
    // The runner's own start line is not written twice.
    j.write(&start()).unwrap();
    j.write(&call("u-a")).unwrap();
    let result = Entry::Result {
        id: "u-a".into(),
        call: Call::Stop,
        effect: Effect::Accepted,
        error: None,
    };
    j.write(&result).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3);
    // The start line and the call intent are synced to disk; the result only flushed.
    let synced: Vec<bool> = [start(), call("u-a"), result].iter().map(durable).collect();
    assert_eq!(synced, [true, true, false]);
    assert_eq!(replay(&path).unwrap().account, account);
}

/// A later start line must repeat the selection and its options, also after one that
/// selected nothing: lines appended to a journal cannot add instances to a resumed run.
#[test]
fn a_later_start_line_cannot_change_the_selection() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let with = |ids: &[&str]| Entry::Start {
        version: JOURNAL_VERSION,
        kind: JournalKind::Instance,
        ids: ids.iter().map(|s| (*s).to_owned()).collect(),
        release_udisk: false,
        force_stop: false,
        resumed: true,
    };
    write_all(&path, &[with(&[]), with(&[])]);
    assert!(replay(&path).unwrap().ids.is_empty());
    write_all(&path, &[with(&["u-x"])]);
    let err = replay(&path).unwrap_err().to_string();
    assert!(
        err.ends_with("line 3: a later start line changes the selection or its options"),
        "{err}"
    );
}

/// Version 3 writes a decision as a stated object; a version-2 journal (decision text) is
/// still resumed; text under a version-3 start line, and versions outside 2..=3, are refused.
#[test]
fn decisions_are_stated_and_version_2_text_is_read_only_under_version_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let versioned = |version| Entry::Start {
        version,
        kind: JournalKind::Instance,
        ids: vec!["u-a".into()],
        release_udisk: false,
        force_stop: false,
        resumed: false,
    };
    let decision = |field| Entry::Decision {
        id: "u-a".into(),
        state: Some("Running".into()),
        phase: Phase::Fresh,
        decision: field,
    };
    let text = || decision(DecisionField::Text("Stop { force: false }".into()));
    let stated = decision((&super::super::machine::Decision::Stop { force: false }).into());

    write_all(&path, &[versioned(JOURNAL_VERSION), stated.clone(), call("u-a")]);
    let written = std::fs::read_to_string(&path).unwrap();
    assert!(
        written.contains(r#""decision":{"kind":"stop","force":false}"#),
        "{written}"
    );
    assert_eq!(replay(&path).unwrap().calls["u-a"], 1);

    // A run interrupted under version 2, resumed by this build: both parts read.
    std::fs::remove_file(&path).unwrap();
    write_all(&path, &[versioned(2), text(), call("u-a")]);
    assert_eq!(replay(&path).unwrap().memory["u-a"].phase, Phase::StopSent);
    write_all(&path, &[versioned(JOURNAL_VERSION), stated]);
    assert_eq!(replay(&path).unwrap().calls["u-a"], 1);
    // Text after the version-3 start line is not what this build writes.
    write_all(&path, &[text()]);
    let err = replay(&path).unwrap_err().to_string();
    assert!(err.contains("line 6: a decision written as text"), "{err}");

    for version in [1, JOURNAL_VERSION + 1] {
        std::fs::remove_file(&path).unwrap();
        write_all(&path, &[versioned(version)]);
        let err = replay(&path).unwrap_err().to_string();
        assert!(
            err.contains(&format!("journal version {version}, this build reads versions 2 to 3")),
            "{err}"
        );
    }
}
