use super::*;

const NOW: i64 = 100_000;
/// `now - window` with the default two hours.
const FROM: i64 = NOW - 7_200;
/// The default longest gap, 20 minutes.
const GAP: i64 = 1_200;
/// The sample period the tests use.
const STEP: usize = 60;
const GPU0: &str = "0000:01:00.0";
const GPU1: &str = "0000:02:00.0";

fn s(device: &str, at: i64, util: f64, mem: Option<f64>) -> Sample {
    Sample {
        at,
        device: device.into(),
        util,
        mem,
    }
}

/// One GPU's samples every minute over `[from, to]` at `util`% and 3% memory.
fn series(device: &str, from: i64, to: i64, util: f64) -> Vec<Sample> {
    (from..=to)
        .step_by(STEP)
        .map(|at| s(device, at, util, Some(3.0)))
        .collect()
}

/// The whole window, quiet, on one GPU.
fn quiet() -> Vec<Sample> {
    series(GPU0, FROM, NOW, 1.0)
}

/// `base` with the sample at `at` replaced by one at `util`/`mem` (or added).
fn with(mut base: Vec<Sample>, sample: Sample) -> Vec<Sample> {
    base.retain(|x| !(x.device == sample.device && x.at == sample.at));
    base.push(sample);
    base
}

fn without(base: Vec<Sample>, from: i64, to: i64) -> Vec<Sample> {
    base.into_iter().filter(|x| x.at < from || x.at > to).collect()
}

fn busy(device: &str, at: i64, util: f64, mem: Option<f64>) -> Verdict {
    Verdict::Busy {
        at,
        device: device.into(),
        util,
        mem,
    }
}

fn unknown(why: Why) -> Verdict {
    Verdict::Unknown(why)
}

/// Training that computes for `busy_secs` and pauses (GPU at 0%) for `pause_secs`, cycles
/// starting at `origin`, long before the window; utilisation only (memory: see the table).
fn epochs(origin: i64, busy_secs: i64, pause_secs: i64) -> Vec<Sample> {
    (origin..=NOW)
        .step_by(STEP)
        .map(|at| {
            let phase = (at - origin) % (busy_secs + pause_secs);
            s(GPU0, at, if phase < busy_secs { 97.0 } else { 0.0 }, None)
        })
        .collect()
}

/// (what, running since, GPUs, samples) -> verdict.
type Row = (&'static str, i64, Option<usize>, Vec<Sample>, Verdict);

#[test]
#[expect(clippy::too_many_lines, reason = "one table, one row per branch and boundary")]
fn idle_rule_table() {
    let rule = IdleRule::default();
    // (what, running_since, gpus, samples) -> verdict
    let table: Vec<Row> = vec![
        ("quiet window", 0, Some(1), quiet(), Verdict::Idle { since: FROM }),
        (
            "exactly at both thresholds is idle",
            0,
            Some(1),
            series(GPU0, FROM, NOW, 5.0)
                .into_iter()
                .map(|x| Sample { mem: Some(10.0), ..x })
                .collect(),
            Verdict::Idle { since: FROM },
        ),
        (
            "just over the utilisation threshold",
            0,
            Some(1),
            with(quiet(), s(GPU0, FROM + 600, 5.01, Some(3.0))),
            busy(GPU0, FROM + 600, 5.01, Some(3.0)),
        ),
        (
            "just over the memory threshold",
            0,
            Some(1),
            with(quiet(), s(GPU0, FROM + 600, 0.0, Some(10.01))),
            busy(GPU0, FROM + 600, 0.0, Some(10.01)),
        ),
        (
            "the latest busy sample is reported",
            0,
            Some(1),
            with(
                with(quiet(), s(GPU0, FROM + 600, 80.0, None)),
                s(GPU0, FROM + 1_200, 40.0, None),
            ),
            busy(GPU0, FROM + 1_200, 40.0, None),
        ),
        (
            "busy exactly at the window's start counts",
            0,
            Some(1),
            with(quiet(), s(GPU0, FROM, 90.0, None)),
            busy(GPU0, FROM, 90.0, None),
        ),
        (
            "busy just before the window does not count",
            0,
            Some(1),
            with(quiet(), s(GPU0, FROM - 1, 90.0, None)),
            Verdict::Idle { since: FROM },
        ),
        (
            "epoch pauses shorter than the window: busy",
            0,
            Some(1),
            // 50 minutes of work, 30 of pause; NOW is 10 minutes into a pause, so the last
            // busy sample is the last minute of work, 11 minutes ago.
            epochs(NOW - 3_600 - 3 * 4_800, 3_000, 1_800),
            busy(GPU0, NOW - 660, 97.0, None),
        ),
        (
            "the same pause with the model held in memory: busy now",
            0,
            Some(1),
            epochs(NOW - 3_600 - 3 * 4_800, 3_000, 1_800)
                .into_iter()
                .map(|x| Sample { mem: Some(60.0), ..x })
                .collect(),
            busy(GPU0, NOW, 0.0, Some(60.0)),
        ),
        (
            "a busy sample wins over a new instance",
            NOW - 300,
            Some(1),
            vec![s(GPU0, NOW - 60, 30.0, None)],
            busy(GPU0, NOW - 60, 30.0, None),
        ),
        (
            "a busy sample wins over a gap and a missing GPU",
            0,
            Some(2),
            vec![s(GPU0, NOW - 60, 30.0, None)],
            busy(GPU0, NOW - 60, 30.0, None),
        ),
        (
            "one GPU busy, one quiet: the busy one",
            0,
            Some(2),
            [
                quiet(),
                with(series(GPU1, FROM, NOW, 1.0), s(GPU1, NOW - 120, 50.0, None)),
            ]
            .concat(),
            busy(GPU1, NOW - 120, 50.0, None),
        ),
        (
            "a new instance (running less than the window)",
            NOW - 600,
            Some(1),
            series(GPU0, NOW - 300, NOW, 0.5),
            unknown(Why::TooYoung {
                running_since: NOW - 600,
            }),
        ),
        (
            "a restarted instance, its old samples quiet",
            FROM + 1,
            Some(1),
            quiet(),
            unknown(Why::TooYoung {
                running_since: FROM + 1,
            }),
        ),
        (
            "running exactly the window",
            FROM,
            Some(1),
            quiet(),
            Verdict::Idle { since: FROM },
        ),
        ("no samples", 0, Some(1), vec![], unknown(Why::NoData)),
        (
            "only samples before the window",
            0,
            Some(1),
            series(GPU0, FROM - 3_600, FROM - 1, 0.0),
            unknown(Why::NoData),
        ),
        (
            "NaN utilisation",
            0,
            Some(1),
            with(quiet(), s(GPU0, NOW - 60, f64::NAN, None)),
            unknown(Why::BadValue {
                at: NOW - 60,
                device: GPU0.into(),
            }),
        ),
        (
            "negative utilisation",
            0,
            Some(1),
            with(quiet(), s(GPU0, NOW - 60, -1.0, None)),
            unknown(Why::BadValue {
                at: NOW - 60,
                device: GPU0.into(),
            }),
        ),
        (
            "negative memory",
            0,
            Some(1),
            with(quiet(), s(GPU0, NOW - 60, 0.0, Some(-0.5))),
            unknown(Why::BadValue {
                at: NOW - 60,
                device: GPU0.into(),
            }),
        ),
        (
            "over 100% is busy",
            0,
            Some(1),
            with(quiet(), s(GPU0, NOW - 60, 101.0, None)),
            busy(GPU0, NOW - 60, 101.0, None),
        ),
        (
            "+inf is busy",
            0,
            Some(1),
            with(quiet(), s(GPU0, NOW - 60, f64::INFINITY, None)),
            busy(GPU0, NOW - 60, f64::INFINITY, None),
        ),
        (
            "busy wins over an unreadable value",
            0,
            Some(1),
            with(
                with(quiet(), s(GPU0, NOW - 60, f64::NAN, None)),
                s(GPU0, NOW - 120, 60.0, None),
            ),
            busy(GPU0, NOW - 120, 60.0, None),
        ),
        (
            "one of two GPUs has no series",
            0,
            Some(2),
            quiet(),
            unknown(Why::MissingGpu {
                device_count: 1,
                expected: 2,
            }),
        ),
        (
            "two GPUs, both quiet",
            0,
            Some(2),
            [quiet(), series(GPU1, FROM, NOW, 0.0)].concat(),
            Verdict::Idle { since: FROM },
        ),
        (
            "GPU count unknown: the series there are",
            0,
            None,
            quiet(),
            Verdict::Idle { since: FROM },
        ),
        (
            "oldest sample exactly max_gap after the window's start",
            0,
            Some(1),
            series(GPU0, FROM + GAP, NOW, 1.0),
            Verdict::Idle { since: FROM + GAP },
        ),
        (
            "oldest sample later than that",
            0,
            Some(1),
            series(GPU0, FROM + GAP + 1, NOW, 1.0),
            unknown(Why::NotCovered { oldest: FROM + GAP + 1 }),
        ),
        (
            "the second GPU's series starts late",
            0,
            Some(2),
            [quiet(), series(GPU1, FROM + GAP + 60, NOW, 1.0)].concat(),
            unknown(Why::NotCovered {
                oldest: FROM + GAP + 60,
            }),
        ),
        (
            "a gap of exactly max_gap",
            0,
            Some(1),
            without(quiet(), FROM + 3_000 + 1, FROM + 3_000 + GAP - 1),
            Verdict::Idle { since: FROM },
        ),
        (
            "a gap one second longer",
            0,
            Some(1),
            [
                series(GPU0, FROM, FROM + 3_000, 1.0),
                series(GPU0, FROM + 3_000 + GAP + 1, NOW, 1.0),
            ]
            .concat(),
            unknown(Why::Gap {
                from: FROM + 3_000,
                to: FROM + 3_000 + GAP + 1,
            }),
        ),
        (
            "newest sample exactly max_gap ago",
            0,
            Some(1),
            series(GPU0, FROM, NOW - GAP, 1.0),
            Verdict::Idle { since: FROM },
        ),
        (
            "newest sample longer ago",
            0,
            Some(1),
            with(
                series(GPU0, FROM, NOW - GAP - 60, 1.0),
                s(GPU0, NOW - GAP - 1, 1.0, None),
            ),
            unknown(Why::Gap {
                from: NOW - GAP - 1,
                to: NOW,
            }),
        ),
        (
            "the API's answer and the store's history overlap",
            0,
            Some(1),
            [quiet(), series(GPU0, NOW - 1_800, NOW, 1.0)].concat(),
            Verdict::Idle { since: FROM },
        ),
        (
            "the store's copy of a sample is busy",
            0,
            Some(1),
            [quiet(), vec![s(GPU0, NOW - 1_800, 70.0, None)]].concat(),
            busy(GPU0, NOW - 1_800, 70.0, None),
        ),
        (
            "quiet history before the window: idle since its start",
            0,
            Some(1),
            series(GPU0, FROM - 3_000, NOW, 1.0),
            Verdict::Idle { since: FROM - 3_000 },
        ),
        (
            "a busy sample before the window ends the quiet stretch",
            0,
            Some(1),
            with(series(GPU0, FROM - 3_000, NOW, 1.0), s(GPU0, FROM - 600, 99.0, None)),
            Verdict::Idle { since: FROM - 540 },
        ),
        (
            "a gap before the window ends it too",
            0,
            Some(1),
            [series(GPU0, FROM - 6_000, FROM - 3_000, 1.0), quiet()].concat(),
            Verdict::Idle { since: FROM },
        ),
        (
            "never idle since before it last started",
            FROM - 100,
            Some(1),
            series(GPU0, FROM - 3_000, NOW, 1.0),
            Verdict::Idle { since: FROM - 100 },
        ),
    ];
    for (what, running_since, gpus, mut samples, want) in table {
        let got = judge(&rule, NOW, running_since, gpus, &samples);
        assert_eq!(got, want, "{what}");
        // The order of the samples never matters.
        samples.reverse();
        assert_eq!(
            judge(&rule, NOW, running_since, gpus, &samples),
            want,
            "{what}, reversed"
        );
    }
}

#[test]
fn defaults_are_the_documented_ones_and_pass_the_check() {
    let rule = IdleRule::default();
    assert_eq!(rule.window, Duration::from_secs(2 * 3_600));
    assert_eq!(rule.max_gap, Duration::from_secs(20 * 60));
    assert!((rule.util_max - 5.0).abs() < f64::EPSILON);
    assert!((rule.mem_max - 10.0).abs() < f64::EPSILON);
    assert_eq!(rule.check(), Ok(()));
}

#[test]
fn settings_out_of_range_are_refused() {
    let ok = IdleRule::default();
    for (rule, want) in [
        (
            IdleRule { util_max: 100.0, ..ok },
            RuleError::Threshold {
                name: "util_max",
                value: 100.0,
            },
        ),
        (
            IdleRule { mem_max: -1.0, ..ok },
            RuleError::Threshold {
                name: "mem_max",
                value: -1.0,
            },
        ),
        (
            IdleRule {
                max_gap: Duration::ZERO,
                ..ok
            },
            RuleError::Gap,
        ),
        (
            IdleRule {
                max_gap: ok.window,
                ..ok
            },
            RuleError::Gap,
        ),
    ] {
        assert_eq!(rule.check(), Err(want));
    }
    assert!(
        IdleRule {
            util_max: f64::NAN,
            ..ok
        }
        .check()
        .is_err()
    );
}

#[test]
fn a_shorter_window_sees_what_the_longer_one_refuses() {
    // The same epoch-pausing series: a 20-minute window inside a 30-minute pause says idle,
    // which is why the default window is hours, not minutes.
    // 50 minutes of work, an hour of pause; NOW is 40 minutes into a pause.
    let samples = epochs(NOW - 5_400 - 2 * 6_600, 3_000, 3_600);
    let short = IdleRule {
        window: Duration::from_secs(1_200),
        max_gap: Duration::from_secs(300),
        ..IdleRule::default()
    };
    assert!(matches!(judge(&short, NOW, 0, Some(1), &samples), Verdict::Idle { .. }));
    assert!(matches!(
        judge(&IdleRule::default(), NOW, 0, Some(1), &samples),
        Verdict::Busy { .. }
    ));
}
