//! Complete listings: every page of an account's instances, or every row for a list of IDs,
//! read so that an eventually consistent gateway cannot silently shrink a selection.
//!
//! The gateway has been seen to leave `TotalCount` out and (like any replicated store) may
//! answer from a replica that lacks a row. So a page counts as read only once an answer says
//! how many rows there are and the rows gathered for that window reach that number; a page
//! that falls short is read again. A listing that still falls short is an error, never a
//! smaller listing.

use std::collections::HashSet;

use super::{ApiError, Cloud, DESCRIBE_MAX, DescribePage, DescribeQuery, Instance};

/// How many more times one page is read when an answer looks incomplete (no `TotalCount`, or
/// fewer rows than it promises). With a row left out of 10% of answers, seven reads all
/// missing it happen once in ten million.
const REREADS: usize = 6;

/// How many whole passes over the pages before a listing whose total keeps moving (instances
/// created or deleted while it is read) is given up as incomplete.
const PASSES: usize = 3;

/// Why a listing could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ListingError {
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The answers kept disagreeing with themselves: retrying later may work.
    #[error("the instance list could not be read completely: {0}")]
    Incomplete(String),
}

impl ListingError {
    /// The API error behind it, if any.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            ListingError::Api(e) => Some(e),
            ListingError::Incomplete(_) => None,
        }
    }
}

fn page_limit() -> u32 {
    u32::try_from(DESCRIBE_MAX).unwrap_or(100)
}

fn total_of(page: &DescribePage) -> Option<usize> {
    page.total_count
        .map(|t| usize::try_from(t.max(0)).unwrap_or(usize::MAX))
}

/// Every instance in scope (optionally one region/zone), page by page with the largest page
/// the API allows. See the module header for when a page counts as read.
pub async fn describe_all(
    cloud: &impl Cloud,
    region: Option<&str>,
    zone: Option<&str>,
) -> Result<Vec<Instance>, ListingError> {
    let mut rows: Vec<Instance> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let limit = page_limit();
    for _ in 0..PASSES {
        let mut offset: usize = 0;
        let last_total = loop {
            let query = DescribeQuery {
                region: region.map(str::to_owned),
                zone: zone.map(str::to_owned),
                ids: Vec::new(),
                limit,
                offset: u32::try_from(offset).unwrap_or(u32::MAX),
            };
            let mut on_page: HashSet<String> = HashSet::new();
            let mut total: Option<usize> = None;
            for read in 0..=REREADS {
                let page = cloud.describe(&query).await?;
                // The largest count any answer gave: a replica that lacks rows counts low.
                total = total.max(total_of(&page));
                for row in page.uhost_set {
                    on_page.insert(row.uhost_id.clone());
                    if seen.insert(row.uhost_id.clone()) {
                        rows.push(row);
                    }
                }
                let complete = total.is_some_and(|t| on_page.len() >= t.saturating_sub(offset).min(DESCRIBE_MAX));
                if complete {
                    break;
                }
                if read == REREADS {
                    let why = match total {
                        None => format!(
                            "{} answers in a row did not say how many instances there are",
                            REREADS + 1
                        ),
                        Some(t) => format!(
                            "the page at offset {offset} kept missing rows ({} of {} after {} reads)",
                            on_page.len(),
                            t.saturating_sub(offset).min(DESCRIBE_MAX),
                            REREADS + 1
                        ),
                    };
                    return Err(ListingError::Incomplete(why));
                }
            }
            let total = total.unwrap_or_default();
            offset += DESCRIBE_MAX;
            if offset >= total {
                break total;
            }
        };
        // Rows move between pages when instances come and go while we read: a pass that
        // gathered fewer rows than the last count is read again (rows from every pass add up).
        if rows.len() >= last_total {
            return Ok(rows);
        }
    }
    Err(ListingError::Incomplete(format!(
        "the account's instance count kept changing while it was read ({} rows gathered)",
        rows.len()
    )))
}

/// The rows for a list of IDs, in chunks of at most 100 per call. IDs the API does not return
/// are absent from the result: an unknown ID is not an error on this API. A chunk whose
/// answer says it matched more rows than it carries is read again. Absence here is only a
/// hint: whoever relies on an ID being gone must confirm it (see `workflow`).
pub async fn describe_ids(cloud: &impl Cloud, ids: &[String]) -> Result<Vec<Instance>, ApiError> {
    describe_ids_in(cloud, ids, None).await
}

/// [`describe_ids`] scoped to one region: Region is optional in the SDKs, but the newer web
/// docs mark it required, and a gateway that insists can be given one.
pub async fn describe_ids_in(
    cloud: &impl Cloud,
    ids: &[String],
    region: Option<&str>,
) -> Result<Vec<Instance>, ApiError> {
    let mut out: Vec<Instance> = Vec::with_capacity(ids.len());
    let mut seen: HashSet<String> = HashSet::new();
    read_ids(cloud, ids, region, &mut out, &mut seen).await?;
    // IDs missing from one answer are asked about again (twice, together): a plan should not
    // call an instance gone because one replica lacked it. The run confirms absence anyway.
    for _ in 0..2 {
        let missing: Vec<String> = ids.iter().filter(|id| !seen.contains(*id)).cloned().collect();
        if missing.is_empty() {
            break;
        }
        read_ids(cloud, &missing, region, &mut out, &mut seen).await?;
    }
    Ok(out)
}

/// One read of `ids` in chunks, adding rows not seen yet.
async fn read_ids(
    cloud: &impl Cloud,
    ids: &[String],
    region: Option<&str>,
    out: &mut Vec<Instance>,
    seen: &mut HashSet<String>,
) -> Result<(), ApiError> {
    for chunk in ids.chunks(DESCRIBE_MAX) {
        let query = DescribeQuery {
            ids: chunk.to_vec(),
            region: region.map(str::to_owned),
            limit: page_limit(),
            ..DescribeQuery::default()
        };
        let mut on_chunk = 0;
        for _ in 0..=REREADS {
            let page = cloud.describe(&query).await?;
            let total = total_of(&page);
            for row in page.uhost_set {
                if seen.insert(row.uhost_id.clone()) {
                    on_chunk += 1;
                    out.push(row);
                }
            }
            // Re-read only on positive evidence of a missing row; everything found is kept.
            if total.is_none_or(|t| on_chunk >= t) {
                break;
            }
        }
    }
    Ok(())
}
