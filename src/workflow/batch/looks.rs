//! Looking at instances: batched Describes (one per tick for up to 100 due instances), their
//! answers, the absence rule, and the decision each fresh look leads to.

use super::{
    Activity, ApiError, Arc, Call, Cloud, DESCRIBE_MAX, Decision, DescribeQuery, Duration, Entry, Episode, Event,
    HashMap, Instance, Instant, Next, Observation, Outcome, Phase, Policy, RetryClass, Rng, Runner, Status, Verdict,
    absence, classify, decide, round, throttle_gap,
};

impl<C: Cloud + 'static> Runner<C> {
    /// Start Describe calls for every instance that is due, in chunks of 100.
    pub(super) fn start_polls(&mut self, now: Instant) {
        let horizon = now + self.settings.min_poll() / 2;
        let mut due: Vec<(Instant, usize)> = Vec::new();
        let mut later: Vec<(Instant, usize)> = Vec::new();
        for (i, t) in self.trackers.iter().enumerate() {
            if let Status::Observe {
                due: d,
                describing: false,
                parked,
                ..
            } = t.status
            {
                if parked && d > now {
                    continue;
                }
                if d <= horizon {
                    due.push((d, i));
                } else {
                    later.push((d, i));
                }
            }
        }
        if due.is_empty() {
            return;
        }
        due.sort_unstable();
        later.sort_unstable();
        // Fill the last chunk with the instances due soonest: a free look.
        let room = (DESCRIBE_MAX - due.len() % DESCRIBE_MAX) % DESCRIBE_MAX;
        due.extend(later.into_iter().take(room));
        let idxs: Vec<usize> = due.into_iter().map(|(_, i)| i).collect();
        // With `--region`, an instance whose region we have not seen (a named ID missing from
        // every answer so far) is looked for everywhere: its absence from one region's answer
        // would prove nothing.
        let scope = self.settings.describe_region.clone();
        let (scoped, everywhere): (Vec<usize>, Vec<usize>) = idxs.into_iter().partition(|&i| {
            scope.is_none()
                || self.trackers[i]
                    .row
                    .as_ref()
                    .is_some_and(|r| !r.home_region().is_empty())
        });
        for chunk in scoped.chunks(DESCRIBE_MAX) {
            self.describe(chunk.to_vec(), scope.clone());
        }
        for chunk in everywhere.chunks(DESCRIBE_MAX) {
            self.describe(chunk.to_vec(), None);
        }
    }

    /// One ID-filtered Describe for up to 100 instances.
    pub(super) fn describe(&mut self, idxs: Vec<usize>, region: Option<String>) {
        let ids: Vec<String> = idxs.iter().map(|&i| self.trackers[i].id.clone()).collect();
        let now = Instant::now();
        for &i in &idxs {
            if let Status::Observe { describing, .. } = &mut self.trackers[i].status {
                *describing = true;
            }
            self.trackers[i].waiting_since = Some(now);
        }
        self.count("DescribeCompShareInstance");
        let cloud = Arc::clone(&self.cloud);
        let pace = Arc::clone(&self.pace);
        let owned = idxs.clone();
        let stop_sending = self.stop_sending.clone();
        self.spawn(owned, async move {
            // A look still waiting for the pace when the run halts is not sent: the halt has
            // ended its instances, and a throttled pace (half a request a second at worst)
            // could hold the run long past its deadline for answers nobody reads.
            tokio::select! {
                () = pace.ready() => {}
                () = stop_sending.cancelled() => return Event::Unsent { idxs },
            }
            let sent_at = Instant::now();
            let limit = u32::try_from(ids.len()).unwrap_or(100);
            let query = DescribeQuery {
                region,
                ids,
                limit,
                ..DescribeQuery::default()
            };
            let result = cloud.describe(&query).await.map(|p| {
                let total = p.total_count.map(|t| usize::try_from(t.max(0)).unwrap_or(usize::MAX));
                (p.uhost_set, total)
            });
            Event::Described { idxs, sent_at, result }
        });
    }

    /// A look the halt kept from leaving: its instances are (or will be) ended by the halt.
    pub(super) fn on_unsent(&mut self, idxs: &[usize]) {
        self.look_ended(idxs, Instant::now());
    }

    /// A look at `idxs` is over (answered, failed or never sent); it left the queue at `left`.
    fn look_ended(&mut self, idxs: &[usize], left: Instant) {
        for &i in idxs {
            if let Status::Observe { describing, .. } = &mut self.trackers[i].status {
                *describing = false;
            }
            self.left_queue(i, left);
        }
    }

    pub(super) fn on_described(
        &mut self,
        idxs: &[usize],
        sent_at: Instant,
        result: Result<(Vec<Instance>, Option<usize>), ApiError>,
    ) {
        let now = Instant::now();
        self.look_ended(idxs, sent_at);
        let (rows, total) = match result {
            Ok(answer) => answer,
            Err(e) => return self.on_describe_error(idxs, &e, now, sent_at),
        };
        self.pace.succeeded(sent_at);
        // An answer that matched more rows than it carries admits it left some out: absence
        // from it proves nothing (and says the gateway drops rows; see `absence`).
        let missing = total.map_or(0, |t| t.saturating_sub(rows.len()));
        if missing > 0 {
            self.evidence.phantom += missing as u64;
            tracing::debug!(carried = rows.len(), total = ?total, "a Describe answer left rows out");
        }
        let mut by_id: HashMap<String, Instance> = rows.into_iter().map(|r| (r.uhost_id.clone(), r)).collect();
        for &i in idxs {
            let Status::Observe { fresh_after, .. } = self.trackers[i].status else {
                continue;
            };
            if sent_at < fresh_after {
                continue; // older than the instance's last change: does not count
            }
            let row = by_id.remove(&self.trackers[i].id);
            self.trackers[i].look_backoff = None;
            if row.is_none() && missing > 0 {
                // Not a look at all: ask again soon.
                let gap = self.settings.min_poll();
                self.schedule(i, now + gap);
                continue;
            }
            // The look is as old as the Describe's sending, not its processing.
            self.trackers[i].seen_at = sent_at;
            self.observe(i, row, now);
        }
    }

    /// Count one look at instance `i` towards the absence rule; `true` if it is now
    /// confirmed gone (or was listed), `false` if it needs another look first (scheduled).
    pub(super) fn absence_confirmed(&mut self, i: usize, listed: bool, now: Instant) -> bool {
        let t = &mut self.trackers[i];
        if listed {
            if t.absent_looks > 0 {
                // It was there all along: those answers lied.
                self.evidence.phantom += u64::from(t.absent_looks);
                tracing::debug!(id = %t.id, looks = t.absent_looks, "listed again after answers without it");
                t.absent_looks = 0;
            }
            self.evidence.present += 1;
            return true;
        }
        t.absent_looks += 1;
        if t.absent_looks == 1 {
            t.absent_since = t.seen_at;
        }
        let expected = t.mem.phase == Phase::TerminateSent;
        let span = t.seen_at.duration_since(t.absent_since);
        let timing = absence::Timing {
            min_poll: self.settings.min_poll(),
            poll_interval: self.settings.poll_interval,
        };
        match absence::judge(expected, t.absent_looks, span, self.evidence, timing) {
            Verdict::Gone => true,
            Verdict::LookAgain(gap) => {
                let looks = t.absent_looks;
                let id = t.id.clone();
                tracing::debug!(id = %id, looks, "not listed; confirming it is gone");
                self.schedule(i, now + gap);
                let activity = Activity::Waiting {
                    state: String::new(),
                    what: "not listed; confirming it is gone",
                };
                self.ctl.observer.activity(&id, &activity);
                false
            }
        }
    }

    pub(super) fn on_describe_error(&mut self, idxs: &[usize], e: &ApiError, now: Instant, sent_at: Instant) {
        let class = classify(e, &self.settings.lock_codes);
        if class == RetryClass::Throttled {
            self.pace.throttled(sent_at);
            self.throttled += 1;
        } else {
            self.pace.succeeded(sent_at);
        }
        // Each instance has its own budget of failed looks (reset by a good one): a burst of
        // failures across many small Describes must not use up everyone's retries at once.
        let mut logged = false;
        for &i in idxs {
            if !matches!(self.trackers[i].status, Status::Observe { .. }) {
                continue;
            }
            let next = if class == RetryClass::Fatal {
                Next::GiveUp { waited: Duration::ZERO }
            } else if class == RetryClass::Throttled {
                // Throttling says "slower", not "broken": the pace takes care of that, so look
                // again in 1-2 s without spending the instance's failure budget (a Describe
                // carries up to 100 instances; one throttled answer must not count against
                // each of them). The instance timeout still bounds the wait.
                Next::Retry(throttle_gap(&mut self.rng))
            } else {
                let episode = Episode::refused(&mut self.trackers[i].look_backoff, now);
                Policy::transient(self.settings.poll_interval).next(episode, now, self.rng.random())
            };
            match next {
                Next::Retry(d) => {
                    if !logged {
                        tracing::warn!("{e}; looking again in {}", humantime::format_duration(round(d)));
                        logged = true;
                    }
                    if let Status::Observe { due, .. } = &mut self.trackers[i].status {
                        *due = now + d;
                    }
                }
                Next::GiveUp { waited } => {
                    tracing::error!(id = %self.trackers[i].id, "{e}");
                    let error = if class == RetryClass::Fatal {
                        e.to_string()
                    } else {
                        format!(
                            "gave up after {} of failed looks: {e}",
                            humantime::format_duration(round(waited))
                        )
                    };
                    self.fail(i, error, e.request_id());
                }
            }
        }
    }

    pub(super) fn observe(&mut self, i: usize, row: Option<Instance>, now: Instant) {
        // Absence is confirmed, never assumed: until then the instance is still watched.
        if !self.absence_confirmed(i, row.is_some(), now) {
            return;
        }
        if let (Some(r), Some(scope)) = (&row, &self.settings.describe_region)
            && !r.home_region().is_empty()
            && r.home_region() != scope
        {
            // A named ID the selection could not see turned up in another region: the user's
            // scope says not to touch it, and reporting it gone would be a lie.
            let error = format!(
                "it is in {} ({}), outside --region {scope}: not touched",
                r.home_region(),
                r.zone
            );
            self.trackers[i].row = Some(r.clone());
            return self.fail(i, error, None);
        }
        let obs = match &row {
            None => Observation::Absent,
            Some(r) => Observation::Present {
                state: r.state.clone(),
                spot: r.is_spot(),
            },
        };
        let t = &mut self.trackers[i];
        if let Some(refusal) = t.refused.take() {
            let unchanged = match (&obs, &t.decided_on) {
                (Observation::Present { state, .. }, Some(before)) => state == before,
                _ => false,
            };
            if unchanged {
                tracing::error!(id = %t.id, "{refusal}");
                return self.fail(i, refusal.to_string(), refusal.request_id());
            }
        }
        // The guard runs before the first call of *this* run, even for an instance a crashed
        // run had already called: protections may have changed since.
        let first_call = !t.acted;
        if let Some(r) = row {
            t.row = Some(r);
        }
        let since = now.duration_since(t.last_answer);
        let before = t.mem.phase;
        let (mem, decision) = decide(t.mem, &obs, since, &self.rules);
        t.mem = mem;
        let state = match &obs {
            Observation::Absent => None,
            Observation::Present { state, .. } => Some(state.as_str().to_owned()),
        };
        tracing::debug!(id = %t.id, state = state.as_deref().unwrap_or("absent"), ?decision, "observed");
        let entry = Entry::Decision {
            id: t.id.clone(),
            state: state.clone(),
            phase: before,
            decision: format!("{decision:?}"),
        };
        self.journal(&entry);
        match decision {
            Decision::Stop { .. } | Decision::Terminate if self.halt.is_some() => {
                let phase = self.trackers[i].mem.phase;
                self.finish(i, Outcome::Interrupted { phase });
            }
            // A look answered after the instance's time ran out (it was on its way at the
            // limit) starts no new call; news that it is gone is still taken.
            Decision::Stop { .. } | Decision::Terminate if now >= self.limit(i) => {
                let phase = self.trackers[i].mem.phase;
                self.finish(i, Outcome::TimedOut { phase });
            }
            Decision::Stop { force } => {
                if first_call && let Some(reason) = self.guard_refuses(i) {
                    return self.finish(i, Outcome::Skipped { reason });
                }
                self.send(i, Call::Stop, force);
            }
            Decision::Terminate => {
                if first_call && let Some(reason) = self.guard_refuses(i) {
                    return self.finish(i, Outcome::Skipped { reason });
                }
                self.send(i, Call::Terminate, false);
            }
            Decision::Wait(what) => {
                let age = now.duration_since(self.trackers[i].phase_since);
                let gap = self.poll_gap(age);
                self.schedule(i, now + gap);
                let activity = Activity::Waiting {
                    state: state.unwrap_or_default(),
                    what,
                };
                let id = self.trackers[i].id.clone();
                self.ctl.observer.activity(&id, &activity);
            }
            Decision::Done(gone) => {
                let mut outcome = Outcome::from(gone);
                if let Outcome::Terminated { in_recycle, .. } = &mut outcome {
                    in_recycle.clone_from(&self.trackers[i].in_recycle);
                }
                self.finish(i, outcome);
            }
            Decision::Fail(refusal) => self.fail(i, refusal.to_string(), None),
        }
    }

    pub(super) fn guard_refuses(&self, i: usize) -> Option<String> {
        let guard = self.ctl.guard.as_ref()?;
        self.trackers[i].row.as_ref().and_then(guard)
    }

    /// A sixth of the time spent in the phase, between `min_poll` and `poll_interval`, ±10%.
    pub(super) fn poll_gap(&mut self, age: Duration) -> Duration {
        let base = (age / 6).clamp(self.settings.min_poll(), self.settings.poll_interval);
        base.mul_f64(self.rng.random_range(0.9..1.1))
    }

    pub(super) fn schedule(&mut self, i: usize, due: Instant) {
        self.trackers[i].status = Status::Observe {
            due,
            fresh_after: Instant::now(),
            describing: false,
            parked: false,
        };
    }

    /// Like `schedule`, for a retry time that must be respected (see [`Status::Observe`]).
    pub(super) fn park(&mut self, i: usize, due: Instant) {
        self.trackers[i].status = Status::Observe {
            due,
            fresh_after: Instant::now(),
            describing: false,
            parked: true,
        };
    }
}
