//! `cost`: the cheapest usable backend that fits the request's context window and the pool's
//! quality floor; among equally cheap ones, the least loaded.
//!
//! Use it for pools that mix hosted providers (priced per token) and self-hosted replicas
//! (price 0 unless configured), or several providers of one model, when spend matters more
//! than latency. A request's price at a backend is
//! `input_per_mtok x prompt tokens + output_per_mtok x max output tokens` (per million; a
//! backend without a price costs 0). Excluded: a backend whose `context_window` is smaller than
//! prompt plus max output tokens, and, when `quality_floor` is set, one whose `quality` is
//! below it or not configured. Ties on price go to the least tokens in flight per weight, so
//! equally priced replicas share load. Fallbacks are the next cheapest. Parameter:
//! `quality_floor` (default none). Source: the cost-based routing of LiteLLM's router and
//! OpenRouter's price sort, with context-window and quality filters.

use serde::Deserialize;

use super::signals::{own_tokens, rank, share, DEFAULT_OUTPUT_TOKENS};
use super::{rotation_start, Build, NoCandidate, Policy, PolicyParams, PoolState, Registration};
use crate::fleet::{PoolMember, Price};
use crate::{Decision, Detail, FleetView, Reason, RequestProfile};

/// The name config uses.
const NAME: &str = "cost";

/// `cost`'s parameters.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CostParams {
    /// Backends with a configured quality below this (or none) are excluded; none by default.
    pub quality_floor: Option<f32>,
}

impl PolicyParams for CostParams {
    fn validate(&self) -> Result<(), String> {
        if self.quality_floor.is_some_and(|q| !q.is_finite()) {
            return Err("quality_floor must be a finite number".into());
        }
        Ok(())
    }

    fn build(&self, pool: Build<'_>) -> Box<dyn Policy> {
        Box::new(CostAware::new(pool.members, self.quality_floor).with_state(pool.state))
    }
}

/// `cost`'s line in the policy table.
pub(crate) const REGISTRATION: Registration = Registration::new::<CostParams>(NAME);

/// Cheapest fitting backend.
#[derive(Debug)]
pub struct CostAware {
    /// Per member, in pool order: price, context window, quality.
    members: Vec<(Option<Price>, Option<u32>, Option<f32>)>,
    quality_floor: Option<f32>,
    /// The pool's state: its rotation counter breaks ties.
    state: PoolState,
}

impl CostAware {
    /// A policy for a pool with these members.
    pub fn new(members: &[PoolMember], quality_floor: Option<f32>) -> Self {
        Self {
            members: members
                .iter()
                .map(|m| (m.price, m.context_window, m.quality))
                .collect(),
            quality_floor,
            state: PoolState::default(),
        }
    }

    /// The same policy on `state` (a rebuilt pool's).
    pub fn with_state(mut self, state: PoolState) -> Self {
        self.state = state;
        self
    }
}

/// A request's price at a backend charging `price`, in currency units.
pub(crate) fn request_price(price: Option<Price>, request: &RequestProfile) -> f64 {
    price.map_or(0.0, |p| {
        let out = request.max_output_tokens.unwrap_or(DEFAULT_OUTPUT_TOKENS);
        (p.input_per_mtok * f64::from(request.estimated_input_tokens)
            + p.output_per_mtok * f64::from(out))
            / 1e6
    })
}

impl Policy for CostAware {
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
        let start = rotation_start(&self.state.rotation, fleet.backends.len());
        let need = u64::from(request.estimated_input_tokens)
            + u64::from(request.max_output_tokens.unwrap_or(0));
        let ranked = rank(fleet, start, |b, terms| {
            let (price, window, quality) =
                self.members.get(b.id.index()).copied().unwrap_or_default();
            let exclusion = if window.is_some_and(|w| u64::from(w) < need) {
                Some(("excluded_context_window", f64::from(window.unwrap_or(0))))
            } else if let Some(floor) = self.quality_floor {
                match quality {
                    Some(q) if q >= floor => None,
                    q => Some(("excluded_quality", q.map_or(f64::NAN, f64::from))),
                }
            } else {
                None
            };
            let cost = request_price(price, request);
            let load = own_tokens(b) / share(b);
            if let Some(t) = terms {
                match exclusion {
                    Some(why) => t.push(why),
                    None => {
                        t.push(("price", cost));
                        t.push(("tokens_in_flight_per_weight", load));
                    }
                }
            }
            exclusion.is_none().then_some((cost, load))
        });
        let best = ranked.top.first().map_or(0.0, |(k, _)| k.0);
        ranked
            .decision(|_| {
                let micro_cost = (best * 1e6).round().clamp(0.0, u64::MAX as f64) as u64;
                Reason::new(NAME, Detail::new("cheapest fit, {} micro-units", &[micro_cost]))
            })
            .ok_or(NoCandidate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::test_support::{idle, prompt_request};
    use crate::BackendId;
    use std::time::Duration;

    fn member(price: Option<(f64, f64)>, window: Option<u32>, quality: Option<f32>) -> PoolMember {
        PoolMember {
            name: "m".into(),
            weight: 1,
            price: price.map(|(i, o)| Price {
                input_per_mtok: i,
                output_per_mtok: o,
            }),
            context_window: window,
            quality,
        }
    }

    #[test]
    fn cheapest_fitting_backend_wins_then_next_cheapest() {
        let members = [
            member(Some((10.0, 30.0)), Some(128_000), Some(0.9)),
            member(Some((0.5, 1.5)), Some(8_000), Some(0.7)),
            member(Some((3.0, 15.0)), Some(200_000), Some(0.85)),
        ];
        let pool = idle(3);
        let p = CostAware::new(&members, None);
        let short = prompt_request("hello");
        let d = p
            .decide(&short, &FleetView::new(&pool, Duration::ZERO))
            .unwrap();
        assert_eq!(d.primary, BackendId(1));
        assert_eq!(d.fallbacks.as_slice(), &[BackendId(2), BackendId(0)]);
        // 40,000 bytes ≈ 10,000 tokens: past backend 1's window.
        let long = prompt_request(&"x".repeat(40_000));
        let d = p
            .decide(&long, &FleetView::new(&pool, Duration::ZERO))
            .unwrap();
        assert_eq!(d.primary, BackendId(2));
        assert_eq!(d.fallbacks.as_slice(), &[BackendId(0)]);
        // A quality floor of 0.8 leaves 0 and 2.
        let d = CostAware::new(&members, Some(0.8))
            .decide(
                &short,
                &FleetView::new(&pool, Duration::ZERO).explaining(true),
            )
            .unwrap();
        assert_eq!(d.primary, BackendId(2));
        let e = d.explanation.unwrap();
        assert_eq!(e.candidates[1].terms, [("excluded_quality", 0.7f32 as f64)]);
    }

    #[test]
    fn equal_prices_share_by_load_and_unusable_is_never_chosen() {
        let members = [
            member(None, None, None),
            member(None, None, None),
            member(None, None, None),
        ];
        let mut pool = idle(3);
        pool[0].in_flight = 1;
        pool[0].in_flight_tokens = 500;
        pool[1].usable = false;
        let d = CostAware::new(&members, None)
            .decide(&prompt_request("q"), &FleetView::new(&pool, Duration::ZERO))
            .unwrap();
        assert_eq!(d.primary, BackendId(2));
        assert_eq!(d.fallbacks.as_slice(), &[BackendId(0)]);
    }
}
