//! Complete listings: every page of an account's instances, or every row for a list of IDs,
//! read so that an eventually consistent gateway cannot silently shrink a selection.
//!
//! The gateway has been seen to leave `TotalCount` out and (like any replicated store) may
//! answer from a replica that lacks rows, with a `TotalCount` that agrees with its short
//! answer. So the largest count any answer gave (on any page, or in an earlier listing of the
//! same scope) is a floor for the whole listing: a page counts as read only once an answer for
//! it carried a count and the rows gathered for its window reach what the floor promises; a
//! page that falls short or counts fewer is read again, and the listing ends only when it
//! holds at least the floor's number of rows. A listing that still falls short is an error,
//! never a smaller listing.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{ApiError, Cloud, DESCRIBE_MAX, DescribePage, DescribeQuery, Instance};

/// How many more times one page is read when an answer looks incomplete (no `TotalCount`,
/// fewer rows than the floor promises, or a lower count). With a row left out of 10% of
/// answers, seven reads all missing it happen once in ten million; with a lagging replica
/// answering 40% of reads, once in six hundred per page (and then the listing is an error).
const REREADS: usize = 6;

/// How many whole passes over the pages before a listing whose rows keep falling short of the
/// floor (instances created or deleted while it is read, so rows move between pages) is given
/// up as incomplete.
const PASSES: usize = 3;

/// The RetCode of "Params [X] not available": what the API answers to an `Offset` past its
/// own count, which a lagging replica does for a window a fuller answer promised.
const BAD_PARAM: i64 = 230;

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

/// An `Offset` refused as past the end: from a replica that counts fewer rows than an earlier
/// answer did, a disagreeing answer rather than a fault of the request.
fn offset_refused(e: &ApiError) -> bool {
    e.code() == Some(BAD_PARAM) && matches!(e, ApiError::RetCode { message, .. } if message.contains("Offset"))
}

/// Every instance in scope (optionally one region/zone), page by page with the largest page
/// the API allows. See the module header for when a page counts as read.
pub async fn describe_all(
    cloud: &impl Cloud,
    region: Option<&str>,
    zone: Option<&str>,
) -> Result<Vec<Instance>, ListingError> {
    describe_all_above(cloud, region, zone, &AtomicUsize::new(0)).await
}

/// [`describe_all`] with a floor carried between listings of the same scope (a retried
/// selection): the largest count seen so far, raised by every answer. A listing with fewer
/// rows than the floor is an error.
pub async fn describe_all_above(
    cloud: &impl Cloud,
    region: Option<&str>,
    zone: Option<&str>,
    floor: &AtomicUsize,
) -> Result<Vec<Instance>, ListingError> {
    let mut rows: Vec<Instance> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let limit = page_limit();
    let raise = |total: Option<usize>| -> usize {
        let t = total.unwrap_or(0);
        floor.fetch_max(t, Ordering::SeqCst).max(t)
    };
    for _ in 0..PASSES {
        let mut offset: usize = 0;
        loop {
            let query = DescribeQuery {
                region: region.map(str::to_owned),
                zone: zone.map(str::to_owned),
                ids: Vec::new(),
                limit,
                offset: u32::try_from(offset).unwrap_or(u32::MAX),
            };
            let mut on_page: HashSet<String> = HashSet::new();
            let mut counted = false;
            for read in 0..=REREADS {
                let (total, page_rows, refused) = match cloud.describe(&query).await {
                    Ok(page) => (total_of(&page), page.uhost_set, None),
                    Err(e) if offset > 0 && offset_refused(&e) => (None, Vec::new(), Some(e)),
                    Err(e) => return Err(e.into()),
                };
                let least = raise(total);
                // An answer counting fewer than the floor comes from a replica that lacks
                // rows: its rows are kept, its count is not believed.
                counted |= total.is_some_and(|t| t >= least);
                for row in page_rows {
                    on_page.insert(row.uhost_id.clone());
                    if seen.insert(row.uhost_id.clone()) {
                        rows.push(row);
                    }
                }
                let want = least.saturating_sub(offset).min(DESCRIBE_MAX);
                if counted && on_page.len() >= want {
                    break;
                }
                if read == REREADS {
                    let why = match (refused, total) {
                        (Some(e), _) => format!("the page at offset {offset} was refused as past the end ({e})"),
                        (None, None) => "no answer said how many instances there are".to_owned(),
                        (None, Some(t)) if t < least => {
                            format!("answers for the page at offset {offset} counted {t} instances, another {least}")
                        }
                        (None, Some(_)) => {
                            format!(
                                "the page at offset {offset} kept missing rows ({} of {want})",
                                on_page.len()
                            )
                        }
                    };
                    return Err(ListingError::Incomplete(format!("{why}, after {} reads", REREADS + 1)));
                }
            }
            offset += DESCRIBE_MAX;
            if offset >= floor.load(Ordering::SeqCst) {
                break;
            }
        }
        // Rows move between pages when instances come and go while we read: a pass that
        // gathered fewer rows than the floor is read again (rows from every pass add up).
        if rows.len() >= floor.load(Ordering::SeqCst) {
            // Grown by doubling: up to half of it empty, at 100,000 rows tens of MiB.
            rows.shrink_to_fit();
            return Ok(rows);
        }
    }
    Err(ListingError::Incomplete(format!(
        "{} rows gathered, but an answer counted {} (the account's instances kept changing while they were read)",
        rows.len(),
        floor.load(Ordering::SeqCst)
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::api::{Target, TerminateAck};

    /// 250 instances behind a gateway whose later pages may come from a replica that lacks
    /// every fifth row and counts only what it has (so nothing in its answer admits the gap).
    struct Lagging {
        /// For each Describe in turn: answer from the lagging replica (later pages only).
        script: Mutex<Vec<bool>>,
        /// When the script runs out.
        otherwise: bool,
        /// The first page may lag too.
        everywhere: bool,
    }

    const ALL: usize = 250;

    impl Lagging {
        fn new(script: &[bool], otherwise: bool) -> Lagging {
            let mut s = script.to_vec();
            s.reverse();
            Lagging {
                script: Mutex::new(s),
                otherwise,
                everywhere: false,
            }
        }
    }

    impl Cloud for Lagging {
        async fn describe(&self, q: &DescribeQuery) -> Result<DescribePage, ApiError> {
            let lag = self.script.lock().unwrap().pop().unwrap_or(self.otherwise) && (q.offset > 0 || self.everywhere);
            let ids: Vec<usize> = (0..ALL).filter(|n| !lag || n % 5 != 0).collect();
            let offset = q.offset as usize;
            if offset > ids.len() {
                return Err(ApiError::RetCode {
                    action: "DescribeCompShareInstance".into(),
                    code: BAD_PARAM,
                    message: "Params [Offset] not available".into(),
                    request_id: None,
                });
            }
            Ok(DescribePage {
                total_count: Some(i64::try_from(ids.len()).unwrap()),
                uhost_set: ids
                    .iter()
                    .skip(offset)
                    .take(q.limit as usize)
                    .map(|n| Instance {
                        uhost_id: format!("uhost-{n:03}"),
                        ..Instance::default()
                    })
                    .collect(),
            })
        }
        async fn stop(&self, _: &Target, _: bool) -> Result<(), ApiError> {
            unreachable!("a listing never stops anything")
        }
        async fn terminate(&self, _: &Target, _: bool) -> Result<TerminateAck, ApiError> {
            unreachable!("a listing never terminates anything")
        }
    }

    #[tokio::test]
    async fn a_lagging_replica_on_later_pages_is_read_again_until_the_floor_is_met() {
        // Page 2 lags twice, page 3 once (refused as past the end of the short listing).
        let cloud = Lagging::new(&[false, true, true, false, true, false], false);
        let rows = describe_all(&cloud, None, None).await.unwrap();
        assert_eq!(rows.len(), ALL);
    }

    #[tokio::test]
    async fn a_listing_that_stays_short_is_an_error_not_a_smaller_listing() {
        let cloud = Lagging::new(&[false], true);
        let e = describe_all(&cloud, None, None).await.unwrap_err();
        assert!(matches!(e, ListingError::Incomplete(_)), "{e}");
        assert!(e.to_string().contains("counted 200 instances, another 250"), "{e}");
    }

    #[tokio::test]
    async fn a_count_from_an_earlier_listing_is_a_floor_for_the_next() {
        // Every answer from the replica, first page included: alone, nothing admits the gap...
        let replica = Lagging {
            everywhere: true,
            ..Lagging::new(&[], true)
        };
        let fresh = AtomicUsize::new(0);
        assert_eq!(
            describe_all_above(&replica, None, None, &fresh).await.unwrap().len(),
            200
        );
        // ...but after a listing that counted 250, 200 rows are not the listing.
        let floor = AtomicUsize::new(ALL);
        let e = describe_all_above(&replica, None, None, &floor).await.unwrap_err();
        assert!(matches!(e, ListingError::Incomplete(_)), "{e}");
    }
}
