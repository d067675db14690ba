//! `least_connections`: the usable backend with the fewest requests in flight per unit of
//! weight.
//!
//! Use it when request costs vary widely (as LLM requests do) and the gateway is the only path
//! to the backends. Ties are broken by a rotating start so that idle backends share load
//! instead of the first one taking every request. Parameter: each backend's `weight`.

use super::{by_load, rotation_start, NoCandidate, Policy, PoolState};
use crate::fleet::lighter;
use crate::{Decision, FleetView, Detail, Reason, RequestProfile};
use serde::Deserialize;

use super::{Build, PolicyParams, Registration};

/// The name config uses.
const NAME: &str = "least_connections";

/// `least_connections` takes no parameters (each backend's `weight` counts).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeastConnectionsParams {}

impl PolicyParams for LeastConnectionsParams {
    fn build(&self, pool: Build<'_>) -> Box<dyn Policy> {
        Box::new(LeastConnections::new().with_state(pool.state))
    }
}

/// `least_connections`'s line in the policy table.
pub(crate) const REGISTRATION: Registration = Registration::new::<LeastConnectionsParams>(NAME);

/// Least connections with rotating tie-break.
#[derive(Debug, Default)]
pub struct LeastConnections {
    /// The pool's state: its rotation counter breaks ties.
    state: PoolState,
}

impl LeastConnections {
    /// A fresh policy.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same policy on `state` (a rebuilt pool's).
    pub fn with_state(mut self, state: PoolState) -> Self {
        self.state = state;
        self
    }
}

impl Policy for LeastConnections {
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
        let start = rotation_start(&self.state.rotation, n);
        let mut best: Option<&crate::BackendView> = None;
        for k in 0..n {
            let b = &fleet.backends[(start + k) % n];
            if b.usable && best.is_none_or(|x| lighter(b, x).is_lt()) {
                best = Some(b);
            }
        }
        let best = best.ok_or(NoCandidate)?;
        Ok(Decision::new(
            best.id,
            Reason::new(
                NAME,
                Detail::new("{} in flight", &[u64::from(best.in_flight)]),
            ),
        )
        .with_fallbacks(by_load(fleet)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::test_support::{idle, request};
    use crate::BackendId;
    use std::time::Duration;

    #[test]
    fn picks_fewest_in_flight_and_rotates_ties() {
        let mut pool = idle(3);
        let p = LeastConnections::new();
        let r = request(None);
        let picks: Vec<u32> = (0..3)
            .map(|_| {
                p.decide(&r, &FleetView::new(&pool, Duration::ZERO))
                    .unwrap()
                    .primary
                    .0
            })
            .collect();
        let mut sorted = picks.clone();
        sorted.sort();
        assert_eq!(sorted, [0, 1, 2], "ties must rotate, got {picks:?}");
        pool[0].in_flight = 5;
        pool[1].in_flight = 1;
        pool[2].in_flight = 3;
        let d = p
            .decide(&r, &FleetView::new(&pool, Duration::ZERO))
            .unwrap();
        assert_eq!(d.primary, BackendId(1));
        assert_eq!(d.fallbacks.as_slice(), &[BackendId(2), BackendId(0)]);
    }

    #[test]
    fn load_is_counted_per_unit_of_weight() {
        let mut pool = idle(2);
        pool[0].weight = 4;
        pool[0].in_flight = 6; // 1.5 per unit
        pool[1].in_flight = 2; // 2 per unit
        let d =
            LeastConnections::new().decide(&request(None), &FleetView::new(&pool, Duration::ZERO));
        assert_eq!(d.unwrap().primary, BackendId(0));
    }
}
