//! Files, terminals and signals turned against the host: outputs that are not regular files,
//! inputs that are named pipes, a run blocked where its runtime cannot hear a signal.

use std::path::Path;
use std::time::Duration;

use super::{World, filter_world, run};

fn mkfifo(path: &Path) {
    use rustix::fs::{FileType, Mode, mknodat};
    mknodat(rustix::fs::CWD, path, FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
}

/// What a path is, to tell that a refused run left it as it was.
fn kind(path: &Path) -> String {
    let m = std::fs::symlink_metadata(path).unwrap();
    format!("{:?} {}", m.file_type(), m.len())
}

/// The things an output flag may not write: a symbolic link (to someone else's file), a
/// FIFO, a socket, a directory and, where this process may make one, a device node.
fn traps(w: &World) -> Vec<(std::path::PathBuf, &'static str)> {
    let precious = w.path("precious");
    std::fs::write(&precious, "someone else's\n").unwrap();
    let link = w.path("link");
    std::os::unix::fs::symlink(&precious, &link).unwrap();
    let fifo = w.path("fifo");
    mkfifo(&fifo);
    let sock = w.path("sock");
    // Leaked on purpose: the socket stays bound until the test process ends.
    std::mem::forget(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let dir = w.path("dir");
    std::fs::create_dir(&dir).unwrap();
    let mut traps = vec![
        (link, "a symbolic link"),
        (fifo, "a named pipe (FIFO)"),
        (sock, "a socket"),
        (dir, "a directory"),
    ];
    // A null device of our own (root only): replacing it harms nothing.
    let dev = w.path("null");
    let made = rustix::fs::mknodat(
        rustix::fs::CWD,
        &dev,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    );
    if made.is_ok() {
        traps.push((dev, "a device"));
    }
    traps
}

#[test]
fn outputs_that_are_not_regular_files_are_refused_before_the_lock() {
    let w = filter_world();
    let traps = traps(&w);
    for (path, what) in &traps {
        let before = kind(path);
        let p = path.to_str().unwrap();
        for flag in ["--report", "--journal", "--metrics-file"] {
            let out = run(w.cmd().args(["run", "--yes", "uhost-f1", flag, p]).args(w.fast()));
            assert_eq!(out.code, Some(2), "{flag} {what}: {out:?}");
            assert!(out.stderr.contains(what), "{flag} {what}: {out:?}");
            assert_eq!(kind(path), before, "{flag} changed {what}");
        }
        let out = run(w.cmd().args(["plan", "uhost-f1", "--save", p]));
        assert_eq!(out.code, Some(2), "--save {what}: {out:?}");
        assert_eq!(kind(path), before, "--save changed {what}");
    }
    assert_eq!(std::fs::read_to_string(w.path("precious")).unwrap(), "someone else's\n");
    // Refused offline: no lock taken, nothing sent.
    assert!(!w.path("lock").exists());
    assert!(w.snapshot().calls.is_empty(), "{:?}", w.snapshot().calls);
}

#[test]
fn inputs_that_are_named_pipes_are_refused_at_once() {
    let w = filter_world();
    let fifo = w.path("fifo");
    mkfifo(&fifo);
    let f = fifo.to_str().unwrap();
    let fast = w.fast();
    let fast: Vec<&str> = fast.iter().map(String::as_str).collect();
    let cases: [Vec<&str>; 5] = [
        [&["run", "--yes", "--from-file", f][..], &fast].concat(),
        vec!["--config", f, "plan", "--all"],
        [&["run", "--yes", "--plan", f][..], &fast].concat(),
        [&["run", "--yes", "--resume", f][..], &fast].concat(),
        vec!["plan", "--from-file", f],
    ];
    for args in cases {
        // assert_cmd's timeout ends a run that blocks in `open`.
        let out = run(w.cmd().args(&args).timeout(Duration::from_secs(10)));
        assert_eq!(out.code, Some(2), "{args:?}: {out:?}");
        assert!(out.stderr.contains("named pipe"), "{args:?}: {out:?}");
    }
    assert!(w.snapshot().calls.is_empty());
    // `-` is standard input, read as the stream it is.
    let out = run(w
        .cmd()
        .args(["plan", "--output", "json", "--from-file", "-"])
        .write_stdin("uhost-f1\n"));
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("uhost-f1"), "{out:?}");
}

/// SIGTERM ends a run whose thread is blocked (here reading an ID list from a stdin that
/// never ends) with 130 within a second, holding no lock after.
#[test]
#[expect(
    clippy::disallowed_methods,
    reason = "The binary runs in real time in its own process: waiting for it needs the real clock."
)]
fn sigterm_ends_a_blocked_run_within_a_second() {
    let w = filter_world();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_compshare-teardown"))
        .args(["run", "--yes", "--from-file", "-"])
        .args(w.fast())
        .env("HOME", w.dir.path())
        .env("XDG_RUNTIME_DIR", w.dir.path())
        .env("COMPSHARE_BASE_URL", w.server.url.as_str())
        .env("COMPSHARE_PUBLIC_KEY", w.handle().public_key())
        .env("COMPSHARE_PRIVATE_KEY", w.handle().private_key().expose())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Kept open and never written: the read blocks.
    let stdin = child.stdin.take();
    std::thread::sleep(Duration::from_millis(500));
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // From the signal, not from starting `kill` (a loaded machine's process start).
    let started = std::time::Instant::now();
    let deadline = started + Duration::from_secs(5);
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("still running 5 s after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    drop(stdin);
    assert_eq!(code, Some(130));
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
    assert!(w.snapshot().calls.is_empty());
}

/// A saved plan edited by hand is refused with exit 2, nothing sent.
#[test]
fn an_edited_saved_plan_is_refused() {
    let w = filter_world();
    let saved = w.path("plan.json");
    let out = run(w.cmd().args(["plan", "uhost-f1", "--save", saved.to_str().unwrap()]));
    assert_eq!(out.code, Some(0), "{out:?}");
    let plan: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    let mut added = plan.clone();
    let mut extra = plan["entries"][0].clone();
    extra["uhost_id"] = "uhost-f3".into();
    added["entries"].as_array_mut().unwrap().push(extra);
    let mut flipped = plan.clone();
    flipped["release_udisk"] = true.into();
    // With the disk fates to match, so only the checksum can tell.
    for e in flipped["entries"].as_array_mut().unwrap() {
        if e["disks"] == "kept" {
            e["disks"] = "released".into();
        }
    }
    let mut unknown = plan.clone();
    unknown["entries"][0]["state"] = "Whatever".into();
    for (name, edited, want) in [
        ("added", added, "checksum does not match"),
        ("flipped", flipped, "checksum does not match"),
        ("unknown", unknown, "unknown state"),
    ] {
        let path = w.path(&format!("plan-{name}.json"));
        std::fs::write(&path, edited.to_string()).unwrap();
        let out = run(w
            .cmd()
            .args(["run", "--yes", "--plan", path.to_str().unwrap()])
            .args(w.fast()));
        assert_eq!(out.code, Some(2), "{name}: {out:?}");
        assert!(out.stderr.contains(want), "{name}: {out:?}");
    }
    assert!(w.mutating_calls().is_empty());
}

/// Names from the API reach the terminal escaped (tables, the log), whole in JSON.
#[test]
fn names_with_control_characters_are_escaped_on_the_terminal() {
    let evil = "ok\u{1b}[2J\r\nuhost-fake  forged\u{7}";
    let w = World::with_rows(vec![super::row(
        "uhost-e1",
        evil,
        "ci",
        compshare_teardown::api::State::Running,
    )]);
    let out = run(w.cmd().args(["list"]));
    assert_eq!(out.code, Some(0), "{out:?}");
    let both = format!("{}{}", out.stdout, out.stderr);
    assert!(
        !both.contains('\u{1b}') && !both.contains('\r') && !both.contains('\u{7}'),
        "{both:?}"
    );
    assert!(
        out.stdout.contains(r"ok\u{1b}[2J\r\nuhost-fake  forged\u{7}"),
        "{out:?}"
    );
    let out = run(w.cmd().args(["plan", "--all", "-v"]));
    let both = format!("{}{}", out.stdout, out.stderr);
    assert!(!both.contains('\u{1b}') && !both.contains('\r'), "{both:?}");
    let out = run(w.cmd().args(["list", "--output", "json"]));
    assert_eq!(out.json()[0]["Name"], evil, "{out:?}");
}

/// A key pasted into the wrong flag is not echoed back by the argument parser, nor is a key
/// left in the CompShare CLI file's `current_profile`.
#[test]
fn the_parser_and_the_profile_never_echo_a_key() {
    let w = filter_world();
    let key = w.handle().private_key().expose().to_owned();
    for args in [
        vec!["run", "--concurrency", key.as_str()],
        vec!["run", "--poll-interval", key.as_str()],
        vec!["list", "--output", key.as_str()],
    ] {
        let out = run(w.cmd().args(&args));
        assert_eq!(out.code, Some(2), "{args:?}: {out:?}");
        assert!(!out.stderr.contains(&key), "{args:?}: {out:?}");
        let out = run(w.bare().args(["--private-key", key.as_str()]).args(&args));
        assert!(!out.stderr.contains(&key), "{args:?}: {out:?}");
    }
    let file = w.path("cs.json");
    std::fs::write(
        &file,
        format!(r#"{{"current_profile":"{key}","profiles":{{"default":{{"public_key":"p","private_key":"q"}}}}}}"#),
    )
    .unwrap();
    let out = run(w
        .bare()
        .env("COMPSHARE_CONFIG_FILE", &file)
        .env("COMPSHARE_BASE_URL", w.server.url.as_str())
        .args(["list", "--all"]));
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(!out.stderr.contains(&key), "{out:?}");
    // Numbers of the wrong kind are out of range, named as typed.
    let out = run(w.cmd().args(["run", "--concurrency", "-1"]));
    assert!(out.stderr.contains("-1 is out of range: use 1 to 1024"), "{out:?}");
    let out = run(w.cmd().args(["sim", "--time-scale", "1e308"]));
    assert!(out.stderr.contains("1e308 is out of range"), "{out:?}");
}

/// `plan --config job.toml`, the documented check of a job file, refuses a `[run]` section
/// that `run` would refuse.
#[test]
fn plan_checks_the_whole_job_file() {
    let w = filter_world();
    for (section, want) in [
        ("max_count = 0", "run.max_count: 0 is out of range"),
        ("deadline = \"garbage\"", "run.deadline"),
        ("concurrency = 5000", "5000 is out of range"),
        ("report = \"/dev/null\"", "run.report /dev/null is a device"),
    ] {
        let job = w.path("job.toml");
        std::fs::write(&job, format!("[run]\n{section}\n")).unwrap();
        let out = run(w.cmd().args(["--config", job.to_str().unwrap(), "plan", "--all"]));
        assert_eq!(out.code, Some(2), "{section}: {out:?}");
        assert!(out.stderr.contains(want), "{section}: {out:?}");
    }
    assert!(w.snapshot().calls.is_empty());
}

/// On a pseudo-terminal, a name built to forge a row above the prompt (and to clear the
/// screen) shows as its escapes, on its own row.
#[test]
fn the_prompt_cannot_be_forged_by_a_name() {
    let evil = "ok\u{1b}[2J\r\n uhost-fake   FORGED-ROW";
    let w = World::with_rows(vec![
        super::row("uhost-p1", evil, "ci", compshare_teardown::api::State::Running),
        super::row("uhost-p2", "plain", "ci", compshare_teardown::api::State::Running),
    ]);
    let mut args: Vec<String> = ["run", "--all"].map(str::to_owned).to_vec();
    args.extend(w.fast());
    let (code, screen) = super::on_terminal(&w, &args, "0\n");
    assert_eq!(code, Some(2), "{screen}");
    assert!(screen.contains("Type 2 to tear down 2 instance(s)"), "{screen}");
    assert!(!screen.contains("\u{1b}[2J"), "{screen:?}");
    assert!(screen.contains("FORGED-ROW"), "{screen}");
    for line in screen.lines().filter(|l| l.contains("FORGED-ROW")) {
        assert!(line.contains(r"ok\u{1b}[2J\r\n uhost-fake   FORGED-ROW"), "{line:?}");
        assert!(line.contains("uhost-p1"), "{line:?}");
    }
    assert!(w.mutating_calls().is_empty());
}

/// A key inside a saved plan's text (a name, here) is masked before it is shown or stored:
/// the drift reason quoting the planned name, the table, the report.
#[test]
fn a_key_inside_a_plan_file_is_masked() {
    let w = filter_world();
    let key = w.handle().private_key().expose().to_owned();
    let saved = w.path("plan.json");
    let out = run(w.cmd().args(["plan", "uhost-f1", "--save", saved.to_str().unwrap()]));
    assert_eq!(out.code, Some(0), "{out:?}");
    let mut plan: compshare_teardown::plan::Plan =
        serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    plan.entries[0].name = format!("old-{key}");
    plan.seal();
    std::fs::write(&saved, serde_json::to_string(&plan).unwrap()).unwrap();
    let report = w.path("report.json");
    let out = run(w
        .cmd()
        .args(["run", "--yes", "--plan", saved.to_str().unwrap()])
        .args(["--report", report.to_str().unwrap()])
        .args(w.fast()));
    assert_eq!(out.code, Some(0), "{out:?}");
    // Renamed since the plan: skipped, with the planned name in the reason.
    assert!(out.stdout.contains("renamed"), "{out:?}");
    let everything = format!(
        "{}{}{}",
        out.stdout,
        out.stderr,
        std::fs::read_to_string(&report).unwrap()
    );
    assert!(!everything.contains(&key), "{everything}");
    assert!(everything.contains("old-***"), "{everything}");
    assert!(w.mutating_calls().is_empty());
}
