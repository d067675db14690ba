//! `random`: a draw among usable backends, in proportion to their weights.
//!
//! Use it where a stateless spread is enough, or as a baseline. With equal weights it is
//! uniform. Deterministic for the pool's seed.

use super::{by_load, NoCandidate, Policy};
use crate::rng::SplitMix;
use crate::{Decision, FleetView, Reason, RequestProfile};
use serde::Deserialize;

use super::{Build, PolicyParams, Registration};

/// The name config uses.
const NAME: &str = "random";

/// `random` takes no parameters.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomParams {}

impl PolicyParams for RandomParams {
    fn build(&self, pool: Build<'_>) -> Box<dyn Policy> {
        Box::new(Random::new(pool.seed))
    }
}

/// `random`'s line in the policy table.
pub(crate) const REGISTRATION: Registration = Registration::new::<RandomParams>(NAME);

/// Weighted random choice.
#[derive(Debug)]
pub struct Random {
    rng: SplitMix,
}

impl Random {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: SplitMix::new(seed),
        }
    }
}

impl Policy for Random {
    fn name(&self) -> &'static str {
        NAME
    }

    fn decide(&self, _: &RequestProfile, fleet: &FleetView<'_>) -> Result<Decision, NoCandidate> {
        let total: u64 = fleet.usable().map(|b| u64::from(b.weight.max(1))).sum();
        if total == 0 {
            return Err(NoCandidate);
        }
        let mut point = self.rng.below(total);
        let mut primary = None;
        for b in fleet.usable() {
            let w = u64::from(b.weight.max(1));
            if point < w {
                primary = Some(b.id);
                break;
            }
            point -= w;
        }
        let primary = primary.ok_or(NoCandidate)?;
        Ok(Decision::new(primary, Reason::text(NAME, "weighted draw")).with_fallbacks(by_load(fleet)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::test_support::{idle, primary_counts, request};

    #[test]
    fn draws_in_proportion_to_weight() {
        let mut pool = idle(2);
        pool[0].weight = 3;
        let p = Random::new(42);
        let counts = primary_counts(&p, &pool, &request(None), 4000);
        let share = f64::from(counts[0]) / 4000.0;
        assert!((0.71..0.79).contains(&share), "{counts:?}");
    }
}
