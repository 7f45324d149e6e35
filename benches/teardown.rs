//! Teardown benchmark: the real binary tears down simulated instances over HTTP, with its
//! default pace settings.
//!
//! Each row prints wall time against the lower bound (stop + terminate latency), API calls per
//! instance by action, how full the looks' Describes were, the tool's peak RSS and CPU time
//! (read from /proc while it runs), the gateway's view of the pace (requests it let through
//! per second, 153s), and the simulator's verdict. `cargo bench --bench teardown` runs every row of docs/performance.md; one row with
//! `-- --instances N [--jitter J] [--rate R] [--limit L --burst B] [--faults]
//! [--time-scale S] [--change-at SECS --change-to L]`; the 10,000 and 100,000-instance rows
//! with `-- --large`; the simulator's own time per call at 1,000, 10,000 and 100,000
//! instances (in process, no HTTP) with `-- --sim-calls`. Figures are recorded in
//! docs/performance.md.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use compshare_teardown::sim::{Faults, Scenario, Server, SimHandle};

#[derive(Clone, Default)]
struct Args {
    instances: usize,
    jitter: f64,
    /// `--rate` for the tool (0: not passed, the default pace).
    rate: u32,
    /// The gateway's requests per second per key (0 = unlimited) and burst.
    limit: u32,
    burst: u32,
    /// 2% random 153s and 5% 5xx (3% HTTP 502, 2% HTTP 503).
    faults: bool,
    /// The demo world (stop 100 s, terminate 50 s nominal, locks, restarts) at this scale.
    time_scale: Option<f64>,
    /// Change the gateway's limit this many seconds into the run.
    change: Option<(f64, u32)>,
}

fn args() -> Option<Args> {
    let v: Vec<String> = std::env::args().collect();
    if !v.iter().any(|a| a == "--instances") {
        return None;
    }
    let mut a = Args::default();
    let mut change_at = None;
    let mut i = 1;
    while i < v.len() {
        let next = v.get(i + 1).cloned().unwrap_or_default();
        match v[i].as_str() {
            "--instances" => a.instances = next.parse().expect("--instances N"),
            "--jitter" => a.jitter = next.parse().expect("--jitter J"),
            "--rate" => a.rate = next.parse().expect("--rate R"),
            "--limit" => a.limit = next.parse().expect("--limit L"),
            "--burst" => a.burst = next.parse().expect("--burst B"),
            "--time-scale" => a.time_scale = Some(next.parse().expect("--time-scale S")),
            "--change-at" => change_at = Some(next.parse().expect("--change-at SECS")),
            "--change-to" => a.change = Some((0.0, next.parse().expect("--change-to L"))),
            "--faults" => {
                a.faults = true;
                i += 1;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    if let (Some(at), Some((_, to))) = (change_at, a.change) {
        a.change = Some((at, to));
    } else {
        a.change = None;
    }
    Some(a)
}

/// (peak RSS in KiB, CPU seconds) of a live process, from /proc.
fn sample(pid: u32) -> Option<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name: utime and stime are the 12th and 13th (clock ticks, 100/s).
    let rest = stat.rsplit_once(") ")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    #[expect(
        clippy::cast_precision_loss,
        reason = "counts and small integers far below 2^52 convert to f64 exactly"
    )]
    Some((hwm, ticks as f64 / 100.0))
}

fn main() {
    let flags: Vec<String> = std::env::args().collect();
    if flags.iter().any(|f| f == "--sim-calls") {
        for n in [1_000, 10_000, 100_000] {
            sim_calls(n);
        }
        return;
    }
    if let Some(a) = args() {
        row(&a);
        return;
    }
    if flags.iter().any(|f| f == "--large") {
        // The scale rows: minutes, not seconds, so not in the default set.
        for n in [10_000, 100_000] {
            println!("== {n} instances, unlimited gateway");
            row(&Args {
                instances: n,
                ..Args::default()
            });
            println!();
        }
        return;
    }
    let unlimited = |n| Args {
        instances: n,
        ..Args::default()
    };
    let limited = Args {
        instances: 1000,
        limit: 20,
        burst: 10,
        faults: true,
        ..Args::default()
    };
    let rows = [
        ("200 instances, unlimited gateway", unlimited(200)),
        ("1000 instances, unlimited gateway", unlimited(1000)),
        (
            "1000 instances, 20 req/s bucket (burst 10), 2% 153, 5% 5xx",
            limited.clone(),
        ),
        (
            "60 instances, demo world at 1/100, 20 req/s bucket, 2% 153, 5% 5xx",
            Args {
                instances: 60,
                time_scale: Some(0.01),
                ..limited.clone()
            },
        ),
        (
            "1000 instances, 20 req/s bucket raised to 50 (burst 25) at 15 s",
            Args {
                faults: false,
                change: Some((15.0, 50)),
                ..limited.clone()
            },
        ),
        (
            "1000 instances, 50 req/s bucket lowered to 20 (burst 10) at 15 s",
            Args {
                faults: false,
                limit: 50,
                burst: 25,
                change: Some((15.0, 20)),
                ..limited
            },
        ),
    ];
    for (name, a) in rows {
        println!("== {name}");
        row(&a);
        println!();
    }
}

#[expect(
    clippy::disallowed_methods,
    clippy::too_many_lines,
    reason = "A benchmark measures the real world: wall-clock time and real sleeps between /proc samples."
)]
fn row(a: &Args) {
    let mut scenario = match a.time_scale {
        Some(scale) => {
            let mut s = compshare_teardown::app::demo_scenario(a.instances, 42);
            s.time_scale = scale;
            s
        }
        None => {
            let mut s = Scenario::generated(a.instances, 42);
            // Every instance Running: each needs the full stop + terminate.
            if let Some(g) = s.generate.as_mut() {
                g.mix = [("Running".to_owned(), 1.0)].into_iter().collect();
            }
            s.latency.stop_secs = 3.0;
            s.latency.terminate_secs = 1.0;
            s.latency.jitter = a.jitter;
            s.faults = Faults::default();
            s
        }
    };
    scenario.rate_limit_per_sec = f64::from(a.limit);
    scenario.rate_limit_burst = a.burst;
    if a.faults {
        scenario.faults.throttle = 0.02;
        scenario.faults.http_502 = 0.03;
        scenario.faults.http_503 = 0.02;
    }
    let lower = scenario.time_scale * (scenario.latency.stop_secs + scenario.latency.terminate_secs);
    let handle = SimHandle::new(scenario);
    let server = Server::start(handle.clone(), ([127, 0, 0, 1], 0).into()).expect("simulator");
    let dir = std::env::temp_dir().join(format!("compshare-teardown-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");

    let start = std::time::Instant::now(); // benchmarks measure real time
    // `TEARDOWN_BENCH_BIN` runs another build of the tool (the `profiling` one, to sample it
    // with a profiler) against the same simulator.
    let bin = std::env::var_os("TEARDOWN_BENCH_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_compshare-teardown").into());
    let mut cmd = Command::new(bin);
    cmd.args(["run", "--all", "--yes", "--quiet", "--output", "json"])
        .args(["--max-count", &a.instances.to_string()]);
    if a.rate > 0 {
        cmd.args(["--rate", &a.rate.to_string()]);
    }
    if a.time_scale.is_some() {
        // The demo world's waits, as `demo` uses them: the poll interval and the settle
        // scaled down with the world.
        cmd.args(["--poll-interval", "1s", "--settle", "5s"]);
    }
    let mut child = cmd
        .arg("--lock-file")
        .arg(dir.join("lock"))
        .env("COMPSHARE_BASE_URL", server.url.as_str())
        .env("COMPSHARE_PUBLIC_KEY", handle.public_key())
        .env("COMPSHARE_PRIVATE_KEY", handle.private_key().expose())
        .env("HOME", &dir)
        .env_remove("UCLOUD_PUBLIC_KEY")
        .env_remove("UCLOUD_PRIVATE_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run the binary");
    let pid = child.id();
    let mut last = (0, 0.0);
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout).expect("report"));
    let mut changed = false;
    loop {
        if let Some(s) = sample(pid) {
            last = s;
        }
        if let Some((at, to)) = a.change
            && !changed
            && start.elapsed().as_secs_f64() >= at
        {
            handle.set_rate_limit(to, to / 2);
            changed = true;
        }
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let wall = start.elapsed().as_secs_f64();
    let code = child.wait().expect("exit").code();
    let report: serde_json::Value = serde_json::from_str(&reader.join().expect("reader")).expect("JSON report");
    let state = handle.snapshot();
    let mut calls: BTreeMap<String, usize> = BTreeMap::new();
    for c in &state.calls {
        *calls.entry(c.action.replace("CompShareInstance", "")).or_default() += 1;
    }
    #[expect(
        clippy::cast_precision_loss,
        reason = "counts and small integers far below 2^52 convert to f64 exactly"
    )]
    let n = a.instances as f64;
    println!("instances           {}", a.instances);
    println!(
        "exit code           {code:?}, terminated {}, failed {}",
        report["summary"]["terminated"], report["summary"]["failed"]
    );
    println!(
        "wall time           {wall:.2} s (lower bound {lower:.2} s: stop + terminate; ratio {:.2})",
        wall / lower
    );
    #[expect(
        clippy::cast_precision_loss,
        reason = "counts and small integers far below 2^52 convert to f64 exactly"
    )]
    let total: f64 = calls.values().sum::<usize>() as f64;
    // How full the ID-filtered Describes were (listing pages carry no IDs): a look costs a
    // whole Describe however few instances ride in it.
    let looks: Vec<usize> = state
        .calls
        .iter()
        .filter(|c| c.action == "DescribeCompShareInstance" && !c.ids.is_empty())
        .map(|c| c.ids.len())
        .collect();
    let full = looks.iter().filter(|&&k| k == 100).count();
    #[expect(
        clippy::cast_precision_loss,
        reason = "counts and small integers far below 2^52 convert to f64 exactly"
    )]
    let mean = looks.iter().sum::<usize>() as f64 / looks.len().max(1) as f64;
    println!("API calls/instance  {:.2} total", total / n);
    for (action, count) in &calls {
        #[expect(
            clippy::cast_precision_loss,
            reason = "counts and small integers far below 2^52 convert to f64 exactly"
        )]
        let per = *count as f64 / n;
        println!("  {action:<18}{per:.3} ({count})");
    }
    println!(
        "Describe fill       {} looks: {full} full (100 IDs), {} part-filled, {mean:.1} IDs each",
        looks.len(),
        looks.len() - full
    );
    // Calls that took a token from the gateway's bucket: everything but the bucket's own
    // refusals and the faults injected before the gateway (proxy errors, dropped connections).
    let admitted: Vec<f64> = state
        .calls
        .iter()
        .filter(|c| {
            !matches!(
                c.fault.as_deref(),
                Some("rate_limit" | "http_502" | "http_503" | "drop")
            )
        })
        .map(|c| c.at_secs)
        .collect();
    let limited = state
        .calls
        .iter()
        .filter(|c| c.fault.as_deref() == Some("rate_limit"))
        .count();
    if let (Some(first), Some(last_at)) = (state.calls.first(), state.calls.last()) {
        let span = last_at.at_secs - first.at_secs;
        #[expect(
            clippy::cast_precision_loss,
            reason = "counts and small integers far below 2^52 convert to f64 exactly"
        )]
        let rate = admitted.len() as f64 / span;
        print!("gateway             {rate:.1} req/s let through over {span:.1} s");
        if a.limit > 0 {
            print!(" ({:.0}% of {} req/s)", 100.0 * rate / f64::from(a.limit), a.limit);
        }
        println!(", {limited} refused by the bucket");
    }
    if let Some((at, to)) = a.change {
        // The first 2-second window after the change in which the gateway let through at
        // least 80% of the new limit (raised), or refused under 10% (lowered).
        let raised = to > a.limit;
        let found = (0..600).map(|k| at + f64::from(k) * 0.25).find(|&t0| {
            let inside = |c: &&compshare_teardown::sim::CallRecord| (t0..t0 + 2.0).contains(&c.at_secs);
            let all = state.calls.iter().filter(inside).count();
            let refused = state
                .calls
                .iter()
                .filter(inside)
                .filter(|c| c.fault.as_deref() == Some("rate_limit"))
                .count();
            #[expect(
                clippy::cast_precision_loss,
                reason = "counts and small integers far below 2^52 convert to f64 exactly"
            )]
            let through = (all - refused) as f64 / 2.0;
            if raised {
                through >= 0.8 * f64::from(to)
            } else {
                all > 0 && refused * 10 < all && through >= 0.8 * f64::from(to)
            }
        });
        match found {
            Some(t) => println!(
                "rate change         {} -> {to} req/s at {at:.0} s; found {:.2} s later",
                a.limit,
                t + 2.0 - at
            ),
            None => println!("rate change         {} -> {to} req/s at {at:.0} s; not found", a.limit),
        }
    }
    println!("pace                {}", report["summary"]["pace"]);
    #[expect(
        clippy::cast_precision_loss,
        reason = "counts and small integers far below 2^52 convert to f64 exactly"
    )]
    let rss_mb = last.0 as f64 / 1024.0;
    println!("peak RSS            {rss_mb:.1} MiB (tool process)");
    println!(
        "CPU time            {:.2} s (tool process, user+system), {:.3} ms per instance",
        last.1,
        1000.0 * last.1 / n
    );
    println!("violations          {}", state.violations.len());
    println!("instances left      {}", state.instances.len());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The simulator's own time per call, in process (no HTTP, no tool): a Describe of 100
/// named IDs, a Stop, a Terminate, in a world of `n` Running instances. Each must cost the
/// same whatever `n` (the rows are looked up by ID, timed events and a host's disks are
/// indexed): the figures at 1,000, 10,000 and 100,000 say whether they do.
#[expect(
    clippy::disallowed_methods,
    clippy::cast_precision_loss,
    reason = "A benchmark measures the real world: wall-clock time; counts far below 2^52."
)]
fn sim_calls(n: usize) {
    use compshare_teardown::api::{Cloud, DescribeQuery, Instance, Target};
    let mut s = Scenario::generated(n, 42);
    if let Some(g) = s.generate.as_mut() {
        g.mix = [("Running".to_owned(), 1.0)].into_iter().collect();
    }
    // Transitions at once: a Stop's instance is Stopped by the next call.
    s.latency.stop_secs = 0.0;
    s.latency.terminate_secs = 0.0;
    s.latency.jitter = 0.0;
    s.faults = Faults::default();
    let handle = SimHandle::new(s);
    let rows: Vec<Instance> = handle
        .snapshot()
        .instances
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect();
    // 1,000 instances spread over the world (every n/1000th), the same count at every size.
    let step = (rows.len() / 1000).max(1);
    let picked: Vec<&Instance> = rows.iter().step_by(step).take(1000).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let per = |start: std::time::Instant, calls: usize| start.elapsed().as_secs_f64() * 1e6 / calls as f64;
    // The times include the client's side of the in-process call (signing is skipped; the
    // answer is serialized and parsed as over HTTP).
    runtime.block_on(async {
        let describe_all = || async {
            for chunk in picked.chunks(100) {
                let query = DescribeQuery {
                    ids: chunk.iter().map(|r| r.uhost_id.clone()).collect(),
                    limit: 100,
                    ..DescribeQuery::default()
                };
                handle.describe(&query).await.expect("describe");
            }
        };
        // Untimed once first: the world was just built and a snapshot of it freed, and the
        // allocator's one-time tidying after that (O(world)) is not the Describe's cost.
        describe_all().await;
        let t = std::time::Instant::now();
        for _ in 0..3 {
            describe_all().await;
        }
        let describe = per(t, 3 * picked.len().div_ceil(100));
        let t = std::time::Instant::now();
        for r in &picked {
            handle.stop(&Target::of(r), false).await.expect("stop");
        }
        let stop = per(t, picked.len());
        describe_all().await;
        let t = std::time::Instant::now();
        for r in &picked {
            handle.terminate(&Target::of(r), false).await.expect("terminate");
        }
        let terminate = per(t, picked.len());
        println!(
            "simulator, {n:>7} instances: Describe of 100 IDs {describe:7.1} µs, Stop {stop:6.1} µs, Terminate {terminate:6.1} µs"
        );
    });
}
