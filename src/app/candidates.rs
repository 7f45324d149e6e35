//! The selection Describe that `list`, `plan` and `run` share: the rows read (with a few
//! quick retries, a listing never shorter than a count already seen), named IDs outside the
//! scope refused, every row judged.

use std::collections::HashSet;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use anyhow::anyhow;

use super::settings::Request;
use super::{CmdResult, Ctx, Failure, now_unix};
use crate::api::{self, Client, Instance, ListingError, LockCodes, RetryClass};
use crate::selection::{self, Candidate};

impl Ctx {
    /// Describe the candidates and judge them. Named IDs are looked up everywhere, whatever
    /// `--region`/`--zone` say: one that lives outside the scope is refused by name (exit 2),
    /// never taken for gone.
    pub(super) async fn candidates(&self, client: &Client, req: &Request) -> CmdResult<Vec<Candidate>> {
        use backon::Retryable;
        // The largest count any answer gave, kept across the retries below: a listing read
        // again must not come back shorter than one already seen (see `api::listing`).
        let floor = AtomicUsize::new(0);
        let fetch = || async {
            match &req.ids {
                Some(ids) => api::describe_ids(client, ids).await.map_err(ListingError::from),
                None => {
                    let (region, zone) = (req.filters.region.as_deref(), req.filters.zone.as_deref());
                    api::describe_all_above(client, region, zone, &floor).await
                }
            }
        };
        // A read-only call: retry a few quick times through a 5xx, a dropped connection or
        // throttling, but fail fast (about 2-4 s) on an endpoint that is simply wrong.
        let policy = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(300))
            .with_max_times(3)
            .with_jitter();
        let rows: Vec<Instance> = fetch
            .retry(policy)
            .sleep(tokio::time::sleep)
            // A listing that disagreed with itself may agree when read again.
            .when(|e| {
                e.api().is_none_or(|e| {
                    matches!(
                        api::classify(e, &LockCodes::default()),
                        RetryClass::Transient | RetryClass::Throttled
                    )
                })
            })
            // Quiet by default: if the retries fail too, the one-line error says it all.
            .notify(|e, d| tracing::debug!("{e}; retrying in {} ms", d.as_millis()))
            .await
            .map_err(|e| selection_failure(&e))?;
        if let Some(ids) = &req.ids {
            let named: HashSet<&str> = ids.iter().map(String::as_str).collect();
            let outside: Vec<String> = rows
                .iter()
                .filter(|r| named.contains(r.uhost_id.as_str()))
                .filter_map(|r| req.filters.outside_scope(r))
                .collect();
            if !outside.is_empty() {
                return Err(Failure::Usage(anyhow!(
                    "{}; nothing was changed (drop the scope or the IDs)",
                    outside.join("; ")
                )));
            }
        }
        Ok(selection::select(
            rows,
            req.ids.as_deref(),
            &req.filters,
            &req.protections,
            now_unix(),
        ))
    }
}

/// A selection that could not be read: exit 4 when the API was down, throttling or
/// inconsistent (try later), exit 2 when it refused the request itself (keys, endpoint,
/// parameters: fix the job).
fn selection_failure(e: &ListingError) -> Failure {
    let error = anyhow!("cannot describe instances: {e}");
    match e.api().map(|a| api::classify(a, &LockCodes::default())) {
        Some(RetryClass::Fatal) => Failure::Usage(error),
        _ => Failure::Unavailable(error),
    }
}
