//! The CompShare simulator: a seeded, fault-injecting world that answers the three teardown
//! actions (and Start, for its own tests and interference), and the GPU monitor, like the
//! real gateway, over HTTP ([`Server`], [`serve`]) or in memory (the [`crate::api::Cloud`]
//! impl on [`SimHandle`], for paused-time tests). The scenario format is
//! documented in `docs/simulator.md`.

mod faults;
pub mod json_mode;
mod ledger;
mod scenario;
mod server;
mod world;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::api::Answer;
use tokio::time::Instant;

pub use ledger::{CallRecord, DeletedDisk, LockView, OrphanDisk, SimState, Terminated, Violation, rule};
pub use scenario::{
    DEFAULT_ZONES, Faults, Generate, GpuLoad, Latency, LockConfig, LockHold, Monitoring, Scenario, ScenarioDisk,
    ScenarioError, ScenarioInstance,
};
pub use server::{HEADER_TIMEOUT, MAX_CONNECTIONS, Server, serve};
pub use world::code;

use crate::api::client::decode_envelope;
#[cfg(feature = "sweep")]
use crate::api::sign::sign_in_place;
use crate::api::sign::{Params, flatten, sign_json_in_place};
use crate::api::{ApiError, Instance, State, Transport, TransportKind};
#[cfg(feature = "sweep")]
use crate::credentials::Credentials;
use crate::credentials::PrivateKey;
use serde_json::{Map, Value};
use world::{Arrival, Auth, Reply, Request, World};

/// Cheap-to-clone handle to one shared world.
#[derive(Clone)]
pub struct SimHandle {
    world: Arc<Mutex<World>>,
}

impl SimHandle {
    /// Build the world; its time zero is `tokio::time::Instant::now()` now.
    pub fn new(scenario: Scenario) -> SimHandle {
        SimHandle {
            world: Arc::new(Mutex::new(World::new(scenario))),
        }
    }

    /// The world is only ever locked for short synchronous sections; a panic while holding it
    /// leaves consistent-enough state for a simulator, so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn public_key(&self) -> String {
        self.lock().public_key().to_owned()
    }

    pub fn private_key(&self) -> PrivateKey {
        self.lock().private_key()
    }

    /// The same data as `GET /_sim/state`.
    pub fn snapshot(&self) -> SimState {
        self.lock().snapshot(Instant::now())
    }

    /// Add or replace a row.
    #[expect(
        clippy::needless_pass_by_value,
        reason = "By value by contract: callers build a row and hand it over."
    )]
    pub fn insert(&self, instance: Instance) {
        self.lock().insert(&instance, Instant::now());
    }

    /// Set a state directly, cancelling any pending transition.
    pub fn set_state(&self, id: &str, state: State) {
        self.lock().set_state(id, state, Instant::now());
    }

    /// "Another operation" holds the lock for `d` (not time-scaled).
    pub fn hold_lock(&self, id: &str, d: Duration) {
        self.lock().hold_lock(id, d, Instant::now());
    }

    /// Someone else deletes the instance now.
    pub fn delete_by_other(&self, id: &str) {
        self.lock().delete_by_other(id, Instant::now());
    }

    /// Someone else starts the instance now (only if it is Stopped and not terminating).
    pub fn start_by_other(&self, id: &str) {
        self.lock().start_by_other(id, Instant::now());
    }

    /// Change the gateway's rate limit mid-run: `per_sec` requests a second per key (0 = no
    /// limit; fractions allowed), `burst` at once (0 = one second's worth).
    pub fn set_rate_limit(&self, per_sec: impl Into<f64>, burst: u32) {
        self.lock().set_rate_limit(per_sec.into(), burst);
    }

    pub fn set_faults(&self, faults: Faults) {
        self.lock().set_faults(faults);
    }

    /// Someone attaches a free data disk to an instance now.
    pub fn attach_disk(&self, disk_id: &str, uhost_id: &str) {
        self.lock().attach_disk(disk_id, uhost_id, Instant::now());
    }

    pub fn set_protected(&self, id: &str, protected: bool) {
        self.lock().set_protected(id, protected);
    }

    /// The world's wall clock in unix seconds: the scenario's `epoch` plus the nominal seconds
    /// elapsed (tokio time divided by `time_scale`). Monitor samples are stamped with it.
    pub fn unix_now(&self) -> i64 {
        self.lock().unix_now(Instant::now())
    }

    /// What an instance's GPUs do, as the monitor reports it (`None`: no such row).
    pub fn gpu_load(&self, id: &str) -> Option<GpuLoad> {
        self.lock().gpu_load(id)
    }

    /// What an instance's GPUs do from now on, as the monitor reports it.
    pub fn set_gpu_load(&self, id: &str, load: GpuLoad) {
        self.lock().set_gpu_load(id, load);
    }

    /// IDs currently listed by Describe, in order.
    pub fn ids(&self) -> Vec<String> {
        self.lock().ids(Instant::now())
    }

    /// One call end to end: arrival faults, an optional slow delay, then processing.
    pub(crate) async fn handle(&self, req: Request) -> Reply {
        let sent = Instant::now();
        let arrival = self.lock().arrive(&req, sent);
        match arrival {
            Arrival::Now(reply) => reply,
            Arrival::Proceed { plan, delay } => {
                if let Some(d) = delay {
                    // The call arrived: if the client drops it while it is held, the ledger
                    // still has it (the report counts it as sent, and so must the truth).
                    let mut held = Held {
                        sim: self,
                        req: &req,
                        sent,
                        over: false,
                    };
                    tokio::time::sleep(d).await;
                    held.over = true;
                }
                self.lock().process(&req, plan, sent, Instant::now())
            }
        }
    }

    /// `StartCompShareInstance`, which the simulator's own tests use to restart an instance
    /// the way a user would; the teardown engine never starts anything.
    pub async fn start(&self, target: &crate::api::Target) -> Result<(), ApiError> {
        self.call("StartCompShareInstance", target.params()).await.map(drop)
    }

    /// A transport that signs every call with `credentials` like the HTTP client does and has
    /// the gateway check the signature, without sockets: the caller holds a real private key
    /// (for the seed sweep's "the key is never printed" check) and paused time still works.
    #[cfg(feature = "sweep")]
    pub(crate) fn signed(&self, credentials: Credentials) -> SignedSim {
        SignedSim {
            sim: self.clone(),
            credentials,
        }
    }

    /// An in-memory call, answered as the HTTP client would have decoded it.
    async fn call_in_memory(&self, action: &str, mut params: Params, auth: Auth) -> Result<Answer, ApiError> {
        params.insert("Action".into(), action.into());
        match self.handle(Request { params, auth }).await {
            Reply::Json { body, request_id } => {
                let bytes = serde_json::to_vec(&body).unwrap_or_default();
                decode_envelope(action, bytes, Some(request_id))
            }
            Reply::Html { status, body } => Err(ApiError::Http {
                action: action.into(),
                status,
                snippet: body.chars().filter(|c| !c.is_control()).take(120).collect(),
                request_id: None,
            }),
            Reply::Close => Err(ApiError::Transport {
                action: action.into(),
                kind: TransportKind::Closed,
                detail: "connection closed before the answer (simulated)".into(),
            }),
        }
    }
}

/// The in-memory transport: the engine's paused-time tests run against this.
impl Transport for SimHandle {
    async fn call(&self, action: &str, params: Params) -> Result<Answer, ApiError> {
        self.call_in_memory(action, params, Auth::Trusted).await
    }

    /// Signed with the world's own key and checked like an HTTP JSON body: what tells the
    /// gateway a body was JSON is the signed object itself, and a SHA-1 per call is cheap.
    async fn call_json(&self, action: &str, body: Map<String, Value>) -> Result<Answer, ApiError> {
        let (public, private) = (self.public_key(), self.private_key());
        self.call_json_in_memory(action, body, &public, &private).await
    }
}

impl SimHandle {
    /// A JSON-body call in memory, signed with the given keys.
    async fn call_json_in_memory(
        &self,
        action: &str,
        mut body: Map<String, Value>,
        public_key: &str,
        private_key: &PrivateKey,
    ) -> Result<Answer, ApiError> {
        body.insert("Action".into(), Value::String(action.into()));
        sign_json_in_place(&mut body, public_key, private_key);
        let params = flatten(&body);
        self.call_in_memory(action, params, Auth::Json(body)).await
    }
}

/// [`SimHandle::signed`]: in memory, but signed and verified (only the seed sweep uses it).
#[cfg(feature = "sweep")]
#[derive(Clone)]
pub(crate) struct SignedSim {
    sim: SimHandle,
    credentials: Credentials,
}

/// The key stays hidden: [`Credentials`] prints it as `***`.
#[cfg(feature = "sweep")]
impl std::fmt::Debug for SignedSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedSim")
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "sweep")]
impl Transport for SignedSim {
    async fn call(&self, action: &str, mut params: Params) -> Result<Answer, ApiError> {
        params.insert("Action".into(), action.into());
        sign_in_place(&mut params, &self.credentials.public_key, &self.credentials.private_key);
        self.sim.call_in_memory(action, params, Auth::Form).await
    }

    async fn call_json(&self, action: &str, body: Map<String, Value>) -> Result<Answer, ApiError> {
        self.sim
            .call_json_in_memory(
                action,
                body,
                &self.credentials.public_key,
                &self.credentials.private_key,
            )
            .await
    }
}

#[cfg(test)]
mod tests;

/// A call held by a slow answer; dropped before its processing, it is recorded as abandoned.
struct Held<'a> {
    sim: &'a SimHandle,
    req: &'a Request,
    sent: Instant,
    over: bool,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if !self.over {
            self.sim.lock().abandon(self.req, self.sent);
        }
    }
}
