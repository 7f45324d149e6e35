//! Tests of `plan`.

use super::*;
use crate::api::model::Disk;

fn cand(id: &str, state: State, charge: &str, verdict: Verdict) -> Candidate {
    let row = Instance {
        uhost_id: id.into(),
        name: format!("n-{id}"),
        state,
        charge_type: charge.into(),
        instance_price: 2.5,
        disk_set: vec![
            Disk {
                disk_id: "boot".into(),
                is_boot: "True".into(),
                ..Disk::default()
            },
            Disk {
                disk_id: "bsi-data".into(),
                is_boot: "False".into(),
                ..Disk::default()
            },
        ],
        ..Instance::default()
    };
    Candidate {
        id: id.into(),
        row: Some(row),
        verdict,
    }
}

#[test]
fn actions_by_state_and_options() {
    let cands = vec![
        cand("a-1", State::Running, "Postpay", Verdict::Act),
        cand("a-2", State::Stopped, "Postpay", Verdict::Act),
        cand("a-3", State::Stopping, "Postpay", Verdict::Act),
        cand("a-4", State::Running, "Spot", Verdict::Act),
        cand(
            "a-5",
            State::Running,
            "Postpay",
            Verdict::Skip {
                reason: "protected".into(),
            },
        ),
        Candidate {
            id: "a-6".into(),
            row: None,
            verdict: Verdict::NotFound,
        },
    ];
    let p = Plan::build(cands.clone(), &Account::default(), false, false);
    let actions: Vec<Action> = p.entries.iter().map(|e| e.action).collect();
    assert_eq!(
        actions,
        vec![
            Action::StopThenTerminate,
            Action::TerminateOnly,
            Action::WaitThenTerminate,
            Action::NeedsForceStop,
            Action::Skip,
            Action::AlreadyGone
        ]
    );
    assert_eq!(p.acting_ids(), vec!["a-1", "a-2", "a-3", "a-4", "a-6"]);
    assert!((p.hourly_price() - 7.5).abs() < 1e-9);
    assert_eq!(p.entries[0].disks, "kept");
    assert_eq!(p.entries[0].data_disks, vec!["bsi-data"]);
    let forced = Plan::build(cands.clone(), &Account::default(), true, true);
    assert_eq!(forced.entries[3].action, Action::StopThenTerminate);
    assert_eq!(forced.entries[0].disks, "released");
}

#[test]
fn drift_detection() {
    let p = Plan::build(
        vec![cand("a-1", State::Stopped, "Postpay", Verdict::Act)],
        &Account::default(),
        false,
        false,
    );
    let p = p.drift();
    let mut row = cand("a-1", State::Stopped, "Postpay", Verdict::Act).row.unwrap();
    assert_eq!(p.check(&row), None);
    row.state = State::Running;
    assert!(p.check(&row).unwrap().contains("restarted"));
    row.state = State::Stopped;
    row.tag = "new".into();
    assert!(p.check(&row).unwrap().contains("re-tagged"));
    row.name = "other".into();
    assert!(p.check(&row).unwrap().contains("renamed"));
}

#[test]
fn loading_checks_ids_and_the_account() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.json");
    let path = path.to_str().unwrap();
    let url = url::Url::parse("https://api.compshare.cn").unwrap();
    let mine = Account::new(&url, Some("proj-a"), "pub");
    let cands = [
        cand("a-1", State::Stopped, "Postpay", Verdict::Act),
        cand("a-2", State::Stopped, "Postpay", Verdict::Act),
    ];
    let save = |p: &Plan| std::fs::write(path, serde_json::to_string(p).unwrap()).unwrap();
    let plan = Plan::build(cands.to_vec(), &mine, false, false);
    save(&plan);
    assert_eq!(Plan::load(path, &mine, false).unwrap(), plan);
    let other = Account::new(&url, Some("proj-b"), "pub");
    let err = Plan::load(path, &other, false).unwrap_err().to_string();
    assert!(err.contains("project proj-a (now proj-b)"), "{err}");
    assert!(Plan::load(path, &other, true).is_ok());
    let mut bad = plan.clone();
    bad.entries[1].uhost_id = "a-1".into();
    bad.seal();
    save(&bad);
    let err = Plan::load(path, &mine, false).unwrap_err().to_string();
    assert!(err.contains("given twice (entry 2)"), "{err}");
    bad.entries[1].uhost_id = "bad;id".into();
    bad.seal();
    save(&bad);
    assert!(
        Plan::load(path, &mine, false)
            .unwrap_err()
            .to_string()
            .contains("malformed")
    );
}

type Edit = fn(&mut Plan);

#[test]
fn an_edited_plan_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.json");
    let path = path.to_str().unwrap();
    let mine = Account::default();
    let cands = [
        cand("a-1", State::Stopped, "Postpay", Verdict::Act),
        cand("a-2", State::Running, "Postpay", Verdict::Act),
    ];
    let plan = Plan::build(cands.to_vec(), &mine, false, false);
    let load = |p: &Plan| {
        std::fs::write(path, serde_json::to_string_pretty(p).unwrap()).unwrap();
        Plan::load(path, &mine, false).map_err(|e| e.to_string())
    };
    assert_eq!(load(&plan).unwrap(), plan);
    // Edited without resealing: an entry added, `release_udisk` flipped (with the disk
    // fates to match), a price changed.
    let mut added = plan.clone();
    let mut extra = added.entries[0].clone();
    extra.uhost_id = "a-9".into();
    added.entries.push(extra);
    let mut flipped = plan.clone();
    flipped.release_udisk = true;
    for e in &mut flipped.entries {
        e.disks = "released".into();
    }
    let mut priced = plan.clone();
    priced.entries[0].price = 0.0;
    for edited in [added, flipped, priced] {
        let err = load(&edited).unwrap_err();
        assert!(err.contains("checksum does not match"), "{err}");
    }
    // Resealed, but not what `plan` writes: each field is checked.
    let cases: [(Edit, &str); 5] = [
        (
            |p| p.entries[0].state = "Hacked".into(),
            "unknown state \"Hacked\" (entry 1)",
        ),
        (
            |p| p.entries[1].state = "Stopped".into(),
            "does not follow from state \"Stopped\" (entry 2)",
        ),
        (|p| p.release_udisk = true, "does not follow from release_udisk=true"),
        (|p| p.entries[0].price = -1.0, "out of range"),
        (
            |p| p.entries[0].state = String::new(),
            "does not follow from state \"\"",
        ),
    ];
    for (edit, want) in cases {
        let mut p = plan.clone();
        edit(&mut p);
        p.seal();
        let err = load(&p).unwrap_err();
        assert!(err.contains(want), "{want}: {err}");
    }
}
