//! `power_of_two`: pick two distinct usable backends at random; the one with fewer requests in
//! flight per unit of weight wins.
//!
//! Use it when several gateways share a fleet or the pool is large: it avoids the herd effect
//! of every gateway choosing the same least-loaded backend while still steering away from busy
//! ones (Mitzenmacher, "The Power of Two Choices in Randomized Load Balancing", 2001).
//! Deterministic for the pool's seed.

use super::{by_load, NoCandidate, Policy};
use crate::fleet::lighter;
use crate::rng::SplitMix;
use crate::{Decision, FleetView, Detail, Reason, RequestProfile};
use serde::Deserialize;

use super::{Build, PolicyParams, Registration};

/// The name config uses.
const NAME: &str = "power_of_two";

/// `power_of_two` takes no parameters.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerOfTwoParams {}

impl PolicyParams for PowerOfTwoParams {
    fn build(&self, pool: Build<'_>) -> Box<dyn Policy> {
        Box::new(PowerOfTwo::new(pool.seed))
    }
}

/// `power_of_two`'s line in the policy table.
pub(crate) const REGISTRATION: Registration = Registration::new::<PowerOfTwoParams>(NAME);

/// Power of two random choices.
#[derive(Debug)]
pub struct PowerOfTwo {
    rng: SplitMix,
}

impl PowerOfTwo {
    /// A policy seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: SplitMix::new(seed),
        }
    }
}

/// Why the winner won: it was less loaded than `other`.
fn less_loaded_than(other: crate::BackendId) -> Reason {
    Reason::new(
        NAME,
        Detail::new("less loaded than candidate {}", &[u64::from(other.0)]),
    )
}

impl Policy for PowerOfTwo {
    fn name(&self) -> &'static str {
        NAME
    }

    fn decide(&self, _: &RequestProfile, fleet: &FleetView<'_>) -> Result<Decision, NoCandidate> {
        let usable = fleet.usable_count() as u64;
        let nth = |k: u64| fleet.usable().nth(k as usize);
        let (a, b) = match usable {
            0 => return Err(NoCandidate),
            1 => {
                let only = nth(0).ok_or(NoCandidate)?;
                return Ok(Decision::new(
                    only.id,
                    less_loaded_than(only.id),
                ));
            }
            _ => {
                let i = self.rng.below(usable);
                let j = (i + 1 + self.rng.below(usable - 1)) % usable;
                (nth(i).ok_or(NoCandidate)?, nth(j).ok_or(NoCandidate)?)
            }
        };
        let (win, lose) = if lighter(b, a).is_lt() {
            (b, a)
        } else {
            (a, b)
        };
        Ok(Decision::new(win.id, less_loaded_than(lose.id))
            .with_fallbacks(std::iter::once(lose.id).chain(by_load(fleet))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::test_support::{idle, primary_counts, request};
    use std::time::Duration;

    #[test]
    fn steers_away_from_a_busy_backend() {
        let mut pool = idle(3);
        pool[0].in_flight = 50;
        let p = PowerOfTwo::new(9);
        let counts = primary_counts(&p, &pool, &request(None), 3000);
        // Backend 0 only wins when both draws... never: two distinct candidates, 0 always loses.
        assert_eq!(counts[0], 0, "{counts:?}");
        assert!(counts[1] > 1200 && counts[2] > 1200, "{counts:?}");
    }

    #[test]
    fn single_usable_backend_is_chosen() {
        let mut pool = idle(3);
        pool[0].usable = false;
        pool[2].usable = false;
        let d = PowerOfTwo::new(1).decide(&request(None), &FleetView::new(&pool, Duration::ZERO));
        assert_eq!(d.unwrap().primary.0, 1);
    }
}
