//! The virtual-time fleet: a discrete-event driver that plays a [`Workload`] against N
//! simulated engines through a `switchyard_core` [`Policy`], the same code the gateway runs.
//!
//! Three kinds of event, processed in time order (ties: engine steps, then metric scrapes,
//! then arrivals; each kind in fleet or workload order, so a run is a pure function of its
//! inputs):
//!
//! - an **arrival**: the driver builds the request's [`RequestProfile`] and a [`FleetView`] (one
//!   [`BackendView`] per engine), asks the policy for a [`Decision`](switchyard_core::Decision),
//!   and submits the request to the first backend in the decision's order that accepts it. An
//!   idle engine starts a step at once. If no backend is usable the request waits at the
//!   gateway, first in first out, and is decided again whenever a request completes.
//! - an **engine step's end**: its events are delivered (first tokens, completions, preemptions)
//!   and the engine starts its next step if it has work.
//! - a **metrics scrape**, every `metrics_interval_s`: the driver keeps each engine's last
//!   [`EngineMetrics`] snapshot, so whatever it feeds the policy from engine metrics (queue,
//!   KV use and size, GPU gauges, each with its age) is as stale as a gateway's scrape would be.
//!
//! The driver's own signals are the gateway's, updated at the same moments (dispatch, first
//! token, completion) and always current: `in_flight`, `in_flight_tokens` (prompt plus max
//! output of requests dispatched and not done), `prefill_tokens` (prompt tokens of requests
//! not yet past their first token), and `latency`, peak EWMAs
//! ([`PeakEwma`](switchyard_core::PeakEwma), 10 s decay) of TTFT, end-to-end latency and time
//! per output token measured from dispatch. A policy sees exactly what it would see in
//! production.
//!
//! Arrivals are open loop by default (each request at its workload time); with
//! [`Arrivals::ClosedLoop`] a chat session's next turn waits for the previous answer, as a
//! user does, and [`Arrivals::Users`] adds a fixed number of users running sessions back to
//! back (see [`run_arrivals`] and `fleet/arrivals.rs`).
//!
//! Time is `f64` seconds from the start of the workload; the policy sees it as a `Duration` in
//! `FleetView::now`. There is no clock, no sleep and no socket.

use std::time::Duration;

use switchyard_core::prefix::block_hashes;
use switchyard_core::{
    BackendId, BackendView, EndpointKind, FleetView, Policy, PoolMember, RequestProfile,
    SessionSource,
};

use crate::engine::Engine;
use crate::metrics::EngineMetrics;
use crate::report::{
    summarize, BackendReport, InFlightImbalance, Outcome, RequestRecord, RunReport,
};
use crate::request::{EngineEvent, RequestId, SimRequest};
use crate::workload::{Workload, WorkloadRequest};

/// A request that arrived and is not yet on a backend.
struct Pending {
    index: usize,
    profile: RequestProfile,
    tokens: Vec<u32>,
}

/// The driver's state during a run.
struct Driver<'a> {
    config: &'a FleetConfig,
    workload: &'a Workload,
    policy: Box<dyn Policy>,
    engines: Vec<Engine>,
    /// End of each engine's step in progress, `INFINITY` when idle.
    step_end: Vec<f64>,
    /// Events of each engine's step in progress, delivered at `step_end`.
    events: Vec<Vec<EngineEvent>>,
    in_flight: Vec<u32>,
    /// The gateway-side signals of each backend (tokens in flight, prefill queue, latency).
    live: Vec<Live>,
    dispatched: Vec<u64>,
    /// Last scraped metrics of each engine.
    scraped: Vec<EngineMetrics>,
    views: Vec<BackendView>,
    /// Requests waiting at the gateway for a backend with room.
    queue: Lobby<'a>,
    records: Vec<RequestRecord>,
    /// Arrivals still to come.
    schedule: Schedule,
    imbalance: InFlightImbalance,
    /// The same per unit of each backend's weight (its fair share on a mixed fleet).
    weighted_imbalance: InFlightImbalance,
}

/// Plays `workload` against the fleet with the policy `config.policy` names, and reports
/// what happened. Arrivals are open loop (every request at its workload time).
pub fn run(config: &FleetConfig, workload: &Workload) -> Result<RunReport, FleetError> {
    run_with(config, workload, build_policy(config)?)
}

/// Like [`run`], with arrivals timed as `arrivals` says: [`Arrivals::ClosedLoop`] sends a
/// chat session's later turns a think time after the previous answer ends, and
/// [`Arrivals::Users`] adds a fixed number of users, so a faster fleet serves more turns per
/// second (its output throughput is then a measure of capacity).
pub fn run_arrivals(
    config: &FleetConfig,
    workload: &Workload,
    arrivals: Arrivals,
) -> Result<RunReport, FleetError> {
    run_with_arrivals(config, workload, build_policy(config)?, arrivals)
}

/// The policy `config.policy` names, built for the fleet's backends.
fn build_policy(config: &FleetConfig) -> Result<Box<dyn Policy>, FleetError> {
    config.policy.validate()?;
    let members: Vec<PoolMember> = config
        .backends
        .iter()
        .map(|b| PoolMember {
            name: b.name.clone(),
            weight: b.weight.max(1),
            ..Default::default()
        })
        .collect();
    Ok(config.policy.build(&members, config.seed))
}

/// Plays `workload` against the fleet with an already built policy (one not nameable in a
/// [`PolicySpec`](switchyard_core::PolicySpec), such as a baseline or a probe in a test). `config.policy` is not used.
/// Arrivals are open loop.
pub fn run_with(
    config: &FleetConfig,
    workload: &Workload,
    policy: Box<dyn Policy>,
) -> Result<RunReport, FleetError> {
    run_with_arrivals(config, workload, policy, Arrivals::OpenLoop)
}

/// Like [`run_with`], with requests that find every backend full waiting in core's admission
/// queue as `admission` sets it up (priorities, tenants, timeouts) instead of first come first
/// served. Only backends with a `max_in_flight` or `max_waiting` are ever full.
pub fn run_admitted(
    config: &FleetConfig,
    workload: &Workload,
    policy: Box<dyn Policy>,
    admission: &Admission,
) -> Result<RunReport, FleetError> {
    run_inner(
        config,
        workload,
        policy,
        Arrivals::OpenLoop,
        Some(admission),
    )
}

/// Plays `workload` against the fleet with an already built policy, its arrivals timed as
/// `arrivals` says.
pub fn run_with_arrivals(
    config: &FleetConfig,
    workload: &Workload,
    policy: Box<dyn Policy>,
    arrivals: Arrivals,
) -> Result<RunReport, FleetError> {
    run_inner(config, workload, policy, arrivals, None)
}

fn run_inner(
    config: &FleetConfig,
    workload: &Workload,
    policy: Box<dyn Policy>,
    arrivals: Arrivals,
    admission: Option<&Admission>,
) -> Result<RunReport, FleetError> {
    if config.backends.is_empty() {
        return Err(FleetError::NoBackends);
    }
    if !(config.metrics_interval_s.is_finite() && config.metrics_interval_s > 0.0) {
        return Err(FleetError::BadInterval);
    }
    let mut last = 0.0;
    for (i, r) in workload.requests.iter().enumerate() {
        if !(r.arrival.is_finite() && r.arrival >= last) {
            return Err(FleetError::BadArrival(i));
        }
        last = r.arrival;
    }
    let mut engines = Vec::with_capacity(config.backends.len());
    for b in &config.backends {
        if b.max_in_flight == Some(0) || b.max_waiting == Some(0) {
            return Err(FleetError::ZeroCap(b.name.clone()));
        }
        engines.push(
            Engine::new(b.engine.clone()).map_err(|source| FleetError::Engine {
                name: b.name.clone(),
                source,
            })?,
        );
    }
    let n = engines.len();
    let mut d = Driver {
        config,
        workload,
        policy,
        scraped: engines.iter().map(|e| e.metrics(0.0)).collect(),
        engines,
        step_end: vec![f64::INFINITY; n],
        events: vec![Vec::new(); n],
        in_flight: vec![0; n],
        live: vec![Live::default(); n],
        dispatched: vec![0; n],
        views: Vec::with_capacity(n),
        queue: Lobby::new(admission),
        records: workload
            .requests
            .iter()
            .enumerate()
            .map(|(index, r)| RequestRecord {
                index,
                session: r.session,
                backend: None,
                arrival: r.arrival,
                dispatched: None,
                ttft: None,
                e2e: None,
                prompt_tokens: r.prompt.tokens(),
                cached_prompt_tokens: 0,
                output_tokens: 0,
                preemptions: 0,
                outcome: Outcome::Unfinished,
            })
            .collect(),
        schedule: Schedule::new(workload, arrivals),
        imbalance: InFlightImbalance::default(),
        weighted_imbalance: InFlightImbalance::weighted(config.backends.iter().map(|b| b.weight)),
    };
    d.run();
    Ok(d.report())
}

impl Driver<'_> {
    fn run(&mut self) {
        let interval = self.config.metrics_interval_s;
        let mut scrapes = 1u64;
        let mut next_scrape = interval;
        let mut idle_scrapes = 0;
        loop {
            let ta = self.schedule.peek();
            let (engine, te) = self.step_end.iter().copied().enumerate().fold(
                (0, f64::INFINITY),
                |best, (i, t)| if t < best.1 { (i, t) } else { best },
            );
            if ta.is_infinite() && te.is_infinite() {
                // Only requests queued at the gateway are left. A fresh scrape shows every
                // engine idle; if even that does not place them, nothing will.
                if self.queue.is_empty() || idle_scrapes > 1 {
                    break;
                }
                idle_scrapes += 1;
            } else {
                idle_scrapes = 0;
            }
            if te <= next_scrape && te <= ta {
                self.end_step(engine, te);
            } else if next_scrape <= ta {
                for (s, e) in self.scraped.iter_mut().zip(&self.engines) {
                    *s = e.metrics(next_scrape);
                }
                self.drain_queue(next_scrape);
                scrapes += 1;
                next_scrape = scrapes as f64 * interval;
            } else if let Some(index) = self.schedule.pop() {
                self.arrive(index, ta);
            }
        }
        // Nothing in flight can free a backend any more: whatever still queues is refused,
        // and so are the later turns of its session (closed loop), which wait for it.
        for index in self.queue.drain() {
            self.records[index].outcome = Outcome::Rejected;
            for i in self.schedule.orphans(index) {
                self.records[i].outcome = Outcome::Rejected;
            }
        }
    }

    /// Decides again for requests queued at the gateway, in the queue's order, until one finds
    /// no usable backend (then none behind it would either: usability does not depend on the
    /// request). The admission queue first answers those past their timeout, and is only
    /// taken from while some backend has room.
    fn drain_queue(&mut self, t: f64) {
        for index in self.queue.expire(t) {
            self.reject(index, t);
        }
        loop {
            let allowance = self
                .queue
                .peek(t)
                .map_or_else(Default::default, |i| self.queue.allowance(i));
            if self.queue.is_admission() && !self.room(t, allowance) {
                break;
            }
            let Some(p) = self.queue.pop(t) else { break };
            if let Some(p) = self.dispatch(p, t) {
                let max_output = self.workload.requests[p.index].max_output_tokens;
                for index in self.queue.unpop(p, max_output, t) {
                    self.reject(index, t);
                }
                break;
            }
        }
    }

    /// Whether some backend has room now for a request that may not use `reserve` of its
    /// concurrency cap: under that cap, its last scraped queue under its threshold (the
    /// gateway admission stage's test).
    fn room(&self, t: f64, allowance: Allowance) -> bool {
        (0..self.config.backends.len()).any(|i| self.view(i, t, allowance).usable)
    }

    /// Backend `i` as the gateway sees it at `t` for a request that may not use `reserve` of
    /// its concurrency cap.
    fn view(&self, i: usize, t: f64, allowance: Allowance) -> BackendView {
        let b = &self.config.backends[i];
        let in_flight = self.in_flight[i];
        // All but one of the cap at most.
        let reserve = b
            .max_in_flight
            .map_or(0, |cap| allowance.reserve.min(cap.saturating_sub(1)));
        let mut view = backend_view(
            i,
            b,
            (
                in_flight.saturating_add(reserve),
                self.live[i].prefill_tokens,
            ),
            &self.scraped[i],
            t,
            allowance.cap_only,
        );
        let live = &self.live[i];
        view.in_flight = in_flight;
        view.in_flight_tokens = live.in_flight_tokens;
        view.prefill_tokens = live.prefill_tokens;
        view.latency = live.latency();
        view
    }

    /// Delivers engine `i`'s step events at `t` and starts its next step.
    fn end_step(&mut self, i: usize, t: f64) {
        let mut completed = false;
        let mut prefilled = false;
        for ev in self.events[i].drain(..) {
            match ev {
                EngineEvent::Admitted { id, cached_tokens } => {
                    let r = &mut self.records[id.0 as usize];
                    if r.preemptions == 0 {
                        r.cached_prompt_tokens = cached_tokens;
                    }
                }
                EngineEvent::Token { id, index: 0, .. } => {
                    let r = &mut self.records[id.0 as usize];
                    if r.ttft.is_none() {
                        r.ttft = Some(t - r.arrival);
                        self.queue
                            .track(id.0 as usize, Moment::Prefilled(r.prompt_tokens));
                        prefilled = true;
                        let live = &mut self.live[i];
                        live.prefill_tokens = live
                            .prefill_tokens
                            .saturating_sub(u64::from(r.prompt_tokens));
                        let sent = r.dispatched.unwrap_or(r.arrival);
                        live.ttft.observe(t - sent, Duration::from_secs_f64(t));
                    }
                }
                EngineEvent::Token { .. } => {}
                EngineEvent::Finished { id, output_tokens } => {
                    let max_output = self.workload.requests[id.0 as usize].max_output_tokens;
                    let r = &mut self.records[id.0 as usize];
                    r.e2e = Some(t - r.arrival);
                    r.output_tokens = output_tokens;
                    r.outcome = Outcome::Completed;
                    self.queue.track(id.0 as usize, Moment::Left);
                    self.in_flight[i] -= 1;
                    let live = &mut self.live[i];
                    live.in_flight_tokens = live
                        .in_flight_tokens
                        .saturating_sub(u64::from(r.prompt_tokens) + u64::from(max_output));
                    let now = Duration::from_secs_f64(t);
                    let sent = r.dispatched.unwrap_or(r.arrival);
                    live.e2e.observe(t - sent, now);
                    if let (Some(ttft), true) = (r.ttft, output_tokens > 1) {
                        let decode = t - (r.arrival + ttft);
                        live.tpot
                            .observe(decode / f64::from(output_tokens - 1), now);
                    }
                    if let Some((next, at)) = self.schedule.ended(id.0 as usize, t) {
                        self.records[next].arrival = at;
                    }
                    completed = true;
                }
                EngineEvent::Preempted { id } => self.records[id.0 as usize].preemptions += 1,
            }
        }
        if completed {
            self.imbalance.update(t, &self.in_flight);
            self.weighted_imbalance.update(t, &self.in_flight);
        }
        self.start_step(i, t);
        // A first token can bring a tenant back within its prefill share.
        if completed || (prefilled && self.queue.shares_on()) {
            self.drain_queue(t);
        }
    }

    /// Starts engine `i`'s next step at `t` if it has work.
    fn start_step(&mut self, i: usize, t: f64) {
        self.step_end[i] = match self.engines[i].step_into(t, &mut self.events[i]) {
            Some(stats) => stats.end,
            None => f64::INFINITY,
        };
    }

    /// Request `index` arrives at `t`.
    fn arrive(&mut self, index: usize, t: f64) {
        let req = &self.workload.requests[index];
        let mut text = String::new();
        let mut tokens = Vec::new();
        req.prompt.render_tokens(&mut text, &mut tokens);
        let profile = self.profile(req, text);
        let p = Pending {
            index,
            profile,
            tokens,
        };
        // Behind others already queued, or queued itself if no backend is usable or its
        // tenant is at its prefill share.
        let max_output = req.max_output_tokens;
        let allowance = self.queue.allowance(index);
        self.queue.track(index, Moment::Arrived);
        let wait = if !self.queue.is_empty()
            || (self.queue.is_admission() && !self.room(t, allowance))
            || !self.queue.within_share(index)
        {
            Some(p)
        } else {
            self.dispatch(p, t)
        };
        if let Some(p) = wait {
            for index in self.queue.push(p, max_output, t).refused {
                self.reject(index, t);
            }
            // Those ahead may be held by their shares while this one may go.
            if self.queue.shares_on() {
                self.drain_queue(t);
            }
        }
    }

    /// The profile the gateway would build for this request. Built directly rather than
    /// parsed from a JSON body, so the prompt is exactly the text the engine tokenizes (a chat
    /// template would add role markers).
    fn profile(&self, req: &WorkloadRequest, prompt: String) -> RequestProfile {
        let session_key = req.session.map(|s| format!("{s:016x}"));
        RequestProfile {
            kind: EndpointKind::ChatCompletions,
            model: self.config.model.clone(),
            model_span: 0..0,
            stream: true,
            include_usage: true,
            user: None,
            session_source: session_key.as_ref().map(|_| SessionSource::Header),
            session_key,
            prompt_blocks: block_hashes(&prompt),
            prompt,
            estimated_input_tokens: req.prompt.tokens(),
            max_output_tokens: Some(req.max_output_tokens),
        }
    }

    /// Decides and submits. Gives the request back if no backend is usable now.
    #[must_use]
    fn dispatch(&mut self, p: Pending, t: f64) -> Option<Pending> {
        let allowance = self.queue.allowance(p.index);
        self.views.clear();
        for i in 0..self.config.backends.len() {
            let view = self.view(i, t, allowance);
            self.views.push(view);
        }
        let fleet = FleetView::new(&self.views, Duration::from_secs_f64(t));
        let Ok(decision) = self.policy.decide(&p.profile, &fleet) else {
            return Some(p);
        };
        let req = &self.workload.requests[p.index];
        let prompt_len = p.tokens.len() as u32;
        let target = decision.attempts().map(BackendId::index).find(|&i| {
            self.engines[i]
                .check(prompt_len, req.max_output_tokens)
                .is_ok()
        });
        let Some(i) = target else {
            self.reject(p.index, t);
            return None;
        };
        let submitted = self.engines[i].submit(SimRequest {
            id: RequestId(p.index as u64),
            prompt_tokens: p.tokens,
            max_output_tokens: req.max_output_tokens,
            output_seed: req.output_seed,
            priority: self.queue.engine_priority(p.index),
        });
        if submitted.is_err() {
            self.reject(p.index, t);
            return None;
        }
        let r = &mut self.records[p.index];
        r.backend = Some(i as u32);
        r.dispatched = Some(t);
        self.queue.track(p.index, Moment::Dispatched(prompt_len));
        self.in_flight[i] += 1;
        self.live[i].in_flight_tokens += u64::from(prompt_len) + u64::from(req.max_output_tokens);
        self.live[i].prefill_tokens += u64::from(prompt_len);
        self.dispatched[i] += 1;
        self.imbalance.update(t, &self.in_flight);
        self.weighted_imbalance.update(t, &self.in_flight);
        if self.step_end[i].is_infinite() {
            self.start_step(i, t);
        }
        None
    }

    /// No backend takes request `index`: it is refused at `t`, and its session's next turn
    /// (closed loop) is sent a think time later.
    fn reject(&mut self, index: usize, t: f64) {
        self.records[index].outcome = Outcome::Rejected;
        self.queue.track(index, Moment::Left);
        if let Some((next, at)) = self.schedule.ended(index, t) {
            self.records[next].arrival = at;
        }
    }

    fn report(self) -> RunReport {
        let end = self
            .records
            .iter()
            .filter_map(|r| r.e2e.map(|e| r.arrival + e))
            .fold(0.0, f64::max);
        let backends: Vec<BackendReport> = self
            .config
            .backends
            .iter()
            .zip(&self.engines)
            .zip(&self.dispatched)
            .map(|((b, e), &requests)| {
                let m = e.metrics(end);
                BackendReport {
                    name: b.name.clone(),
                    profile: b.engine.name.clone(),
                    requests,
                    busy_fraction: if end > 0.0 {
                        m.busy_seconds_total / end
                    } else {
                        0.0
                    },
                    final_metrics: m,
                }
            })
            .collect();
        let summary = summarize(
            &self.records,
            &backends,
            &self.imbalance,
            &self.weighted_imbalance,
        );
        RunReport {
            policy: self.config.policy.name().to_owned(),
            seed: self.config.seed,
            requests: self.records,
            backends,
            summary,
        }
    }
}

mod arrivals;
mod lobby;
mod spec;
mod view;

pub use arrivals::Arrivals;
use arrivals::Schedule;
pub use lobby::{Admission, Class};
use lobby::{Allowance, Lobby, Moment};
pub use spec::{BackendSpec, FleetConfig, FleetError};
use view::{backend_view, Live};

#[cfg(test)]
mod tests;
