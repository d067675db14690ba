//! `round_robin`: every usable backend in turn, regardless of weight or load.
//!
//! Use it when backends are identical and requests are alike. No parameters. A backend that is
//! not usable is skipped without disturbing the rotation of the others.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Learned, Moved, NoCandidate, Policy};
use crate::{Decision, FleetView, Reason, RequestProfile};

/// Round robin over usable backends.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicU64,
}

impl RoundRobin {
    /// A rotation starting at the first backend.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Policy for RoundRobin {
    fn name(&self) -> &'static str {
        "round_robin"
    }

    fn learned(&self) -> Learned<'_> {
        Learned {
            rotation: Some(self.next.load(Ordering::Relaxed)),
            ..Learned::default()
        }
    }

    fn inherit(&mut self, previous: Learned<'_>, _: &Moved) {
        if let Some(next) = previous.rotation {
            *self.next.get_mut() = next;
        }
    }

    fn decide(&self, _: &RequestProfile, fleet: &FleetView<'_>) -> Result<Decision, NoCandidate> {
        let n = fleet.backends.len();
        if n == 0 {
            return Err(NoCandidate);
        }
        let start = (self.next.fetch_add(1, Ordering::Relaxed) % n as u64) as usize;
        let mut order = (0..n)
            .map(|k| &fleet.backends[(start + k) % n])
            .filter(|b| b.usable);
        let primary = order.next().ok_or(NoCandidate)?.id;
        Ok(Decision::new(primary, Reason::RoundRobin).with_fallbacks(order.map(|b| b.id)))
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
