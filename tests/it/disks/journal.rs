//! `disks delete --journal` and `--resume`, the real binary against the HTTP simulator: a
//! deletion killed at many points of its journal (the kernel's file-size limit kills it on
//! the write that crosses the limit, mid-line) and resumed to the end deletes every disk
//! once and no attached one; each kind of journal is refused by the other command; a journal
//! that cannot be written ends the disks not finished `failed`, exit 1.

use std::collections::BTreeMap;
use std::path::Path;

use compshare_teardown::credentials::Account;
use compshare_teardown::sim::{ScenarioDisk, SimState};
use compshare_teardown::workflow::journal::{Entry, JOURNAL_VERSION, Journal, JournalKind};

use super::cli::{World, base, disk, json};
use crate::process::{Out, run};

/// The journal's block of `ulimit -f`: POSIX `sh` counts the file-size limit in 512-byte
/// blocks.
const BLOCK: u64 = 512;

fn free_disks() -> Vec<ScenarioDisk> {
    (1..=5)
        .map(|n| disk(&format!("bsi-free{n}"), &format!("scratch-{n}"), 100))
        .collect()
}

/// `disks delete` with the world's keys, run under `sh` with `prelude` (a file-size limit).
fn under_limit(w: &World, prelude: &str, args: &[&str]) -> Out {
    let mut sh = base(w.dir.path());
    sh.arg("-c")
        .arg(format!("{prelude}; exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_compshare-teardown"))
        .args(args)
        .env("COMPSHARE_BASE_URL", w.server.url.as_str())
        .env("COMPSHARE_PUBLIC_KEY", w.server.handle.public_key())
        .env("COMPSHARE_PRIVATE_KEY", w.server.handle.private_key().expose());
    let mut cmd = assert_cmd::Command::from_std({
        let mut c = std::process::Command::new("sh");
        c.args(sh.get_args());
        for (k, v) in sh.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c.current_dir(w.dir.path());
        c
    });
    cmd.timeout(std::time::Duration::from_secs(60));
    run(&mut cmd)
}

/// Accepted Deletes per disk, and the Deletes sent for disks attached to an instance.
fn deletes(state: &SimState) -> (BTreeMap<String, usize>, Vec<String>) {
    let attached: Vec<&str> = state
        .instances
        .iter()
        .flat_map(|i| i["DiskSet"].as_array().into_iter().flatten())
        .filter_map(|d| d["DiskId"].as_str())
        .collect();
    let mut accepted = BTreeMap::new();
    let mut wrong = Vec::new();
    for c in state.calls.iter().filter(|c| c.action == "DeleteCompshareDisk") {
        let id = c.ids[0].clone();
        if attached.contains(&id.as_str()) {
            wrong.push(id.clone());
        }
        if c.ret_code == Some(0) {
            *accepted.entry(id).or_default() += 1;
        }
    }
    (accepted, wrong)
}

fn delete_calls(state: &SimState) -> u64 {
    state.calls.iter().filter(|c| c.action == "DeleteCompshareDisk").count() as u64
}

/// Deletes the simulator has received once it has read what a killed process had already
/// sent: a request on its way when the process died is still read and answered (to nobody),
/// and counted; on a loaded machine that can come a moment after the process is gone.
#[expect(
    clippy::disallowed_methods,
    reason = "The simulator serves in real time on its own thread: waiting for it needs the real clock."
)]
fn settled_delete_calls(w: &World) -> u64 {
    let mut last = delete_calls(&w.state());
    for _ in 0..20 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let now = delete_calls(&w.state());
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

fn journal_text(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

/// Killed at every 512-byte block of its journal, then resumed: each free disk deleted
/// exactly once over both processes, no attached disk touched, every disk reported.
#[test]
fn a_deletion_killed_anywhere_in_its_journal_resumes_to_the_end() {
    // A whole run first, to know how long its journal grows.
    let w = World::with_disks(free_disks());
    let full = w.dir.path().join("full.journal");
    let out = run(w
        .cmd()
        .args(["disks", "delete", "--yes", "--all-detached", "--journal"])
        .arg(&full));
    assert_eq!(out.code, Some(0), "{out:?}");
    let size = std::fs::metadata(&full).unwrap().len();
    let blocks = size.div_ceil(BLOCK);
    assert!(blocks >= 3, "a journal of {size} bytes gives too few cut points");
    let mut cut_mid_run = 0;
    for limit in 1..blocks {
        let w = World::with_disks(free_disks());
        let path = w.dir.path().join("cut.journal");
        let first = under_limit(
            &w,
            &format!("ulimit -f {limit}"),
            &[
                "disks",
                "delete",
                "--yes",
                "--all-detached",
                "--journal",
                path.to_str().unwrap(),
            ],
        );
        // Killed by SIGXFSZ on the write that crossed the limit: no exit code.
        assert_eq!(first.code, None, "limit {limit} blocks: {first:?}");
        let cut = journal_text(&path);
        assert_eq!(
            cut.len() as u64,
            limit * BLOCK,
            "limit {limit}: the journal ends at the cut"
        );
        let sent_before = settled_delete_calls(&w);
        let resumed = run(w
            .cmd()
            .args(["disks", "delete", "--yes", "--output", "json", "--resume"])
            .arg(&path));
        let state = w.state();
        assert!(state.violations.is_empty(), "limit {limit}: {:#?}", state.violations);
        let (accepted, wrong) = deletes(&state);
        assert!(wrong.is_empty(), "limit {limit}: Delete of attached disks {wrong:?}");
        if !cut.contains('\n') {
            // Cut inside the start line: nothing was sent, and there is nothing to resume.
            assert!(accepted.is_empty(), "limit {limit}: {accepted:?}");
            assert_eq!(resumed.code, Some(2), "limit {limit}: {resumed:?}");
            continue;
        }
        cut_mid_run += 1;
        assert_eq!(resumed.code, Some(0), "limit {limit}: cut journal\n{cut}\n{resumed:?}");
        let report = json(&resumed);
        let rows = report["instances"].as_array().unwrap();
        assert_eq!(rows.len(), 5, "limit {limit}: {report}");
        // Deleted by one process or the other: each says so, none "already gone".
        for r in rows {
            assert_eq!(r["outcome"]["kind"], "deleted", "limit {limit}: {report}");
        }
        for n in 1..=5 {
            let id = format!("bsi-free{n}");
            assert_eq!(accepted.get(&id), Some(&1), "limit {limit}: {id} deleted {accepted:?}");
            assert!(
                !state.disks.iter().any(|d| d["ResourceId"] == id.as_str()),
                "limit {limit}: {id} still listed"
            );
        }
        // The resumed process counts exactly its own Deletes; the killed one's apart, each
        // journaled intent counted (sent, or perhaps sent: it died before the answer).
        let sum = |key: &str| -> u64 { rows.iter().map(|r| r[key].as_u64().unwrap_or(0)).sum() };
        let ours = report["summary"]["api_calls"]["DeleteCompshareDisk"]
            .as_u64()
            .unwrap_or(0);
        assert_eq!(sum("calls"), ours, "limit {limit}: {report}");
        assert_eq!(ours, delete_calls(&state) - sent_before, "limit {limit}: {report}");
        let before = report["summary"]["calls_before_resume"]["DeleteCompshareDisk"]
            .as_u64()
            .unwrap_or(0);
        assert_eq!(sum("calls_before_resume"), before, "limit {limit}: {report}");
        let intents = cut.lines().filter(|l| l.contains(r#""event":"disk_call""#)).count() as u64;
        assert!(
            (sent_before..=intents).contains(&before),
            "limit {limit}: {before} journaled, {sent_before} sent, {intents} intents: {report}"
        );
    }
    assert!(cut_mid_run >= 2, "only {cut_mid_run} cuts fell after the start line");
}

/// The account the world's keys sign for, as a journal's start line names it.
fn account(w: &World) -> Account {
    Account::new(&w.server.url, None, &w.server.handle.public_key())
}

fn start(kind: JournalKind, ids: &[&str]) -> Entry {
    Entry::Start {
        version: JOURNAL_VERSION,
        kind,
        ids: ids.iter().map(|s| (*s).to_owned()).collect(),
        release_udisk: false,
        force_stop: false,
        resumed: false,
    }
}

/// A disk journal is refused by `run --resume`, an instance journal by `disks delete
/// --resume`, both with exit 2, saying which command resumes it, and nothing is sent.
#[test]
fn each_kind_of_journal_is_refused_by_the_other_command() {
    let w = World::new();
    let disks = w.dir.path().join("disks.journal");
    Journal::begin(&disks, &account(&w), &start(JournalKind::Disk, &["bsi-free1"])).unwrap();
    let instance_id = w.server.handle.ids()[0].clone();
    let instances = w.dir.path().join("instances.journal");
    Journal::begin(
        &instances,
        &account(&w),
        &start(JournalKind::Instance, &[instance_id.as_str()]),
    )
    .unwrap();
    let out = run(w.cmd().args(["run", "--yes", "--resume"]).arg(&disks));
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr
            .contains("is a disk journal, written by `disks delete`: resume it with `disks delete --resume`"),
        "{out:?}"
    );
    let out = run(w.cmd().args(["disks", "delete", "--yes", "--resume"]).arg(&instances));
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr
            .contains("is an instance journal, written by `run`: resume it with `run --resume`"),
        "{out:?}"
    );
    // Its own command takes each.
    let out = run(w.cmd().args(["disks", "delete", "--yes", "--resume"]).arg(&disks));
    assert_eq!(out.code, Some(0), "{out:?}");
    let state = w.state();
    let (accepted, _) = deletes(&state);
    assert_eq!(accepted.keys().collect::<Vec<_>>(), ["bsi-free1"], "{accepted:?}");
    assert!(
        !state
            .calls
            .iter()
            .any(|c| c.action.starts_with("Stop") || c.action.starts_with("Terminate")),
        "the refused resume of the disk journal sent an instance call"
    );
    // A journal that holds a run is not reused without --resume, a selection is not
    // combined with --resume, a link is not written through.
    let out = run(w
        .cmd()
        .args(["disks", "delete", "--yes", "bsi-free2", "--journal"])
        .arg(&disks));
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr.contains("already holds a run; resume it with --resume"),
        "{out:?}"
    );
    let out = run(w
        .cmd()
        .args(["disks", "delete", "--yes", "bsi-free2", "--resume"])
        .arg(&disks));
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("--resume fixes the selection"), "{out:?}");
    #[cfg(unix)]
    {
        let link = w.dir.path().join("link.journal");
        std::os::unix::fs::symlink(w.dir.path().join("elsewhere"), &link).unwrap();
        let out = run(w
            .cmd()
            .args(["disks", "delete", "--yes", "bsi-free2", "--journal"])
            .arg(&link));
        assert_eq!(out.code, Some(2), "{out:?}");
        assert!(out.stderr.contains("--journal"), "{out:?}");
    }
    assert_eq!(deletes(&w.state()).0.len(), 1, "a refused command sent a Delete");
}

/// Writes to the journal fail past one block (the file-size limit, its signal ignored, so
/// the write returns an error): the deletion halts, the disks not finished end `failed`
/// ("journal write failed"), exit 1, and no Delete left whose intent is not in the journal.
#[test]
fn a_journal_write_failure_fails_the_disks_not_finished() {
    let w = World::with_disks(free_disks());
    let path = w.dir.path().join("full.journal");
    let out = under_limit(
        &w,
        "trap '' XFSZ; ulimit -f 1",
        &[
            "disks",
            "delete",
            "--yes",
            "--all-detached",
            "--concurrency",
            "1",
            "--output",
            "json",
            "--journal",
            path.to_str().unwrap(),
        ],
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    let report = json(&out);
    let rows = report["instances"].as_array().unwrap();
    assert_eq!(rows.len(), 5, "{report}");
    let failed: Vec<&serde_json::Value> = rows.iter().filter(|r| r["outcome"]["kind"] == "failed").collect();
    assert!(!failed.is_empty(), "{report}");
    for r in &failed {
        let error = r["outcome"]["error"].as_str().unwrap();
        assert!(error.starts_with("journal write failed"), "{report}");
    }
    // Every Delete sent has its whole intent line in the journal.
    let text = journal_text(&path);
    let intents: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["event"] == "disk_call")
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .collect();
    let state = w.state();
    let (accepted, wrong) = deletes(&state);
    assert!(wrong.is_empty(), "{wrong:?}");
    assert!(accepted.values().all(|&n| n == 1), "{accepted:?}");
    for c in state.calls.iter().filter(|c| c.action == "DeleteCompshareDisk") {
        assert!(
            intents.contains(&c.ids[0]),
            "Delete of {} without its intent:\n{text}",
            c.ids[0]
        );
    }
    assert!(
        accepted.len() < 5,
        "the failure came too late to test anything: {accepted:?}"
    );
}
