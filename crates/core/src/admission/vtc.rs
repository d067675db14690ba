//! The Virtual Token Counter (VTC) of Sheng et al., "Fairness in Serving Large Language
//! Models" (OSDI '24): fair sharing between tenants by tokens served, not requests.
//!
//! Each tenant has a counter of the weighted service it received: `INPUT_WEIGHT` per prompt
//! token and `OUTPUT_WEIGHT` per output token (the weights of the paper's evaluation, 1 and 2,
//! after the price ratio of hosted APIs), divided by the tenant's weight. The next request to
//! go is the oldest one of the waiting tenant with the smallest counter. A tenant that starts
//! waiting again has its counter lifted to the smallest counter of the tenants already
//! waiting (or, when none waits, to the counter of the last one served), so time spent idle
//! banks no credit: the paper's Algorithm 2.
//!
//! Tenants are small integers ([`TenantId`]); the caller maps configured tenants to them, so
//! the table is bounded by the config.

/// Weight of one prompt token in a tenant's counter (the paper's `w_p`).
pub const INPUT_WEIGHT: f64 = 1.0;
/// Weight of one output token in a tenant's counter (the paper's `w_q`).
pub const OUTPUT_WEIGHT: f64 = 2.0;

/// A tenant, as an index into the configured tenants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TenantId(pub u32);

/// One tenant's line in the counter.
#[derive(Debug, Clone, Copy)]
struct Line {
    /// Weighted service received.
    counter: f64,
    /// Share of service it should get relative to others (1 when not configured).
    weight: f64,
    /// Requests it has waiting now.
    waiting: u32,
}

/// Per-tenant service counters for one queue.
#[derive(Debug, Clone, Default)]
pub struct VirtualTokenCounter {
    /// Indexed by [`TenantId`]; grows to the largest id seen.
    lines: Vec<Line>,
    /// Counter of the tenant served last, which a tenant arriving at an empty queue is lifted to.
    last_served: f64,
}

impl VirtualTokenCounter {
    /// Counters for tenants with the given weights (index = [`TenantId`]); others weigh 1.
    pub fn with_weights(weights: &[f64]) -> Self {
        let lines = weights
            .iter()
            .map(|&w| Line {
                counter: 0.0,
                weight: if w.is_finite() && w > 0.0 { w } else { 1.0 },
                waiting: 0,
            })
            .collect();
        Self {
            lines,
            last_served: 0.0,
        }
    }

    fn line(&mut self, t: TenantId) -> &mut Line {
        let i = t.0 as usize;
        if i >= self.lines.len() {
            self.lines.resize(
                i + 1,
                Line {
                    counter: 0.0,
                    weight: 1.0,
                    waiting: 0,
                },
            );
        }
        &mut self.lines[i]
    }

    /// `t`'s counter now (0 for a tenant never seen).
    pub fn counter(&self, t: TenantId) -> f64 {
        self.lines.get(t.0 as usize).map_or(0.0, |l| l.counter)
    }

    /// A request of `t` starts waiting. When `t` had none waiting, its counter is lifted.
    pub fn arrive(&mut self, t: TenantId) {
        if self.lines.get(t.0 as usize).is_none_or(|l| l.waiting == 0) {
            let floor = self
                .lines
                .iter()
                .filter(|l| l.waiting > 0)
                .map(|l| l.counter)
                .reduce(f64::min)
                .unwrap_or(self.last_served);
            let line = self.line(t);
            line.counter = line.counter.max(floor);
        }
        self.line(t).waiting += 1;
    }

    /// A request of `t` stops waiting without being served (timed out, shed, cancelled).
    pub fn leave(&mut self, t: TenantId) {
        let line = self.line(t);
        line.waiting = line.waiting.saturating_sub(1);
    }

    /// A request of `t` is served: it stops waiting and its prompt and expected output are
    /// charged.
    pub fn serve(&mut self, t: TenantId, input_tokens: u32, output_tokens: u32) {
        self.leave(t);
        self.charge(t, input_tokens, output_tokens);
        self.last_served = self.counter(t);
    }

    /// Adds tokens to `t`'s counter: at service time, or later to reconcile an estimate with
    /// the real usage (negative corrections are passed as a smaller estimate up front, so
    /// this only adds).
    pub fn charge(&mut self, t: TenantId, input_tokens: u32, output_tokens: u32) {
        let line = self.line(t);
        let cost =
            INPUT_WEIGHT * f64::from(input_tokens) + OUTPUT_WEIGHT * f64::from(output_tokens);
        line.counter += cost / line.weight;
    }

    /// Of the tenants `candidates` yields, the one with the smallest counter (the first of
    /// equals); `None` when it yields none.
    pub fn pick(&self, candidates: impl IntoIterator<Item = TenantId>) -> Option<TenantId> {
        let mut best: Option<(TenantId, f64)> = None;
        for t in candidates {
            let c = self.counter(t);
            if best.is_none_or(|(_, b)| c < b) {
                best = Some((t, c));
            }
        }
        best.map(|(t, _)| t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: TenantId = TenantId(0);
    const B: TenantId = TenantId(1);

    #[test]
    fn the_tenant_served_less_goes_first() {
        let mut v = VirtualTokenCounter::default();
        v.arrive(A);
        v.arrive(B);
        v.serve(A, 1000, 100);
        assert_eq!(v.counter(A), 1000.0 + 200.0);
        assert_eq!(v.pick([A, B]), Some(B));
        v.serve(B, 100, 10);
        assert_eq!(v.pick([A, B]), Some(B));
    }

    #[test]
    fn idle_time_banks_no_credit() {
        let mut v = VirtualTokenCounter::default();
        v.arrive(A);
        for _ in 0..10 {
            v.arrive(A);
            v.serve(A, 100, 0);
        }
        // A still waits with one request; B arrives after being idle all along.
        v.arrive(B);
        assert_eq!(
            v.counter(B),
            v.counter(A),
            "lifted to the least waiting counter"
        );
        // Both alternate from here instead of B taking ten turns in a row.
        v.arrive(B);
        v.serve(B, 100, 0);
        assert_eq!(v.pick([A, B]), Some(A));
    }

    #[test]
    fn a_tenant_arriving_at_an_empty_queue_starts_at_the_last_served() {
        let mut v = VirtualTokenCounter::default();
        v.arrive(A);
        v.serve(A, 500, 0);
        v.arrive(B);
        assert_eq!(v.counter(B), 500.0);
    }

    #[test]
    fn weights_divide_the_cost() {
        let mut v = VirtualTokenCounter::with_weights(&[2.0, 1.0]);
        v.arrive(A);
        v.arrive(B);
        v.serve(A, 100, 0);
        v.serve(B, 100, 0);
        assert_eq!(v.counter(A), 50.0);
        assert_eq!(v.counter(B), 100.0);
        assert_eq!(v.pick([B, A]), Some(A));
    }
}
