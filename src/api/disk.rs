//! Data disks on the wire: `DescribeCompshareDisk` and `DeleteCompshareDisk` (neither is in
//! the SDKs; the shapes are compshare-cli's), their rows, and what a row says about whether
//! the disk may be deleted.
//!
//! Parsing is lenient like [`super::model`]: numbers as strings, `null` lists, missing fields.
//! A disk row names its `Zone`; its region is the instances' one rule
//! ([`super::model::home_region`]): `Region` when the row carries it, else the zone's
//! `<region>-<nn>` prefix (compshare-cli asks `DescribeCompShareSupportZone` instead; the
//! prefix rule gives the same answer for every zone that call lists, without a call).
//!
//! Open questions kept visible: whether Describe pages (`Limit`/`Offset` are sent; an answer
//! that ignores them is read whole), and the exact `Status` words. Only a row that says it is
//! free is ever deletable: an unknown status is never read as detached.

use std::collections::HashSet;
use std::future::Future;

use serde::{Deserialize, Deserializer, Serialize};

use super::lenient;
use super::model::home_region;
use super::{ApiError, Transport, sign};

/// The listing action.
pub const DESCRIBE_DISKS: &str = "DescribeCompshareDisk";
/// The deleting action.
pub const DELETE_DISK: &str = "DeleteCompshareDisk";
/// `DeleteCompshareDisk`'s "the disk is still detaching" (compshare-cli retries it).
pub const STILL_DETACHING: i64 = 8434;

/// One row of `DiskSet`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DiskRow {
    #[serde(rename = "ResourceId", deserialize_with = "lenient::string")]
    pub disk_id: String,
    #[serde(rename = "Name", deserialize_with = "lenient::string")]
    pub name: String,
    /// GB (`Configuration` on the wire: a number, a numeric string, or `"100GB"`).
    #[serde(rename = "Configuration", deserialize_with = "size_gb")]
    pub size_gb: i64,
    #[serde(rename = "DiskType", deserialize_with = "lenient::string")]
    pub disk_type: String,
    #[serde(rename = "Status", deserialize_with = "lenient::string")]
    pub status: String,
    /// The instance the disk is attached to; empty when detached.
    #[serde(rename = "MountInstance", deserialize_with = "lenient::string")]
    pub mount_instance: String,
    #[serde(rename = "Zone", deserialize_with = "lenient::string")]
    pub zone: String,
    /// Not in compshare-cli's reading; used when present.
    #[serde(
        rename = "Region",
        deserialize_with = "lenient::string",
        skip_serializing_if = "String::is_empty"
    )]
    pub region: String,
}

/// What a row says about the disk's attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attachment {
    /// Attached to no instance, and the status says so: the only deletable reading.
    Free,
    /// Attached (to this instance, when the row names it).
    Attached(String),
    /// Being detached: a Delete now is answered 8434.
    Detaching,
    /// A Delete was accepted; on its way out.
    Deleting,
    /// A status no rule knows: never taken for free.
    Unknown(String),
}

/// Status words, case-insensitive. `UDisk`'s own words are `Available` (detached), `InUse`,
/// `Attaching`, `Detaching`; the others are spellings seen in other consoles' APIs.
const FREE: &[&str] = &["Available", "Free", "Detached", "Unattached"];
const ATTACHED: &[&str] = &["InUse", "Attaching", "Attached", "Mounted", "Mounting"];
const DETACHING: &[&str] = &["Detaching", "Unmounting"];
const DELETING: &[&str] = &["Deleting", "Releasing"];

fn one_of(status: &str, words: &[&str]) -> bool {
    words.iter().any(|w| w.eq_ignore_ascii_case(status.trim()))
}

impl DiskRow {
    /// The region by the instances' rule.
    pub fn home_region(&self) -> &str {
        home_region(&self.region, &self.zone)
    }

    /// The attachment, most cautious reading first: "detaching" wins over a named instance
    /// (a detaching row may still name it), a named instance wins over a free-sounding status.
    pub fn attachment(&self) -> Attachment {
        let status = self.status.trim();
        if one_of(status, DETACHING) {
            Attachment::Detaching
        } else if !self.mount_instance.trim().is_empty() {
            Attachment::Attached(self.mount_instance.trim().to_owned())
        } else if one_of(status, ATTACHED) {
            Attachment::Attached(String::new())
        } else if one_of(status, DELETING) {
            Attachment::Deleting
        } else if one_of(status, FREE) {
            Attachment::Free
        } else {
            Attachment::Unknown(status.to_owned())
        }
    }

    /// Attached to no instance: free, or on its way there (what "detached for D" counts).
    pub fn is_detached(&self) -> bool {
        matches!(self.attachment(), Attachment::Free | Attachment::Detaching)
    }

    /// Whether the row proves the disk attached to no instance.
    pub fn is_free(&self) -> bool {
        self.attachment() == Attachment::Free
    }
}

/// A size in GB: a number, a numeric string, or digits with a unit (`"100GB"`, `"100 G"`).
fn size_gb<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    if let Some(n) = lenient::value_to_i64(&v) {
        return Ok(n);
    }
    Ok(match v {
        serde_json::Value::String(s) => {
            let digits: String = s.trim().chars().take_while(char::is_ascii_digit).collect();
            digits.parse().unwrap_or_default()
        }
        _ => 0,
    })
}

/// One `DescribeCompshareDisk` answer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DiskPage {
    #[serde(rename = "TotalCount", deserialize_with = "lenient::opt_i64")]
    pub total_count: Option<i64>,
    #[serde(rename = "DiskSet", deserialize_with = "lenient::list")]
    pub disk_set: Vec<DiskRow>,
}

/// What to describe: an optional region, an optional instance (`HostId`), a page window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskQuery {
    pub region: Option<String>,
    pub host_id: Option<String>,
    pub limit: u32,
    pub offset: u32,
}

impl DiskQuery {
    pub(crate) fn params(&self) -> sign::Params {
        let mut p = sign::Params::new();
        if let Some(r) = &self.region {
            p.insert("Region".into(), r.clone());
        }
        if let Some(h) = &self.host_id {
            p.insert("HostId".into(), h.clone());
        }
        p.insert("Limit".into(), self.limit.to_string());
        p.insert("Offset".into(), self.offset.to_string());
        p
    }
}

/// Where a disk lives: `DeleteCompshareDisk` needs `Region`, `Zone` and `UDiskId`, always
/// taken from a Describe row.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DiskTarget {
    pub disk_id: String,
    pub region: String,
    pub zone: String,
}

impl DiskTarget {
    pub fn of(row: &DiskRow) -> DiskTarget {
        DiskTarget {
            disk_id: row.disk_id.clone(),
            region: row.home_region().to_owned(),
            zone: row.zone.clone(),
        }
    }

    pub(crate) fn params(&self) -> sign::Params {
        [
            ("Region", &self.region),
            ("Zone", &self.zone),
            ("UDiskId", &self.disk_id),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.clone()))
        .collect()
    }
}

/// The two disk calls, built once on [`Transport`] like [`super::Cloud`].
pub trait DiskCloud: Send + Sync {
    fn describe_disks(&self, query: &DiskQuery) -> impl Future<Output = Result<DiskPage, ApiError>> + Send;
    fn delete_disk(&self, target: &DiskTarget) -> impl Future<Output = Result<(), ApiError>> + Send;
}

impl<T: Transport> DiskCloud for T {
    async fn describe_disks(&self, q: &DiskQuery) -> Result<DiskPage, ApiError> {
        self.call(DESCRIBE_DISKS, q.params()).await?.parse(DESCRIBE_DISKS)
    }

    async fn delete_disk(&self, target: &DiskTarget) -> Result<(), ApiError> {
        self.call(DELETE_DISK, target.params()).await.map(drop)
    }
}

/// Rows per page asked for (the instances' documented maximum; unknown for disks).
const PAGE: u32 = 100;
/// A bound on pages, so a server that ignores `Offset` cannot keep a listing going forever.
const MAX_PAGES: u32 = 10_000;

/// Every disk in `region` (all regions when `None`), each once. Pages until the count the
/// answers gave is reached, a page comes back short, or a page adds nothing new (a server
/// that ignores `Offset` answers the same rows again).
pub async fn describe_disks_all(cloud: &impl DiskCloud, region: Option<&str>) -> Result<Vec<DiskRow>, ApiError> {
    let mut rows: Vec<DiskRow> = Vec::new();
    let mut seen = HashSet::new();
    for page in 0..MAX_PAGES {
        let q = DiskQuery {
            region: region.map(str::to_owned),
            host_id: None,
            limit: PAGE,
            offset: page * PAGE,
        };
        let answer = cloud.describe_disks(&q).await?;
        let got = answer.disk_set.len();
        let mut new = 0;
        for row in answer.disk_set {
            if seen.insert(row.disk_id.clone()) {
                rows.push(row);
                new += 1;
            }
        }
        let total = answer.total_count.and_then(|t| usize::try_from(t).ok());
        if new == 0 || got < PAGE as usize || total.is_some_and(|t| rows.len() >= t) {
            break;
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_rows() {
        let page: DiskPage = serde_json::from_str(
            r#"{"TotalCount":"2","DiskSet":[
                {"ResourceId":"bsi-a","Name":null,"Configuration":"200","Status":"Available","MountInstance":"","Zone":"cn-wlcb-01"},
                {"ResourceId":"bsi-b","Configuration":"50GB","Status":"InUse","MountInstance":"uhost-1","Zone":"cn-sh2-02","Region":"cn-sh2","New":1}]}"#,
        )
        .unwrap();
        assert_eq!(page.total_count, Some(2));
        let [a, b] = &page.disk_set[..] else { panic!() };
        assert_eq!((a.size_gb, a.home_region(), a.name.as_str()), (200, "cn-wlcb", ""));
        assert_eq!((b.size_gb, b.home_region()), (50, "cn-sh2"));
        let empty: DiskPage = serde_json::from_str(r#"{"DiskSet":null}"#).unwrap();
        assert!(empty.disk_set.is_empty() && empty.total_count.is_none());
    }

    /// (status, mount) -> attachment: only a free status with no instance is free.
    #[test]
    fn attachment_table() {
        let cases = [
            ("Available", "", Attachment::Free),
            ("available", "", Attachment::Free),
            ("Available", "uhost-1", Attachment::Attached("uhost-1".into())),
            ("InUse", "uhost-1", Attachment::Attached("uhost-1".into())),
            ("InUse", "", Attachment::Attached(String::new())),
            ("Attaching", "", Attachment::Attached(String::new())),
            ("Detaching", "uhost-1", Attachment::Detaching),
            ("Detaching", "", Attachment::Detaching),
            ("Deleting", "", Attachment::Deleting),
            ("", "", Attachment::Unknown(String::new())),
            ("Restoring", "", Attachment::Unknown("Restoring".into())),
        ];
        for (status, mount, want) in cases {
            let row = DiskRow {
                status: status.into(),
                mount_instance: mount.into(),
                ..DiskRow::default()
            };
            assert_eq!(row.attachment(), want, "{status:?} {mount:?}");
        }
    }

    #[test]
    fn delete_names_region_zone_and_disk() {
        let row = DiskRow {
            disk_id: "bsi-a".into(),
            zone: "cn-wlcb-01".into(),
            ..DiskRow::default()
        };
        let p = DiskTarget::of(&row).params();
        assert_eq!(p["Region"], "cn-wlcb");
        assert_eq!(p["Zone"], "cn-wlcb-01");
        assert_eq!(p["UDiskId"], "bsi-a");
    }
}
