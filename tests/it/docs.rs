//! Generated documentation stays generated: the reference in docs/usage.md and the man pages
//! in docs/man/ must be exactly what the clap definitions produce. After changing a flag, run
//! `UPDATE_DOCS=1 cargo test --test it docs` and commit the result.

use std::path::Path;

use compshare_teardown::reference;

fn update() -> bool {
    std::env::var_os("UPDATE_DOCS").is_some_and(|v| v == "1")
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_usage_reference_is_generated_from_the_clap_definitions() {
    let path = root().join("docs/usage.md");
    let committed = std::fs::read_to_string(&path).unwrap();
    let generated = reference::splice(&committed).expect("docs/usage.md has the reference markers");
    if update() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    assert!(
        committed == generated,
        "docs/usage.md's reference differs from the flags; run UPDATE_DOCS=1 cargo test --test it docs"
    );
}

#[test]
fn the_man_pages_are_generated_from_the_clap_definitions() {
    let dir = root().join("docs/man");
    let pages = reference::man_pages();
    assert!(pages.len() >= 8, "the tool and each command");
    if update() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in &pages {
            std::fs::write(dir.join(name), text).unwrap();
        }
        return;
    }
    for (name, text) in &pages {
        let committed = std::fs::read(dir.join(name)).unwrap_or_default();
        assert!(
            &committed == text,
            "docs/man/{name} differs; run UPDATE_DOCS=1 cargo test --test it docs"
        );
    }
    let committed = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(committed, pages.len(), "docs/man/ holds a page no command has");
}

/// Every config key names the flag it stands for, and every flag that has a key shows it.
#[test]
fn every_config_key_has_a_flag() {
    let md = reference::markdown();
    assert!(!md.contains("(file only)"), "{md}");
    for key in [
        "`run.lock_codes` | array of integers | `--lock-code CODE`",
        "`selection.ids` | array of strings | `ID...`",
        "`base_url` | string | `--base-url URL`",
        "`run.poll_interval` | duration string | `--poll-interval DURATION`",
        "`selection.all` | bool | `--all`",
        "`log_format` | string | `--log-format text\\|json`",
    ] {
        assert!(md.contains(key), "{key} in\n{md}");
    }
    assert!(md.contains("| `--concurrency N` | `run.concurrency` |"), "{md}");
}
