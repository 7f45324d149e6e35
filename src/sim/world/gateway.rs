//! The gateway: what happens to a request on arrival (faults, slow answers) and when it is
//! processed (signature, rate limit, dispatch), and Describe with its paging and dropped rows.

use std::time::Duration;

use super::{
    Arrival, Auth, BTreeSet, Dice, HTML_502, HTML_503, Instant, LOOKS_KEPT, Look, Map, NonZeroU32, Params, Quota,
    RateLimiter, Rejection, Reply, Request, Rng, Row, State, TokioClock, Value, Verb, World, code, json,
    json_signature, row_json, signature, uhost_ids,
};

impl World {
    /// Roll the dice for a call and answer the transport-level faults.
    pub(crate) fn arrive(&mut self, req: &Request, now: Instant) -> Arrival {
        let plan = Dice::roll(&self.scenario.faults.clone(), &mut self.rng);
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

    /// A call that arrived and was held (a slow answer) when the client gave up on it (a
    /// halt dropping a look in flight, a killed process): received, never processed, so it is
    /// in the ledger unanswered (HTTP status 0, fault `abandoned`).
    pub(crate) fn abandon(&mut self, req: &Request, sent: Instant) {
        self.record(req, sent, None, 0, Some("abandoned"));
    }

    /// The gateway and the service: authenticate, limit, dispatch, answer.
    /// `sent`: when the call arrived (before any slow delay); `now`: when it is processed.
    pub(crate) fn process(&mut self, req: &Request, plan: Dice, sent: Instant, now: Instant) -> Reply {
        self.settle(now);
        let name = req.action_name().to_owned();
        let mut fault: Option<&'static str> = plan.slow.then_some("slow");
        let result: Result<Map<String, Value>, Rejection> = self.gateway(req, &plan, now, &mut fault).and_then(|()| {
            let action = Verb::parse(&name).ok_or((code::UNKNOWN_ACTION, "Action not exists".to_owned()))?;
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
        // Rolled on every processed call (own stream), used on mutating ones: the backend did
        // its part, and the proxy in front reports the upstream as gone.
        let applied_then_502 = self.gw_rng.random::<f64>() < self.scenario.faults.applied_then_502;
        if applied_then_502 && Verb::parse(&name).is_some_and(|v| !v.is_read()) {
            self.record(req, now, Some(ret_code), 502, Some("applied_then_502"));
            return Reply::Html {
                status: 502,
                body: HTML_502,
            };
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

    pub(super) fn gateway(
        &mut self,
        req: &Request,
        plan: &Dice,
        now: Instant,
        fault: &mut Option<&'static str>,
    ) -> Result<(), Rejection> {
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
        let rate = self.scenario.rate_limit_per_sec;
        // One token every 1/rate seconds: a fractional rate (0.5 = one call every 2 s) is a
        // period, which governor takes as it is.
        if let Some(period) = (rate.is_finite() && rate > 0.0)
            .then(|| Duration::from_secs_f64(1.0 / rate))
            .and_then(Quota::with_period)
        {
            // One second's worth by default, and never less than one call.
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "a positive finite rate, rounded up and clamped to u32"
            )]
            let second = NonZeroU32::new(rate.ceil().min(f64::from(u32::MAX)) as u32).unwrap_or(NonZeroU32::MIN);
            let burst = NonZeroU32::new(self.scenario.rate_limit_burst).unwrap_or(second);
            let quota = period.allow_burst(burst);
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
    pub(super) fn verify(&self, req: &Request) -> Result<(), Rejection> {
        let Some(sig) = req.params.get("Signature").filter(|s| !s.is_empty()) else {
            return Err((code::MISSING_SIGNATURE, "Missing signature".into()));
        };
        if req.params.get("PublicKey") != Some(&self.scenario.public_key) {
            return Err((code::UNKNOWN_USER, "User Not Exists".into()));
        }
        // The monitor's JSON body is signed one way only, `UHostIds` concatenated (§8.1): a
        // body signed over the indexed form keys is refused, as a client must not pass by
        // luck here and fail on the real gateway.
        let json_only = matches!(req.auth, Auth::Json(_)) && Verb::parse(req.action_name()) == Some(Verb::Monitor);
        let form_ok = !json_only && signature(&req.params, &self.private_key).eq_ignore_ascii_case(sig);
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
    pub(super) fn dispatch(
        &mut self,
        action: Verb,
        req: &Request,
        plan: &Dice,
        at: (Instant, Instant),
        fault: &mut Option<&'static str>,
    ) -> Result<Map<String, Value>, Rejection> {
        match action {
            Verb::Describe => self.describe(&req.params, plan, at, fault),
            Verb::Monitor => self.monitor(req, at.1, fault),
            Verb::DescribeDisks => self.describe_disks(&req.params, plan, at),
            Verb::DeleteDisk => self.delete_disk(&req.params, at),
            _ => self.lifecycle(action, &req.params, at),
        }
    }

    pub(super) fn describe(
        &mut self,
        p: &Params,
        plan: &Dice,
        (sent, now): (Instant, Instant),
        fault: &mut Option<&'static str>,
    ) -> Result<Map<String, Value>, Rejection> {
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
        // A later page may be answered by a replica that lacks some rows and counts only what
        // it has: nothing in that answer admits the gap (one die per Describe, always rolled).
        let faults = &self.scenario.faults;
        let lagging = self.gw_rng.random::<f64>() < faults.lagging_replica && offset > 0;
        let lacks = if lagging { faults.lagging_share() } else { 0.0 };
        // Named IDs are looked up (in ID order, as the rows are kept), not found by a scan
        // of the world: an ID-filtered Describe costs the same whatever the world's size.
        let candidates: Box<dyn Iterator<Item = &Row>> = if wanted.is_empty() {
            Box::new(self.rows.values())
        } else {
            Box::new(wanted.iter().filter_map(|id| self.rows.get(*id)))
        };
        let matches: Vec<String> = candidates
            .filter(|r| region.is_none_or(|x| *x == r.instance.region))
            .filter(|r| zone.is_none_or(|x| *x == r.instance.zone))
            .filter(|r| wanted.is_empty() || wanted.contains(r.instance.uhost_id.as_str()))
            .filter(|r| r.lag_die >= lacks)
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
            let omit_region = self.scenario.faults.omit_region;
            let Some(row) = self.rows.get_mut(id) else { continue };
            let mut json_row = row_json(row, plan.null_lists);
            if row.region_die < omit_region
                && let Value::Object(fields) = &mut json_row
            {
                fields.remove("Region");
            }
            listed.push(json_row);
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
            *fault = if lagging {
                Some("lagging_replica")
            } else if dropped > 0 {
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
    pub(super) fn looked_terminable(&self, id: &str, sent: Instant) -> bool {
        self.rows.get(id).is_some_and(|row| {
            row.looks
                .iter()
                .filter(|l| l.answered <= sent)
                .max_by_key(|l| l.sent)
                .is_some_and(|l| l.terminable)
        })
    }
}
