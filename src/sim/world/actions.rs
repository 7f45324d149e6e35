//! The mutating actions: Stop, Start and Terminate with their state rules, the operation
//! lock, and the ledger of calls and violations.

use super::{
    CallRecord, EventKind, Faults, Instant, LOCK_MARKER, Lock, LockHold, Map, Params, Rejection, Removal, Request, Rng,
    State, Terminated, Value, Verb, Violation, World, code, flag, json, rule,
};

impl World {
    pub(super) fn lifecycle(
        &mut self,
        action: Verb,
        p: &Params,
        (sent, now): (Instant, Instant),
    ) -> Result<Map<String, Value>, Rejection> {
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
                Removal::Terminated if action == Verb::Terminate => {
                    (rule::TERMINATE_RESENT, "the instance was already terminated")
                }
                Removal::Terminated => (rule::AFTER_TERMINATE, "the instance was already terminated"),
                Removal::Deleted => (rule::AFTER_DELETE, "the instance was deleted by someone else"),
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
            let rule = if action == Verb::Terminate {
                rule::TERMINATE_RESENT
            } else {
                rule::AFTER_TERMINATE
            };
            self.violate(now, &id, &name, rule, "a Terminate was already applied".into());
        } else if action == Verb::Terminate && !matches!(state, State::Stopped | State::InstallFail) {
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
            Verb::Stop => state == State::Running,
            Verb::Start => state == State::Stopped,
            Verb::Terminate => matches!(state, State::Stopped | State::InstallFail),
            Verb::Describe | Verb::Monitor | Verb::DescribeDisks | Verb::DeleteDisk => true,
        };
        if !allowed || terminating {
            return Err((
                code::BAD_STATE,
                format!("instance state {} does not allow {verb}", state.as_str()),
            ));
        }
        if action == Verb::Stop && row.instance.is_spot() && !flag(p, "Force") {
            return Err((
                code::SPOT_NEEDS_FORCE,
                "spot instance cannot be stopped without Force=true".into(),
            ));
        }
        let mut out = Map::new();
        out.insert("UHostId".into(), json!(id));
        match action {
            Verb::Stop => self.accept_transition(&id, now, State::Stopping, State::Stopped),
            Verb::Start => self.accept_transition(&id, now, State::Starting, State::Running),
            Verb::Terminate => {
                self.accept_terminate(&id, now, flag(p, "ReleaseUDisk"));
                out.insert("InRecycle".into(), json!("Yes"));
            }
            Verb::Describe | Verb::Monitor | Verb::DescribeDisks | Verb::DeleteDisk => {}
        }
        Ok(out)
    }

    pub(super) fn take_lock(&mut self, id: &str, now: Instant) {
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

    pub(super) fn accept_transition(&mut self, id: &str, now: Instant, during: State, after: State) {
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
        row.set_state(during, now);
        self.schedule(id, settle, EventKind::Settle(after));
        if let Some(due) = restart_at {
            self.schedule(id, due, EventKind::RestartByOther);
        }
        if let Some(due) = vanish_at {
            self.schedule(id, due, EventKind::VanishByOther);
        }
    }

    pub(super) fn accept_terminate(&mut self, id: &str, now: Instant, release_udisk: bool) {
        let Some(row) = self.rows.get(id) else { return };
        let gone_at = now + self.jittered(row.latency.terminate);
        self.take_lock(id, now);
        let at_secs = self.secs(now);
        let Some(row) = self.rows.get_mut(id) else { return };
        row.terminating = true;
        row.events.retain(|e| matches!(e.kind, EventKind::VanishByOther));
        // Without `ReleaseUDisk` the data disks detach (and stay, billed); with it they go.
        self.release_or_detach(id, release_udisk, now);
        self.schedule(id, gone_at, EventKind::Disappear);
        self.terminated.push(Terminated {
            uhost_id: id.to_owned(),
            at_secs,
            release_udisk,
            by_other: false,
        });
    }

    pub(super) fn violate(&mut self, now: Instant, id: &str, action: &str, rule: &str, detail: String) {
        let at_secs = self.secs(now);
        let list = if rule == rule::TERMINATE_RACED || rule == rule::DISK_ATTACH_RACED {
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

    pub(super) fn record(
        &mut self,
        req: &Request,
        now: Instant,
        ret_code: Option<i64>,
        http_status: u16,
        fault: Option<&str>,
    ) {
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
    pub(super) fn request_id(&mut self) -> String {
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
}
