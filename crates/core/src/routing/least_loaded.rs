//! `least_loaded`: the usable backend with the least load in tokens per unit of weight, where
//! load combines the engine's waiting queue, its running batch, its KV-cache use and the
//! gateway's own tokens in flight.
//!
//! Use it for LLM pools without much prompt sharing: requests differ a hundredfold in cost, so
//! counting them (least connections) misjudges load; counting their tokens does not. Score:
//!
//! ```text
//! tokens = max(own tokens in flight, (running + waiting) x tokens per request)   [engine fresh]
//!        + queue_weight x waiting x tokens per request                           [engine fresh]
//! score  = tokens x (1 + kv_weight x kv_usage) / (weight x ramp)
//! ```
//!
//! The engine's numbers count only while its report is younger than `max_report_age`
//! (default 2 s); otherwise the score is the gateway's own tokens in flight per weight.
//! Parameters and defaults: `queue_weight` 1.0 (a queued request weighs twice a running one:
//! it has all its latency ahead), `kv_weight` 1.0 (a full cache doubles the load: new work
//! waits for blocks or preempts). Equal scores rotate. The combination follows the load
//! metrics Kubernetes' Gateway API inference extension and llm-d's scorers read (queue depth,
//! KV use), counted in tokens as the issue asks.

use std::time::Duration;

use serde::Deserialize;

use super::registry::{duration, non_negative, positive_age};
use super::signals::{fresh_engine, own_tokens, rank, share, total_tokens, Terms};
use super::{rotation_start, Build, NoCandidate, Policy, PolicyParams, PoolState, Registration};
use crate::fleet::{BackendView, EngineLoad};
use crate::{Decision, Detail, FleetView, Reason, RequestProfile};

/// The name config uses.
const NAME: &str = "least_loaded";

/// Default weight of an engine-queued request relative to a running one.
pub const DEFAULT_QUEUE_WEIGHT: f64 = 1.0;
/// Default weight of KV-cache use.
pub const DEFAULT_KV_WEIGHT: f64 = 1.0;

/// `least_loaded`'s parameters.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeastLoadedParams {
    /// Weight of an engine-queued request relative to a running one (>= 0).
    pub queue_weight: f64,
    /// Weight of KV-cache use (>= 0).
    pub kv_weight: f64,
    /// Engine reports older than this stop counting.
    #[serde(deserialize_with = "duration")]
    pub max_report_age: Duration,
}

impl Default for LeastLoadedParams {
    fn default() -> Self {
        Self {
            queue_weight: DEFAULT_QUEUE_WEIGHT,
            kv_weight: DEFAULT_KV_WEIGHT,
            max_report_age: super::DEFAULT_MAX_REPORT_AGE,
        }
    }
}

impl PolicyParams for LeastLoadedParams {
    fn validate(&self) -> Result<(), String> {
        non_negative("queue_weight", self.queue_weight, DEFAULT_QUEUE_WEIGHT)?;
        non_negative("kv_weight", self.kv_weight, DEFAULT_KV_WEIGHT)?;
        positive_age(self.max_report_age)
    }

    fn build(&self, pool: Build<'_>) -> Box<dyn Policy> {
        Box::new(
            LeastLoaded::new(self.queue_weight, self.kv_weight, self.max_report_age)
                .with_state(pool.state),
        )
    }
}

/// `least_loaded`'s line in the policy table.
pub(crate) const REGISTRATION: Registration = Registration::new::<LeastLoadedParams>(NAME);

/// Least load in tokens.
#[derive(Debug)]
pub struct LeastLoaded {
    queue_weight: f64,
    kv_weight: f64,
    max_report_age: Duration,
    /// The pool's state: its rotation counter breaks ties.
    state: PoolState,
}

impl LeastLoaded {
    /// A policy with these weights, ignoring engine reports older than `max_report_age`.
    pub fn new(queue_weight: f64, kv_weight: f64, max_report_age: Duration) -> Self {
        Self {
            queue_weight,
            kv_weight,
            max_report_age,
            state: PoolState::default(),
        }
    }

    /// The same policy on `state` (a rebuilt pool's).
    pub fn with_state(mut self, state: PoolState) -> Self {
        self.state = state;
        self
    }
}

/// The least-loaded score of one backend (lower is better), with its terms when asked.
pub(crate) fn load_score(
    b: &BackendView,
    engine: Option<&EngineLoad>,
    queue_weight: f64,
    kv_weight: f64,
    terms: Option<&mut Terms>,
) -> f64 {
    let mut tokens = total_tokens(b, engine);
    let (mut queued, mut kv) = (0.0, 0.0);
    if let Some(e) = engine {
        let per = if b.in_flight > 0 {
            own_tokens(b) / f64::from(b.in_flight)
        } else {
            super::signals::DEFAULT_REQUEST_TOKENS
        };
        queued = queue_weight * f64::from(e.waiting) * per;
        kv = f64::from(e.kv_usage).clamp(0.0, 1.0);
        tokens += queued;
    }
    let score = tokens * (1.0 + kv_weight * kv) / share(b);
    if let Some(t) = terms {
        t.push(("own_tokens_in_flight", own_tokens(b)));
        if let Some(e) = engine {
            t.push(("engine_running", f64::from(e.running)));
            t.push(("engine_waiting", f64::from(e.waiting)));
            t.push(("queue_tokens", queued));
            t.push(("kv_usage", kv));
        } else {
            t.push(("engine_report_stale_or_absent", 1.0));
        }
        t.push(("share", share(b)));
    }
    score
}

impl Policy for LeastLoaded {
    fn name(&self) -> &'static str {
        NAME
    }

    fn state(&self) -> Option<&PoolState> {
        Some(&self.state)
    }

    fn decide(&self, _: &RequestProfile, fleet: &FleetView<'_>) -> Result<Decision, NoCandidate> {
        let start = rotation_start(&self.state.rotation, fleet.backends.len());
        let ranked = rank(fleet, start, |b, terms| {
            let engine = fresh_engine(b, self.max_report_age);
            Some((
                load_score(b, engine, self.queue_weight, self.kv_weight, terms),
                0.0,
            ))
        });
        let best = ranked.top.first().map(|(k, _)| k.0).unwrap_or(0.0);
        ranked
            .decision(|_| {
                let load = best.max(0.0).min(u64::MAX as f64) as u64;
                Reason::new(NAME, Detail::new("load {} tokens per weight", &[load]))
            })
            .ok_or(NoCandidate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::signals::DEFAULT_MAX_REPORT_AGE;
    use crate::routing::test_support::{idle, request};
    use crate::BackendId;

    fn policy() -> LeastLoaded {
        LeastLoaded::new(
            DEFAULT_QUEUE_WEIGHT,
            DEFAULT_KV_WEIGHT,
            DEFAULT_MAX_REPORT_AGE,
        )
    }

    fn engine(running: u32, waiting: u32, kv: f32, age_s: u64) -> Option<EngineLoad> {
        Some(EngineLoad {
            running,
            waiting,
            kv_usage: kv,
            kv_capacity_tokens: None,
            age: Duration::from_secs(age_s),
        })
    }

    #[test]
    fn counts_tokens_not_requests() {
        let mut pool = idle(2);
        pool[0].in_flight = 1;
        pool[0].in_flight_tokens = 8000;
        pool[1].in_flight = 4;
        pool[1].in_flight_tokens = 800;
        let d = policy()
            .decide(&request(None), &FleetView::new(&pool, Duration::ZERO))
            .unwrap();
        assert_eq!(d.primary, BackendId(1));
        assert_eq!(d.fallbacks.as_slice(), &[BackendId(0)]);
    }

    #[test]
    fn a_fresh_engine_queue_and_full_cache_count_a_stale_one_does_not() {
        let mut pool = idle(2);
        for b in &mut pool {
            b.in_flight = 2;
            b.in_flight_tokens = 1000;
        }
        pool[0].engine = engine(2, 6, 0.95, 0);
        let p = policy();
        let r = request(None);
        let d = p
            .decide(&r, &FleetView::new(&pool, Duration::ZERO))
            .unwrap();
        assert_eq!(d.primary, BackendId(1), "queue and KV use make 0 busier");
        pool[0].engine = engine(2, 6, 0.95, 30);
        pool[1].in_flight_tokens = 1100;
        let d = p
            .decide(&r, &FleetView::new(&pool, Duration::ZERO))
            .unwrap();
        assert_eq!(d.primary, BackendId(0), "a stale report is ignored");
    }

    #[test]
    fn never_picks_an_unusable_backend_and_explains() {
        let mut pool = idle(3);
        pool[0].usable = false;
        pool[2].in_flight_tokens = 10;
        pool[2].in_flight = 1;
        let fleet = FleetView::new(&pool, Duration::ZERO).explaining(true);
        let d = policy().decide(&request(None), &fleet).unwrap();
        assert_eq!(d.primary, BackendId(1));
        assert_eq!(d.fallbacks.as_slice(), &[BackendId(2)]);
        let e = d.explanation.unwrap();
        assert_eq!(e.candidates.len(), 3);
        assert!(e.candidates[0].score.is_infinite());
        pool.iter_mut().for_each(|b| b.usable = false);
        assert_eq!(
            policy().decide(&request(None), &FleetView::new(&pool, Duration::ZERO)),
            Err(NoCandidate)
        );
    }
}
