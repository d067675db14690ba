//! `round_robin`: every usable backend in turn, regardless of weight or load.
//!
//! Use it when backends are identical and requests are alike. No parameters. A backend that is
//! not usable is skipped without disturbing the rotation of the others.

use std::sync::atomic::Ordering;

use super::{NoCandidate, Policy, PoolState};
use crate::{Decision, FleetView, Reason, RequestProfile};
use serde::Deserialize;

use super::{Build, PolicyParams, Registration};

/// The name config uses.
const NAME: &str = "round_robin";

/// `round_robin` takes no parameters.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundRobinParams {}

impl PolicyParams for RoundRobinParams {
    fn build(&self, pool: Build<'_>) -> Box<dyn Policy> {
        Box::new(RoundRobin::new().with_state(pool.state))
    }
}

/// `round_robin`'s line in the policy table.
pub(crate) const REGISTRATION: Registration = Registration::new::<RoundRobinParams>(NAME);

/// Round robin over usable backends.
#[derive(Debug, Default)]
pub struct RoundRobin {
    /// The pool's state: its rotation counter is the next backend's position.
    state: PoolState,
}

impl RoundRobin {
    /// A rotation starting at the first backend.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same policy going on from `state`'s rotation (a rebuilt pool's).
    pub fn with_state(mut self, state: PoolState) -> Self {
        self.state = state;
        self
    }
}

impl Policy for RoundRobin {
    fn name(&self) -> &'static str {
        NAME
    }

    fn state(&self) -> Option<&PoolState> {
        Some(&self.state)
    }

    fn decide(&self, _: &RequestProfile, fleet: &FleetView<'_>) -> Result<Decision, NoCandidate> {
        let n = fleet.backends.len();
        if n == 0 {
            return Err(NoCandidate);
        }
        let start = (self.state.rotation.fetch_add(1, Ordering::Relaxed) % n as u64) as usize;
        let mut order = (0..n)
            .map(|k| &fleet.backends[(start + k) % n])
            .filter(|b| b.usable);
        let primary = order.next().ok_or(NoCandidate)?.id;
        Ok(Decision::new(primary, Reason::text(NAME, "next in rotation")).with_fallbacks(order.map(|b| b.id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::test_support::{idle, request};
    use crate::BackendId;
    use std::time::Duration;

    #[test]
    fn rotates_and_skips_unusable() {
        let mut pool = idle(3);
        let p = RoundRobin::new();
        let r = request(None);
        let picks: Vec<u32> = (0..6)
            .map(|_| {
                p.decide(&r, &FleetView::new(&pool, Duration::ZERO))
                    .unwrap()
                    .primary
                    .0
            })
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        pool[1].usable = false;
        let d = p
            .decide(&r, &FleetView::new(&pool, Duration::ZERO))
            .unwrap();
        assert_eq!(d.primary, BackendId(0));
        assert_eq!(d.fallbacks.as_slice(), &[BackendId(2)]);
        pool.iter_mut().for_each(|b| b.usable = false);
        assert_eq!(
            p.decide(&r, &FleetView::new(&pool, Duration::ZERO)),
            Err(NoCandidate)
        );
    }
}
