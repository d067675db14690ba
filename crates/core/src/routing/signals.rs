//! What the LLM-aware policies share: which engine and GPU reports are fresh enough to count,
//! load in tokens, expected latency, and ranking scored candidates into a primary, ordered
//! fallbacks and (on request) an [`Explanation`].
//!
//! Stale reports stop counting: a report older than the policy's `max_report_age` is ignored
//! and the policy falls back to the gateway's own counters (`in_flight`, `in_flight_tokens`,
//! `prefill_tokens`), which are always current.

use std::time::Duration;

use smallvec::SmallVec;

use crate::decision::{CandidateScore, Decision, Explanation, Reason, MAX_FALLBACKS};
use crate::fleet::{BackendId, BackendView, EngineLoad, FleetView, GpuLoad};
use crate::RequestProfile;

/// Default bound on the age of engine and GPU reports: a few scrape intervals of a few hundred
/// milliseconds. Older reports are ignored.
pub const DEFAULT_MAX_REPORT_AGE: Duration = Duration::from_secs(2);

/// Tokens assumed per request in flight when the gateway counts requests but not tokens.
pub const DEFAULT_REQUEST_TOKENS: f64 = 512.0;

/// Output tokens assumed for a request that does not say how many it wants.
pub const DEFAULT_OUTPUT_TOKENS: u32 = 256;

/// Named terms of one candidate's score, for explanations.
pub(crate) type Terms = Vec<(&'static str, f64)>;

/// The engine's report when it is fresh enough to count.
pub(crate) fn fresh_engine(b: &BackendView, max_age: Duration) -> Option<&EngineLoad> {
    b.engine.as_ref().filter(|e| e.age <= max_age)
}

/// The GPU exporter's report when it is fresh enough to count.
pub(crate) fn fresh_gpu(b: &BackendView, max_age: Duration) -> Option<&GpuLoad> {
    b.gpu.as_ref().filter(|g| g.age <= max_age)
}

/// The backend's share of traffic: weight times its slow-start ramp. Loads are divided by it.
pub(crate) fn share(b: &BackendView) -> f64 {
    f64::from(b.weight.max(1)) * f64::from(b.ramp).clamp(0.05, 1.0)
}

/// The gateway's own tokens in flight; when it counts only requests, an estimate from those.
pub(crate) fn own_tokens(b: &BackendView) -> f64 {
    if b.in_flight_tokens == 0 && b.in_flight > 0 {
        f64::from(b.in_flight) * DEFAULT_REQUEST_TOKENS
    } else {
        b.in_flight_tokens as f64
    }
}

/// Average tokens of one request in flight there.
fn tokens_per_request(b: &BackendView) -> f64 {
    if b.in_flight > 0 {
        own_tokens(b) / f64::from(b.in_flight)
    } else {
        DEFAULT_REQUEST_TOKENS
    }
}

/// Prefill work queued ahead of a new request, in tokens: the gateway's own count of prompt
/// tokens not yet past their first token, or the engine's waiting queue when that shows more
/// (requests from other gateways, or an engine slower than the gateway thinks).
pub(crate) fn queued_prefill(b: &BackendView, engine: Option<&EngineLoad>) -> f64 {
    let own = b.prefill_tokens as f64;
    match engine {
        Some(e) if e.waiting > 0 => own.max(f64::from(e.waiting) * tokens_per_request(b)),
        _ => own,
    }
}

/// Tokens in flight there, counting requests the engine reports beyond the gateway's own.
pub(crate) fn total_tokens(b: &BackendView, engine: Option<&EngineLoad>) -> f64 {
    let own = own_tokens(b);
    match engine {
        Some(e) => {
            let reported = f64::from(e.running.saturating_add(e.waiting)) * tokens_per_request(b);
            own.max(reported)
        }
        None => own,
    }
}

/// How long this request would take there at the backend's recent pace: TTFT plus TPOT times
/// the output it asks for, else the end-to-end average, else `None`.
pub(crate) fn expected_latency(b: &BackendView, request: &RequestProfile) -> Option<f64> {
    let l = &b.latency;
    let out = f64::from(request.max_output_tokens.unwrap_or(DEFAULT_OUTPUT_TOKENS));
    match (l.ttft_s, l.tpot_s) {
        (Some(ttft), Some(tpot)) => Some(f64::from(ttft) + f64::from(tpot) * out),
        _ => l.latency_s.map(f64::from),
    }
}

/// Mean expected latency over backends that have one: what a backend without samples is
/// assumed to take (neither penalized nor favoured).
pub(crate) fn mean_expected_latency(fleet: &FleetView<'_>, request: &RequestProfile) -> f64 {
    let (sum, n) = fleet
        .backends
        .iter()
        .filter_map(|b| expected_latency(b, request))
        .fold((0.0, 0u32), |(s, n), l| (s + l, n + 1));
    if n == 0 {
        1.0
    } else {
        sum / f64::from(n)
    }
}

/// The best candidates of a ranking, best first, and the explanation when asked for.
pub(crate) struct Ranked {
    /// Up to `1 + MAX_FALLBACKS` `(key, id)` pairs, lowest key first.
    pub top: SmallVec<[((f64, f64), BackendId); MAX_FALLBACKS + 1]>,
    /// Every backend's score and terms, when `fleet.explain`.
    pub explanation: Option<Explanation>,
}

impl Ranked {
    /// The decision: the best candidate, then the rest in order.
    pub fn decision(self, reason: impl FnOnce(BackendId) -> Reason) -> Option<Decision> {
        let (_, primary) = *self.top.first()?;
        let mut d = Decision::new(primary, reason(primary))
            .with_fallbacks(self.top.iter().skip(1).map(|&(_, id)| id));
        if let Some(e) = self.explanation {
            d = d.with_explanation(e);
        }
        Some(d)
    }
}

/// Scores every usable backend, starting the scan at `start` (so equal keys rotate), and keeps
/// the lowest keys. `score` returns `None` to exclude a backend; keys compare
/// lexicographically. When `fleet.explain`, `score` gets a `Terms` to fill and every backend
/// is listed (an unusable one with the term `unusable`, an excluded one with score infinity).
pub(crate) fn rank<F>(fleet: &FleetView<'_>, start: usize, mut score: F) -> Ranked
where
    F: FnMut(&BackendView, Option<&mut Terms>) -> Option<(f64, f64)>,
{
    let n = fleet.backends.len();
    let mut top: SmallVec<[((f64, f64), BackendId); MAX_FALLBACKS + 1]> = SmallVec::new();
    let mut candidates = Vec::new();
    for k in 0..n {
        let b = &fleet.backends[(start + k) % n];
        let mut terms = fleet.explain.then(Vec::new);
        let key = if b.usable {
            score(b, terms.as_mut())
        } else {
            if let Some(t) = terms.as_mut() {
                t.push(("unusable", 1.0));
            }
            None
        };
        if let Some(key) = key.filter(|k| !k.0.is_nan() && !k.1.is_nan()) {
            let pos = top
                .iter()
                .position(|(k, _)| key.partial_cmp(k).is_some_and(|o| o.is_lt()))
                .unwrap_or(top.len());
            if pos <= MAX_FALLBACKS {
                if top.len() == MAX_FALLBACKS + 1 {
                    top.pop();
                }
                top.insert(pos, (key, b.id));
            }
        }
        if let Some(terms) = terms {
            candidates.push(CandidateScore {
                id: b.id,
                score: key.map_or(f64::INFINITY, |k| k.0),
                terms,
            });
        }
    }
    let explanation = fleet.explain.then(|| {
        candidates.sort_by_key(|c| c.id);
        Explanation { candidates }
    });
    Ranked { top, explanation }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::test_support::idle;

    #[test]
    fn rank_keeps_the_lowest_in_order_and_skips_unusable_and_excluded() {
        let mut pool = idle(6);
        pool[1].usable = false;
        let scores = [5.0, 0.0, 3.0, 1.0, 4.0, 2.0];
        let fleet = FleetView::new(&pool, Duration::ZERO).explaining(true);
        let r = rank(&fleet, 0, |b, _| {
            (b.id.0 != 5).then(|| (scores[b.id.index()], 0.0))
        });
        let ids: Vec<u32> = r.top.iter().map(|(_, id)| id.0).collect();
        assert_eq!(ids, [3, 2, 4, 0]);
        let e = r.explanation.unwrap();
        assert_eq!(e.candidates.len(), 6);
        assert_eq!(e.candidates[1].terms, [("unusable", 1.0)]);
        assert!(e.candidates[5].score.is_infinite());
    }

    #[test]
    fn equal_keys_go_to_the_first_in_scan_order() {
        let pool = idle(3);
        let fleet = FleetView::new(&pool, Duration::ZERO);
        for start in 0..3 {
            let r = rank(&fleet, start, |_, _| Some((1.0, 0.0)));
            assert_eq!(r.top[0].1 .0 as usize, start);
        }
    }

    #[test]
    fn stale_reports_do_not_count() {
        let mut b = idle(1)[0];
        b.engine = Some(EngineLoad {
            running: 10,
            waiting: 10,
            kv_usage: 0.9,
            kv_capacity_tokens: None,
            age: Duration::from_secs(5),
        });
        assert!(fresh_engine(&b, DEFAULT_MAX_REPORT_AGE).is_none());
        assert_eq!(
            total_tokens(&b, fresh_engine(&b, DEFAULT_MAX_REPORT_AGE)),
            0.0
        );
        assert!(fresh_engine(&b, Duration::from_secs(10)).is_some());
    }
}
