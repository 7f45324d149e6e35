//! The CompShare API: signing, wire model, errors and the HTTP client, plus the [`Cloud`]
//! trait the workflow is written against (implemented by the HTTP [`Client`] and, for
//! paused-time tests, by the simulator's in-memory world).

pub mod client;
pub mod error;
pub mod model;
pub mod sign;

use std::future::Future;

pub use client::{Client, ClientConfig};
pub use error::{ApiError, LockCodes, RetryClass, TransportKind, classify};
pub use model::{DESCRIBE_MAX, DescribePage, DescribeQuery, Instance, State, Target, TerminateAck};

/// The calls a teardown needs.
pub trait Cloud: Send + Sync {
    /// One `DescribeCompShareInstance` call (one page, at most 100 IDs).
    fn describe(&self, query: &DescribeQuery) -> impl Future<Output = Result<DescribePage, ApiError>> + Send;
    /// `StopCompShareInstance`; `force` sends `Force=true` (needed for spot instances).
    fn stop(&self, target: &Target, force: bool) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// `StartCompShareInstance`.
    fn start(&self, target: &Target) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// `TerminateCompShareInstance` with `ReleaseUDisk` sent explicitly.
    fn terminate(
        &self,
        target: &Target,
        release_udisk: bool,
    ) -> impl Future<Output = Result<TerminateAck, ApiError>> + Send;
}

/// One signed action, however it travels: the HTTP [`Client`], or the simulator's in-memory
/// world. The four [`Cloud`] calls are built on it once, so both speak the same parameters.
pub trait Transport: Send + Sync {
    /// Send `action` with `params` (without `Action`, `PublicKey` or `Signature`); the decoded
    /// body of a `RetCode: 0` answer.
    fn call(
        &self,
        action: &str,
        params: sign::Params,
    ) -> impl Future<Output = Result<serde_json::Value, ApiError>> + Send;
}

impl<T: Transport> Cloud for T {
    async fn describe(&self, q: &DescribeQuery) -> Result<DescribePage, ApiError> {
        let action = "DescribeCompShareInstance";
        let body = self.call(action, q.params()).await?;
        serde_json::from_value(body).map_err(|e| ApiError::Decode {
            action: action.into(),
            detail: e.to_string(),
            request_id: None,
        })
    }

    async fn stop(&self, target: &Target, force: bool) -> Result<(), ApiError> {
        let mut p = target.params();
        // `Force` is sent only when set: spot instances need it, and the gateway ignores
        // unknown parameters, so `false` would add nothing.
        if force {
            p.insert("Force".into(), "true".into());
        }
        self.call("StopCompShareInstance", p).await.map(drop)
    }

    async fn start(&self, target: &Target) -> Result<(), ApiError> {
        self.call("StartCompShareInstance", target.params()).await.map(drop)
    }

    async fn terminate(&self, target: &Target, release_udisk: bool) -> Result<TerminateAck, ApiError> {
        let mut p = target.params();
        // Always sent, explicitly, so the server's default never decides the fate of the
        // user's data disks.
        p.insert("ReleaseUDisk".into(), release_udisk.to_string());
        let body = self.call("TerminateCompShareInstance", p).await?;
        // Accepted is accepted: an odd body does not turn it into a failure.
        Ok(serde_json::from_value(body).unwrap_or_default())
    }
}

/// Every instance in scope (optionally one region/zone), fetched page by page with the largest
/// page the API allows. Stops at `TotalCount` or at the first short page.
pub async fn describe_all(
    cloud: &impl Cloud,
    region: Option<&str>,
    zone: Option<&str>,
) -> Result<Vec<Instance>, ApiError> {
    let mut out: Vec<Instance> = Vec::new();
    loop {
        let query = DescribeQuery {
            region: region.map(str::to_owned),
            zone: zone.map(str::to_owned),
            ids: Vec::new(),
            limit: u32::try_from(DESCRIBE_MAX).unwrap_or(100),
            offset: u32::try_from(out.len()).unwrap_or(u32::MAX),
        };
        let page = cloud.describe(&query).await?;
        let got = page.uhost_set.len();
        out.extend(page.uhost_set);
        let total = usize::try_from(page.total_count).unwrap_or(0);
        if got < DESCRIBE_MAX || out.len() >= total {
            return Ok(out);
        }
    }
}

/// The rows for a list of IDs, in chunks of at most 100 per call. IDs the API does not return
/// are simply absent from the result (an unknown ID is not an error on this API).
pub async fn describe_ids(cloud: &impl Cloud, ids: &[String]) -> Result<Vec<Instance>, ApiError> {
    describe_ids_in(cloud, ids, None).await
}

/// [`describe_ids`] scoped to one region (`--region`): Region is optional in the SDKs, but
/// the newer web docs mark it required, and a gateway that insists can be given one.
pub async fn describe_ids_in(
    cloud: &impl Cloud,
    ids: &[String],
    region: Option<&str>,
) -> Result<Vec<Instance>, ApiError> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(DESCRIBE_MAX) {
        let query = DescribeQuery {
            ids: chunk.to_vec(),
            region: region.map(str::to_owned),
            limit: u32::try_from(DESCRIBE_MAX).unwrap_or(100),
            ..DescribeQuery::default()
        };
        let page = cloud.describe(&query).await?;
        out.extend(page.uhost_set);
    }
    Ok(out)
}
