//! The README's scheduled-mode demo: one command, six simulated hours of `watch --disks`
//! against the in-process simulator, over HTTP, with a local webhook receiver.

#[test]
fn the_scheduled_demo_tears_down_the_idle_gpus_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let out = assert_cmd::cargo::cargo_bin_cmd!("compshare-teardown")
        .env("HOME", dir.path())
        .env("XDG_STATE_HOME", dir.path().join("state"))
        .env_remove("RUST_LOG")
        .args(["--quiet", "--output", "json", "demo", "--scheduled"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let history: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut ids: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    // The idle notebooks and the forgotten box, and the job that finished after an hour;
    // never the training runs (one pausing between epochs), the instance that came back, or
    // the one whose monitoring agent reports nothing.
    // And the data disks: the one left from last week, and those of the three boxes torn
    // down in the first hours, each once attached to nothing for the demo's hour and its
    // grace; never a disk still attached (the training runs' and the others'), nor the one
    // of the job torn down too late for its disk's window to pass.
    assert_eq!(
        ids,
        [
            "bsi-forgotten",
            "bsi-last-week",
            "bsi-notebook-1",
            "bsi-notebook-2",
            "uhost-finishing",
            "uhost-forgotten",
            "uhost-notebook-1",
            "uhost-notebook-2"
        ]
    );
    assert_eq!(stderr.matches("marked for deletion").count(), 5, "{stderr}");
    // The notices reached the local receiver: a mark, the unmark of the instance that came
    // back, and the teardowns.
    assert!(
        stderr.contains("uhost-coming-back") && stderr.contains("busy again"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("marked for teardown").count(), 5, "{stderr}");
    assert!(!dir.path().join("state").exists(), "the demo keeps its state in memory");
}
