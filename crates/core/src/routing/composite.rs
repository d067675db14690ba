//! `composite`: a weighted sum of scorers chosen in config; the lowest total wins.
//!
//! Use it when no single signal should decide: e.g. prefix affinity tempered by queue depth and
//! latency on a mixed fleet, or cost with a latency term. Each scorer maps a candidate to 0..1
//! (0 best), so weights are comparable:
//!
//! | scorer | value |
//! |---|---|
//! | `prefix` | share of the prompt the candidate would have to prefill (prefix index) |
//! | `queue` | token load ([`super::LeastLoaded`] without KV) / the highest among candidates |
//! | `kv` | KV-cache use from a fresh engine report (0 when stale or absent) |
//! | `latency` | expected latency ([`super::PeakEwmaP2c`]'s) / the highest among candidates |
//! | `cost` | the request's price / the highest among candidates |
//! | `gpu` | GPU utilization from a fresh report (0 when stale or absent) |
//!
//! Defaults: `prefix` 1.0, `queue` 1.0, `kv` 0.5, `latency` 0.25 (latency averages are noisy
//! between alike replicas: a tie-breaker more than a signal there), `cost` 0, `gpu` 0. A weight of
//! 0 turns a scorer off (with `prefix` off, no prefix index is kept). Equal totals rotate.
//! Reports older than `max_report_age` (2 s) stop counting. Source: the filter-and-weighted-
//! scorer design of llm-d's inference scheduler and the Gateway API inference extension.

use std::time::Duration;

use serde::Deserialize;
use smallvec::SmallVec;

use super::cost::request_price;
use super::least_loaded::load_score;
use super::prefix_aware::{cached_tokens, capacity_blocks, prompt_tokens};
use super::signals::{expected_latency, fresh_engine, fresh_gpu, mean_expected_latency, rank};
use super::registry::{duration, non_negative, positive_age};
use super::{rotation_start, Build, NoCandidate, Policy, PolicyParams, PoolState, Registration};
use crate::fleet::{PoolMember, Price};
use crate::prefix::PrefixIndex;
use crate::{Decision, FleetView, Reason, RequestProfile};

/// The name config uses.
const NAME: &str = "composite";

/// `composite`'s parameters.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompositeParams {
    /// The scorers' weights (`weights: {prefix: 1, queue: 1}`; scorers not named keep their
    /// defaults).
    pub weights: CompositeWeights,
    /// Engine and GPU reports older than this stop counting.
    #[serde(deserialize_with = "duration")]
    pub max_report_age: Duration,
}

impl Default for CompositeParams {
    fn default() -> Self {
        Self {
            weights: CompositeWeights::default(),
            max_report_age: super::DEFAULT_MAX_REPORT_AGE,
        }
    }
}

impl PolicyParams for CompositeParams {
    fn validate(&self) -> Result<(), String> {
        let named = self.weights.named();
        for (name, w) in named {
            non_negative(name, w, 0.0)?;
        }
        if named.iter().all(|(_, w)| *w == 0.0) {
            return Err(
                "composite needs at least one scorer weight above 0 (prefix, queue, kv, latency, cost, gpu)".into(),
            );
        }
        positive_age(self.max_report_age)
    }

    fn build(&self, pool: Build<'_>) -> Box<dyn Policy> {
        Box::new(
            Composite::new(self.weights, pool.members, self.max_report_age).with_state(pool.state),
        )
    }
}

/// `composite`'s line in the policy table.
pub(crate) const REGISTRATION: Registration = Registration::new::<CompositeParams>(NAME);

/// The weight of each scorer of [`Composite`].
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompositeWeights {
    /// Share of the prompt to prefill.
    pub prefix: f64,
    /// Token load.
    pub queue: f64,
    /// KV-cache use.
    pub kv: f64,
    /// Expected latency.
    pub latency: f64,
    /// Price of the request.
    pub cost: f64,
    /// GPU utilization.
    pub gpu: f64,
}

impl Default for CompositeWeights {
    fn default() -> Self {
        Self {
            prefix: 1.0,
            queue: 1.0,
            kv: 0.5,
            latency: 0.25,
            cost: 0.0,
            gpu: 0.0,
        }
    }
}

impl CompositeWeights {
    /// The scorers' names and weights, in a fixed order.
    pub fn named(&self) -> [(&'static str, f64); 6] {
        [
            ("prefix", self.prefix),
            ("queue", self.queue),
            ("kv", self.kv),
            ("latency", self.latency),
            ("cost", self.cost),
            ("gpu", self.gpu),
        ]
    }
}

/// Weighted scorers.
#[derive(Debug)]
pub struct Composite {
    weights: CompositeWeights,
    prices: Vec<Option<Price>>,
    /// The pool's state: its prefix index (used when `prefix` weighs) and the rotation
    /// counter that breaks ties.
    state: PoolState,
    max_report_age: Duration,
}

impl Composite {
    /// A policy for a pool with these members.
    pub fn new(
        weights: CompositeWeights,
        members: &[PoolMember],
        max_report_age: Duration,
    ) -> Self {
        Self {
            weights,
            prices: members.iter().map(|m| m.price).collect(),
            state: PoolState::default(),
            max_report_age,
        }
    }

    /// The same policy on `state` (a rebuilt pool's). Without the `prefix` scorer it keeps no
    /// prefix index, so it drops the one it was handed rather than pass on a stale one.
    pub fn with_state(mut self, mut state: PoolState) -> Self {
        if self.weights.prefix <= 0.0 {
            state.prefix_index = PrefixIndex::new();
        }
        self.state = state;
        self
    }
}

/// Raw signals of one candidate before normalization.
#[derive(Clone, Copy, Default)]
struct Raw {
    uncached_share: f64,
    load: f64,
    kv: f64,
    latency: f64,
    price: f64,
    gpu: f64,
}

impl Policy for Composite {
    fn name(&self) -> &'static str {
        NAME
    }

    fn state(&self) -> Option<&PoolState> {
        Some(&self.state)
    }

    fn decide(
        &self,
        request: &RequestProfile,
        fleet: &FleetView<'_>,
    ) -> Result<Decision, NoCandidate> {
        let n = fleet.backends.len();
        if n == 0 {
            return Err(NoCandidate);
        }
        let w = self.weights;
        let start = rotation_start(&self.state.rotation, n);
        let blocks: &[u64] = if w.prefix > 0.0 {
            &request.prompt_blocks
        } else {
            &[]
        };
        let prompt = prompt_tokens(request, blocks.len());
        let unknown_latency = mean_expected_latency(fleet, request);
        let mut matched: SmallVec<[u32; 64]> = SmallVec::from_elem(0, n);
        let mut outcome = None;
        self.state.prefix_index
            .match_and_record(blocks, &mut matched, |matched, _| {
                let raw: SmallVec<[Raw; 64]> = fleet
                    .backends
                    .iter()
                    .map(|b| {
                        let engine = fresh_engine(b, self.max_report_age);
                        let cached = cached_tokens(prompt, matched[b.id.index()]);
                        Raw {
                            uncached_share: if prompt == 0 {
                                0.0
                            } else {
                                (prompt - cached) as f64 / prompt as f64
                            },
                            load: load_score(b, engine, 1.0, 0.0, None),
                            kv: engine.map_or(0.0, |e| f64::from(e.kv_usage).clamp(0.0, 1.0)),
                            latency: expected_latency(b, request).unwrap_or(unknown_latency),
                            price: request_price(
                                self.prices.get(b.id.index()).copied().flatten(),
                                request,
                            ),
                            gpu: fresh_gpu(b, self.max_report_age)
                                .map_or(0.0, |g| f64::from(g.utilization).clamp(0.0, 1.0)),
                        }
                    })
                    .collect();
                let max = |f: fn(&Raw) -> f64| {
                    fleet
                        .backends
                        .iter()
                        .filter(|b| b.usable)
                        .map(|b| f(&raw[b.id.index()]))
                        .fold(0.0, f64::max)
                };
                let norm = |v: f64, m: f64| if m > 0.0 { v / m } else { 0.0 };
                let (max_load, max_lat, max_price) =
                    (max(|r| r.load), max(|r| r.latency), max(|r| r.price));
                let ranked = rank(fleet, start, |b, terms| {
                    let r = &raw[b.id.index()];
                    let parts = [
                        r.uncached_share,
                        norm(r.load, max_load),
                        r.kv,
                        norm(r.latency, max_lat),
                        norm(r.price, max_price),
                        r.gpu,
                    ];
                    let named = w.named();
                    let total: f64 = parts.iter().zip(&named).map(|(v, (_, wt))| v * wt).sum();
                    if let Some(t) = terms {
                        for (v, (name, wt)) in parts.iter().zip(named) {
                            if wt != 0.0 {
                                t.push((name, *v));
                            }
                        }
                    }
                    Some((total, 0.0))
                });
                let primary = ranked.top.first().map(|&(_, id)| id);
                outcome = Some(ranked);
                if w.prefix <= 0.0 {
                    return None;
                }
                let b = &fleet.backends[primary?.index()];
                Some((b.id.0, capacity_blocks(b, n)))
            });
        outcome
            .ok_or(NoCandidate)?
            .decision(|_| Reason::text(NAME, "lowest weighted score"))
            .ok_or(NoCandidate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::test_support::{idle, prompt_request};
    use crate::BackendId;

    #[test]
    fn prefix_and_queue_trade_off() {
        let weights = CompositeWeights {
            prefix: 1.0,
            queue: 2.0,
            ..CompositeWeights::default()
        };
        let p = Composite::new(weights, &[], Duration::from_secs(2));
        let mut pool = idle(2);
        let system = "s".repeat(4000);
        let home = p
            .decide(
                &prompt_request(&format!("{system}a")),
                &FleetView::new(&pool, Duration::ZERO),
            )
            .unwrap()
            .primary;
        let other = BackendId(1 - home.0);
        // Slightly busier home: the cached prefix (1.0) outweighs 2 x (1 - 0.75).
        pool[home.index()].in_flight = 2;
        pool[home.index()].in_flight_tokens = 2000;
        pool[other.index()].in_flight = 2;
        pool[other.index()].in_flight_tokens = 1500;
        let d = p
            .decide(
                &prompt_request(&format!("{system}b")),
                &FleetView::new(&pool, Duration::ZERO).explaining(true),
            )
            .unwrap();
        assert_eq!(d.primary, home);
        let e = d.explanation.unwrap();
        assert_eq!(e.candidates.len(), 2);
        assert!(e.candidates[home.index()].score < e.candidates[other.index()].score);
        // Far busier home: load wins, 2 x (1 - 0.05) > 1.0.
        pool[other.index()].in_flight_tokens = 100;
        let d = p
            .decide(
                &prompt_request(&format!("{system}c")),
                &FleetView::new(&pool, Duration::ZERO),
            )
            .unwrap();
        assert_eq!(d.primary, other);
    }

    #[test]
    fn cost_weight_picks_the_cheaper_and_unusable_is_never_chosen() {
        let members: Vec<PoolMember> = [5.0, 1.0, 0.1]
            .iter()
            .map(|&price| PoolMember {
                name: "m".into(),
                weight: 1,
                price: Some(Price {
                    input_per_mtok: price,
                    output_per_mtok: price,
                }),
                ..PoolMember::default()
            })
            .collect();
        let weights = CompositeWeights {
            prefix: 0.0,
            cost: 2.0,
            ..CompositeWeights::default()
        };
        let p = Composite::new(weights, &members, Duration::from_secs(2));
        let mut pool = idle(3);
        let d = p
            .decide(&prompt_request("q"), &FleetView::new(&pool, Duration::ZERO))
            .unwrap();
        assert_eq!(d.primary, BackendId(2));
        pool[2].usable = false;
        let d = p
            .decide(&prompt_request("q"), &FleetView::new(&pool, Duration::ZERO))
            .unwrap();
        assert_eq!(d.primary, BackendId(1));
        assert_eq!(d.fallbacks.as_slice(), &[BackendId(0)]);
        assert!(p.state.prefix_index.is_empty(), "no prefix index kept with prefix off");
    }
}
