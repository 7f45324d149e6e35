//! The TOML config file (`--config FILE`): a named, reviewable teardown job for cron — its
//! endpoint, its selection and its run settings. Flags override it. Every key is documented in
//! `docs/usage.md`; an unknown key is an error (a typo must not silently widen a selection).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::logging::LogFormat;
use crate::output::OutputFormat;
use crate::textfile;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Credentials profile in the key files.
    pub profile: Option<String>,
    pub base_url: Option<String>,
    pub project_id: Option<String>,
    pub log_format: Option<LogFormat>,
    pub output: Option<OutputFormat>,
    #[serde(default)]
    pub selection: SelectionConfig,
    #[serde(default)]
    pub run: RunConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectionConfig {
    #[serde(default)]
    pub ids: Vec<String>,
    pub from_file: Option<String>,
    #[serde(default)]
    pub name: Vec<String>,
    #[serde(default)]
    pub tag: Vec<String>,
    pub region: Option<String>,
    pub zone: Option<String>,
    #[serde(default)]
    pub state: Vec<String>,
    pub older_than: Option<String>,
    #[serde(default)]
    pub charge_type: Vec<String>,
    #[serde(default)]
    pub gpu_type: Vec<String>,
    #[serde(default)]
    pub all: bool,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub protect_tag: Vec<String>,
    #[serde(default)]
    pub protect_name: Vec<String>,
    #[serde(default)]
    pub allow_self: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub release_udisk: Option<bool>,
    pub force_stop: Option<bool>,
    pub concurrency: Option<usize>,
    pub rate: Option<u32>,
    pub poll_interval: Option<String>,
    pub lock_wait: Option<String>,
    pub instance_timeout: Option<String>,
    pub deadline: Option<String>,
    pub confirm_timeout: Option<String>,
    pub settle: Option<String>,
    pub max_count: Option<usize>,
    pub journal: Option<PathBuf>,
    pub report: Option<PathBuf>,
    pub lock_file: Option<PathBuf>,
    pub metrics_file: Option<PathBuf>,
    #[serde(default)]
    pub lock_codes: Vec<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {detail}")]
    Read { path: String, detail: String },
    #[error("config {path}: {detail}")]
    Invalid { path: String, detail: String },
}

/// Read and parse a config file (at most [`textfile::SMALL_FILE`] bytes of UTF-8).
pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
    let p = path.display().to_string();
    let text = textfile::read(path, textfile::SMALL_FILE).map_err(|e| ConfigError::Read {
        path: p.clone(),
        detail: e.to_string(),
    })?;
    toml::from_str(&text).map_err(|e| {
        // Someone may paste a key into the wrong field: say where, never what was there.
        let at = e.span().map_or_else(String::new, |span| {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: ")
        });
        ConfigError::Invalid {
            path: p,
            detail: format!("{at}{}", textfile::redacted(e.message())),
        }
    })
}

/// The keys a config table accepts, as its parser reports them (read off serde's
/// "unknown field" error, so the list cannot drift from the structs).
pub fn keys<T: serde::de::DeserializeOwned>() -> Vec<String> {
    let probe = "__no_such_key__ = 0";
    let Err(e) = toml::from_str::<T>(probe) else {
        return Vec::new();
    };
    let text = e.to_string();
    let Some(list) = text.split("expected one of ").nth(1) else {
        return Vec::new();
    };
    list.lines()
        .next()
        .unwrap_or_default()
        .split(", ")
        .map(|k| k.trim().trim_matches('`').to_owned())
        .filter(|k| !k.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_example_parses_and_unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            r#"
profile = "default"
base_url = "https://api.compshare.cn"
log_format = "json"
output = "json"
[selection]
name = ["ci-*"]
tag = ["nightly"]
older_than = "12h"
protect_tag = ["keep"]
[run]
release_udisk = true
rate = 5
poll_interval = "5s"
max_count = 50
lock_codes = [8903, 8904]
"#,
        )
        .unwrap();
        let c = load(&p).unwrap();
        assert_eq!(c.selection.name, vec!["ci-*"]);
        assert_eq!(c.run.rate, Some(5));
        assert_eq!(c.log_format, Some(LogFormat::Json));
        std::fs::write(&p, "[selection]\nnmae = [\"x\"]\n").unwrap();
        let err = load(&p).unwrap_err().to_string();
        assert!(err.contains("unknown field `nmae`"), "{err}");
        // A key pasted into the wrong field is not echoed back.
        for text in [
            "[run]\nconcurrency = \"SECRET-KEY\"\n",
            "output = \"SECRET-KEY\"\n",
            "profile = [\"SECRET-KEY\"]\n",
            "[selection]\nall = \"SECRET-KEY\"\n",
        ] {
            std::fs::write(&p, text).unwrap();
            let err = load(&p).unwrap_err().to_string();
            assert!(err.contains("line ") && !err.contains("SECRET"), "{err}");
        }
    }
}
