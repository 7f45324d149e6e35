//! The seed sweep from the command line: `cargo run --release --example sweep -- --seeds 100000`.
//! Runs the worlds of seeds `from..from+seeds` on `threads` threads (each seed on its own
//! paused-time runtime), prints every failing seed with the command that replays it, then a
//! summary on stdout. Exit 1 if any seed failed. See docs/reliability.md.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use clap::Parser;
use compshare_teardown::sweep::{self, Options, SeedRun, Stats};

#[derive(Parser)]
#[command(about = "Deterministic simulation testing of the teardown engine, one world per seed")]
struct Args {
    /// Number of seeds to run.
    #[arg(long, default_value_t = 1000)]
    seeds: u64,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Replay one seed and print its verdict (overrides --seeds/--from).
    #[arg(long)]
    seed: Option<u64>,
    /// With --seed: print the run's log (debug level) on stderr.
    #[arg(long, requires = "seed")]
    log: bool,
    /// Worker threads (default: the available cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Worlds without dropped Describe rows or missing TotalCount.
    #[arg(long)]
    no_eventual_consistency: bool,
    /// The largest world (sizes are log-uniform from 1).
    #[arg(long, default_value_t = sweep::world::MAX_INSTANCES)]
    max_instances: usize,
    /// Sweep scheduled teardown instead (the `watch` job every 15 simulated minutes for days,
    /// killed and crashed at random); worlds of up to 40 instances unless --max-instances.
    #[arg(long)]
    scheduled: bool,
    /// With --scheduled: how long the job runs, simulated hours, as LO-HI (default 24-72).
    #[arg(long, value_parser = hours, requires = "scheduled")]
    hours: Option<(u32, u32)>,
}

#[expect(
    clippy::too_many_lines,
    reason = "argument parsing, the sweep and its summary, in order"
)]
fn main() -> ExitCode {
    let args = Args::parse();
    if args.scheduled {
        return scheduled(&args);
    }
    let opts = Options {
        eventual_consistency: !args.no_eventual_consistency,
        max_instances: args.max_instances,
    };
    let (from, count) = match args.seed {
        Some(s) => (s, 1),
        None => (args.from, args.seeds),
    };
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
        .max(1);
    let terminal = std::io::stderr().is_terminal();
    let bar = if terminal {
        let b = indicatif::ProgressBar::new(count);
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} seeds, {msg} [{elapsed} < {eta}]")
                .expect("a valid template"),
        );
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let next = AtomicU64::new(0);
    let totals = Mutex::new(Stats::default());
    let failed: Mutex<Vec<SeedRun>> = Mutex::new(Vec::new());
    #[expect(
        clippy::disallowed_methods,
        reason = "the sweep's own wall time is a reported figure; each world runs on paused time"
    )]
    let wall = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= count {
                        break;
                    }
                    let (run, log) = sweep::run_seed_logged(from + n, opts);
                    if args.log {
                        bar.suspend(|| eprintln!("{log}"));
                    }
                    totals.lock().expect("not poisoned").add(&run.stats);
                    if !run.failures.is_empty() {
                        bar.suspend(|| eprint!("{}", run.diagnosis(opts)));
                        let mut f = failed.lock().expect("not poisoned");
                        f.push(run);
                        bar.set_message(format!("{} failed", f.len()));
                    }
                    bar.inc(1);
                    // Off a terminal (a log, a CI job), a line per percent instead of the bar.
                    let done = n + 1;
                    if !terminal && count >= 100 && done.is_multiple_of(count / 100) {
                        let failed = failed.lock().expect("not poisoned").len();
                        eprintln!(
                            "{done}/{count} seeds, {failed} failed, {:.0} s",
                            wall.elapsed().as_secs_f64()
                        );
                    }
                }
            });
        }
    });
    bar.finish_and_clear();
    let wall = wall.elapsed();
    let t = totals.into_inner().expect("not poisoned");
    let mut failed = failed.into_inner().expect("not poisoned");
    failed.sort_by_key(|r| r.seed);
    if args.seed.is_some() {
        for r in &failed {
            print!("{}", r.diagnosis(opts));
        }
    }
    println!(
        "seeds {from}..{} ({} run, eventual consistency {}): {} failed",
        from + count,
        t.seeds,
        if opts.eventual_consistency { "on" } else { "off" },
        failed.len()
    );
    if !failed.is_empty() {
        let seeds: Vec<String> = failed.iter().take(20).map(|r| r.seed.to_string()).collect();
        println!(
            "failing seeds: {}{}",
            seeds.join(" "),
            if failed.len() > 20 { " ..." } else { "" }
        );
        let mut by_invariant: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
        for r in &failed {
            let mut names: Vec<&str> = r.failures.iter().map(|f| f.invariant).collect();
            names.dedup();
            for n in names {
                *by_invariant.entry(n).or_default() += 1;
            }
        }
        for (n, c) in by_invariant {
            println!("  {c} seed(s): {n}");
        }
    }
    println!(
        "worlds: {} instances ({} selected), {} API calls, {} faults fired ({} eventual-consistency answers), \
         {} kills and resumes, {} Terminate races, {} calls after a deletion by someone else",
        t.instances, t.selected, t.calls, t.faults, t.eventual, t.kills, t.races, t.after_delete
    );
    println!(
        "disks: {} selected by the disk passes, {} Deletes accepted, {} answered 8434 (still detaching)",
        t.disks_selected, t.disks_deleted, t.disk_8434
    );
    println!(
        "exits: {} ok, {} failed, {} interrupted; virtual time {:.1} h; wall time {:.1} s on {threads} thread(s)",
        t.exit_ok,
        t.exit_failed,
        t.exit_interrupted,
        t.virtual_time.as_secs_f64() / 3600.0,
        wall.as_secs_f64()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `--hours LO-HI`.
fn hours(s: &str) -> Result<(u32, u32), String> {
    let (lo, hi) = s.split_once('-').ok_or("expected LO-HI, e.g. 24-72")?;
    let (lo, hi): (u32, u32) = (
        lo.parse().map_err(|e| format!("{e}"))?,
        hi.parse().map_err(|e| format!("{e}"))?,
    );
    if lo == 0 || lo > hi {
        return Err("expected 1 <= LO <= HI".into());
    }
    Ok((lo, hi))
}

/// `--scheduled`: the scheduled job's sweep (`sweep::schedule`), seeds over `threads`
/// threads, failing seeds and a summary on stdout.
fn scheduled(args: &Args) -> ExitCode {
    use sweep::schedule;
    let mut opts = schedule::Options::default();
    if let Some(h) = args.hours {
        opts.hours = h;
    }
    if args.max_instances != sweep::world::MAX_INSTANCES {
        opts.max_instances = args.max_instances;
    }
    let (from, count) = args.seed.map_or((args.from, args.seeds), |s| (s, 1));
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
        .max(1);
    let next = AtomicU64::new(0);
    let totals = Mutex::new(schedule::Stats::default());
    let failed = Mutex::new(Vec::new());
    #[expect(
        clippy::disallowed_methods,
        reason = "the sweep's own wall time is a reported figure; each world runs on paused time"
    )]
    let wall = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= count {
                        break;
                    }
                    let run = schedule::run_seed(from + n, opts);
                    totals.lock().expect("not poisoned").add(&run.stats);
                    if !run.failures.is_empty() {
                        eprint!("{}", run.diagnosis(opts));
                        failed.lock().expect("not poisoned").push(run.seed);
                    }
                    let done = n + 1;
                    if count >= 100 && done.is_multiple_of(count / 100) {
                        eprintln!("{done}/{count} seeds, {:.0} s", wall.elapsed().as_secs_f64());
                    }
                }
            });
        }
    });
    let t = totals.into_inner().expect("not poisoned");
    let mut failed = failed.into_inner().expect("not poisoned");
    failed.sort_unstable();
    println!(
        "scheduled seeds {from}..{} ({} run): {} failed",
        from + count,
        t.seeds,
        failed.len()
    );
    if !failed.is_empty() {
        let seeds: Vec<String> = failed.iter().take(20).map(ToString::to_string).collect();
        println!("failing seeds: {}", seeds.join(" "));
    }
    println!(
        "worlds: {} instances, {} job runs ({} killed, {} crashed on a store write, {} without a listing), \
         {} monitor calls, {} faults fired; {} Stop and {} Terminate calls, {} instances torn down; \
         {} notices delivered ({} received more than once), {} deliveries refused",
        t.instances,
        t.runs,
        t.kills,
        t.crashes,
        t.listings_failed,
        t.monitor_calls,
        t.faults,
        t.stops,
        t.terminates,
        t.torn_down,
        t.notices_delivered,
        t.duplicates,
        t.refused_deliveries
    );
    println!(
        "disks: {} in the worlds, watched in {} of {} worlds; {} Deletes accepted, {} left detached at the end",
        t.disks, t.disk_worlds, t.seeds, t.disk_deletes, t.disks_left_detached
    );
    println!(
        "virtual time {:.1} h; wall time {:.1} s on {threads} thread(s)",
        t.virtual_time.as_secs_f64() / 3600.0,
        wall.elapsed().as_secs_f64()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
