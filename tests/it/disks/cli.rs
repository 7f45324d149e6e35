//! The disk commands end to end against the HTTP simulator: bad input refused before the
//! lock and the API (exit 2), the confirmation and `--max-count` gates, `--dry-run`,
//! protections from the config, `--detached-for` measured by the state store, and the
//! README's flow: `demo --listen`, then `disks list` and `disks delete` on what it kept.

use crate::process::{Out, run};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use compshare_teardown::sim::{Scenario, ScenarioDisk, Server, SimHandle, SimState};
use serde_json::Value;
use tempfile::TempDir;

/// A simulator with free-standing disks and a private `$HOME`.
pub(super) struct World {
    pub(super) server: Server,
    pub(super) dir: TempDir,
}

pub(super) fn disk(id: &str, name: &str, size: i64) -> ScenarioDisk {
    ScenarioDisk {
        disk_id: id.into(),
        name: name.into(),
        size_gb: size,
        zone: "cn-wlcb-01".into(),
        ..ScenarioDisk::default()
    }
}

impl World {
    /// Two instances (their data disks attached) and three free disks.
    pub(super) fn new() -> World {
        World::with_disks(vec![
            disk("bsi-free1", "scratch-1", 100),
            disk("bsi-free2", "scratch-2", 200),
            disk("bsi-prod1", "prod-db", 500),
        ])
    }

    /// Two instances (their data disks attached) and `disks`.
    pub(super) fn with_disks(disks: Vec<ScenarioDisk>) -> World {
        let mut s = Scenario::generated(2, 4);
        s.time_scale = 0.001;
        s.disks = disks;
        World {
            server: Server::start(SimHandle::new(s), "127.0.0.1:0".parse().unwrap()).unwrap(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub(super) fn state(&self) -> SimState {
        self.server.handle.snapshot()
    }

    pub(super) fn cmd(&self) -> assert_cmd::Command {
        let mut c = isolated(self.dir.path());
        c.env("COMPSHARE_BASE_URL", self.server.url.as_str())
            .env("COMPSHARE_PUBLIC_KEY", self.server.handle.public_key())
            .env("COMPSHARE_PRIVATE_KEY", self.server.handle.private_key().expose());
        c
    }
}

/// The binary with nothing inherited that could change what it does.
pub(super) fn base(dir: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_compshare-teardown"));
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("UCLOUD_") || k.starts_with("COMPSHARE_") || k.starts_with("XDG_") {
            c.env_remove(&key);
        }
    }
    c.env_remove("RUST_LOG")
        .env("HOME", dir)
        .env("XDG_RUNTIME_DIR", dir)
        .env("XDG_STATE_HOME", dir.join("state"))
        .env("COLUMNS", "120")
        .current_dir(dir);
    c
}

fn isolated(dir: &Path) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::from_std(base(dir));
    c.timeout(Duration::from_secs(60));
    c
}

pub(super) fn json(out: &Out) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {out:?}"))
}

fn deletes(state: &SimState) -> usize {
    state.calls.iter().filter(|c| c.action == "DeleteCompshareDisk").count()
}

#[test]
fn bad_input_exits_2_before_the_lock_and_the_api() {
    let w = World::new();
    let cases: &[(&[&str], &str)] = &[
        (&["disks", "delete", "--yes"], "no disks named and no filter given"),
        (&["disks", "delete", "--yes", "bsi free"], "malformed instance ID"),
        (&["disks", "delete", "--yes", "bsi-a", "bsi-a"], "given twice"),
        (&["disks", "delete", "--yes", "--name", "[x"], "invalid glob"),
        (&["disks", "delete", "--yes", "--min-size", "-1"], "out of range"),
        (
            &["disks", "delete", "--yes", "--all-detached", "--max-count", "0"],
            "out of range",
        ),
        (
            &["disks", "delete", "--yes", "--detached-for", "soon"],
            "--detached-for",
        ),
        (
            &["disks", "delete", "--yes", "--max-count", "1", "bsi-a", "bsi-b"],
            "more than --max-count 1",
        ),
        // Without --yes and without a terminal there is nobody to ask.
        (&["disks", "delete", "--all-detached"], "without a terminal"),
    ];
    for (args, want) in cases {
        let out = run(w.cmd().args(*args));
        assert_eq!(out.code, Some(2), "{args:?}: {out:?}");
        assert!(out.stderr.contains(want), "{args:?}: {out:?}");
        assert!(w.state().calls.is_empty(), "{args:?} called the API");
    }
    assert!(!w.dir.path().join("state").exists(), "no state store touched");
}

#[test]
fn dry_run_and_max_count_delete_nothing() {
    let w = World::new();
    let out = run(w.cmd().args([
        "disks",
        "delete",
        "--all-detached",
        "--dry-run",
        "--protect-name",
        "prod-*",
    ]));
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.contains("2 disk(s) to delete (300 GB); 1 skipped"),
        "{out:?}"
    );
    let lock = w.dir.path().join("lock");
    let out = run(w
        .cmd()
        .args(["disks", "delete", "--all-detached", "--yes", "--max-count", "2"])
        .arg("--lock-file")
        .arg(&lock));
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr.contains("3 disks selected, more than --max-count 2"),
        "{out:?}"
    );
    assert_eq!(deletes(&w.state()), 0);
}

#[test]
fn delete_keeps_protected_and_attached_disks_and_reports_every_one() {
    let w = World::new();
    let config = w.dir.path().join("job.toml");
    std::fs::write(&config, "[selection]\nprotect_name = [\"prod-*\"]\n").unwrap();
    let attached = w.state().disks.iter().find(|d| d["Status"] == "InUse").unwrap()["ResourceId"]
        .as_str()
        .unwrap()
        .to_owned();
    let report = w.dir.path().join("report.json");
    let out = run(w
        .cmd()
        .args([
            "--config",
            config.to_str().unwrap(),
            "--output",
            "json",
            "disks",
            "delete",
            "--yes",
        ])
        .args(["bsi-free1", "bsi-free2", "bsi-prod1", &attached])
        .arg("--report")
        .arg(&report)
        .arg("--lock-file")
        .arg(w.dir.path().join("lock")));
    assert_eq!(out.code, Some(0), "{out:?}");
    let r = json(&out);
    assert_eq!(
        r,
        serde_json::from_str::<Value>(&std::fs::read_to_string(&report).unwrap()).unwrap()
    );
    let outcome = |id: &str| {
        r["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["uhost_id"] == id)
            .unwrap()["outcome"]
            .clone()
    };
    assert_eq!(outcome("bsi-free1")["kind"], "deleted");
    assert_eq!(outcome("bsi-free2")["kind"], "deleted");
    assert_eq!(outcome("bsi-prod1")["kind"], "skipped");
    assert_eq!(outcome(&attached)["kind"], "skipped");
    assert!(r["instances"].as_array().unwrap().iter().all(|i| i["kind"] == "disk"));
    let state = w.state();
    assert!(state.violations.is_empty(), "{:?}", state.violations);
    // Deletes run side by side, so the order they reach the simulator in is not fixed: each
    // selected free disk exactly once, nothing else.
    let mut touched: Vec<&str> = state
        .calls
        .iter()
        .filter(|c| c.action == "DeleteCompshareDisk")
        .map(|c| c.ids[0].as_str())
        .collect();
    touched.sort_unstable();
    assert_eq!(touched, vec!["bsi-free1", "bsi-free2"]);
}

/// "Detached for 1s" is measured: nothing qualifies on the first look (first seen now), the
/// free disks do a second later.
#[tokio::test]
async fn detached_for_is_measured_by_the_state_store() {
    let w = World::new();
    let list = |w: &World| {
        json(&run(w.cmd().args([
            "--output",
            "json",
            "disks",
            "list",
            "--detached-for",
            "1s",
        ])))
    };
    let first = list(&w);
    assert!(
        first.as_array().unwrap().iter().all(|c| c["verdict"] != "act"),
        "{first}"
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let second = list(&w);
    let acting: Vec<&str> = second
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["verdict"] == "act")
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(acting, vec!["bsi-free1", "bsi-free2", "bsi-prod1"]);
    assert!(w.dir.path().join("state/compshare-teardown").is_dir());
}

/// Kills the demo when the test ends, however it ends.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The README's flow: `demo --listen` keeps its simulator up with the disks the teardown
/// kept; `disks list --detached` shows them and `disks delete --all-detached --yes` deletes
/// them all.
#[test]
fn after_demo_one_command_lists_the_kept_disks_and_another_deletes_them() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut demo = base(dir.path());
    demo.args(["demo", "--instances", "6", "--listen", &addr])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut demo = Demo(demo.spawn().unwrap());
    let mut lines = BufReader::new(demo.0.stdout.take().unwrap()).lines();
    let mut exports = None;
    let mut kept = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("simulator check: ") {
            kept = n.split(", ").find_map(|p| {
                p.strip_suffix(" orphan data disk(s) kept (no --release-udisk)")?
                    .parse::<usize>()
                    .ok()
            });
        }
        if let Some(e) = line.trim().strip_prefix("export ") {
            exports = Some(e.to_owned());
            break;
        }
    }
    let (exports, kept) = (
        exports.expect("the demo says where it serves"),
        kept.expect("the demo's check line"),
    );
    assert!(kept > 0);
    let with_env = |c: &mut assert_cmd::Command| {
        for pair in exports.split_whitespace() {
            let (k, v) = pair.split_once('=').unwrap();
            c.env(k, v);
        }
    };
    let mut list = isolated(dir.path());
    with_env(&mut list);
    let out = run(list.args(["--output", "json", "disks", "list", "--detached"]));
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(json(&out).as_array().unwrap().len(), kept, "{out:?}");
    let mut delete = isolated(dir.path());
    with_env(&mut delete);
    let out = run(delete.args(["--output", "json", "disks", "delete", "--all-detached", "--yes"]));
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(json(&out)["summary"]["deleted"], kept, "{out:?}");
    let mut again = isolated(dir.path());
    with_env(&mut again);
    let out = run(again.args(["--output", "json", "disks", "list", "--detached"]));
    assert_eq!(json(&out).as_array().unwrap().len(), 0, "{out:?}");
    drop(lines);
}
