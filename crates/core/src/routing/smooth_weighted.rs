//! `weighted`: smooth weighted round robin, as nginx's upstream module does it.
//!
//! Each pick, every usable backend's current weight grows by its configured weight; the backend
//! with the highest current weight is chosen and its current weight drops by the total. Over
//! one cycle each backend gets exactly its share, interleaved rather than in bursts: weights
//! 5, 1, 1 give `a a b a c a a`. Use it for fleets of unequal capacity where load signals are
//! not available. Parameter: each backend's `weight` (default 1).

use super::{NoCandidate, Policy, PoolState};
use crate::{Decision, FleetView, Reason, RequestProfile};
use serde::Deserialize;

use super::{Build, PolicyParams, Registration};

/// The name config uses.
const NAME: &str = "weighted";

/// `weighted` takes no parameters (each backend's `weight` counts).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedParams {}

impl PolicyParams for WeightedParams {
    fn build(&self, pool: Build<'_>) -> Box<dyn Policy> {
        Box::new(SmoothWeighted::new(pool.members.len()).with_state(pool.state))
    }
}

/// `weighted`'s line in the policy table.
pub(crate) const REGISTRATION: Registration = Registration::new::<WeightedParams>(NAME);

/// Smooth weighted round robin.
#[derive(Debug)]
pub struct SmoothWeighted {
    /// The pool's state: its current weight per backend, indexed like the pool. Locked only
    /// for the arithmetic of one pick; never across an await.
    state: PoolState,
}

impl SmoothWeighted {
    /// State for a pool of `members` backends.
    pub fn new(members: usize) -> Self {
        let state = PoolState::default();
        *state.current_weights.lock().unwrap_or_else(|e| e.into_inner()) = vec![0; members];
        Self { state }
    }

    /// The same policy on `state` (a rebuilt pool's): kept backends keep their current
    /// weights, so the interleaving goes on where it was; added ones start at 0, as at
    /// start-up.
    pub fn with_state(self, state: PoolState) -> Self {
        Self { state }
    }
}

impl Policy for SmoothWeighted {
    fn name(&self) -> &'static str {
        NAME
    }

    fn state(&self) -> Option<&PoolState> {
        Some(&self.state)
    }

    fn decide(&self, _: &RequestProfile, fleet: &FleetView<'_>) -> Result<Decision, NoCandidate> {
        let mut current = self.state.current_weights.lock().unwrap_or_else(|e| e.into_inner());
        if current.len() != fleet.backends.len() {
            current.resize(fleet.backends.len(), 0);
        }
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for b in fleet.usable() {
            let i = b.id.index();
            let w = i64::from(b.weight.max(1));
            current[i] += w;
            total += w;
            if best.is_none_or(|j| current[i] > current[j]) {
                best = Some(i);
            }
        }
        let best = best.ok_or(NoCandidate)?;
        current[best] -= total;
        let primary = fleet.backends[best].id;
        // Fallbacks: the others in the order they would come up next.
        let mut rest: smallvec::SmallVec<[(i64, crate::BackendId); 8]> = fleet
            .usable()
            .filter(|b| b.id != primary)
            .map(|b| (current[b.id.index()], b.id))
            .collect();
        rest.sort_by_key(|r| std::cmp::Reverse(r.0));
        Ok(Decision::new(primary, Reason::text(NAME, "highest current weight"))
            .with_fallbacks(rest.into_iter().map(|r| r.1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::test_support::{idle, request};
    use std::time::Duration;

    #[test]
    fn weights_5_1_1_give_the_nginx_sequence() {
        let mut pool = idle(3);
        pool[0].weight = 5;
        let p = SmoothWeighted::new(3);
        let r = request(None);
        let seq: String = (0..14)
            .map(|_| {
                let d = p
                    .decide(&r, &FleetView::new(&pool, Duration::ZERO))
                    .unwrap();
                (b'a' + d.primary.0 as u8) as char
            })
            .collect();
        assert_eq!(seq, "aabacaaaabacaa");
    }

    #[test]
    fn unusable_backend_is_skipped_and_share_goes_to_the_rest() {
        let mut pool = idle(3);
        pool[2].usable = false;
        let p = SmoothWeighted::new(3);
        let r = request(None);
        for _ in 0..10 {
            assert_ne!(
                p.decide(&r, &FleetView::new(&pool, Duration::ZERO))
                    .unwrap()
                    .primary
                    .0,
                2
            );
        }
    }
}
