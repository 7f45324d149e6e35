//! The scheduled job end to end: the real binary's `watch`, `marks`, `keep` and `history`
//! against the HTTP simulator (idle and busy GPU instances) and a real local webhook receiver.
//! The simulator runs unscaled with its epoch at the real time, so its monitor samples and the
//! binary's clock agree; a 10-minute idle window with a 30-minute monitor reach lets one answer
//! cover the window. Every run is isolated like `cli.rs`'s: fresh `HOME`/XDG directories, no
//! inherited keys.

use crate::process::{Out, run};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use compshare_teardown::api::{Instance, State};
use compshare_teardown::credentials::Account;
use compshare_teardown::sim::{
    CallRecord, GpuLoad, Latency, Monitoring, Scenario, ScenarioDisk, ScenarioInstance, Server, SimHandle, SimState,
};
use serde_json::Value;
use tempfile::TempDir;

mod disks;

/// The secret part of the webhook URL: it may appear in no output.
const SECRET: &str = "/services/T0001/B0002/WATCHSECRET42";

const IDLE: [&str; 2] = ["uhost-idle1", "uhost-idle2"];
const BUSY: &str = "uhost-busy1";
/// Each instance's hourly price, as Describe gives it.
const PRICE: f64 = 1.98;

/// The calls that change the world.
const MUTATING: [&str; 3] = [
    "StopCompShareInstance",
    "StartCompShareInstance",
    "TerminateCompShareInstance",
];

/// The idle rule for these worlds: short enough that one monitor answer covers it.
const RULE: [&str; 4] = ["--idle-for", "10m", "--max-gap", "5m"];

fn now_unix() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(d.as_secs()).unwrap()
}

/// A running GPU instance, created long ago (running longer than any idle window).
fn row(id: &str, load: GpuLoad) -> ScenarioInstance {
    let instance = Instance {
        uhost_id: id.into(),
        name: format!("train-{id}"),
        tag: "Default".into(),
        state: State::Running,
        region: "cn-wlcb".into(),
        zone: "cn-wlcb-01".into(),
        charge_type: "Postpay".into(),
        gpu: 1,
        gpu_type: "4090".into(),
        cpu: 16,
        memory: 65_536,
        instance_type: "UHost".into(),
        instance_price: PRICE,
        create_time: 1_700_000_000,
        update_time: 1_700_000_000,
        ..Instance::default()
    };
    let Value::Object(row) = serde_json::to_value(&instance).unwrap() else {
        unreachable!("an instance serializes to an object")
    };
    ScenarioInstance {
        gpu_load: Some(load),
        row,
        ..ScenarioInstance::default()
    }
}

/// A simulator with two idle and one busy instance, and a private directory for `$HOME`.
struct World {
    server: Server,
    dir: TempDir,
}

impl World {
    fn new() -> World {
        World::with_disks(Vec::new())
    }

    /// The same world with these free-standing data disks.
    fn with_disks(disks: Vec<ScenarioDisk>) -> World {
        let mut instances: Vec<ScenarioInstance> = IDLE.iter().map(|id| row(id, GpuLoad::Idle)).collect();
        instances.push(row(BUSY, GpuLoad::Busy));
        let scenario = Scenario {
            // Unscaled, from the real time: the simulator's samples are stamped on the clock
            // the binary reads.
            epoch: Some(now_unix()),
            latency: Latency {
                stop_secs: 0.2,
                start_secs: 0.2,
                terminate_secs: 0.2,
                jitter: 0.0,
                ..Latency::default()
            },
            monitor: Monitoring {
                warmup_secs: 0.0,
                reach_secs: 1_800.0,
                ..Monitoring::default()
            },
            instances,
            disks,
            ..Scenario::default()
        };
        let server = Server::start(SimHandle::new(scenario), "127.0.0.1:0".parse().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        // A fast engine: the simulator stops in 0.2 s, so polling every 3 s would only wait.
        std::fs::write(
            dir.path().join("fast.toml"),
            "[run]\npoll_interval = \"50ms\"\nsettle = \"1s\"\nrate = 0\n",
        )
        .unwrap();
        World { server, dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The binary pointed at this world, with its keys, isolated from the developer's machine.
    fn cmd(&self) -> assert_cmd::Command {
        let mut c = assert_cmd::cargo::cargo_bin_cmd!("compshare-teardown");
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if k.starts_with("UCLOUD_") || k.starts_with("COMPSHARE_") {
                c.env_remove(&key);
            }
        }
        for key in ["RUST_LOG", "NO_COLOR", "http_proxy", "HTTP_PROXY", "XDG_STATE_HOME"] {
            c.env_remove(key);
        }
        let dir = self.dir.path();
        c.env("HOME", dir)
            .env("XDG_CONFIG_HOME", dir.join(".config"))
            .env("XDG_RUNTIME_DIR", dir)
            .env("COLUMNS", "200")
            .env("COMPSHARE_BASE_URL", self.server.url.as_str())
            .env("COMPSHARE_PUBLIC_KEY", self.server.handle.public_key())
            .env("COMPSHARE_PRIVATE_KEY", self.server.handle.private_key().expose())
            .current_dir(dir)
            .timeout(Duration::from_secs(120));
        c
    }

    /// `watch` with this world's idle rule, config and a private lock file, then `args`.
    fn watch(&self, args: &[&str]) -> Out {
        let mut c = self.cmd();
        c.args(["--config", self.path("fast.toml").to_str().unwrap(), "watch", "--all"])
            .args(RULE)
            .args(["--lock-file", self.path("lock").to_str().unwrap()])
            .args(args);
        run(&mut c)
    }

    /// A view command (`marks`, `history`, `keep ...`) as JSON.
    fn view(&self, args: &[&str]) -> Out {
        run(self.cmd().args(["--output", "json"]).args(args))
    }

    fn account(&self) -> Account {
        Account::new(&self.server.url, None, &self.server.handle.public_key())
    }

    /// Where the store lives when `--state-file` is not given.
    fn default_store(&self) -> PathBuf {
        self.path(&format!(
            ".local/state/compshare-teardown/{}.sqlite3",
            self.account().slug()
        ))
    }

    fn snapshot(&self) -> SimState {
        self.server.handle.snapshot()
    }

    fn mutating_calls(&self) -> Vec<CallRecord> {
        self.snapshot()
            .calls
            .into_iter()
            .filter(|c| MUTATING.contains(&c.action.as_str()))
            .collect()
    }

    /// IDs the simulator still lists.
    fn alive(&self) -> BTreeSet<String> {
        self.server.handle.ids().into_iter().collect()
    }
}

impl Out {
    /// Neither stream shows the webhook's secret path.
    fn masked(&self) {
        assert!(
            !self.stdout.contains("WATCHSECRET42") && !self.stderr.contains("WATCHSECRET42"),
            "{self:?}"
        );
    }
}

/// A webhook receiver on a loopback port, on its own thread and runtime (the test blocks on
/// the child process). Answers every POST with `status`, which a test may change.
struct Receiver {
    url: String,
    bodies: Arc<Mutex<Vec<(String, Value)>>>,
    status: Arc<AtomicU16>,
}

impl Receiver {
    fn start(status: u16) -> Receiver {
        let bodies: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
        let status = Arc::new(AtomicU16::new(status));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}{SECRET}", listener.local_addr().unwrap());
        let (b, s) = (bodies.clone(), status.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let app = axum::Router::new().fallback(move |uri: axum::http::Uri, body: axum::body::Bytes| {
                    let (b, s) = (b.clone(), s.clone());
                    async move {
                        let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        b.lock().unwrap().push((uri.path().to_owned(), v));
                        axum::http::StatusCode::from_u16(s.load(Ordering::SeqCst)).unwrap()
                    }
                });
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        Receiver { url, bodies, status }
    }

    /// Every body received, in order.
    fn events(&self) -> Vec<Value> {
        let got = self.bodies.lock().unwrap().clone();
        assert!(
            got.iter().all(|(path, _)| path == SECRET),
            "posted to the webhook's path"
        );
        got.into_iter().map(|(_, v)| v).collect()
    }
}

/// `(kind, target ID)` of each event; the summary has no target.
fn kinds(events: &[Value]) -> BTreeSet<(String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or_default().to_owned(),
                e["target"]["id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    items
        .iter()
        .map(|(k, id)| ((*k).to_owned(), (*id).to_owned()))
        .collect()
}

/// The `decision` of each entry in a `watch --output json` report, by ID.
fn decisions(report: &Value) -> Vec<(String, String, String)> {
    report["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("no entries: {report}"))
        .iter()
        .map(|e| {
            (
                e["uhost_id"].as_str().unwrap().to_owned(),
                e["judgement"].as_str().unwrap_or_default().to_owned(),
                e["decision"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn ids(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

// 1 -----------------------------------------------------------------------------------------

#[test]
fn dry_run_shows_what_it_would_do_and_changes_nothing() {
    let w = World::new();
    let hook = Receiver::start(200);

    let out = w.watch(&["--dry-run", "--output", "json", "--notify-webhook", &hook.url]);
    assert_eq!(out.code, Some(0), "{out:?}");
    out.masked();
    let report = out.json();
    assert_eq!(report["dry_run"], true, "{report}");
    assert_eq!(report["marked"], 2, "{report}");
    let want: Vec<(String, String, String)> = vec![
        (BUSY.into(), "busy".into(), "nothing".into()),
        (IDLE[0].into(), "idle".into(), "mark".into()),
        (IDLE[1].into(), "idle".into(), "mark".into()),
    ];
    assert_eq!(decisions(&report), want, "{report}");

    // Grace 0: the same path says it would tear the idle ones down now, in a table.
    let out = w.watch(&["--dry-run", "--grace", "0", "--notify-webhook", &hook.url]);
    assert_eq!(out.code, Some(0), "{out:?}");
    out.masked();
    let lines: Vec<&str> = out.stdout.lines().filter(|l| l.contains("would tear down")).collect();
    assert_eq!(lines.len(), 2, "{out:?}");
    assert!(IDLE.iter().all(|id| lines.iter().any(|l| l.contains(id))), "{out:?}");
    assert!(
        !out.stdout.lines().any(|l| l.contains(BUSY) && l.contains("tear down")),
        "{out:?}"
    );
    assert!(out.stdout.contains("would act on 2"), "{out:?}");

    assert!(w.mutating_calls().is_empty(), "{:?}", w.mutating_calls());
    assert!(!exists(&w.default_store()), "a dry run creates no state store");
    assert!(!exists(&w.path(".local/state")), "nor its directory");
    assert!(
        hook.events().is_empty(),
        "a dry run sends no notice: {:?}",
        hook.events()
    );
    assert_eq!(w.alive(), set(&[BUSY, IDLE[0], IDLE[1]]));
}

// 2 -----------------------------------------------------------------------------------------

#[test]
fn grace_zero_tears_down_exactly_the_idle_instances_and_tells() {
    let w = World::new();
    let hook = Receiver::start(200);

    let out = w.watch(&[
        "--yes",
        "--grace",
        "0",
        "--output",
        "json",
        "--notify-webhook",
        &hook.url,
    ]);
    assert_eq!(out.code, Some(0), "{out:?}");
    out.masked();
    let report = out.json();
    assert_eq!(report["acted"], 2, "{report}");
    assert_eq!(report["notices_sent"], 5, "{report}");

    assert_eq!(w.alive(), set(&[BUSY]), "only the busy one is left");
    let terminated: BTreeSet<String> = w.snapshot().terminated.iter().map(|t| t.uhost_id.clone()).collect();
    assert_eq!(terminated, set(&IDLE));
    assert!(
        w.mutating_calls().iter().all(|c| !c.ids.iter().any(|id| id == BUSY)),
        "{:?}",
        w.mutating_calls()
    );
    assert!(w.snapshot().violations.is_empty(), "{:?}", w.snapshot().violations);

    let events = hook.events();
    assert_eq!(
        kinds(&events),
        pairs(&[
            ("marked", IDLE[0]),
            ("marked", IDLE[1]),
            ("torn_down", IDLE[0]),
            ("torn_down", IDLE[1]),
            ("summary", ""),
        ]),
        "{events:#?}"
    );
    assert_eq!(events.len(), 5, "each once: {events:#?}");
    let event_ids: BTreeSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(event_ids.len(), 5, "distinct event IDs: {events:#?}");
    assert!(
        events.iter().all(|e| e["text"].as_str().is_some_and(|t| !t.is_empty())),
        "Slack text: {events:#?}"
    );

    // `history` lists both teardowns with their price; no mark is left.
    let out = w.view(&["history"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let rows = out.json();
    assert_eq!(ids(&rows), set(&IDLE), "{rows}");
    for r in rows.as_array().unwrap() {
        assert_eq!(r["outcome"], "terminated", "{r}");
        assert_eq!(r["price_per_hour"], PRICE, "{r}");
    }
    let out = run(w.cmd().args(["history"]));
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.contains("2 teardowns") && out.stdout.contains("3.96"),
        "{out:?}"
    );

    let out = w.view(&["marks"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let view = out.json();
    assert_eq!(view["marks"], Value::Array(Vec::new()), "{view}");
}

// 3 -----------------------------------------------------------------------------------------

#[test]
fn default_grace_marks_once_and_a_keep_drops_the_mark() {
    let w = World::new();
    let hook = Receiver::start(200);
    let job = ["--yes", "--output", "json", "--notify-webhook", hook.url.as_str()];

    let before = now_unix();
    let out = w.watch(&job);
    assert_eq!(out.code, Some(0), "{out:?}");
    out.masked();
    let report = out.json();
    assert_eq!(
        (report["marked"].as_u64(), report["acted"].as_u64()),
        (Some(2), Some(0)),
        "{report}"
    );
    let events = hook.events();
    assert_eq!(
        kinds(&events),
        pairs(&[("marked", IDLE[0]), ("marked", IDLE[1]), ("summary", "")]),
        "{events:#?}"
    );
    assert_eq!(events.len(), 3, "{events:#?}");
    for e in events.iter().filter(|e| e["kind"] == "marked") {
        // Due an hour (the default grace) after the mark.
        let due = e["due"].as_i64().unwrap();
        assert!((before + 3_600..=now_unix() + 3_600).contains(&due), "{e}");
    }
    assert!(
        w.mutating_calls().is_empty(),
        "marking changes nothing: {:?}",
        w.mutating_calls()
    );

    // A second run: still in grace; nothing marked again, nothing sent again.
    let out = w.watch(&job);
    assert_eq!(out.code, Some(0), "{out:?}");
    let report = out.json();
    assert_eq!(
        (report["marked"].as_u64(), report["waiting"].as_u64()),
        (Some(0), Some(2)),
        "{report}"
    );
    assert_eq!(hook.events().len(), 3, "nothing resent: {:#?}", hook.events());
    assert!(w.mutating_calls().is_empty());

    // `marks` shows both with their due time, in JSON and as a table.
    let view = w.view(&["marks"]).json();
    assert_eq!(ids(&view["marks"]), set(&IDLE), "{view}");
    for m in view["marks"].as_array().unwrap() {
        assert_eq!(
            m["due_at"].as_i64().unwrap() - m["marked_at"].as_i64().unwrap(),
            3_600,
            "{m}"
        );
    }
    let table = run(w.cmd().arg("marks"));
    assert_eq!(table.code, Some(0), "{table:?}");
    for id in IDLE {
        assert!(
            table.stdout.lines().any(|l| l.contains(id) && l.contains("grace")),
            "{table:?}"
        );
    }

    // Keep one for 8 hours: the next run drops its mark, says so, and delivers the keep.
    let out = w.view(&["keep", IDLE[0], "--for", "8h", "--reason", "demo tomorrow"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let out = w.watch(&job);
    assert_eq!(out.code, Some(0), "{out:?}");
    let report = out.json();
    assert_eq!(report["unmarked"], 1, "{report}");
    let events = hook.events();
    assert_eq!(
        kinds(&events[3..]),
        pairs(&[("kept", IDLE[0]), ("unmarked", IDLE[0]), ("summary", "")]),
        "{events:#?}"
    );
    assert_eq!(events.len(), 6, "{events:#?}");
    let view = w.view(&["marks"]).json();
    assert_eq!(ids(&view["marks"]), set(&[IDLE[1]]), "{view}");
    assert_eq!(ids(&view["keeps"]), set(&[IDLE[0]]), "{view}");
    let until = view["keeps"][0]["until_at"].as_i64().unwrap();
    assert!((before + 8 * 3_600..=now_unix() + 8 * 3_600).contains(&until), "{view}");
    let table = run(w.cmd().arg("marks"));
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.contains(IDLE[0]) && l.contains("demo tomorrow")),
        "{table:?}"
    );

    // While kept it is neither marked again nor touched.
    let out = w.watch(&job);
    assert_eq!(out.code, Some(0), "{out:?}");
    let report = out.json();
    assert_eq!(
        (report["marked"].as_u64(), report["kept"].as_u64()),
        (Some(0), Some(1)),
        "{report}"
    );
    assert_eq!(hook.events().len(), 6, "{:#?}", hook.events());
    assert!(w.mutating_calls().is_empty());
    assert_eq!(w.alive(), set(&[BUSY, IDLE[0], IDLE[1]]));
}

// 4 -----------------------------------------------------------------------------------------

/// The value of an unlabelled gauge in a metrics file.
fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn a_failing_receiver_never_blocks_the_teardown_and_is_caught_up_next_run() {
    let w = World::new();
    let hook = Receiver::start(500);
    let metrics = w.path("watch.prom");
    let job = [
        "--yes",
        "--grace",
        "0",
        "--notify-timeout",
        "1s",
        "--notify-webhook",
        hook.url.as_str(),
        "--metrics-file",
        metrics.to_str().unwrap(),
    ];

    let out = w.watch(&job);
    assert_eq!(out.code, Some(0), "the teardown succeeded: {out:?}");
    out.masked();
    assert_eq!(w.alive(), set(&[BUSY]), "torn down although no notice got through");
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert_eq!(
        gauge(&text, "compshare_teardown_last_watch_notices_failed"),
        Some(5.0),
        "{text}"
    );
    let failed = hook.events();
    let failed_ids: BTreeSet<String> = failed.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(failed_ids.len(), 5, "{failed:#?}");

    // The receiver is fixed: the next run delivers exactly those, with the same event IDs.
    hook.status.store(200, Ordering::SeqCst);
    let out = w.watch(&job);
    assert_eq!(out.code, Some(0), "{out:?}");
    out.masked();
    let all = hook.events();
    let caught_up: Vec<&Value> = all[failed.len()..].iter().collect();
    let caught_up_ids: BTreeSet<String> = caught_up.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(caught_up_ids, failed_ids, "{caught_up:#?}");
    assert_eq!(caught_up.len(), 5, "each once: {caught_up:#?}");
    assert_eq!(
        kinds(&all),
        pairs(&[
            ("marked", IDLE[0]),
            ("marked", IDLE[1]),
            ("torn_down", IDLE[0]),
            ("torn_down", IDLE[1]),
            ("summary", ""),
        ])
    );
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert_eq!(
        gauge(&text, "compshare_teardown_last_watch_notices_failed"),
        Some(0.0),
        "{text}"
    );

    // Delivered: a third run sends nothing.
    let out = w.watch(&job);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(hook.events().len(), all.len());
}

// 5 -----------------------------------------------------------------------------------------

/// What a file looks like, to tell it was not touched: its kind, bytes and mtime.
fn fingerprint(p: &Path) -> Option<(String, Vec<u8>, Option<std::time::SystemTime>)> {
    let m = std::fs::symlink_metadata(p).ok()?;
    let bytes = if m.is_file() {
        std::fs::read(p).unwrap()
    } else {
        Vec::new()
    };
    let link = std::fs::read_link(p)
        .map(|t| t.display().to_string())
        .unwrap_or_default();
    Some((format!("{:?} {link}", m.file_type()), bytes, m.modified().ok()))
}

/// A store made by `keep` (which calls no API) for `public_key`'s account.
fn store_of(w: &World, path: &Path, public_key: &str) {
    let out = run(w.cmd().env("COMPSHARE_PUBLIC_KEY", public_key).args([
        "keep",
        "uhost-setup",
        "--for",
        "1h",
        "--state-file",
        path.to_str().unwrap(),
    ]));
    assert_eq!(out.code, Some(0), "{out:?}");
}

#[test]
#[expect(clippy::too_many_lines, reason = "one bad input after another, each a short block")]
fn bad_input_exits_2_and_changes_nothing() {
    let w = World::new();
    let hook = Receiver::start(200);
    let public_key = w.server.handle.public_key();

    // Stores that must be refused as they are, and never written.
    let real = w.path("real.sqlite3");
    store_of(&w, &real, &public_key);
    let link = w.path("link.sqlite3");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let dir = w.path("dir.sqlite3");
    std::fs::create_dir(&dir).unwrap();
    let text = w.path("text.sqlite3");
    std::fs::write(&text, "these are my notes, not a database\n".repeat(20)).unwrap();
    let other = w.path("other.sqlite3");
    store_of(&w, &other, "someone-elses-public-key");
    let newer = w.path("newer.sqlite3");
    store_of(&w, &newer, &public_key);
    rusqlite::Connection::open(&newer)
        .unwrap()
        .execute_batch("PRAGMA user_version = 999")
        .unwrap();
    let files = [&real, &link, &dir, &text, &other, &newer];
    let before: Vec<_> = files.iter().map(|f| fingerprint(f)).collect();

    let p = |f: &PathBuf| f.to_str().unwrap().to_owned();
    let job = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["watch", "--all", "--yes", "--notify-webhook", hook.url.as_str()]
            .map(str::to_owned)
            .to_vec();
        v.extend(extra.iter().map(|s| (*s).to_owned()));
        v
    };
    let owned = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>();
    let malformed = format!("http://exa mple.com{SECRET}");
    let not_http = format!("ftp://hooks.example.com{SECRET}");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            owned(&["watch", "--all", "--notify-webhook", hook.url.as_str()]),
            "--yes",
        ),
        (job(&["--dry-run", "--notify-webhook", &malformed]), "webhook"),
        (
            owned(&["watch", "--all", "--yes", "--notify-webhook", &malformed]),
            "webhook",
        ),
        (
            owned(&["watch", "--all", "--yes", "--notify-webhook", &not_http]),
            "http",
        ),
        (owned(&["watch", "--all", "--yes", "--notify-command", " "]), "command"),
        (job(&["--gpu-util-max", "100"]), "--gpu-util-max"),
        (job(&["--gpu-mem-max=-1"]), "--gpu-mem-max"),
        (job(&["--idle-for", "5m"]), "--idle-for"),
        (job(&["--idle-for", "10m", "--max-gap", "10m"]), "gap"),
        (job(&["--idle-for", "10m", "--max-gap", "20m"]), "gap"),
        (job(&["--state-file", &p(&link)]), "symbolic link"),
        (job(&["--state-file", &p(&dir)]), "directory"),
        (
            job(&["--state-file", &p(&text)]),
            "not a compshare-teardown state store",
        ),
        (job(&["--state-file", &p(&other)]), "another account"),
        (job(&["--state-file", &p(&newer)]), "newer"),
        (job(&["--dry-run", "--state-file", &p(&other)]), "another account"),
        (owned(&["marks", "--state-file", &p(&link)]), "symbolic link"),
        (owned(&["history", "--state-file", &p(&newer)]), "newer"),
        (
            owned(&["keep", "uhost-ok", "--for", "1h", "--state-file", &p(&other)]),
            "another account",
        ),
        (
            owned(&["keep", "uhost-a/../b", "--for", "8h"]),
            "not an instance or disk ID",
        ),
        (job(&["--disks", "--disk-detached-for", "5m"]), "--disk-detached-for"),
        (job(&["--disk-detached-for", "7d"]), "--disks"),
        (job(&["--disks", "--disk-name", "data-[x"]), "data-[x"),
        (job(&["--disks", "--exclude", "bsi-a/../b"]), "bsi-a/../b"),
        (
            owned(&["keep", "uhost-ok", "--until", "2020-01-01T00:00:00Z"]),
            "in the past",
        ),
        (owned(&["keep", "uhost-ok", "--until", "next tuesday"]), "--until"),
        (owned(&["keep", "uhost-ok", "--for", "10s"]), "--for"),
    ];
    for (args, want) in &cases {
        let out = run(w
            .cmd()
            .args(["--config", w.path("fast.toml").to_str().unwrap()])
            .args(args));
        assert_eq!(out.code, Some(2), "{args:?}: {out:?}");
        assert!(out.stderr.contains(want), "{args:?} should say {want:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}: {out:?}");
        out.masked();
        assert!(
            w.snapshot().calls.is_empty(),
            "{args:?}: no API call: {:?}",
            w.snapshot().calls
        );
        assert!(!exists(&w.default_store()), "{args:?}: no store created");
        let after: Vec<_> = files.iter().map(|f| fingerprint(f)).collect();
        assert_eq!(after, before, "{args:?}: no store file touched");
        assert!(hook.events().is_empty(), "{args:?}: no notice");
    }
}

// 6 -----------------------------------------------------------------------------------------

#[test]
fn an_overlapping_run_exits_3_and_touches_nothing() {
    let w = World::new();
    let hook = Receiver::start(200);
    let holder = std::fs::File::create(w.path("lock")).unwrap();
    holder.try_lock().unwrap();

    let out = w.watch(&["--yes", "--grace", "0", "--notify-webhook", &hook.url]);
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(out.stderr.contains("holds the lock"), "{out:?}");
    out.masked();
    assert!(w.snapshot().calls.is_empty(), "no API call before the lock");
    assert!(!exists(&w.default_store()), "no store written");
    assert!(hook.events().is_empty());

    // `keep` writes the store under the same per-account default lock as a `run`.
    let default_lock = w.path(&format!("compshare-teardown-{}.lock", w.account().slug()));
    let default_holder = std::fs::File::create(default_lock).unwrap();
    default_holder.try_lock().unwrap();
    let out = w.view(&["keep", IDLE[0], "--for", "1h"]);
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(!exists(&w.default_store()), "no store written");
    drop(default_holder);

    // Released: the same run goes ahead.
    drop(holder);
    let out = w.watch(&["--yes", "--grace", "0", "--notify-webhook", &hook.url]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(w.alive(), set(&[BUSY]));
}
