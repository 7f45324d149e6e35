//! Choosing what to tear down: ID lists and their checks, filters, exclusions, protections and
//! self-protection. Pure functions over Describe rows; nothing here calls the API.
//!
//! How they combine: IDs (arguments and `--from-file`) name the candidates; without IDs, every
//! instance in the region/zone scope is a candidate, and at least one filter (or `--all`) is
//! required. Filters narrow the candidates (different filters AND, repeated values of one
//! filter OR). Named IDs a filter rejects are shown as skipped (filtered). Exclusions and
//! protections always win over everything else.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use globset::{Glob, GlobMatcher};
use serde::{Deserialize, Serialize};

use crate::api::{Instance, State};
use crate::textfile;

/// What went wrong with the user's selection input.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectionError {
    #[error("empty instance ID{0}")]
    EmptyId(String),
    #[error(
        "malformed instance ID {id:?}{at}: expected letters and digits around a dash, like uhost-1paxrg4g1vfw or cpod-1tq6i2ltk5mj"
    )]
    Malformed { id: String, at: String },
    #[error("instance ID {id} is given twice{at}")]
    Duplicate { id: String, at: String },
    #[error("invalid glob {glob:?}: {detail}")]
    BadGlob { glob: String, detail: String },
    #[error("cannot read ID file {path}: {detail}")]
    File { path: String, detail: String },
    #[error(
        "no instances named and no filter given: name IDs, use a filter (--name, --tag, ...), or pass --all to select everything in scope"
    )]
    Unbounded,
}

/// Where an ID came from, for error messages.
#[derive(Debug, Clone)]
pub struct IdSource {
    pub id: String,
    /// e.g. ` (ids.txt line 3)`; empty for arguments.
    pub at: String,
}

/// Read IDs from a file (`-` = stdin): one per line, `#` starts a comment, blank lines skipped.
/// At most [`textfile::SMALL_FILE`] bytes of UTF-8, lines of at most [`MAX_ID_LINE`] bytes.
pub fn read_id_file(path: &str) -> Result<Vec<IdSource>, SelectionError> {
    let text = if path == "-" {
        textfile::read_from(std::io::stdin().lock(), textfile::SMALL_FILE)
    } else {
        textfile::read(std::path::Path::new(path), textfile::SMALL_FILE)
    }
    .map_err(|e| SelectionError::File {
        path: path.to_owned(),
        detail: e.to_string(),
    })?;
    let name = if path == "-" { "stdin" } else { path };
    if let Some((n, line)) = text.lines().enumerate().find(|(_, l)| l.len() > MAX_ID_LINE) {
        return Err(SelectionError::File {
            path: path.to_owned(),
            detail: format!("line {} is {} bytes long (at most {MAX_ID_LINE})", n + 1, line.len()),
        });
    }
    Ok(text
        .lines()
        .enumerate()
        .filter_map(|(n, line)| {
            let id = line.split('#').next().unwrap_or("").trim();
            (!id.is_empty()).then(|| IdSource {
                id: id.to_owned(),
                at: format!(" ({name} line {})", n + 1),
            })
        })
        .collect())
}

/// The longest line an ID file may have: an ID is at most 64 bytes; a comment can add some.
const MAX_ID_LINE: usize = 1024;

/// Check IDs: none empty, each well-formed, none twice. The prefix is not assumed (`uhost-`,
/// `cpod-` and others exist).
pub fn check_ids(ids: &[IdSource]) -> Result<Vec<String>, SelectionError> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(ids.len());
    for src in ids {
        let id = src.id.trim();
        if id.is_empty() {
            return Err(SelectionError::EmptyId(src.at.clone()));
        }
        let well_formed = id.len() <= 64
            && id.contains('-')
            && !id.starts_with('-')
            && !id.ends_with('-')
            && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !well_formed {
            return Err(SelectionError::Malformed {
                id: textfile::excerpt(id),
                at: src.at.clone(),
            });
        }
        if !seen.insert(id.to_owned()) {
            return Err(SelectionError::Duplicate {
                id: id.to_owned(),
                at: src.at.clone(),
            });
        }
        out.push(id.to_owned());
    }
    Ok(out)
}

/// Compile glob patterns (case-sensitive, `*` `?` `[..]`).
pub fn globs(patterns: &[String]) -> Result<Vec<GlobMatcher>, SelectionError> {
    patterns
        .iter()
        .map(|p| {
            Glob::new(p)
                .map(|g| g.compile_matcher())
                .map_err(|e| SelectionError::BadGlob {
                    glob: crate::textfile::excerpt(p),
                    detail: e.kind().to_string(),
                })
        })
        .collect()
}

/// Filters that narrow the candidates.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    pub names: Vec<GlobMatcher>,
    pub tags: Vec<String>,
    pub region: Option<String>,
    pub zone: Option<String>,
    pub states: Vec<State>,
    pub older_than: Option<Duration>,
    pub charge_types: Vec<String>,
    pub gpu_types: Vec<String>,
}

impl Filters {
    /// Any filter beyond the region/zone scope.
    pub fn narrows(&self) -> bool {
        !(self.names.is_empty()
            && self.tags.is_empty()
            && self.states.is_empty()
            && self.older_than.is_none()
            && self.charge_types.is_empty()
            && self.gpu_types.is_empty())
    }

    /// Why a row does not match, or `None` when it matches every filter.
    /// Where a row lives, if that is outside `--region`/`--zone`: an ID named there must be
    /// refused by name, never reported as gone.
    pub fn outside_scope(&self, row: &Instance) -> Option<String> {
        let region = self.region.as_ref().filter(|r| **r != row.home_region());
        let zone = self.zone.as_ref().filter(|z| **z != row.zone);
        if region.is_none() && zone.is_none() {
            return None;
        }
        let scope: Vec<String> = [("--region", &self.region), ("--zone", &self.zone)]
            .into_iter()
            .filter_map(|(flag, v)| v.as_ref().map(|v| format!("{flag} {v}")))
            .collect();
        Some(format!(
            "{} is in {} ({}), outside {}",
            row.uhost_id,
            row.home_region(),
            row.zone,
            scope.join(" ")
        ))
    }

    pub fn reject(&self, row: &Instance, now_unix: i64) -> Option<String> {
        if !self.names.is_empty() && !self.names.iter().any(|g| g.is_match(&row.name)) {
            return Some(format!("name {:?} matches no --name", row.name));
        }
        if !self.tags.is_empty() && !self.tags.contains(&row.tag) {
            return Some(format!("tag {:?} is not selected", row.tag));
        }
        if self.region.as_ref().is_some_and(|r| r != row.home_region()) {
            return Some(format!("region {} is not selected", row.home_region()));
        }
        if self.zone.as_ref().is_some_and(|z| z != &row.zone) {
            return Some(format!("zone {} is not selected", row.zone));
        }
        if !self.states.is_empty() && !self.states.contains(&row.state) {
            return Some(format!("state {} is not selected", row.state));
        }
        if let Some(min_age) = self.older_than {
            let age = now_unix.saturating_sub(row.create_time);
            if row.create_time <= 0 || u64::try_from(age).unwrap_or(0) < min_age.as_secs() {
                return Some(format!("younger than {}", humantime::format_duration(min_age)));
            }
        }
        if !self.charge_types.is_empty()
            && !self
                .charge_types
                .iter()
                .any(|c| c.eq_ignore_ascii_case(&row.charge_type))
        {
            return Some(format!("charge type {} is not selected", row.charge_type));
        }
        if !self.gpu_types.is_empty() && !self.gpu_types.iter().any(|g| g.eq_ignore_ascii_case(&row.gpu_type)) {
            return Some(format!("GPU type {} is not selected", row.gpu_type));
        }
        None
    }
}

/// What must never be torn down.
#[derive(Debug, Clone, Default)]
pub struct Protections {
    pub exclude: HashSet<String>,
    pub protect_tags: Vec<String>,
    pub protect_names: Vec<GlobMatcher>,
    /// This machine's addresses; an instance holding one is this machine.
    pub own_addresses: Vec<IpAddr>,
    /// `--allow-self`: the user really means to tear down the machine running the tool.
    pub allow_self: bool,
}

impl Protections {
    /// Why a row must be left alone, or `None`.
    pub fn refuse(&self, row: &Instance) -> Option<String> {
        if self.exclude.contains(&row.uhost_id) {
            return Some("excluded (--exclude)".into());
        }
        if let Some(t) = self.protect_tags.iter().find(|t| **t == row.tag) {
            return Some(format!("protected: tag {t:?}"));
        }
        if let Some(g) = self.protect_names.iter().find(|g| g.is_match(&row.name)) {
            return Some(format!("protected: name matches {:?}", g.glob().glob()));
        }
        if !self.allow_self {
            let own: Vec<IpAddr> = self.own_addresses.iter().map(IpAddr::to_canonical).collect();
            for ip in &row.ip_set {
                if let Some(addr) = address_readings(&ip.ip).into_iter().find(|a| own.contains(a)) {
                    return Some(format!("this machine (it holds {addr}); pass --allow-self to override"));
                }
            }
        }
        None
    }
}

/// Every address an API address field can mean, canonical (an IPv4-mapped IPv6 address as
/// its IPv4 address), so self-protection compares addresses, not spellings: a `/24` suffix,
/// brackets, a `%zone`, and IPv4 parts with leading zeros are accepted. `010.002.000.001` is
/// read both as decimal and, as `inet_aton` would, as octal: protecting on either reading
/// errs on the safe side.
fn address_readings(text: &str) -> Vec<IpAddr> {
    let text = text.trim();
    let text = text.split('/').next().unwrap_or_default();
    let text = text.trim_start_matches('[').trim_end_matches(']');
    let text = text.split('%').next().unwrap_or_default();
    if let Ok(addr) = text.parse::<IpAddr>() {
        return vec![addr.to_canonical()];
    }
    let parts: Vec<&str> = text.split('.').collect();
    if parts.len() != 4
        || parts
            .iter()
            .any(|p| p.is_empty() || p.len() > 4 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Vec::new();
    }
    let mut readings = Vec::new();
    for radix in [10, 8] {
        let octets: Option<Vec<u8>> = parts
            .iter()
            .map(|p| {
                // Octal only for parts written with a leading zero, as `inet_aton` reads them.
                let radix = if radix == 8 && p.len() > 1 && p.starts_with('0') {
                    8
                } else {
                    10
                };
                u8::from_str_radix(p, radix).ok()
            })
            .collect();
        if let Some(o) = octets {
            let addr = IpAddr::from([o[0], o[1], o[2], o[3]]);
            if !readings.contains(&addr) {
                readings.push(addr);
            }
        }
    }
    readings
}

/// This machine's non-loopback addresses. If they cannot be read (e.g. a sandbox without
/// netlink), self-protection cannot work: say so loudly rather than pretend.
pub fn own_addresses() -> Vec<IpAddr> {
    match if_addrs::get_if_addrs() {
        Ok(ifs) => ifs.into_iter().map(|i| i.ip()).filter(|ip| !ip.is_loopback()).collect(),
        Err(e) => {
            tracing::warn!("cannot read this machine's addresses ({e}): self-protection is off");
            Vec::new()
        }
    }
}

/// The verdict on one candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// To be torn down.
    Act,
    /// Named but not returned by Describe.
    NotFound,
    /// Left alone, with the reason.
    Skip { reason: String },
}

/// One candidate with its row (if found) and verdict.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: String,
    pub row: Option<Instance>,
    pub verdict: Verdict,
}

/// Decide every candidate. `ids`: the named IDs, or `None` to consider every row given.
///
/// Takes the rows by value: each row moves into its candidate (or is dropped), so a listing of
/// 100,000 rows is not copied (the selection's peak memory was the listing plus its copy).
pub fn select(
    rows: Vec<Instance>,
    ids: Option<&[String]>,
    filters: &Filters,
    protections: &Protections,
    now_unix: i64,
) -> Vec<Candidate> {
    let judge = |row: &Instance, named: bool| -> Option<Verdict> {
        // Unnamed rows the filters reject are simply not candidates (a protected instance
        // outside the filters is not "skipped": it was never selected).
        let rejected = filters.reject(row, now_unix);
        if !named && rejected.is_some() {
            return None;
        }
        if let Some(reason) = protections.refuse(row) {
            return Some(Verdict::Skip { reason });
        }
        Some(match rejected {
            None => Verdict::Act,
            Some(reason) => Verdict::Skip {
                reason: format!("filtered: {reason}"),
            },
        })
    };
    match ids {
        Some(ids) => {
            // The named IDs are indexed, not scanned (10,000 named IDs against 10,000 rows
            // would be 10^8 comparisons), and the rows go through once: a named one moves to
            // its place, the others are dropped at once (a listing of 100,000 rows for three
            // named IDs is not kept, nor its IDs copied).
            let mut place: HashMap<&str, usize> = HashMap::with_capacity(ids.len());
            for (n, id) in ids.iter().enumerate() {
                place.entry(id.as_str()).or_insert(n);
            }
            let mut found: Vec<Option<Instance>> = std::iter::repeat_with(|| None).take(ids.len()).collect();
            for r in rows {
                if let Some(&n) = place.get(r.uhost_id.as_str()) {
                    found[n] = Some(r);
                }
            }
            ids.iter()
                .zip(found)
                .map(|(id, row)| {
                    let verdict = if protections.exclude.contains(id) {
                        Verdict::Skip {
                            reason: "excluded (--exclude)".into(),
                        }
                    } else {
                        match &row {
                            None => Verdict::NotFound,
                            Some(r) => judge(r, true).unwrap_or(Verdict::Act),
                        }
                    };
                    Candidate {
                        id: id.clone(),
                        row,
                        verdict,
                    }
                })
                .collect()
        }
        None => {
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                if let Some(verdict) = judge(&r, false) {
                    out.push(Candidate {
                        id: r.uhost_id.clone(),
                        row: Some(r),
                        verdict,
                    });
                }
            }
            out.shrink_to_fit();
            out
        }
    }
}

#[cfg(test)]
mod tests;
