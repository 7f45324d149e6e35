//! The ledger: what the world records about its clients (every call, every rule broken,
//! every termination and orphaned disk) and the [`SimState`] snapshot served at `/_sim/state`.

use serde::{Deserialize, Serialize};

/// Rule names used in [`Violation::rule`].
pub mod rule {
    /// Terminate sent while the instance was neither `Stopped` nor `Install Fail`, and the
    /// freshest Describe answer the client had when it sent the call did not say so either.
    /// (The docs say only Stopped may be terminated; `Install Fail` is allowed because such an
    /// instance can never reach Stopped, and terraform's UHost teardown terminates it directly.)
    pub const TERMINATE_NOT_STOPPED: &str = "terminate-not-stopped";
    /// Not a violation (listed in [`super::SimState::races`]): a Terminate arrived at an instance
    /// that was no longer `Stopped`, but the freshest Describe answer the client had received
    /// when it sent the call listed it as `Stopped` (someone else started it, or the call was
    /// slow). No client can avoid this race; the gateway refuses the call.
    pub const TERMINATE_RACED: &str = "terminate-raced";
    /// A mutating call for an instance whose Terminate was already accepted (also while it is
    /// still listed, disappearing).
    pub const AFTER_TERMINATE: &str = "after-terminate";
    /// A Terminate re-sent to an instance whose earlier Terminate was applied, however that
    /// one was answered (accepted, lost, or 502 after the work): always a violation, never a
    /// race, since the client could have looked first.
    pub const TERMINATE_RESENT: &str = "terminate-resent";
    /// A mutating call for an instance someone else deleted.
    pub const AFTER_DELETE: &str = "after-delete";
    /// A mutating call on an instance (or a Delete of a disk) the scenario marks protected.
    pub const PROTECTED: &str = "protected";
    /// A disk Delete sent while the freshest `DescribeCompshareDisk` answer the client had
    /// did not list the disk as free (attached, detaching, deleting, or never looked at).
    pub const DISK_DELETE_UNLOOKED: &str = "disk-delete-not-seen-free";
    /// Not a violation (listed in races): a Delete arrived at a disk someone attached after
    /// the client's freshest look showed it free; the gateway refuses it.
    pub const DISK_ATTACH_RACED: &str = "disk-attach-raced";
    /// A Delete re-sent to a disk whose earlier Delete was applied.
    pub const DISK_DELETE_RESENT: &str = "disk-delete-resent";
}

/// Everything the world knows, as served by `GET /_sim/state`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SimState {
    /// Seconds since the world was created.
    pub now_secs: f64,
    /// Current rows exactly as Describe returns them (real field names), in ID order.
    pub instances: Vec<serde_json::Value>,
    /// IDs of rows the scenario marks protected.
    #[serde(default)]
    pub protected: Vec<String>,
    /// Locks currently held.
    #[serde(default)]
    pub locks: Vec<LockView>,
    pub terminated: Vec<Terminated>,
    /// Data disks that outlived their instance (or never had one) and still exist: derived
    /// from the disk inventory.
    pub orphan_disks: Vec<OrphanDisk>,
    /// Current disks exactly as `DescribeCompshareDisk` lists them now, in ID order.
    #[serde(default)]
    pub disks: Vec<serde_json::Value>,
    /// Disks whose Delete the world accepted, in order.
    #[serde(default)]
    pub deleted_disks: Vec<DeletedDisk>,
    pub calls: Vec<CallRecord>,
    pub violations: Vec<Violation>,
    /// Refused calls that no client could have avoided ([`rule::TERMINATE_RACED`]).
    #[serde(default)]
    pub races: Vec<Violation>,
}

/// An instance removed from the world.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Terminated {
    pub uhost_id: String,
    /// When the Terminate was accepted (or the other party deleted it).
    pub at_secs: f64,
    pub release_udisk: bool,
    /// Deleted by someone else (interference), not by a client call.
    #[serde(default)]
    pub by_other: bool,
}

/// A data disk that survived its instance because `ReleaseUDisk` was false (or a
/// free-standing one: `from_uhost_id` empty).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrphanDisk {
    pub disk_id: String,
    pub from_uhost_id: String,
    /// GB.
    pub size: i64,
}

/// A disk whose Delete was accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeletedDisk {
    pub disk_id: String,
    pub at_secs: f64,
}

/// One call as the world saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    pub at_secs: f64,
    /// `""` when the request named none.
    pub action: String,
    /// `UHostId`, `UDiskId`, or the `UHostIds.N` of a Describe.
    pub ids: Vec<String>,
    /// `None` when no JSON answer was sent (HTML error or closed connection).
    pub ret_code: Option<i64>,
    /// 0 when the connection was closed with no answer.
    pub http_status: u16,
    /// The injected fault, if any (`http_502`, `drop`, `lost_response`, `slow`, `throttle`, ...).
    pub fault: Option<String>,
    pub public_key: String,
}

/// A rule the client broke (see [`rule`]). Recorded even when the call was refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    pub at_secs: f64,
    pub uhost_id: String,
    pub action: String,
    pub rule: String,
    pub detail: String,
}

/// A held lock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockView {
    pub uhost_id: String,
    /// Held by "another operation" rather than a client call.
    pub by_other: bool,
    pub remaining_secs: f64,
}
