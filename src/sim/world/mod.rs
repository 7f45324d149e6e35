//! The world: instance rows, their locks and pending transitions, and the semantics of every
//! action. Pure state plus a clock reading: it never sleeps and has no background tasks; timed
//! transitions are stored with a due instant and applied lazily on every access, so the same
//! world runs identically under paused tokio time.

mod actions;
mod control;
mod disks;
mod gateway;
mod monitor;
mod time;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use rand::Rng;
use rand::rngs::StdRng;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::faults::{Dice, HTML_502, HTML_503};
use super::ledger::{CallRecord, LockView, SimState, Terminated, Violation, rule};
use super::scenario::{DEFAULT_ZONES, EPOCH_NOW, Faults, LockHold, Scenario, ScenarioInstance, generate_rows, rng_for};
use crate::api::error::LOCK_MARKER;
use crate::api::sign::{Params, signature};
use crate::api::{Instance, State};
use crate::credentials::PrivateKey;
use crate::sim::json_mode::signature as json_signature;

/// RetCodes the world answers with (common codes from the official API RetCode table;
/// product codes chosen where the real number is unpublished).
pub mod code {
    /// Service unavailable, retry later.
    pub const UNAVAILABLE: i64 = 150;
    /// "API request throttled".
    pub const THROTTLED: i64 = 153;
    pub const MISSING_ACTION: i64 = 160;
    pub const UNKNOWN_ACTION: i64 = 161;
    pub const MISSING_SIGNATURE: i64 = 170;
    pub const BAD_SIGNATURE: i64 = 171;
    pub const UNKNOWN_USER: i64 = 172;
    /// "Missing params [X]": what a real Start without `UHostId` answered.
    pub const MISSING_PARAM: i64 = 210;
    /// "Params [X] not available": a bad value (unknown Region, Limit > 100, ...).
    pub const BAD_PARAM: i64 = 230;
    /// The instance does not exist here: unknown, gone, or in another Region/Zone (the real
    /// API scopes lookups by Region/Zone, so a row elsewhere is invisible). Fatal.
    pub const NOT_FOUND: i64 = 8039;
    /// The state does not allow the action (e.g. Terminate while Running). Fatal.
    pub const BAD_STATE: i64 = 8900;
    /// A spot instance was stopped without `Force=true`. Fatal.
    pub const SPOT_NEEDS_FORCE: i64 = 8901;
}

/// The actions the world implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verb {
    Describe,
    Stop,
    Start,
    Terminate,
    /// `GetCompShareInstanceMonitor`: reads, never changes, the world.
    Monitor,
    DescribeDisks,
    DeleteDisk,
}

impl Verb {
    pub(crate) fn parse(name: &str) -> Option<Verb> {
        match name {
            "DescribeCompShareInstance" => Some(Verb::Describe),
            "StopCompShareInstance" => Some(Verb::Stop),
            "StartCompShareInstance" => Some(Verb::Start),
            "TerminateCompShareInstance" => Some(Verb::Terminate),
            crate::monitor::ACTION => Some(Verb::Monitor),
            crate::api::disk::DESCRIBE_DISKS => Some(Verb::DescribeDisks),
            crate::api::disk::DELETE_DISK => Some(Verb::DeleteDisk),
            _ => None,
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Verb::Describe => "Describe",
            Verb::Stop => "Stop",
            Verb::Start => "Start",
            Verb::Terminate => "Terminate",
            Verb::Monitor => "Monitor",
            Verb::DescribeDisks => "DescribeDisks",
            Verb::DeleteDisk => "DeleteDisk",
        }
    }

    /// Read-only: safe to answer after a fault without having changed anything.
    pub(crate) fn is_read(self) -> bool {
        matches!(self, Verb::Describe | Verb::DescribeDisks | Verb::Monitor)
    }
}

/// How a request proves who sent it.
#[derive(Debug, Clone)]
pub(crate) enum Auth {
    /// In-memory calls through [`crate::api::Cloud`]: no signature, the scenario's own key.
    Trusted,
    /// Form or query parameters, signed over the flat map.
    Form,
    /// A JSON body, signed in JSON mode (the flat form-mode signature is accepted too).
    Json(Map<String, Value>),
}

/// One incoming call.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    /// Flat parameters (JSON bodies flattened), including `Action`, `PublicKey`, `Signature`.
    pub params: Params,
    pub auth: Auth,
}

impl Request {
    fn action_name(&self) -> &str {
        self.params.get("Action").map_or("", String::as_str)
    }

    /// The instance IDs a call names, for the call record.
    fn ids(&self) -> Vec<String> {
        if let Some(id) = self.params.get("UHostId").or_else(|| self.params.get("UDiskId")) {
            return vec![id.clone()];
        }
        uhost_ids(&self.params)
    }
}

/// What goes back on the wire.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reply {
    /// HTTP 200 with a JSON body.
    Json { body: Value, request_id: String },
    /// An HTML error page from the proxy in front of the gateway.
    Html { status: u16, body: &'static str },
    /// Close the connection without answering.
    Close,
}

/// The first half of a call: transport faults decided on arrival.
pub(crate) enum Arrival {
    /// Answer now (proxy error or dropped connection).
    Now(Reply),
    /// Proceed, after `delay` if the call is slow.
    Proceed { plan: Dice, delay: Option<Duration> },
}

/// The rate limiter's clock: tokio time, so the limit holds under paused time too.
#[derive(Debug, Clone)]
struct TokioClock(Instant);

impl Clock for TokioClock {
    type Instant = Duration;
    fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.0)
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>;

/// The per-instance operation lock.
#[derive(Debug, Clone)]
struct Lock {
    until: Instant,
    by_other: bool,
    /// Released by the transition's completion (`LockHold::UntilComplete`).
    release_on_complete: bool,
}

/// Something due to happen to an instance.
#[derive(Debug, Clone)]
enum EventKind {
    /// A transition completes: the state becomes this.
    Settle(State),
    /// An accepted Terminate completes: the row leaves Describe.
    Disappear,
    /// Someone else starts the instance again (if it is still Stopped and not terminating).
    RestartByOther,
    /// Someone else deletes the instance.
    VanishByOther,
}

#[derive(Debug, Clone)]
struct Event {
    due: Instant,
    kind: EventKind,
}

/// Nominal per-row latencies in seconds.
#[derive(Debug, Clone, Copy)]
struct RowLatency {
    stop: f64,
    start: f64,
    terminate: f64,
}

/// One delivered Describe answer that listed a row: what the client could know, and when.
#[derive(Debug, Clone, Copy)]
struct Look {
    /// When the Describe arrived (was sent).
    sent: Instant,
    /// When its answer left the world (later than `sent` for a slow call).
    answered: Instant,
    /// The row was `Stopped` or `Install Fail`.
    terminable: bool,
}

/// Looks kept per row: enough to find the freshest one a client had when it sent a call even
/// when a few slow answers overtake each other, while a long-running server stays bounded.
const LOOKS_KEPT: usize = 8;

#[derive(Debug, Clone)]
struct Row {
    instance: Instance,
    /// Wire fields the typed [`Instance`] does not model, echoed in Describe.
    extra: Map<String, Value>,
    protected: bool,
    latency: RowLatency,
    lock: Option<Lock>,
    events: Vec<Event>,
    /// An accepted Terminate is in progress.
    terminating: bool,
    /// The latest delivered Describe answers that listed it, oldest first.
    looks: VecDeque<Look>,
    /// Fixed uniform draws that make the row one of the `lagging_share` a lagging replica
    /// lacks, or of the `omit_region` share listed without `Region`: the same rows every time,
    /// whatever the rates are set to later.
    lag_die: f64,
    region_die: f64,
    /// Its GPUs' load and running spells, for the monitor.
    gpu: monitor::GpuTrack,
}

/// Why an ID is no longer in the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Removal {
    Terminated,
    Deleted,
}

/// A refused call: RetCode and message.
type Rejection = (i64, String);

/// The simulated CompShare account.
pub(crate) struct World {
    scenario: Scenario,
    private_key: PrivateKey,
    start: Instant,
    /// The unix time of `start` (see `Scenario::epoch`).
    epoch: i64,
    rng: StdRng,
    /// Request IDs come from their own stream so they never shift fault decisions.
    id_rng: StdRng,
    /// Eventual-consistency dice (`drop_row` per listed row, `omit_total_count` per Describe
    /// answer) have their own stream too: how many rows an answer lists then shifts neither
    /// the per-call fault dice nor jitter and interference, and worlds that leave both rates
    /// at 0 behave exactly as before they existed.
    ec_rng: StdRng,
    /// The gateway behaviours (a lagging replica, rows without `Region`, answers lost after
    /// the work was done) have their own stream for the same reason: worlds that leave them
    /// off behave exactly as before they existed.
    gw_rng: StdRng,
    /// The monitor's dice (errors) and generated rows' load profiles, own stream too.
    mon_rng: StdRng,
    rows: BTreeMap<String, Row>,
    /// When each row's timed events fall due, as (due, id): `settle` reads the ones due
    /// instead of every row, so a request costs the same in a world of 100 or 100,000 rows.
    /// A hint may outlive its event (events are also dropped); a row without a due event
    /// then has nothing to apply.
    due: BTreeSet<(Instant, String)>,
    gone: HashMap<String, Removal>,
    regions: BTreeSet<String>,
    limiters: HashMap<String, Limiter>,
    terminated: Vec<Terminated>,
    /// The data disk inventory (see [`disks`]).
    disks: disks::Disks,
    calls: Vec<CallRecord>,
    violations: Vec<Violation>,
    races: Vec<Violation>,
}

impl World {
    pub(crate) fn new(scenario: Scenario) -> World {
        let now = Instant::now();
        let mut rng = rng_for(scenario.seed);
        // An arbitrary odd constant decorrelates the request-ID stream from the world's.
        let id_rng = rng_for(scenario.seed ^ 0x9e37_79b9_7f4a_7c15);
        // Another arbitrary constant, for the same reason.
        let ec_rng = rng_for(scenario.seed ^ 0x5851_f42d_4c95_7f2d);
        // And another.
        let gw_rng = rng_for(scenario.seed ^ 0x1405_7b7e_f767_814f);
        // And another.
        let mon_rng = rng_for(scenario.seed ^ 0x2545_f491_4f6c_dd1d);
        // A generated world is reproducible down to its sample times; any other starts now.
        let epoch = scenario.epoch.unwrap_or_else(|| {
            if scenario.generate.is_some() {
                EPOCH_NOW
            } else {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(EPOCH_NOW, |d| i64::try_from(d.as_secs()).unwrap_or(EPOCH_NOW))
            }
        });
        let mut world = World {
            private_key: PrivateKey::new(scenario.private_key.clone()),
            start: now,
            epoch,
            regions: DEFAULT_ZONES.iter().map(|(r, _)| (*r).to_owned()).collect(),
            rows: BTreeMap::new(),
            due: BTreeSet::new(),
            gone: HashMap::new(),
            limiters: HashMap::new(),
            terminated: Vec::new(),
            disks: disks::Disks::new(scenario.seed),
            calls: Vec::new(),
            violations: Vec::new(),
            races: Vec::new(),
            id_rng,
            ec_rng,
            gw_rng,
            mon_rng,
            rng: rng_for(0),
            scenario,
        };
        let mut rows = match &world.scenario.generate {
            Some(g) => generate_rows(g, world.scenario.lock.ttl_secs, &mut rng),
            None => Vec::new(),
        };
        for row in &mut rows {
            row.gpu_load = Some(monitor::generated_load(&mut world.mon_rng));
        }
        rows.extend(world.scenario.instances.iter().cloned());
        world.rng = rng;
        for row in rows {
            world.add_row(&row, now, None);
        }
        world.add_free_disks();
        world
    }

    /// `running_since`: when a row that is Running started (`None`: long before the world).
    fn add_row(&mut self, si: &ScenarioInstance, now: Instant, running_since: Option<Instant>) {
        // Rows were validated by `Scenario::from_json`; a row built in code that fails to
        // parse still gets in with defaults rather than vanishing silently.
        let instance: Instance = serde_json::from_value(Value::Object(si.row.clone())).unwrap_or_default();
        let typed_keys: Vec<String> = match serde_json::to_value(&instance) {
            Ok(Value::Object(m)) => m.keys().cloned().collect(),
            _ => Vec::new(),
        };
        let mut extra = si.row.clone();
        for k in typed_keys {
            extra.remove(&k);
        }
        let lat = &self.scenario.latency;
        let lock = si.locked_for_secs.map(|secs| Lock {
            until: now + self.scaled(secs),
            by_other: true,
            release_on_complete: false,
        });
        self.regions.insert(instance.region.clone());
        self.gone.remove(&instance.uhost_id);
        // A row that starts mid-transition (someone else's operation) finishes it like any
        // other: Stopping settles to Stopped, Starting and Rebooting to Running.
        let rows_latency = (
            si.stop_secs.unwrap_or(lat.stop_secs),
            si.start_secs.unwrap_or(lat.start_secs),
        );
        let settle = match instance.state {
            State::Stopping => Some((State::Stopped, rows_latency.0)),
            State::Starting | State::Rebooting => Some((State::Running, rows_latency.1)),
            _ => None,
        };
        let settle = settle.map(|(to, nominal)| (to, now + self.jittered(nominal)));
        let (lag_die, region_die) = (self.gw_rng.random::<f64>(), self.gw_rng.random::<f64>());
        let lat = &self.scenario.latency;
        let id = instance.uhost_id.clone();
        self.rows.insert(
            id.clone(),
            Row {
                extra,
                protected: si.protected,
                latency: RowLatency {
                    stop: si.stop_secs.unwrap_or(lat.stop_secs),
                    start: si.start_secs.unwrap_or(lat.start_secs),
                    terminate: si.terminate_secs.unwrap_or(lat.terminate_secs),
                },
                lock,
                events: Vec::new(),
                terminating: false,
                looks: VecDeque::new(),
                lag_die,
                region_die,
                gpu: monitor::GpuTrack::new(
                    si.gpu_load.clone().unwrap_or_default(),
                    instance.state == State::Running,
                    running_since,
                ),
                instance,
            },
        );
        if let Some(row) = self.rows.get(&id) {
            let instance = row.instance.clone();
            self.add_instance_disks(&instance);
        }
        if let Some((to, due)) = settle {
            self.schedule(&id, due, EventKind::Settle(to));
        }
    }

    pub(crate) fn public_key(&self) -> &str {
        &self.scenario.public_key
    }

    pub(crate) fn private_key(&self) -> PrivateKey {
        self.private_key.clone()
    }

    /// Nominal seconds to world time.
    fn scaled(&self, nominal_secs: f64) -> Duration {
        Duration::from_secs_f64((nominal_secs * self.scenario.time_scale).max(0.0))
    }

    /// Nominal seconds, jittered by `latency.jitter`, to world time.
    fn jittered(&mut self, nominal_secs: f64) -> Duration {
        let j = self.scenario.latency.jitter.clamp(0.0, 1.0);
        let factor = if j > 0.0 {
            1.0 + self.rng.random_range(-j..=j)
        } else {
            1.0
        };
        self.scaled(nominal_secs * factor)
    }

    fn secs(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.start).as_secs_f64()
    }

    // ---- requests ----------------------------------------------------------------------------
}

/// `UHostIds.N` values in index order.
fn uhost_ids(p: &Params) -> Vec<String> {
    let mut ids: Vec<(usize, String)> = p
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("UHostIds.")?.parse().ok()?, v.clone())))
        .collect();
    ids.sort_by_key(|(i, _)| *i);
    ids.into_iter().map(|(_, v)| v).collect()
}

/// A boolean parameter: `true` in any case is true; anything else (including absence) is false,
/// as a Go `strconv.ParseBool`-style server would read the SDKs' `true`/`false`.
fn flag(p: &Params, key: &str) -> bool {
    p.get(key).is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// A row as Describe returns it: the extra wire fields overlaid with the typed, current ones.
fn row_json(row: &Row, null_lists: bool) -> Value {
    let mut out = row.extra.clone();
    if let Ok(Value::Object(typed)) = serde_json::to_value(&row.instance) {
        out.extend(typed);
    }
    if null_lists {
        for key in ["DiskSet", "IPSet"] {
            if out.get(key).and_then(Value::as_array).is_some_and(Vec::is_empty) {
                out.insert(key.into(), Value::Null);
            }
        }
    }
    Value::Object(out)
}
