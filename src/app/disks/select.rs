//! Choosing data disks: the same rules as for instances (IDs checked like instance IDs, name
//! globs, the region rule, exclusions and protections by ID and name, a bounded selection),
//! plus the disks' own: a minimum size, "detached", and never a disk attached to this
//! machine's instance. Pure functions over listing rows; nothing here calls the API.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use globset::GlobMatcher;
use serde::Serialize;

use crate::api::{Attachment, DiskRow};
use crate::selection::Verdict;

/// A validated disk selection.
#[derive(Debug, Clone, Default)]
pub(crate) struct DiskRequest {
    /// Named disk IDs, or `None`: every disk in scope is a candidate.
    pub ids: Option<Vec<String>>,
    pub names: Vec<GlobMatcher>,
    pub region: Option<String>,
    pub zone: Option<String>,
    pub min_size: Option<i64>,
    /// Only disks attached to nothing (detaching ones included).
    pub detached: bool,
    /// Only disks the state store has seen detached for at least this long.
    pub detached_for: Option<Duration>,
    pub exclude: HashSet<String>,
    pub protect_names: Vec<GlobMatcher>,
}

/// What the judgement needs besides the rows: this machine's instances, and when the state
/// store first saw each disk detached (unix seconds) with the time of this look.
#[derive(Debug, Clone, Default)]
pub(crate) struct Context {
    pub own_instances: HashSet<String>,
    pub detached_since: HashMap<String, i64>,
    pub now: i64,
}

/// One disk judged.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DiskCandidate {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row: Option<DiskRow>,
    #[serde(flatten)]
    pub verdict: Verdict,
}

impl DiskRequest {
    /// Why a row must be left alone whatever the selection says, or `None`: exclusions,
    /// protected names, and disks attached to this machine. Re-checked on the fresh row right
    /// before each Delete.
    pub(crate) fn refuse(&self, row: &DiskRow, own_instances: &HashSet<String>) -> Option<String> {
        if self.exclude.contains(&row.disk_id) {
            return Some("excluded (--exclude)".into());
        }
        if let Some(g) = self.protect_names.iter().find(|g| g.is_match(&row.name)) {
            return Some(format!("protected: name matches {:?}", g.glob().glob()));
        }
        if let Attachment::Attached(host) = row.attachment()
            && own_instances.contains(&host)
        {
            return Some(format!("attached to this machine ({host})"));
        }
        None
    }

    /// Why a row does not match the filters, or `None`.
    fn reject(&self, row: &DiskRow, ctx: &Context) -> Option<String> {
        if !self.names.is_empty() && !self.names.iter().any(|g| g.is_match(&row.name)) {
            return Some(format!("name {:?} matches no --name", row.name));
        }
        if self.region.as_ref().is_some_and(|r| r != row.home_region()) {
            return Some(format!("region {} is not selected", row.home_region()));
        }
        if self.zone.as_ref().is_some_and(|z| z != &row.zone) {
            return Some(format!("zone {} is not selected", row.zone));
        }
        if let Some(min) = self.min_size
            && row.size_gb < min
        {
            return Some(format!("{} GB is under --min-size {min}", row.size_gb));
        }
        if self.detached && !detached(row) {
            return Some(format!("not detached ({})", describe(row)));
        }
        if let Some(min) = self.detached_for {
            // Measured, never guessed: a disk the store has not seen detached before is
            // detached for zero seconds.
            let since = ctx.detached_since.get(&row.disk_id).copied().filter(|_| detached(row));
            let for_secs = since.map_or(0, |t| ctx.now.saturating_sub(t).max(0));
            if u64::try_from(for_secs).unwrap_or(0) < min.as_secs() {
                return Some(format!(
                    "seen detached for {} of --detached-for {}",
                    humantime::format_duration(Duration::from_secs(u64::try_from(for_secs).unwrap_or(0))),
                    humantime::format_duration(min)
                ));
            }
        }
        None
    }
}

/// Attached to no instance: free, or on its way there.
pub(crate) fn detached(row: &DiskRow) -> bool {
    matches!(row.attachment(), Attachment::Free | Attachment::Detaching)
}

/// The attachment in words.
pub(crate) fn describe(row: &DiskRow) -> String {
    match row.attachment() {
        Attachment::Free => "detached".into(),
        Attachment::Detaching => "detaching".into(),
        Attachment::Deleting => "being deleted".into(),
        Attachment::Attached(h) if h.is_empty() => "attached".into(),
        Attachment::Attached(h) => format!("attached to {h}"),
        Attachment::Unknown(s) => format!("status {s:?}"),
    }
}

/// Judge every candidate. For a deletion (`deleting`), only a detached disk is acted on: an
/// attached one that was named is skipped with the reason, one that was not is no candidate.
pub(crate) fn select(rows: &[DiskRow], req: &DiskRequest, ctx: &Context, deleting: bool) -> Vec<DiskCandidate> {
    let own_instances = &ctx.own_instances;
    let judge = |row: &DiskRow, named: bool| -> Option<Verdict> {
        let rejected = req.reject(row, ctx).or_else(|| {
            (deleting && !detached(row)).then(|| format!("{}: only detached disks are deleted", describe(row)))
        });
        if !named && rejected.is_some() {
            return None;
        }
        if let Some(reason) = req.refuse(row, own_instances) {
            return Some(Verdict::Skip { reason });
        }
        Some(match rejected {
            None => Verdict::Act,
            Some(reason) => Verdict::Skip { reason },
        })
    };
    let candidate = |row: &DiskRow, verdict| DiskCandidate {
        id: row.disk_id.clone(),
        row: Some(row.clone()),
        verdict,
    };
    match &req.ids {
        Some(ids) => ids
            .iter()
            .map(|id| match rows.iter().find(|r| &r.disk_id == id) {
                _ if req.exclude.contains(id) => DiskCandidate {
                    id: id.clone(),
                    row: rows.iter().find(|r| &r.disk_id == id).cloned(),
                    verdict: Verdict::Skip {
                        reason: "excluded (--exclude)".into(),
                    },
                },
                None => DiskCandidate {
                    id: id.clone(),
                    row: None,
                    verdict: Verdict::NotFound,
                },
                Some(row) => candidate(row, judge(row, true).unwrap_or(Verdict::Act)),
            })
            .collect(),
        None => rows
            .iter()
            .filter_map(|r| judge(r, false).map(|v| candidate(r, v)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selection::globs;

    fn row(id: &str, name: &str, size: i64, status: &str, mount: &str) -> DiskRow {
        DiskRow {
            disk_id: id.into(),
            name: name.into(),
            size_gb: size,
            status: status.into(),
            mount_instance: mount.into(),
            zone: "cn-wlcb-01".into(),
            ..DiskRow::default()
        }
    }

    fn rows() -> Vec<DiskRow> {
        vec![
            row("bsi-free", "data-1", 200, "Available", ""),
            row("bsi-small", "data-2", 50, "Available", ""),
            row("bsi-used", "data-3", 500, "InUse", "uhost-a"),
            row("bsi-mine", "data-4", 500, "InUse", "uhost-me"),
            row("bsi-going", "data-5", 100, "Detaching", "uhost-b"),
            row("bsi-prod", "prod-db", 1000, "Available", ""),
            row("bsi-odd", "data-6", 100, "Restoring", ""),
        ]
    }

    fn acting(c: &[DiskCandidate]) -> Vec<&str> {
        c.iter()
            .filter(|c| c.verdict == Verdict::Act)
            .map(|c| c.id.as_str())
            .collect()
    }

    #[test]
    fn a_deletion_acts_only_on_detached_unprotected_disks() {
        let req = DiskRequest {
            min_size: Some(100),
            protect_names: globs(&["prod-*".to_owned()]).unwrap(),
            ..DiskRequest::default()
        };
        let own = Context {
            own_instances: ["uhost-me".to_owned()].into(),
            ..Context::default()
        };
        let c = select(&rows(), &req, &own, true);
        assert_eq!(acting(&c), vec!["bsi-free", "bsi-going"]);
        // The protected one is shown as skipped; attached and unknown ones are no candidates.
        let skipped: Vec<&str> = c
            .iter()
            .filter(|c| c.verdict != Verdict::Act)
            .map(|c| c.id.as_str())
            .collect();
        assert_eq!(skipped, vec!["bsi-prod"]);
        // Listing (not deleting) shows attached disks, and marks this machine's.
        let c = select(&rows(), &DiskRequest::default(), &own, false);
        assert_eq!(c.len(), rows().len());
        let mine = c.iter().find(|c| c.id == "bsi-mine").unwrap();
        assert!(matches!(&mine.verdict, Verdict::Skip { reason } if reason.contains("this machine")));
    }

    #[test]
    fn named_disks_are_judged_and_reported_whatever_they_are() {
        let req = DiskRequest {
            ids: Some(vec![
                "bsi-used".into(),
                "bsi-free".into(),
                "bsi-nowhere".into(),
                "bsi-odd".into(),
                "bsi-small".into(),
            ]),
            exclude: ["bsi-small".to_owned()].into(),
            ..DiskRequest::default()
        };
        let c = select(&rows(), &req, &Context::default(), true);
        let v = |id: &str| c.iter().find(|c| c.id == id).unwrap().verdict.clone();
        assert!(matches!(v("bsi-used"), Verdict::Skip { reason } if reason.contains("attached to uhost-a")));
        assert_eq!(v("bsi-free"), Verdict::Act);
        assert_eq!(v("bsi-nowhere"), Verdict::NotFound);
        assert!(matches!(v("bsi-odd"), Verdict::Skip { reason } if reason.contains("Restoring")));
        assert!(matches!(v("bsi-small"), Verdict::Skip { reason } if reason.contains("excluded")));
    }

    #[test]
    fn filters_use_the_region_rule_and_the_detached_flag() {
        let req = DiskRequest {
            region: Some("cn-wlcb".into()),
            detached: true,
            names: globs(&["data-*".to_owned()]).unwrap(),
            ..DiskRequest::default()
        };
        let c = select(&rows(), &req, &Context::default(), false);
        assert_eq!(acting(&c), vec!["bsi-free", "bsi-small", "bsi-going"]);
        let other = DiskRequest {
            region: Some("cn-sh2".into()),
            ..DiskRequest::default()
        };
        assert!(select(&rows(), &other, &Context::default(), false).is_empty());
    }

    /// `--detached-for` reads the store's first-seen-detached times: a disk never seen
    /// detached before, or seen too recently, is not selected; an attached one never is.
    #[test]
    fn detached_for_is_measured_from_the_store() {
        let req = DiskRequest {
            detached_for: Some(Duration::from_secs(7 * 86_400)),
            ..DiskRequest::default()
        };
        let now = 1_800_000_000;
        let ctx = Context {
            detached_since: [
                ("bsi-free".to_owned(), now - 8 * 86_400),
                ("bsi-small".to_owned(), now - 86_400),
                ("bsi-used".to_owned(), now - 30 * 86_400),
            ]
            .into(),
            now,
            ..Context::default()
        };
        let c = select(&rows(), &req, &ctx, true);
        assert_eq!(acting(&c), vec!["bsi-free"]);
        let named = DiskRequest {
            ids: Some(vec!["bsi-small".into()]),
            ..req
        };
        let c = select(&rows(), &named, &ctx, true);
        assert!(
            matches!(&c[0].verdict, Verdict::Skip { reason } if reason.contains("1day of --detached-for 7days")),
            "{c:?}"
        );
    }
}
