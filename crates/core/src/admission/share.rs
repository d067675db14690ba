//! Each tenant's share of a pool's prefill: fairness on what is already dispatched, not only
//! on what waits.
//!
//! The admission queue orders waiting requests fairly ([`super::VirtualTokenCounter`]), but
//! once a tenant's burst of long prompts is inside the engines it delays every later request
//! there: an engine step computes the prompts it holds before anything that arrives after
//! them. So while several tenants are present, each may have at most its weighted share of
//! the pool's prefill budget (the backends' `max_prefill_tokens` added up) in prompts that
//! have not produced a first token yet. A tenant with none in prefill may always send one
//! request, however long, so no prompt is too big to ever go; a tenant alone is never held,
//! so the share never idles a pool (the backends' own prefill limits still apply).
//!
//! A tenant is *present* from when its request arrives at the gateway until the response ends
//! (waiting or in flight). The caller reports those moments; nothing here reads a clock.

use super::vtc::TenantId;

/// One tenant's line.
#[derive(Debug, Clone, Copy)]
struct Line {
    /// Its share relative to others (1 when not configured).
    weight: f64,
    /// Its requests waiting or in flight.
    present: u32,
    /// Prompt tokens of its dispatched requests without a first token yet.
    prefill: u64,
}

impl Default for Line {
    fn default() -> Self {
        Self {
            weight: 1.0,
            present: 0,
            prefill: 0,
        }
    }
}

/// Per-tenant prefill in a pool, against the pool's budget. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct PrefillShares {
    /// The pool's prefill budget, tokens.
    budget: u64,
    /// Indexed by [`TenantId`]; grows to the largest id seen.
    lines: Vec<Line>,
}

impl PrefillShares {
    /// Shares of `budget` prefill tokens between tenants of the given weights (index =
    /// [`TenantId`]; others weigh 1).
    pub fn new(budget: u64, weights: &[f64]) -> Self {
        let lines = weights
            .iter()
            .map(|&w| Line {
                weight: if w.is_finite() && w > 0.0 { w } else { 1.0 },
                ..Line::default()
            })
            .collect();
        Self { budget, lines }
    }

    fn line(&mut self, t: TenantId) -> &mut Line {
        let i = t.0 as usize;
        if i >= self.lines.len() {
            self.lines.resize(i + 1, Line::default());
        }
        &mut self.lines[i]
    }

    /// The pool's budget.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// A request of `t` arrived (it waits or goes).
    pub fn arrive(&mut self, t: TenantId) {
        self.line(t).present += 1;
    }

    /// A request of `t` is over: answered, refused, or its client left.
    pub fn leave(&mut self, t: TenantId) {
        let l = self.line(t);
        l.present = l.present.saturating_sub(1);
    }

    /// A request of `t` with `tokens` of prompt was sent to a backend.
    pub fn dispatch(&mut self, t: TenantId, tokens: u64) {
        self.line(t).prefill += tokens;
    }

    /// A dispatched request of `t` got its first token, or ended without one.
    pub fn prefilled(&mut self, t: TenantId, tokens: u64) {
        let l = self.line(t);
        l.prefill = l.prefill.saturating_sub(tokens);
    }

    /// Prompt tokens of `t` in prefill now.
    pub fn prefill(&self, t: TenantId) -> u64 {
        self.lines.get(t.0 as usize).map_or(0, |l| l.prefill)
    }

    /// `t`'s share of the budget now, in tokens: its weight over the weights of the tenants
    /// present (itself counted even when absent).
    pub fn share(&self, t: TenantId) -> f64 {
        let own = self.lines.get(t.0 as usize).copied().unwrap_or_default();
        let others: f64 = self
            .lines
            .iter()
            .enumerate()
            .filter(|&(i, l)| i != t.0 as usize && l.present > 0)
            .map(|(_, l)| l.weight)
            .sum();
        self.budget as f64 * own.weight / (own.weight + others)
    }

    /// Whether a request of `t` may be dispatched under `shares`: always when none are kept.
    pub fn allow(shares: Option<&PrefillShares>, t: TenantId) -> bool {
        shares.is_none_or(|s| s.may_go(t))
    }

    /// Whether a request of `t` may be dispatched now: `t` is the only tenant present, has
    /// nothing in prefill, or less than its share.
    pub fn may_go(&self, t: TenantId) -> bool {
        let prefill = self.prefill(t);
        prefill == 0 || self.alone(t) || (prefill as f64) < self.share(t)
    }

    /// Whether no tenant but `t` is present.
    fn alone(&self, t: TenantId) -> bool {
        self.lines
            .iter()
            .enumerate()
            .all(|(i, l)| i == t.0 as usize || l.present == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: TenantId = TenantId(0);
    const B: TenantId = TenantId(1);
    const C: TenantId = TenantId(2);

    #[test]
    fn a_tenant_alone_has_the_whole_budget() {
        let mut s = PrefillShares::new(3000, &[]);
        s.arrive(A);
        s.dispatch(A, 2000);
        assert_eq!(s.share(A), 3000.0);
        assert!(s.may_go(A));
        s.dispatch(A, 5000);
        assert!(s.may_go(A), "a tenant alone is never held by its share");
        s.arrive(B);
        assert!(!s.may_go(A), "with B present, A's share is half");
        assert!(s.may_go(B));
    }

    #[test]
    fn present_tenants_split_the_budget_by_weight() {
        let mut s = PrefillShares::new(3000, &[2.0, 1.0]);
        s.arrive(A);
        s.arrive(B);
        s.arrive(C);
        assert_eq!(s.share(A), 1500.0);
        assert_eq!(s.share(B), 750.0);
        s.dispatch(B, 700);
        assert!(s.may_go(B));
        s.dispatch(B, 100);
        assert!(!s.may_go(B), "800 of a 750 share");
        s.leave(C);
        assert_eq!(s.share(B), 1000.0, "C left: B's share grows");
        assert!(s.may_go(B));
    }

    #[test]
    fn a_tenant_with_nothing_in_prefill_may_send_any_prompt() {
        let mut s = PrefillShares::new(1000, &[]);
        for t in [A, B, C] {
            s.arrive(t);
        }
        assert!(s.may_go(A));
        s.dispatch(A, 5000);
        assert!(!s.may_go(A));
        s.prefilled(A, 5000);
        assert!(s.may_go(A), "its prompt is past prefill");
        assert!(s.may_go(B), "others were never held by A's prompt");
    }

    #[test]
    fn counts_never_wrap() {
        let mut s = PrefillShares::new(100, &[]);
        s.leave(A);
        s.prefilled(A, 10);
        assert_eq!(s.prefill(A), 0);
        assert_eq!(s.share(A), 100.0);
    }
}
