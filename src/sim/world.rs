//! The world: instance rows, their locks and pending transitions, and the semantics of every
//! action. Pure state plus a clock reading: it never sleeps and has no background tasks; timed
//! transitions are stored with a due instant and applied lazily on every access, so the same
//! world runs identically under paused tokio time.

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

use super::faults::{HTML_502, HTML_503, Plan};
use super::ledger::{CallRecord, LockView, OrphanDisk, SimState, Terminated, Violation, rule};
use super::scenario::{DEFAULT_ZONES, Faults, LockHold, Scenario, ScenarioInstance, generate_rows, rng_for};
use crate::api::error::LOCK_MARKER;
use crate::api::sign::{Params, json_signature, signature};
use crate::api::{Instance, State};
use crate::credentials::PrivateKey;

/// RetCodes the world answers with (common codes from the official table, reference §3.4;
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
pub(crate) enum Action {
    Describe,
    Stop,
    Start,
    Terminate,
}

impl Action {
    pub(crate) fn parse(name: &str) -> Option<Action> {
        match name {
            "DescribeCompShareInstance" => Some(Action::Describe),
            "StopCompShareInstance" => Some(Action::Stop),
            "StartCompShareInstance" => Some(Action::Start),
            "TerminateCompShareInstance" => Some(Action::Terminate),
            _ => None,
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Action::Describe => "Describe",
            Action::Stop => "Stop",
            Action::Start => "Start",
            Action::Terminate => "Terminate",
        }
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
        if let Some(id) = self.params.get("UHostId") {
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
    Proceed { plan: Plan, delay: Option<Duration> },
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
}

/// Why an ID is no longer in the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gone {
    Terminated,
    Deleted,
}

/// A refused call: RetCode and message.
type Refusal = (i64, String);

/// The simulated CompShare account.
pub(crate) struct World {
    scenario: Scenario,
    private_key: PrivateKey,
    start: Instant,
    rng: StdRng,
    /// Request IDs come from their own stream so they never shift fault decisions.
    id_rng: StdRng,
    /// Eventual-consistency dice (`drop_row` per listed row, `omit_total_count` per Describe
    /// answer) have their own stream too: how many rows an answer lists then shifts neither
    /// the per-call fault dice nor jitter and interference, and worlds that leave both rates
    /// at 0 behave exactly as before they existed.
    ec_rng: StdRng,
    rows: BTreeMap<String, Row>,
    gone: HashMap<String, Gone>,
    regions: BTreeSet<String>,
    limiters: HashMap<String, Limiter>,
    terminated: Vec<Terminated>,
    orphan_disks: Vec<OrphanDisk>,
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
        let mut world = World {
            private_key: PrivateKey::new(scenario.private_key.clone()),
            start: now,
            regions: DEFAULT_ZONES.iter().map(|(r, _)| (*r).to_owned()).collect(),
            rows: BTreeMap::new(),
            gone: HashMap::new(),
            limiters: HashMap::new(),
            terminated: Vec::new(),
            orphan_disks: Vec::new(),
            calls: Vec::new(),
            violations: Vec::new(),
            races: Vec::new(),
            id_rng,
            ec_rng,
            rng: rng_for(0),
            scenario,
        };
        let mut rows = match &world.scenario.generate {
            Some(g) => generate_rows(g, world.scenario.lock.ttl_secs, &mut rng),
            None => Vec::new(),
        };
        rows.extend(world.scenario.instances.iter().cloned());
        world.rng = rng;
        for row in rows {
            world.add_row(&row, now);
        }
        world
    }

    fn add_row(&mut self, si: &ScenarioInstance, now: Instant) {
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
        let events = match settle {
            Some((to, nominal)) => vec![Event {
                due: now + self.jittered(nominal),
                kind: EventKind::Settle(to),
            }],
            None => Vec::new(),
        };
        let lat = &self.scenario.latency;
        self.rows.insert(
            instance.uhost_id.clone(),
            Row {
                extra,
                protected: si.protected,
                latency: RowLatency {
                    stop: si.stop_secs.unwrap_or(lat.stop_secs),
                    start: si.start_secs.unwrap_or(lat.start_secs),
                    terminate: si.terminate_secs.unwrap_or(lat.terminate_secs),
                },
                lock,
                events,
                terminating: false,
                looks: VecDeque::new(),
                instance,
            },
        );
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

    // ---- lazy time -------------------------------------------------------------------------

    /// Apply every transition due by `now`, each at its own due instant, in order.
    pub(crate) fn settle(&mut self, now: Instant) {
        let ids: Vec<String> = self
            .rows
            .iter()
            .filter(|(_, r)| r.events.iter().any(|e| e.due <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            while let Some(row) = self.rows.get_mut(&id) {
                let Some(next) = (0..row.events.len())
                    .filter(|&i| row.events[i].due <= now)
                    .min_by_key(|&i| row.events[i].due)
                else {
                    break;
                };
                let event = row.events.remove(next);
                self.apply(&id, event);
            }
        }
    }

    fn apply(&mut self, id: &str, event: Event) {
        let at = event.due;
        let ttl = self.scaled(self.scenario.lock.ttl_secs);
        let until_complete = self.scenario.lock.hold == LockHold::UntilComplete;
        match event.kind {
            EventKind::Settle(state) => {
                let Some(row) = self.rows.get_mut(id) else { return };
                row.instance.state = state;
                if row.lock.as_ref().is_some_and(|l| l.release_on_complete) {
                    row.lock = None;
                }
            }
            EventKind::Disappear => {
                self.rows.remove(id);
                self.gone.insert(id.to_owned(), Gone::Terminated);
            }
            EventKind::RestartByOther => {
                let start_lat = match self.rows.get(id) {
                    Some(row) if !row.terminating && row.instance.state == State::Stopped => row.latency.start,
                    _ => return,
                };
                let settle = at + self.jittered(start_lat);
                let Some(row) = self.rows.get_mut(id) else { return };
                row.instance.state = State::Starting;
                row.lock = Some(Lock {
                    until: at + ttl,
                    by_other: true,
                    release_on_complete: until_complete,
                });
                row.events.push(Event {
                    due: settle,
                    kind: EventKind::Settle(State::Running),
                });
            }
            EventKind::VanishByOther => {
                self.delete(id, at);
            }
        }
    }

    fn delete(&mut self, id: &str, at: Instant) {
        if self.rows.remove(id).is_some() {
            self.gone.insert(id.to_owned(), Gone::Deleted);
            self.terminated.push(Terminated {
                uhost_id: id.to_owned(),
                at_secs: self.secs(at),
                release_udisk: true,
                by_other: true,
            });
        }
    }

    // ---- requests ----------------------------------------------------------------------------

    /// Roll the dice for a call and answer the transport-level faults.
    pub(crate) fn arrive(&mut self, req: &Request, now: Instant) -> Arrival {
        let plan = Plan::roll(&self.scenario.faults.clone(), &mut self.rng);
        let answer = if plan.drop {
            Some((Reply::Close, 0, "drop"))
        } else if plan.http_502 {
            Some((
                Reply::Html {
                    status: 502,
                    body: HTML_502,
                },
                502,
                "http_502",
            ))
        } else if plan.http_503 {
            Some((
                Reply::Html {
                    status: 503,
                    body: HTML_503,
                },
                503,
                "http_503",
            ))
        } else {
            None
        };
        if let Some((reply, status, fault)) = answer {
            self.record(req, now, None, status, Some(fault));
            return Arrival::Now(reply);
        }
        let delay = plan.slow.then(|| self.scaled(self.scenario.faults.slow_nominal()));
        Arrival::Proceed { plan, delay }
    }

    /// The gateway and the service: authenticate, limit, dispatch, answer.
    /// `sent`: when the call arrived (before any slow delay); `now`: when it is processed.
    pub(crate) fn process(&mut self, req: &Request, plan: Plan, sent: Instant, now: Instant) -> Reply {
        self.settle(now);
        let name = req.action_name().to_owned();
        let mut fault: Option<&'static str> = plan.slow.then_some("slow");
        let result: Result<Map<String, Value>, Refusal> = self.gateway(req, &plan, now, &mut fault).and_then(|()| {
            let action = Action::parse(&name).ok_or((code::UNKNOWN_ACTION, "Action not exists".to_owned()))?;
            self.dispatch(action, req, &plan, (sent, now), &mut fault)
        });
        let mut body = Map::new();
        body.insert("Action".into(), json!(format!("{name}Response")));
        let ret_code = match result {
            Ok(fields) => {
                body.extend(fields);
                0
            }
            Err((c, message)) => {
                body.insert("Message".into(), json!(message));
                c
            }
        };
        body.insert(
            "RetCode".into(),
            if plan.retcode_as_string {
                json!(ret_code.to_string())
            } else {
                json!(ret_code)
            },
        );
        if plan.lost_response {
            self.record(req, now, Some(ret_code), 0, Some("lost_response"));
            return Reply::Close;
        }
        let fault = fault.or(if plan.retcode_as_string {
            Some("retcode_as_string")
        } else if plan.null_lists {
            Some("null_lists")
        } else {
            None
        });
        self.record(req, now, Some(ret_code), 200, fault);
        Reply::Json {
            body: Value::Object(body),
            request_id: self.request_id(),
        }
    }

    fn gateway(
        &mut self,
        req: &Request,
        plan: &Plan,
        now: Instant,
        fault: &mut Option<&'static str>,
    ) -> Result<(), Refusal> {
        if req.action_name().is_empty() {
            return Err((code::MISSING_ACTION, "Missing Action".into()));
        }
        if !matches!(req.auth, Auth::Trusted) {
            self.verify(req)?;
        }
        let key = req
            .params
            .get("PublicKey")
            .cloned()
            .unwrap_or_else(|| self.scenario.public_key.clone());
        if let Some(rate) = NonZeroU32::new(self.scenario.rate_limit_per_sec) {
            let burst = NonZeroU32::new(self.scenario.rate_limit_burst).unwrap_or(rate);
            let quota = Quota::per_second(rate).allow_burst(burst);
            let limiter = self
                .limiters
                .entry(key)
                .or_insert_with(|| RateLimiter::direct_with_clock(quota, TokioClock(now)));
            if limiter.check().is_err() {
                *fault = Some("rate_limit");
                return Err((code::THROTTLED, "API request throttled".into()));
            }
        }
        if plan.throttle {
            *fault = Some("throttle");
            return Err((code::THROTTLED, "API request throttled".into()));
        }
        if plan.unavailable {
            *fault = Some("unavailable");
            return Err((code::UNAVAILABLE, "Service unavailable, please retry later".into()));
        }
        Ok(())
    }

    /// Signature checks, in the gateway's order: present, known key, matching.
    fn verify(&self, req: &Request) -> Result<(), Refusal> {
        let Some(sig) = req.params.get("Signature").filter(|s| !s.is_empty()) else {
            return Err((code::MISSING_SIGNATURE, "Missing signature".into()));
        };
        if req.params.get("PublicKey") != Some(&self.scenario.public_key) {
            return Err((code::UNKNOWN_USER, "User Not Exists".into()));
        }
        let form_ok = signature(&req.params, &self.private_key).eq_ignore_ascii_case(sig);
        let json_ok = match &req.auth {
            Auth::Json(object) => json_signature(object, &self.private_key).eq_ignore_ascii_case(sig),
            _ => false,
        };
        if form_ok || json_ok {
            Ok(())
        } else {
            Err((code::BAD_SIGNATURE, "Signature VerifyAC Error".into()))
        }
    }

    /// `at`: (sent, now), see [`World::process`].
    fn dispatch(
        &mut self,
        action: Action,
        req: &Request,
        plan: &Plan,
        at: (Instant, Instant),
        fault: &mut Option<&'static str>,
    ) -> Result<Map<String, Value>, Refusal> {
        match action {
            Action::Describe => self.describe(&req.params, plan, at, fault),
            _ => self.lifecycle(action, &req.params, at),
        }
    }

    fn describe(
        &mut self,
        p: &Params,
        plan: &Plan,
        (sent, now): (Instant, Instant),
        fault: &mut Option<&'static str>,
    ) -> Result<Map<String, Value>, Refusal> {
        let bad = |k: &str| (code::BAD_PARAM, format!("Params [{k}] not available"));
        let region = p.get("Region").filter(|r| !r.is_empty());
        if region.is_some_and(|r| !self.regions.contains(r)) {
            return Err(bad("Region"));
        }
        let zone = p.get("Zone").filter(|z| !z.is_empty());
        let ids = uhost_ids(p);
        // Documented maxima: 100 IDs per call, Limit at most 100 (default 20).
        if ids.len() > 100 {
            return Err(bad("UHostIds"));
        }
        let limit = match p.get("Limit") {
            None => 20,
            Some(v) => match v.parse::<usize>() {
                Ok(0) => 20,
                Ok(n) if n <= 100 => n,
                _ => return Err(bad("Limit")),
            },
        };
        let offset = match p.get("Offset") {
            None => 0,
            Some(v) => v.parse::<usize>().map_err(|_| bad("Offset"))?,
        };
        let wanted: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
        let matches: Vec<String> = self
            .rows
            .values()
            .filter(|r| region.is_none_or(|x| *x == r.instance.region))
            .filter(|r| zone.is_none_or(|x| *x == r.instance.zone))
            .filter(|r| wanted.is_empty() || wanted.contains(r.instance.uhost_id.as_str()))
            .map(|r| r.instance.uhost_id.clone())
            .collect();
        // "Offset must not exceed the total count, else an error" (compshare.cn docs).
        if offset > matches.len() {
            return Err(bad("Offset"));
        }
        // Eventual consistency: each row of the page may be missing from this answer (the
        // replica that served it has not caught up). The page then comes back short while
        // `TotalCount` still counts every row that really matched: a client cannot tell a
        // dropped row from a deleted one by this answer alone. One die per page row, always
        // rolled (see `ec_rng`), then one for `TotalCount`.
        let drop_rate = self.scenario.faults.drop_row;
        let mut listed: Vec<Value> = Vec::new();
        let mut dropped = 0usize;
        for id in matches.iter().skip(offset).take(limit) {
            if self.ec_rng.random::<f64>() < drop_rate {
                dropped += 1;
                continue;
            }
            let Some(row) = self.rows.get_mut(id) else { continue };
            listed.push(row_json(row, plan.null_lists));
            // A look counts only if the client receives it.
            if !plan.lost_response {
                if row.looks.len() == LOOKS_KEPT {
                    row.looks.pop_front();
                }
                row.looks.push_back(Look {
                    sent,
                    answered: now,
                    terminable: matches!(row.instance.state, State::Stopped | State::InstallFail),
                });
            }
        }
        let omit_total = self.ec_rng.random::<f64>() < self.scenario.faults.omit_total_count;
        if fault.is_none() {
            *fault = if dropped > 0 {
                Some("drop_row")
            } else if omit_total {
                Some("omit_total_count")
            } else {
                None
            };
        }
        let mut out = Map::new();
        if !omit_total {
            out.insert("TotalCount".into(), json!(matches.len()));
        }
        out.insert(
            "UHostSet".into(),
            if listed.is_empty() && plan.null_lists {
                Value::Null
            } else {
                Value::Array(listed)
            },
        );
        Ok(out)
    }

    /// Whether the freshest Describe answer received before `sent` listed the row as
    /// `Stopped`/`Install Fail`: freshest by when the Describe was sent, as a client orders
    /// its observations.
    fn looked_terminable(&self, id: &str, sent: Instant) -> bool {
        self.rows.get(id).is_some_and(|row| {
            row.looks
                .iter()
                .filter(|l| l.answered <= sent)
                .max_by_key(|l| l.sent)
                .is_some_and(|l| l.terminable)
        })
    }

    fn lifecycle(
        &mut self,
        action: Action,
        p: &Params,
        (sent, now): (Instant, Instant),
    ) -> Result<Map<String, Value>, Refusal> {
        let name = p.get("Action").cloned().unwrap_or_default();
        for key in ["Region", "Zone", "UHostId"] {
            if p.get(key).is_none_or(String::is_empty) {
                return Err((code::MISSING_PARAM, format!("Missing params [{key}]")));
            }
        }
        let (region, zone, id) = (&p["Region"], &p["Zone"], p["UHostId"].clone());
        if !self.regions.contains(region) {
            return Err((code::BAD_PARAM, "Params [Region] not available".into()));
        }
        let not_found = || (code::NOT_FOUND, format!("UHost not found: {id}"));
        if let Some(gone) = self.gone.get(&id).copied() {
            let (rule, detail) = match gone {
                Gone::Terminated => (rule::AFTER_TERMINATE, "the instance was already terminated"),
                Gone::Deleted => (rule::AFTER_DELETE, "the instance was deleted by someone else"),
            };
            self.violate(now, &id, &name, rule, detail.to_owned());
            return Err(not_found());
        }
        let Some(row) = self.rows.get(&id) else {
            return Err(not_found());
        };
        let state = row.instance.state.clone();
        let (protected, terminating) = (row.protected, row.terminating);
        let misplaced = row.instance.region != *region || row.instance.zone != *zone;
        if protected {
            self.violate(
                now,
                &id,
                &name,
                rule::PROTECTED,
                "the scenario protects this instance".into(),
            );
        }
        if terminating {
            self.violate(
                now,
                &id,
                &name,
                rule::AFTER_TERMINATE,
                "a Terminate was already accepted".into(),
            );
        } else if action == Action::Terminate && !matches!(state, State::Stopped | State::InstallFail) {
            let rule = if self.looked_terminable(&id, sent) {
                rule::TERMINATE_RACED
            } else {
                rule::TERMINATE_NOT_STOPPED
            };
            self.violate(now, &id, &name, rule, format!("state was {}", state.as_str()));
        }
        if misplaced {
            return Err(not_found());
        }
        let row = &self.rows[&id];
        if row.lock.as_ref().is_some_and(|l| l.until > now) {
            return Err((
                self.scenario.lock.ret_code,
                format!("{LOCK_MARKER}: another operation on {id} is in progress, retry later"),
            ));
        }
        let verb = action.verb();
        let allowed = match action {
            Action::Stop => state == State::Running,
            Action::Start => state == State::Stopped,
            Action::Terminate => matches!(state, State::Stopped | State::InstallFail),
            Action::Describe => true,
        };
        if !allowed || terminating {
            return Err((
                code::BAD_STATE,
                format!("instance state {} does not allow {verb}", state.as_str()),
            ));
        }
        if action == Action::Stop && row.instance.is_spot() && !flag(p, "Force") {
            return Err((
                code::SPOT_NEEDS_FORCE,
                "spot instance cannot be stopped without Force=true".into(),
            ));
        }
        let mut out = Map::new();
        out.insert("UHostId".into(), json!(id));
        match action {
            Action::Stop => self.accept_transition(&id, now, State::Stopping, State::Stopped),
            Action::Start => self.accept_transition(&id, now, State::Starting, State::Running),
            Action::Terminate => {
                self.accept_terminate(&id, now, flag(p, "ReleaseUDisk"));
                out.insert("InRecycle".into(), json!("Yes"));
            }
            Action::Describe => {}
        }
        Ok(out)
    }

    fn take_lock(&mut self, id: &str, now: Instant) {
        let ttl = self.scaled(self.scenario.lock.ttl_secs);
        let until_complete = self.scenario.lock.hold == LockHold::UntilComplete;
        if let Some(row) = self.rows.get_mut(id) {
            row.lock = Some(Lock {
                until: now + ttl,
                by_other: false,
                release_on_complete: until_complete,
            });
        }
    }

    fn accept_transition(&mut self, id: &str, now: Instant, during: State, after: State) {
        let Some(row) = self.rows.get(id) else { return };
        let nominal = if after == State::Stopped {
            row.latency.stop
        } else {
            row.latency.start
        };
        let settle = now + self.jittered(nominal);
        let faults: Faults = self.scenario.faults.clone();
        let restart_at = (after == State::Stopped && self.rng.random::<f64>() < faults.restart)
            .then(|| settle + self.jittered(faults.restart_nominal()));
        let vanish_at = if self.rng.random::<f64>() < faults.vanish {
            let fraction: f64 = self.rng.random();
            Some(now + self.scaled(faults.vanish_nominal() * fraction))
        } else {
            None
        };
        self.take_lock(id, now);
        let Some(row) = self.rows.get_mut(id) else { return };
        row.instance.state = during;
        row.events.push(Event {
            due: settle,
            kind: EventKind::Settle(after),
        });
        if let Some(due) = restart_at {
            row.events.push(Event {
                due,
                kind: EventKind::RestartByOther,
            });
        }
        if let Some(due) = vanish_at {
            row.events.push(Event {
                due,
                kind: EventKind::VanishByOther,
            });
        }
    }

    fn accept_terminate(&mut self, id: &str, now: Instant, release_udisk: bool) {
        let Some(row) = self.rows.get(id) else { return };
        let gone_at = now + self.jittered(row.latency.terminate);
        self.take_lock(id, now);
        let at_secs = self.secs(now);
        let Some(row) = self.rows.get_mut(id) else { return };
        row.terminating = true;
        row.events.retain(|e| matches!(e.kind, EventKind::VanishByOther));
        row.events.push(Event {
            due: gone_at,
            kind: EventKind::Disappear,
        });
        if !release_udisk {
            for disk in row.instance.data_disks() {
                self.orphan_disks.push(OrphanDisk {
                    disk_id: disk.disk_id.clone(),
                    from_uhost_id: id.to_owned(),
                    size: disk.size,
                });
            }
        }
        self.terminated.push(Terminated {
            uhost_id: id.to_owned(),
            at_secs,
            release_udisk,
            by_other: false,
        });
    }

    fn violate(&mut self, now: Instant, id: &str, action: &str, rule: &str, detail: String) {
        let at_secs = self.secs(now);
        let list = if rule == rule::TERMINATE_RACED {
            &mut self.races
        } else {
            &mut self.violations
        };
        list.push(Violation {
            at_secs,
            uhost_id: id.to_owned(),
            action: action.to_owned(),
            rule: rule.to_owned(),
            detail,
        });
    }

    fn record(&mut self, req: &Request, now: Instant, ret_code: Option<i64>, http_status: u16, fault: Option<&str>) {
        let public_key = req
            .params
            .get("PublicKey")
            .cloned()
            .unwrap_or_else(|| self.scenario.public_key.clone());
        self.calls.push(CallRecord {
            at_secs: self.secs(now),
            action: req.action_name().to_owned(),
            ids: req.ids(),
            ret_code,
            http_status,
            fault: fault.map(str::to_owned),
            public_key,
        });
    }

    /// A UUID-shaped request ID, unique per request.
    fn request_id(&mut self) -> String {
        let a: u128 = self.id_rng.random();
        let h = format!("{a:032x}");
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }

    // ---- steering and inspection ----------------------------------------------------------------

    pub(crate) fn snapshot(&mut self, now: Instant) -> SimState {
        self.settle(now);
        SimState {
            now_secs: self.secs(now),
            instances: self.rows.values().map(|r| row_json(r, false)).collect(),
            protected: self
                .rows
                .iter()
                .filter(|(_, r)| r.protected)
                .map(|(id, _)| id.clone())
                .collect(),
            locks: self
                .rows
                .iter()
                .filter_map(|(id, r)| {
                    let l = r.lock.as_ref().filter(|l| l.until > now)?;
                    Some(LockView {
                        uhost_id: id.clone(),
                        by_other: l.by_other,
                        remaining_secs: l.until.saturating_duration_since(now).as_secs_f64(),
                    })
                })
                .collect(),
            terminated: self.terminated.clone(),
            orphan_disks: self.orphan_disks.clone(),
            calls: self.calls.clone(),
            violations: self.violations.clone(),
            races: self.races.clone(),
        }
    }

    pub(crate) fn insert(&mut self, instance: &Instance, now: Instant) {
        self.settle(now);
        self.add_row(&ScenarioInstance::from_instance(instance, Map::new()), now);
    }

    pub(crate) fn set_state(&mut self, id: &str, state: State, now: Instant) {
        self.settle(now);
        if let Some(row) = self.rows.get_mut(id) {
            row.instance.state = state;
            row.events.retain(|e| !matches!(e.kind, EventKind::Settle(_)));
        }
    }

    pub(crate) fn hold_lock(&mut self, id: &str, d: Duration, now: Instant) {
        self.settle(now);
        if let Some(row) = self.rows.get_mut(id) {
            row.lock = Some(Lock {
                until: now + d,
                by_other: true,
                release_on_complete: false,
            });
        }
    }

    pub(crate) fn delete_by_other(&mut self, id: &str, now: Instant) {
        self.settle(now);
        self.delete(id, now);
    }

    pub(crate) fn start_by_other(&mut self, id: &str, now: Instant) {
        self.settle(now);
        if self.rows.contains_key(id) {
            self.apply(
                id,
                Event {
                    due: now,
                    kind: EventKind::RestartByOther,
                },
            );
        }
    }

    /// A new gateway limit from now on (0 = none); every key starts with a full bucket.
    pub(crate) fn set_rate_limit(&mut self, per_sec: u32, burst: u32) {
        self.scenario.rate_limit_per_sec = per_sec;
        self.scenario.rate_limit_burst = burst;
        self.limiters.clear();
    }

    pub(crate) fn set_faults(&mut self, faults: Faults) {
        self.scenario.faults = faults;
    }

    pub(crate) fn set_protected(&mut self, id: &str, protected: bool) {
        if let Some(row) = self.rows.get_mut(id) {
            row.protected = protected;
        }
    }

    pub(crate) fn ids(&mut self, now: Instant) -> Vec<String> {
        self.settle(now);
        self.rows.keys().cloned().collect()
    }
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
