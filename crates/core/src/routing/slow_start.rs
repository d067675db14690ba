//! `SlowStart`: a wrapper that makes any policy ramp up a backend that has just come back
//! (health check up again, breaker closed, ejection over) or was just added.
//!
//! The gateway fills [`BackendView::ramp`](crate::BackendView::ramp) with the share of a full
//! traffic share a backend should take now (in (0, 1], growing linearly over the pool's
//! `slow_start` window). The wrapped policy decides as usual; when its primary is ramping,
//! the wrapper keeps it with probability `ramp / r` and otherwise demotes it behind the
//! fallback furthest along (`r` is that fallback's ramp, 1.0 for a backend not ramping; the
//! demoted backend stays in the fallbacks, so failover can still use it). Backends that came
//! back together ramp together and keep their shares among themselves. A backend at ramp `r` so takes about `r` of the share the policy would give
//! it, for every policy, including those that keep state (round robin, smooth weighted) and
//! those with affinity (consistent hashing moves only the demoted keys, and only while the
//! ramp lasts). With no fallback further along, the decision stands: a ramping backend is
//! better than no backend.
//!
//! The idea is Envoy's slow start mode (a time-ramped weight); demoting in the decision
//! instead of scaling weights is what lets one wrapper serve every policy. Draws come from a
//! seeded [`SplitMix`], so a run is reproducible.

use super::{NoCandidate, Policy, PoolState};
use crate::rng::SplitMix;
use crate::{Decision, FleetView, RequestProfile};

/// Slow start around another policy.
#[derive(Debug)]
pub struct SlowStart {
    inner: Box<dyn Policy>,
    rng: SplitMix,
}

impl SlowStart {
    /// Wraps `inner`; `seed` feeds the keep-or-demote draws.
    pub fn new(inner: Box<dyn Policy>, seed: u64) -> Self {
        Self {
            inner,
            rng: SplitMix::new(seed ^ 0x736c_6f77_7374_6172),
        }
    }

    /// A uniform draw in `[0, 1)`.
    fn draw(&self) -> f32 {
        (self.rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

impl Policy for SlowStart {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn state(&self) -> Option<&PoolState> {
        self.inner.state()
    }

    fn decide(
        &self,
        request: &RequestProfile,
        fleet: &FleetView<'_>,
    ) -> Result<Decision, NoCandidate> {
        let mut d = self.inner.decide(request, fleet)?;
        let ramp_of = |id: crate::BackendId| fleet.backends.get(id.index()).map_or(1.0, |b| b.ramp);
        let ramp = ramp_of(d.primary);
        if ramp >= 1.0 {
            return Ok(d);
        }
        // The fallback furthest along its own ramp (the first such, in the policy's order).
        let best = d
            .fallbacks
            .iter()
            .enumerate()
            .map(|(i, &f)| (i, ramp_of(f)))
            .fold(None, |acc: Option<(usize, f32)>, (i, r)| match acc {
                Some((_, br)) if br >= r => acc,
                _ => Some((i, r)),
            });
        let Some((pos, best_ramp)) = best.filter(|(_, r)| *r > ramp) else {
            return Ok(d);
        };
        if self.draw() < ramp / best_ramp {
            return Ok(d);
        }
        let demoted = std::mem::replace(&mut d.primary, d.fallbacks.remove(pos));
        d.fallbacks.insert(0, demoted);
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::test_support::{idle, request};
    use crate::routing::{LeastConnections, RoundRobin};
    use std::time::Duration;

    fn shares(p: &SlowStart, pool: &[crate::BackendView], n: u32) -> Vec<u32> {
        let r = request(None);
        let mut counts = vec![0u32; pool.len()];
        for _ in 0..n {
            let d = p.decide(&r, &FleetView::new(pool, Duration::ZERO)).unwrap();
            counts[d.primary.index()] += 1;
            assert!(!d.fallbacks.contains(&d.primary));
        }
        counts
    }

    #[test]
    fn a_ramping_backend_takes_its_ramp_of_a_full_share() {
        let mut pool = idle(2);
        pool[1].ramp = 0.25;
        let p = SlowStart::new(Box::new(RoundRobin::new()), 7);
        let c = shares(&p, &pool, 8000);
        // Round robin alone gives each 4000; at ramp 0.25 backend 1 keeps about 1000.
        assert!((850..1150).contains(&c[1]), "{c:?}");
        pool[1].ramp = 1.0;
        let c = shares(&p, &pool, 8000);
        assert_eq!(c, [4000, 4000]);
    }

    #[test]
    fn works_around_a_policy_that_prefers_the_ramping_backend() {
        // Least connections always picks the idle backend 0; while it ramps at 0.5, half its
        // picks go to backend 1.
        let mut pool = idle(2);
        pool[1].in_flight = 5;
        pool[0].ramp = 0.5;
        let p = SlowStart::new(Box::new(LeastConnections::new()), 3);
        let c = shares(&p, &pool, 4000);
        assert!((1800..2200).contains(&c[0]), "{c:?}");
    }

    #[test]
    fn backends_ramping_at_different_points_share_in_proportion() {
        let mut pool = idle(2);
        pool[0].ramp = 0.2;
        pool[1].ramp = 0.8;
        let p = SlowStart::new(Box::new(RoundRobin::new()), 9);
        let c = shares(&p, &pool, 8000);
        // Backend 0 keeps a quarter of its turns: 1000 of 8000.
        assert!((850..1150).contains(&c[0]), "{c:?}");
    }

    #[test]
    fn a_lone_or_all_ramping_pool_still_gets_its_decision() {
        let mut pool = idle(2);
        pool[0].ramp = 0.1;
        pool[1].ramp = 0.1;
        let p = SlowStart::new(Box::new(RoundRobin::new()), 1);
        let c = shares(&p, &pool, 100);
        assert_eq!(c, [50, 50]);
        let mut one = idle(1);
        one[0].ramp = 0.1;
        assert_eq!(shares(&p, &one, 10), [10]);
    }
}
