//! Teardown benchmark: the real binary tears down 1000 simulated instances over HTTP.
//!
//! Prints wall time against the lower bound (stop + terminate latency), API calls per
//! instance by action, the tool's peak RSS and CPU time (read from /proc while it runs), and
//! the simulator's verdict. Run with `cargo bench --bench teardown` (optionally
//! `-- --instances N --jitter J --rate R`). Figures are recorded in docs/performance.md.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use compshare_teardown::sim::{Scenario, Server, SimHandle};

struct Args {
    instances: usize,
    jitter: f64,
    rate: u32,
}

fn args() -> Args {
    let mut a = Args {
        instances: 1000,
        jitter: 0.0,
        rate: 0,
    };
    let v: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < v.len() {
        let next = v.get(i + 1).cloned().unwrap_or_default();
        match v[i].as_str() {
            "--instances" => a.instances = next.parse().expect("--instances N"),
            "--jitter" => a.jitter = next.parse().expect("--jitter J"),
            "--rate" => a.rate = next.parse().expect("--rate R"),
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
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
    #[allow(clippy::cast_precision_loss)]
    Some((hwm, ticks as f64 / 100.0))
}

// A benchmark measures the real world: wall-clock time and real sleeps between /proc samples.
#[allow(clippy::disallowed_methods)]
fn main() {
    let a = args();
    let mut scenario = Scenario::generated(a.instances, 42);
    // Every instance Running: each needs the full stop + terminate.
    if let Some(g) = scenario.generate.as_mut() {
        g.mix = [("Running".to_owned(), 1.0)].into_iter().collect();
    }
    scenario.latency.stop_secs = 3.0;
    scenario.latency.terminate_secs = 1.0;
    scenario.latency.jitter = a.jitter;
    let handle = SimHandle::new(scenario);
    let server = Server::start(handle.clone(), ([127, 0, 0, 1], 0).into()).expect("simulator");
    let dir = std::env::temp_dir().join(format!("compshare-teardown-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");

    let start = std::time::Instant::now(); // benchmarks measure real time
    let mut child = Command::new(env!("CARGO_BIN_EXE_compshare-teardown"))
        .args(["run", "--all", "--yes", "--quiet", "--output", "json"])
        .args(["--max-count", &a.instances.to_string(), "--rate", &a.rate.to_string()])
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
    loop {
        if let Some(s) = sample(pid) {
            last = s;
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
    #[allow(clippy::cast_precision_loss)]
    let n = a.instances as f64;
    let lower = 3.0 + 1.0;
    println!("instances           {}", a.instances);
    println!(
        "exit code           {code:?}, terminated {}",
        report["summary"]["terminated"]
    );
    println!(
        "wall time           {wall:.2} s (lower bound {lower:.1} s: stop 3 s + terminate 1 s; ratio {:.2})",
        wall / lower
    );
    #[allow(clippy::cast_precision_loss)]
    let total: f64 = calls.values().sum::<usize>() as f64;
    println!("API calls/instance  {:.2} total", total / n);
    for (action, count) in &calls {
        #[allow(clippy::cast_precision_loss)]
        let per = *count as f64 / n;
        println!("  {action:<18}{per:.3} ({count})");
    }
    #[allow(clippy::cast_precision_loss)]
    let rss_mb = last.0 as f64 / 1024.0;
    println!("peak RSS            {rss_mb:.1} MiB (tool process)");
    println!("CPU time            {:.2} s (tool process, user+system)", last.1);
    println!("violations          {}", state.violations.len());
    println!("instances left      {}", state.instances.len());
    let _ = std::fs::remove_dir_all(&dir);
}
