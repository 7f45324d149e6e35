//! What the gateway answers: paging and filters, faults as a client sees them, slow answers,
//! the rate limit, lenient decoding, extra row fields and eventual consistency.

use super::*;

#[tokio::test(start_paused = true)]
async fn describe_paging_filters_and_limits() {
    let sim = SimHandle::new(Scenario::generated(250, 3));
    let all = describe_all(&sim, None, None).await.unwrap();
    assert_eq!(all.len(), 250);
    let ids = sim.ids();
    assert_eq!(all.iter().map(|i| i.uhost_id.clone()).collect::<Vec<_>>(), ids);
    let wlcb = describe_all(&sim, Some("cn-wlcb"), None).await.unwrap();
    assert!(!wlcb.is_empty() && wlcb.len() < 250 && wlcb.iter().all(|i| i.region == "cn-wlcb"));
    let mut wanted: Vec<String> = ids.iter().take(130).cloned().collect();
    wanted.push("uhost-doesnotexist".into());
    assert_eq!(describe_ids(&sim, &wanted).await.unwrap().len(), 130);
    let q = |limit, offset, n: usize| DescribeQuery {
        ids: ids.iter().take(n).cloned().collect(),
        limit,
        offset,
        ..DescribeQuery::default()
    };
    assert_eq!(code_of(sim.describe(&q(101, 0, 0)).await), code::BAD_PARAM);
    assert_eq!(code_of(sim.describe(&q(10, 0, 101)).await), code::BAD_PARAM);
    assert_eq!(code_of(sim.describe(&q(10, 251, 0)).await), code::BAD_PARAM);
    assert!(sim.describe(&q(10, 250, 0)).await.unwrap().uhost_set.is_empty());
    let page = sim.describe(&q(0, 0, 0)).await.unwrap();
    assert_eq!(
        (page.total_count, page.uhost_set.len()),
        (Some(250), 20),
        "Limit defaults to 20"
    );
    let region = DescribeQuery {
        region: Some("xx-nowhere".into()),
        limit: 10,
        ..DescribeQuery::default()
    };
    assert_eq!(code_of(sim.describe(&region).await), code::BAD_PARAM);
}

#[tokio::test(start_paused = true)]
async fn same_seed_same_world() {
    let a = SimHandle::new(Scenario::generated(50, 11)).snapshot();
    let b = SimHandle::new(Scenario::generated(50, 11)).snapshot();
    let c = SimHandle::new(Scenario::generated(50, 12)).snapshot();
    assert_eq!(a.instances, b.instances);
    assert_ne!(a.instances, c.instances);
}

#[tokio::test(start_paused = true)]
async fn faults_map_to_what_a_client_sees() {
    let sim = world(&[("uhost-a", "Running"), ("uhost-b", "Running")]);
    let one = |f: &str| {
        let mut faults = Faults::default();
        match f {
            "http_502" => faults.http_502 = 1.0,
            "http_503" => faults.http_503 = 1.0,
            "drop" => faults.drop = 1.0,
            "lost_response" => faults.lost_response = 1.0,
            "throttle" => faults.throttle = 1.0,
            "unavailable" => faults.unavailable = 1.0,
            _ => unreachable!(),
        }
        faults
    };
    sim.set_faults(one("http_502"));
    assert!(matches!(
        sim.stop(&target("uhost-a"), false).await,
        Err(ApiError::Http { status: 502, .. })
    ));
    sim.set_faults(one("http_503"));
    assert!(matches!(
        sim.stop(&target("uhost-a"), false).await,
        Err(ApiError::Http { status: 503, .. })
    ));
    sim.set_faults(one("throttle"));
    assert_eq!(code_of(sim.stop(&target("uhost-a"), false).await), 153);
    sim.set_faults(one("unavailable"));
    assert_eq!(code_of(sim.stop(&target("uhost-a"), false).await), 150);
    sim.set_faults(one("drop"));
    let e = sim.stop(&target("uhost-a"), false).await.unwrap_err();
    assert!(matches!(
        e,
        ApiError::Transport {
            kind: TransportKind::Closed,
            ..
        }
    ));
    sim.set_faults(Faults::default());
    assert_eq!(
        state_of(&sim, "uhost-a").await,
        Some(State::Running),
        "drop applies nothing"
    );
    sim.set_faults(one("lost_response"));
    assert!(matches!(
        sim.stop(&target("uhost-b"), false).await,
        Err(ApiError::Transport { .. })
    ));
    sim.set_faults(Faults::default());
    assert_eq!(
        state_of(&sim, "uhost-b").await,
        Some(State::Stopping),
        "lost response was applied"
    );
    let faults: Vec<Option<String>> = sim.snapshot().calls.into_iter().map(|c| c.fault).collect();
    assert_eq!(faults[0].as_deref(), Some("http_502"));
    assert!(faults.contains(&Some("lost_response".into())));
}

#[tokio::test(start_paused = true)]
async fn slow_answers_take_slow_secs_scaled() {
    let sim = world(&[("uhost-a", "Running")]);
    sim.set_faults(Faults {
        slow: 1.0,
        slow_secs: 7.0,
        ..Faults::default()
    });
    let t0 = tokio::time::Instant::now();
    sim.stop(&target("uhost-a"), false).await.unwrap();
    assert_eq!(t0.elapsed(), Duration::from_secs(7));
}

#[tokio::test(start_paused = true)]
async fn rate_limit_throttles_per_key() {
    let mut scenario = Scenario::generated(5, 1);
    scenario.rate_limit_per_sec = 3.0;
    let sim = SimHandle::new(scenario);
    let q = DescribeQuery {
        limit: 10,
        ..DescribeQuery::default()
    };
    for _ in 0..3 {
        sim.describe(&q).await.unwrap();
    }
    let e = sim.describe(&q).await.unwrap_err();
    assert_eq!(e.code(), Some(153));
    assert_eq!(classify(&e, &LockCodes::default()), RetryClass::Throttled);
    advance(Duration::from_secs(1)).await;
    sim.describe(&q).await.unwrap();
}

/// Calls admitted until the first 153.
async fn admitted(sim: &SimHandle, q: &DescribeQuery) -> u32 {
    let mut n = 0;
    while sim.describe(q).await.is_ok() {
        n += 1;
    }
    n
}

#[tokio::test(start_paused = true)]
async fn rate_limit_has_a_burst_and_changes_mid_run() {
    let mut scenario = Scenario::generated(5, 1);
    scenario.rate_limit_per_sec = 10.0;
    scenario.rate_limit_burst = 2;
    let sim = SimHandle::new(scenario);
    let q = DescribeQuery {
        limit: 10,
        ..DescribeQuery::default()
    };
    // A full bucket lets the burst through, then one call per 100 ms.
    assert_eq!(admitted(&sim, &q).await, 2);
    advance(Duration::from_millis(100)).await;
    assert_eq!(admitted(&sim, &q).await, 1);
    // Raised: a fresh, bigger bucket from now on.
    sim.set_rate_limit(100, 50);
    assert_eq!(admitted(&sim, &q).await, 50);
    advance(Duration::from_millis(100)).await;
    assert_eq!(admitted(&sim, &q).await, 10);
    sim.set_rate_limit(0, 0);
    for _ in 0..500 {
        sim.describe(&q).await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn retcode_as_string_and_null_lists_still_decode() {
    let sim = world(&[]);
    sim.set_faults(Faults {
        retcode_as_string: 1.0,
        null_lists: 1.0,
        ..Faults::default()
    });
    let page = sim
        .describe(&DescribeQuery {
            ids: vec!["uhost-none".into()],
            limit: 10,
            ..DescribeQuery::default()
        })
        .await
        .unwrap();
    assert!(page.uhost_set.is_empty());
}

#[tokio::test(start_paused = true)]
async fn describe_rows_carry_extra_real_fields() {
    let sim = SimHandle::new(Scenario::generated(3, 5));
    let snap = sim.snapshot();
    for row in &snap.instances {
        for key in [
            "UHostId",
            "GraphicsMemory",
            "OsName",
            "CpuArch",
            "AutoRenew",
            "DiskSet",
            "IPSet",
            "Region",
        ] {
            assert!(row.get(key).is_some(), "{key} missing in {row}");
        }
    }
}

/// Raw Describe bodies, before the client's lenient decoding.
async fn raw_describe(sim: &SimHandle, ids: &[&str]) -> serde_json::Value {
    use crate::api::Transport;
    let mut p = crate::api::sign::Params::new();
    p.insert("Limit".into(), "100".into());
    for (i, id) in ids.iter().enumerate() {
        p.insert(format!("UHostIds.{i}"), (*id).to_owned());
    }
    sim.call("DescribeCompShareInstance", p).await.unwrap().value()
}

fn listed(body: &serde_json::Value) -> Vec<String> {
    body["UHostSet"]
        .as_array()
        .map(|rows| rows.iter().map(|r| r["UHostId"].as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

#[tokio::test(start_paused = true)]
async fn dropped_rows_still_exist_and_are_still_counted() {
    let sim = world(&[("uhost-a", "Running"), ("uhost-b", "Stopped")]);
    sim.set_faults(Faults {
        drop_row: 1.0,
        ..Faults::default()
    });
    let body = raw_describe(&sim, &["uhost-a", "uhost-b"]).await;
    assert!(listed(&body).is_empty(), "{body}");
    assert_eq!(body["TotalCount"], 2, "TotalCount counts the rows that really matched");
    // Ground truth is untouched, and Stop still finds the row the answer left out.
    assert_eq!(sim.ids(), vec!["uhost-a", "uhost-b"]);
    sim.stop(&target("uhost-a"), false).await.unwrap();
    let calls = sim.snapshot().calls;
    assert_eq!(calls[0].fault.as_deref(), Some("drop_row"));
    assert_eq!(calls[1].fault, None);

    // At a partial rate some answers miss a row and some do not, the same way for the same seed.
    let pattern = || async {
        let sim = world(&[("uhost-a", "Running"), ("uhost-b", "Running")]);
        sim.set_faults(Faults {
            drop_row: 0.3,
            ..Faults::default()
        });
        let mut seen = Vec::new();
        for _ in 0..40 {
            seen.push(listed(&raw_describe(&sim, &["uhost-a", "uhost-b"]).await));
        }
        seen
    };
    let (a, b) = (pattern().await, pattern().await);
    assert_eq!(a, b);
    assert!(a.iter().any(|l| l.len() == 2) && a.iter().any(|l| l.len() < 2));
}

#[tokio::test(start_paused = true)]
async fn omitted_total_count_is_absent_from_the_body() {
    let sim = world(&[("uhost-a", "Running")]);
    sim.set_faults(Faults {
        omit_total_count: 1.0,
        ..Faults::default()
    });
    let body = raw_describe(&sim, &["uhost-a"]).await;
    assert!(body.get("TotalCount").is_none(), "{body}");
    assert_eq!(listed(&body), vec!["uhost-a"]);
    assert_eq!(sim.snapshot().calls[0].fault.as_deref(), Some("omit_total_count"));
    sim.set_faults(Faults::default());
    assert_eq!(raw_describe(&sim, &["uhost-a"]).await["TotalCount"], 1);
}

#[tokio::test(start_paused = true)]
async fn eventual_consistency_dice_do_not_shift_the_other_faults() {
    // The same seed, answers listing 1 row or 30: every other fault lands on the same calls,
    // because the per-row dice come from their own stream.
    let faults_seen = |rows: usize| async move {
        let sim = SimHandle::new(Scenario::generated(30, 5));
        sim.set_faults(Faults {
            http_502: 0.3,
            drop_row: 0.5,
            omit_total_count: 0.5,
            ..Faults::default()
        });
        let ids: Vec<String> = sim.ids().into_iter().take(rows).collect();
        // One call each (`describe_ids` would read incomplete answers again).
        let query = DescribeQuery {
            ids,
            limit: 100,
            ..DescribeQuery::default()
        };
        for _ in 0..30 {
            let _ = sim.describe(&query).await;
        }
        sim.snapshot()
            .calls
            .into_iter()
            .map(|c| c.fault.filter(|f| f == "http_502"))
            .collect::<Vec<_>>()
    };
    let (one, thirty) = (faults_seen(1).await, faults_seen(30).await);
    assert!(one.iter().flatten().count() > 0);
    assert_eq!(one, thirty);
}

/// A lagging replica answers later pages: rows missing, a `TotalCount` that agrees with the
/// short answer, and an `Offset` past its end refused; the first page is never from it.
#[tokio::test(start_paused = true)]
async fn a_lagging_replica_answers_later_pages_short_and_self_consistent() {
    let mut scenario = Scenario::generated(250, 4);
    scenario.faults.lagging_replica = 1.0;
    let sim = SimHandle::new(scenario);
    let page = |offset| DescribeQuery {
        limit: 100,
        offset,
        ..DescribeQuery::default()
    };
    let first = sim.describe(&page(0)).await.unwrap();
    assert_eq!((first.total_count, first.uhost_set.len()), (Some(250), 100));
    let second = sim.describe(&page(100)).await.unwrap();
    let short = usize::try_from(second.total_count.unwrap()).unwrap();
    // The default share: a fifth of the rows, give or take the dice.
    assert!((170..=230).contains(&short), "{short}");
    assert_eq!(second.uhost_set.len(), 100);
    assert_eq!(
        code_of(sim.describe(&page(u32::try_from(short).unwrap() + 1)).await),
        code::BAD_PARAM
    );
    // The same rows are missing every time.
    assert_eq!(sim.describe(&page(100)).await.unwrap().uhost_set, second.uhost_set);
    assert_eq!(sim.snapshot().calls[1].fault.as_deref(), Some("lagging_replica"));
    // The listing sees through it: every row, or an error.
    assert!(describe_all(&sim, None, None).await.is_err());
}

/// Rows without `Region`: the same rows every time, and the world still knows where they are
/// (a `Region` filter finds them; the snapshot lists the truth).
#[tokio::test(start_paused = true)]
async fn rows_without_region_are_found_by_their_region() {
    let mut scenario = Scenario::generated(60, 5);
    scenario.faults.omit_region = 0.5;
    let sim = SimHandle::new(scenario);
    let all = describe_all(&sim, None, None).await.unwrap();
    let bare: Vec<&Instance> = all.iter().filter(|i| i.region.is_empty()).collect();
    assert!((15..=45).contains(&bare.len()), "{}", bare.len());
    assert!(bare.iter().all(|i| !i.home_region().is_empty()));
    let again = describe_all(&sim, None, None).await.unwrap();
    assert_eq!(all, again);
    let region = bare[0].home_region().to_owned();
    let scoped = describe_all(&sim, Some(&region), None).await.unwrap();
    assert!(scoped.iter().any(|i| i.uhost_id == bare[0].uhost_id));
    assert!(scoped.iter().all(|i| i.home_region() == region));
    assert!(
        sim.snapshot()
            .instances
            .iter()
            .all(|r| r.get("Region").is_some_and(|v| !v.as_str().unwrap_or("").is_empty()))
    );
}

/// A mutating call applied, then answered 502: the work is done, the ledger knows it, and a
/// second Terminate is a violation, not a race.
#[tokio::test(start_paused = true)]
async fn an_applied_call_answered_502_is_done_and_a_resend_is_a_violation() {
    let sim = world(&[("uhost-a", "Stopped")]);
    sim.set_faults(Faults {
        applied_then_502: 1.0,
        ..Faults::default()
    });
    let e = sim.terminate(&target("uhost-a"), true).await.unwrap_err();
    assert!(matches!(e, ApiError::Http { status: 502, .. }), "{e}");
    assert_eq!(classify(&e, &LockCodes::default()), RetryClass::Ambiguous);
    let state = sim.snapshot();
    assert_eq!(state.terminated.len(), 1);
    let call = &state.calls[0];
    assert_eq!(
        (call.ret_code, call.http_status, call.fault.as_deref()),
        (Some(0), 502, Some("applied_then_502"))
    );
    // Describe is not a mutating call: answered as usual.
    assert_eq!(state_of(&sim, "uhost-a").await, Some(State::Stopped));
    assert!(sim.terminate(&target("uhost-a"), true).await.is_err());
    assert_eq!(rules(&sim), vec![rule::TERMINATE_RESENT]);
    assert!(sim.snapshot().races.is_empty());
}

/// A fractional limit: 0.5 requests a second is one call every 2 s, with a bucket of one.
#[tokio::test(start_paused = true)]
async fn a_rate_limit_below_one_a_second() {
    let mut scenario = Scenario::generated(5, 1);
    scenario.rate_limit_per_sec = 0.5;
    let sim = SimHandle::new(scenario);
    let q = DescribeQuery {
        limit: 10,
        ..DescribeQuery::default()
    };
    assert_eq!(admitted(&sim, &q).await, 1);
    advance(Duration::from_millis(1_900)).await;
    assert_eq!(admitted(&sim, &q).await, 0);
    advance(Duration::from_millis(100)).await;
    assert_eq!(admitted(&sim, &q).await, 1);
    assert!(Scenario::from_json(r#"{"rate_limit_per_sec": -1}"#).is_err());
    // An integer, as older scenario files have it, is still a rate.
    let parsed = Scenario::from_json(r#"{"rate_limit_per_sec": 20}"#).unwrap();
    assert!((parsed.rate_limit_per_sec - 20.0).abs() < f64::EPSILON);
}
