//! Tests of `selection`.

use super::*;

#[test]
fn a_bad_glob_is_not_echoed_whole() {
    let long = format!("[{}", "k".repeat(500));
    let e = globs(&[long]).unwrap_err().to_string();
    assert!(e.len() < 200, "{e}");
}
use crate::api::model::Ip;

fn src(ids: &[&str]) -> Vec<IdSource> {
    ids.iter()
        .map(|i| IdSource {
            id: (*i).into(),
            at: String::new(),
        })
        .collect()
}

fn row(id: &str, name: &str, tag: &str, state: State) -> Instance {
    Instance {
        uhost_id: id.into(),
        name: name.into(),
        tag: tag.into(),
        state,
        create_time: 1000,
        ..Instance::default()
    }
}

#[test]
fn id_checks() {
    assert_eq!(check_ids(&src(&["uhost-abc", "cpod-1tq6i2ltk5mj"])).unwrap().len(), 2);
    assert!(matches!(check_ids(&src(&[""])), Err(SelectionError::EmptyId(_))));
    for bad in ["uhost", "-abc", "abc-", "uhost abc", "uhost-ab;c", "ühost-1"] {
        assert!(
            matches!(check_ids(&src(&[bad])), Err(SelectionError::Malformed { .. })),
            "{bad}"
        );
    }
    assert!(matches!(
        check_ids(&src(&["a-1", "a-1"])),
        Err(SelectionError::Duplicate { .. })
    ));
}

#[test]
fn id_file_comments_and_blank_lines() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ids");
    std::fs::write(&p, "# nightly\nuhost-a1\n\n  cpod-b2  # gpu box\n").unwrap();
    let ids = read_id_file(p.to_str().unwrap()).unwrap();
    assert_eq!(
        ids.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        vec!["uhost-a1", "cpod-b2"]
    );
    assert!(ids[1].at.contains("line 4"));
    assert!(matches!(
        read_id_file("/nonexistent/x"),
        Err(SelectionError::File { .. })
    ));
}

#[test]
fn filters_and_ids_combine() {
    let rows = vec![
        row("uhost-a", "ci-1", "ci", State::Running),
        row("uhost-b", "prod-1", "prod", State::Running),
        row("uhost-c", "ci-2", "ci", State::Stopped),
    ];
    let filters = Filters {
        names: globs(&["ci-*".into()]).unwrap(),
        ..Filters::default()
    };
    let none = Protections::default();
    let all = select(rows.clone(), None, &filters, &none, 10_000);
    assert_eq!(
        all.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        vec!["uhost-a", "uhost-c"]
    );
    let ids = vec!["uhost-b".to_owned(), "uhost-c".to_owned(), "uhost-zz".to_owned()];
    let named = select(rows.clone(), Some(&ids), &filters, &none, 10_000);
    assert!(matches!(&named[0].verdict, Verdict::Skip { reason } if reason.starts_with("filtered")));
    assert_eq!(named[1].verdict, Verdict::Act);
    assert_eq!(named[2].verdict, Verdict::NotFound);
    let states = Filters {
        states: vec![State::Stopped],
        ..Filters::default()
    };
    assert_eq!(select(rows.clone(), None, &states, &none, 10_000).len(), 1);
}

#[test]
fn older_than_uses_create_time() {
    let rows = vec![row("uhost-a", "x", "", State::Running)];
    let f = Filters {
        older_than: Some(Duration::from_secs(3600)),
        ..Filters::default()
    };
    assert!(select(rows.clone(), None, &f, &Protections::default(), 1000 + 3599).is_empty());
    assert_eq!(
        select(rows.clone(), None, &f, &Protections::default(), 1000 + 3600).len(),
        1
    );
}

#[test]
fn protections_win() {
    let mut me = row("uhost-me", "box", "", State::Running);
    me.ip_set = vec![Ip {
        ip: "10.9.8.7".into(),
        ..Ip::default()
    }];
    let rows = vec![
        row("uhost-a", "prod-db", "", State::Running),
        row("uhost-b", "x", "keep", State::Running),
        me,
    ];
    let p = Protections {
        protect_tags: vec!["keep".into()],
        protect_names: globs(&["prod-*".into()]).unwrap(),
        own_addresses: vec!["10.9.8.7".parse().unwrap()],
        exclude: ["uhost-q".to_owned()].into(),
        allow_self: false,
    };
    let ids: Vec<String> = vec!["uhost-a".into(), "uhost-b".into(), "uhost-me".into(), "uhost-q".into()];
    let got = select(rows.clone(), Some(&ids), &Filters::default(), &p, 0);
    let reasons: Vec<String> = got
        .iter()
        .map(|c| match &c.verdict {
            Verdict::Skip { reason } => reason.clone(),
            other => format!("{other:?}"),
        })
        .collect();
    assert!(reasons[0].contains("prod-*"));
    assert!(reasons[1].contains("keep"));
    assert!(reasons[2].contains("this machine"));
    assert!(reasons[3].contains("excluded"));
    // Unusual spellings of the same address are the same address.
    for spelling in [
        "::ffff:10.9.8.7",
        "010.009.008.007",
        "10.9.8.7/24",
        " 10.9.8.7 ",
        "[::ffff:a09:807]",
    ] {
        let mut me = row("uhost-me", "box", "", State::Running);
        me.ip_set = vec![Ip {
            ip: spelling.into(),
            ..Ip::default()
        }];
        assert!(p.refuse(&me).is_some_and(|r| r.contains("this machine")), "{spelling}");
    }
    // This machine's own address may be the mapped one.
    let mapped = Protections {
        own_addresses: vec!["::ffff:192.0.2.2".parse().unwrap()],
        ..Protections::default()
    };
    let mut me = row("uhost-me", "box", "", State::Running);
    me.ip_set = vec![Ip {
        ip: "192.0.2.2".into(),
        ..Ip::default()
    }];
    assert!(mapped.refuse(&me).is_some());
    me.ip_set[0].ip = "192.0.2.3".into();
    assert!(mapped.refuse(&me).is_none());
    assert!(address_readings("not an address").is_empty());
    let allowed = Protections { allow_self: true, ..p };
    assert_eq!(
        select(rows.clone(), Some(&ids[2..3]), &Filters::default(), &allowed, 0)[0].verdict,
        Verdict::Act
    );
}

#[test]
fn a_row_without_region_lives_where_its_zone_says() {
    let placed = |id: &str, region: &str, zone: &str| Instance {
        region: region.into(),
        zone: zone.into(),
        ..row(id, id, "", State::Running)
    };
    let rows = vec![
        placed("uhost-a", "", "cn-sh2-02"),
        placed("uhost-b", "cn-sh2", "cn-sh2-02"),
        placed("uhost-c", "", "cn-wlcb-01"),
        placed("uhost-d", "cn-wlcb", "cn-wlcb-01"),
    ];
    let f = Filters {
        region: Some("cn-sh2".into()),
        ..Filters::default()
    };
    let chosen: Vec<String> = select(rows.clone(), None, &f, &Protections::default(), 10_000)
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(chosen, ["uhost-a", "uhost-b"]);
    assert_eq!(f.outside_scope(&rows[0]), None);
    assert_eq!(
        f.outside_scope(&rows[2]).as_deref(),
        Some("uhost-c is in cn-wlcb (cn-wlcb-01), outside --region cn-sh2")
    );
}
