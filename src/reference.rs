//! The command reference, generated from the clap definitions so it cannot drift from
//! `--help`: the flag and config-key tables of `docs/usage.md` (between its `reference`
//! markers) and the man pages (`compshare-teardown man`, `docs/man/`). A test fails when the
//! committed files differ from what this module generates.

use std::fmt::Write as _;

use clap::{Arg, ArgAction, Command, CommandFactory};

use crate::cli::Cli;

/// The markers around the generated part of `docs/usage.md`.
const BEGIN: &str = "<!-- reference: generated from the clap definitions; do not edit by hand -->";
const END: &str = "<!-- /reference -->";

/// Config sections and their keys, as the TOML parser knows them.
fn config_keys() -> [(&'static str, Vec<String>); 3] {
    [
        ("", crate::config::keys::<crate::config::ConfigFile>()),
        ("selection", crate::config::keys::<crate::config::SelectionConfig>()),
        ("run", crate::config::keys::<crate::config::RunConfig>()),
    ]
}

/// The config key a flag has, if any (`selection.name` for `--name`, `run.lock_codes` for
/// `--lock-code`, `selection.ids` for the ID arguments).
fn config_key(arg: &Arg) -> Option<String> {
    let name = match arg.get_long() {
        Some(long) => long.replace('-', "_"),
        None if arg.get_id() == "ids" => "ids".to_owned(),
        None => return None,
    };
    for (section, keys) in config_keys() {
        for key in keys {
            if key == name || key == format!("{name}s") {
                return Some(if section.is_empty() {
                    key
                } else {
                    format!("{section}.{key}")
                });
            }
        }
    }
    None
}

fn flag(arg: &Arg) -> String {
    let mut names: Vec<String> = Vec::new();
    if let Some(s) = arg.get_short() {
        names.push(format!("-{s}"));
    }
    if let Some(l) = arg.get_long() {
        names.push(format!("--{l}"));
    }
    let possible: Vec<String> = arg
        .get_possible_values()
        .iter()
        .map(|p| p.get_name().to_owned())
        .collect();
    let value = if possible.is_empty() {
        arg.get_value_names()
            .map(|v| v.iter().map(ToString::to_string).collect::<Vec<_>>().join(" "))
    } else {
        Some(possible.join("\\|"))
    };
    let takes_value = !matches!(
        arg.get_action(),
        ArgAction::SetTrue | ArgAction::SetFalse | ArgAction::Count | ArgAction::Help | ArgAction::Version
    );
    let mut text = if names.is_empty() {
        format!(
            "{}...",
            value.clone().unwrap_or_else(|| arg.get_id().to_string().to_uppercase())
        )
    } else {
        names.join(", ")
    };
    if !names.is_empty() && takes_value {
        let shown = value.unwrap_or_else(|| arg.get_id().to_string().to_uppercase());
        let _ = write!(text, " {shown}");
    }
    format!("`{text}`")
}

fn help(arg: &Arg) -> String {
    let text = arg
        .get_long_help()
        .or_else(|| arg.get_help())
        .map(ToString::to_string)
        .unwrap_or_default();
    let mut text = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|");
    let defaults: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|d| d.to_string_lossy().into_owned())
        .collect();
    if !defaults.is_empty() && !text.contains("[default") && !is_switch(arg) {
        let _ = write!(text, " [default: {}]", defaults.join(", "));
    }
    text
}

fn table(out: &mut String, args: &[&Arg]) {
    table_keyed(out, args, config_key);
}

/// [`table`] with the config key of each flag as `key` says.
fn table_keyed(out: &mut String, args: &[&Arg], key: impl Fn(&Arg) -> Option<String>) {
    out.push_str("| Option | Config key | Meaning |\n|---|---|---|\n");
    for arg in args {
        let key = key(arg).map(|k| format!("`{k}`")).unwrap_or_default();
        let _ = writeln!(out, "| {} | {key} | {} |", flag(arg), help(arg));
    }
}

/// A flag without a value (`--all`, `-v`).
fn is_switch(arg: &Arg) -> bool {
    matches!(
        arg.get_action(),
        ArgAction::SetTrue | ArgAction::SetFalse | ArgAction::Count
    )
}

/// The TOML type of the config key a flag stands for.
fn key_type(arg: &Arg) -> &'static str {
    let value = arg
        .get_value_names()
        .and_then(|v| v.first().map(ToString::to_string))
        .unwrap_or_default();
    if is_switch(arg) {
        "bool"
    } else if matches!(arg.get_action(), ArgAction::Append) {
        if value == "CODE" {
            "array of integers"
        } else {
            "array of strings"
        }
    } else if value == "DURATION" {
        "duration string"
    } else if ["N", "R", "CODE"].contains(&value.as_str()) {
        "integer"
    } else {
        "string"
    }
}

fn shown(arg: &Arg) -> bool {
    !arg.is_hide_set() && !matches!(arg.get_action(), ArgAction::Help | ArgAction::Version)
}

/// The generated markdown: one table of global options, one per command, and the config keys
/// with the flag each one stands for.
pub fn markdown() -> String {
    let mut cmd = Cli::command();
    cmd.build();
    let mut out = String::new();
    out.push_str("### Global options\n\nGiven before or after the command.\n\n");
    let globals: Vec<&Arg> = cmd.get_arguments().filter(|a| shown(a)).collect();
    table(&mut out, &globals);
    for sub in commands(&cmd) {
        let _ = write!(
            out,
            "\n### `{} {}`\n\n{}\n\n",
            cmd.get_name(),
            sub.get_name(),
            sub.get_about().map(ToString::to_string).unwrap_or_default()
        );
        let args: Vec<&Arg> = sub.get_arguments().filter(|a| shown(a) && !a.is_global_set()).collect();
        if args.is_empty() {
            out.push_str("No options of its own.\n");
        } else {
            table(&mut out, &args);
        }
        // Nested commands (`disks list`, `disks delete`). They read from the config file only
        // the protections (`selection.exclude`, `selection.protect_name`).
        for nested in commands(sub) {
            let _ = write!(
                out,
                "\n### `{} {} {}`\n\n{}\n\n",
                cmd.get_name(),
                sub.get_name(),
                nested.get_name(),
                nested.get_about().map(ToString::to_string).unwrap_or_default()
            );
            let args: Vec<&Arg> = nested
                .get_arguments()
                .filter(|a| shown(a) && !a.is_global_set())
                .collect();
            table_keyed(&mut out, &args, |a| {
                config_key(a).filter(|k| ["selection.exclude", "selection.protect_name"].contains(&k.as_str()))
            });
        }
    }
    out.push_str(
        "\n### Config keys\n\nEvery key of the `--config` file, its TOML type, and the flag that overrides it \
         (see the flag for its meaning and default).\n\n| Key | Type | Flag |\n|---|---|---|\n",
    );
    let all: Vec<Arg> = cmd
        .get_arguments()
        .cloned()
        .chain(
            cmd.get_subcommands()
                .flat_map(|s| s.get_arguments().cloned().collect::<Vec<_>>()),
        )
        .collect();
    for (section, keys) in config_keys() {
        // `[selection]` and `[run]` are tables, listed by their keys.
        for key in keys
            .into_iter()
            .filter(|k| !section.is_empty() || !["selection", "run"].contains(&k.as_str()))
        {
            let full = if section.is_empty() {
                key.clone()
            } else {
                format!("{section}.{key}")
            };
            let matching: Vec<&Arg> = all
                .iter()
                .filter(|a| config_key(a).as_deref() == Some(full.as_str()))
                .collect();
            let flags: Vec<String> = matching
                .iter()
                .map(|a| flag(a))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let (kind, flags) = match matching.first() {
                None => ("", "(file only)".to_owned()),
                Some(a) if a.get_long().is_none() => ("array of strings", flags.join(", ")),
                Some(a) => (key_type(a), flags.join(", ")),
            };
            let _ = writeln!(out, "| `{full}` | {kind} | {flags} |");
        }
    }
    out
}

/// `docs/usage.md` with its generated part replaced by [`markdown`].
pub fn splice(usage: &str) -> Option<String> {
    let start = usage.find(BEGIN)? + BEGIN.len();
    let end = usage.find(END)?;
    (start <= end).then(|| format!("{}\n\n{}\n{}", &usage[..start], markdown(), &usage[end..]))
}

/// Man pages: the tool's, then one per command (`compshare-teardown-run.1`, ...), as
/// (file name, roff text).
pub fn man_pages() -> Vec<(String, Vec<u8>)> {
    let mut cmd = Cli::command();
    cmd.build();
    let mut pages = vec![(format!("{}.1", cmd.get_name()), render(&cmd))];
    for sub in commands(&cmd) {
        let name = format!("{}-{}", cmd.get_name(), sub.get_name());
        for nested in commands(sub) {
            let nested_name = format!("{name}-{}", nested.get_name());
            let nested = nested.clone().name(nested_name.clone());
            pages.push((format!("{nested_name}.1"), render(&nested)));
        }
        let sub = sub.clone().name(name.clone());
        pages.push((format!("{name}.1"), render(&sub)));
    }
    pages
}

/// The commands a user can run (not clap's own `help`).
fn commands(cmd: &Command) -> impl Iterator<Item = &Command> {
    cmd.get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
}

fn render(cmd: &Command) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = clap_mangen::Man::new(cmd.clone()).render(&mut out);
    out
}
