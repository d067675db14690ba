//! `peak_ewma`: power of two choices on expected latency x (requests in flight + 1).
//!
//! Use it when backends differ in speed (mixed GPUs, a replica slowed by a noisy neighbour,
//! providers across regions): latency measured from real traffic finds the slow ones without
//! configuration. Two distinct usable backends are drawn at random in proportion to their
//! weight (x ramp), so a configured small backend is rarely one of both draws; each costs
//!
//! ```text
//! cost = expected latency x (in flight + 1) / (weight x ramp)
//! expected latency = TTFT + TPOT x this request's max output tokens   (peak EWMAs)
//!                  | request latency EWMA, when TTFT or TPOT is not measured yet
//!                  | the pool's mean expected latency, for a backend never measured
//! ```
//!
//! and the cheaper wins. The averages are peak-sensitive ([`crate::ewma`]): a slowdown counts
//! at once, a recovery gradually. No parameters (the averages' decay is the gateway's; default
//! 10 s). Source: Finagle's and Linkerd's `PeakEwma` balancers (P2C over
//! `rtt x (pending + 1)`), with the latency made per request from TTFT and TPOT. Deterministic
//! for the pool's seed.

use super::signals::{expected_latency, mean_expected_latency, rank, share, Terms};
use super::{NoCandidate, Policy};
use crate::fleet::BackendView;
use crate::rng::SplitMix;
use crate::{BackendId, Decision, FleetView, Detail, Reason, RequestProfile};
use serde::Deserialize;

use super::{Build, PolicyParams, Registration};

/// The name config uses.
const NAME: &str = "peak_ewma";

/// `peak_ewma` takes no parameters.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeakEwmaParams {}

impl PolicyParams for PeakEwmaParams {
    fn build(&self, pool: Build<'_>) -> Box<dyn Policy> {
        Box::new(PeakEwmaP2c::new(pool.seed))
    }
}

/// `peak_ewma`'s line in the policy table.
pub(crate) const REGISTRATION: Registration = Registration::new::<PeakEwmaParams>(NAME);

/// Power of two choices on peak-EWMA latency x load.
#[derive(Debug)]
pub struct PeakEwmaP2c {
    rng: SplitMix,
}

impl PeakEwmaP2c {
    /// A policy seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: SplitMix::new(seed),
        }
    }
}

fn cost(b: &BackendView, request: &RequestProfile, unknown: f64, terms: Option<&mut Terms>) -> f64 {
    let measured = expected_latency(b, request);
    let latency = measured.unwrap_or(unknown);
    let c = latency * (f64::from(b.in_flight) + 1.0) / share(b);
    if let Some(t) = terms {
        t.push(("expected_latency_s", latency));
        if measured.is_none() {
            t.push(("latency_unmeasured", 1.0));
        }
        t.push(("in_flight", f64::from(b.in_flight)));
        t.push(("share", share(b)));
    }
    c
}

impl PeakEwmaP2c {
    /// A usable backend drawn in proportion to its share (weight x ramp), other than `not`.
    fn draw<'a>(&self, fleet: &FleetView<'a>, not: Option<BackendId>) -> Option<&'a BackendView> {
        const SCALE: f64 = 1024.0;
        let units = |b: &BackendView| (share(b) * SCALE).round().max(1.0) as u64;
        let eligible = |b: &&BackendView| Some(b.id) != not;
        let total: u64 = fleet.usable().filter(eligible).map(units).sum();
        if total == 0 {
            return None;
        }
        let mut pick = self.rng.below(total);
        for b in fleet.usable().filter(eligible) {
            let u = units(b);
            if pick < u {
                return Some(b);
            }
            pick -= u;
        }
        None
    }
}

impl Policy for PeakEwmaP2c {
    fn name(&self) -> &'static str {
        NAME
    }

    fn decide(
        &self,
        request: &RequestProfile,
        fleet: &FleetView<'_>,
    ) -> Result<Decision, NoCandidate> {
        let unknown = mean_expected_latency(fleet, request);
        let usable = fleet.usable_count() as u64;
        if usable == 0 {
            return Err(NoCandidate);
        }
        // Every usable backend ranked by cost: fallbacks, and the explanation when asked.
        let ranked = rank(fleet, 0, |b, terms| {
            Some((cost(b, request, unknown, terms), 0.0))
        });
        let (win, lose) = if usable == 1 {
            let only = fleet.usable().next().ok_or(NoCandidate)?;
            (only.id, only.id)
        } else {
            let a = self.draw(fleet, None).ok_or(NoCandidate)?;
            let b = self.draw(fleet, Some(a.id)).ok_or(NoCandidate)?;
            let (ca, cb) = (
                cost(a, request, unknown, None),
                cost(b, request, unknown, None),
            );
            if cb < ca {
                (b.id, a.id)
            } else {
                (a.id, b.id)
            }
        };
        let mut d = Decision::new(win, Reason::new(
                NAME,
                Detail::new("lower latency x load than candidate {}", &[u64::from(lose.0)]),
            )).with_fallbacks(
            std::iter::once(lose).chain(ranked.top.iter().map(|&(_, id): &(_, BackendId)| id)),
        );
        if let Some(e) = ranked.explanation {
            d = d.with_explanation(e);
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::test_support::{idle, primary_counts, request};
    use std::time::Duration;

    #[test]
    fn steers_away_from_a_slow_backend_even_when_it_is_idle() {
        let mut pool = idle(3);
        for b in &mut pool {
            b.latency.ttft_s = Some(0.05);
            b.latency.tpot_s = Some(0.01);
            b.in_flight = 2;
        }
        pool[0].latency.tpot_s = Some(0.2);
        pool[0].in_flight = 0;
        let p = PeakEwmaP2c::new(3);
        let counts = primary_counts(&p, &pool, &request(None), 600);
        assert_eq!(counts[0], 0, "{counts:?}");
        assert!(counts[1] > 200 && counts[2] > 200, "{counts:?}");
    }

    #[test]
    fn unmeasured_backends_get_the_pool_mean_and_unusable_ones_are_never_chosen() {
        let mut pool = idle(2);
        pool[0].latency.latency_s = Some(1.0);
        pool[0].in_flight = 3;
        pool[1].in_flight = 1;
        let d = PeakEwmaP2c::new(1)
            .decide(
                &request(None),
                &FleetView::new(&pool, Duration::ZERO).explaining(true),
            )
            .unwrap();
        assert_eq!(d.primary, BackendId(1));
        let e = d.explanation.unwrap();
        assert!(e.candidates[1].terms.contains(&("latency_unmeasured", 1.0)));
        pool[1].usable = false;
        for _ in 0..20 {
            let d = PeakEwmaP2c::new(1)
                .decide(&request(None), &FleetView::new(&pool, Duration::ZERO))
                .unwrap();
            assert_eq!(d.primary, BackendId(0));
            assert!(d.fallbacks.is_empty());
        }
    }
}
