//! The CompShare API: signing, wire model, errors, complete listings and the HTTP client, plus the [`Cloud`]
//! trait the workflow is written against (implemented by the HTTP [`Client`] and, for
//! paused-time tests, by the simulator's in-memory world).

pub(crate) mod client;
pub mod disk;
pub(crate) mod error;
pub mod lenient;
pub(crate) mod listing;
pub mod look;
pub mod model;
pub mod sign;

use std::future::Future;

pub use client::{Answer, Client, ClientConfig};
pub use disk::{Attachment, DiskCloud, DiskQuery, DiskRow, DiskTarget, describe_disks_all};
pub use error::{ApiError, LockCodes, RetryClass, TransportKind, classify};
pub use listing::{ListingError, describe_all, describe_all_above, describe_ids};
pub use look::Looked;
pub(crate) use model::DESCRIBE_MAX;
pub use model::{DescribePage, DescribeQuery, Instance, State, Target, TerminateAck};

/// The calls a teardown needs, and only those: a teardown never starts an instance, so
/// `StartCompShareInstance` lives with the simulator ([`crate::sim::SimHandle::start`]).
pub trait Cloud: Send + Sync {
    /// One `DescribeCompShareInstance` call (one page, at most 100 IDs).
    fn describe(&self, query: &DescribeQuery) -> impl Future<Output = Result<DescribePage, ApiError>> + Send;
    /// The same call for the engine's looks, read where it is used, for the fields a look
    /// acts on (see [`look`]). By default the whole rows of `describe`.
    fn look(&self, query: DescribeQuery) -> impl Future<Output = Result<Looked, ApiError>> + Send {
        async move { self.describe(&query).await.map(Looked::from) }
    }
    /// `StopCompShareInstance`; `force` sends `Force=true` (needed for spot instances).
    fn stop(&self, target: &Target, force: bool) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// `TerminateCompShareInstance` with `ReleaseUDisk` sent explicitly.
    fn terminate(
        &self,
        target: &Target,
        release_udisk: bool,
    ) -> impl Future<Output = Result<TerminateAck, ApiError>> + Send;
}

/// One signed action, however it travels: the HTTP [`Client`], or the simulator's in-memory
/// world. The three [`Cloud`] calls are built on it once, so both speak the same parameters.
pub trait Transport: Send + Sync {
    /// Send `action` with `params` (without `Action`, `PublicKey` or `Signature`); the decoded
    /// body of a `RetCode: 0` answer.
    fn call(&self, action: &str, params: sign::Params) -> impl Future<Output = Result<Answer, ApiError>> + Send;
    /// Send `action` as a JSON body (`body` without `Action`, `PublicKey` or `Signature`),
    /// signed by [`sign::sign_json_in_place`]: how `GetCompShareInstanceMonitor` must travel,
    /// its `UHostIds` a JSON array (in form style the gateway refuses it).
    fn call_json(
        &self,
        action: &str,
        body: serde_json::Map<String, serde_json::Value>,
    ) -> impl Future<Output = Result<Answer, ApiError>> + Send;
}

impl<T: Transport> Cloud for T {
    async fn describe(&self, q: &DescribeQuery) -> Result<DescribePage, ApiError> {
        let action = "DescribeCompShareInstance";
        self.call(action, q.params()).await?.parse(action)
    }

    async fn look(&self, q: DescribeQuery) -> Result<Looked, ApiError> {
        // Read by the engine (`Looked::page`), its rows borrowing from the body.
        Ok(self.call("DescribeCompShareInstance", q.into_params()).await?.into())
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

    async fn terminate(&self, target: &Target, release_udisk: bool) -> Result<TerminateAck, ApiError> {
        let mut p = target.params();
        // Always sent, explicitly, so the server's default never decides the fate of the
        // user's data disks.
        p.insert("ReleaseUDisk".into(), release_udisk.to_string());
        let action = "TerminateCompShareInstance";
        let body = self.call(action, p).await?;
        // Accepted is accepted: an odd body does not turn it into a failure.
        Ok(body.parse(action).unwrap_or_default())
    }
}
