//! What a fleet run produced: a record per request, a record per backend and summary
//! statistics, all serializable for the bench crate's reports.

use serde::Serialize;

use crate::metrics::EngineMetrics;

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Outcome {
    /// It got its whole answer.
    Completed,
    /// Every backend the policy offered refused it (too long for them), or none could take it.
    Rejected,
    /// The run ended before it finished (only if the run was cut short).
    Unfinished,
}

/// One request's life in the fleet.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestRecord {
    /// Position in the workload.
    pub index: usize,
    /// The workload's session id.
    pub session: Option<u64>,
    /// The backend it was sent to (index in the fleet), if any.
    pub backend: Option<u32>,
    /// When it arrived at the gateway, s.
    pub arrival: f64,
    /// When it was sent to a backend (later than `arrival` if it queued at the gateway), s.
    pub dispatched: Option<f64>,
    /// Time to first token from arrival, s.
    pub ttft: Option<f64>,
    /// Time to last token from arrival, s.
    pub e2e: Option<f64>,
    /// Prompt length.
    pub prompt_tokens: u32,
    /// Prompt tokens served from the prefix cache at its first admission.
    pub cached_prompt_tokens: u32,
    /// Tokens it got back.
    pub output_tokens: u32,
    /// Times the engine preempted it.
    pub preemptions: u32,
    /// How it ended.
    pub outcome: Outcome,
}

/// One backend's share of the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackendReport {
    /// Its configured name.
    pub name: String,
    /// Its engine profile's name.
    pub profile: String,
    /// Requests dispatched to it.
    pub requests: u64,
    /// Fraction of the run's duration it spent in steps.
    pub busy_fraction: f64,
    /// Its metrics at the end of the run.
    pub final_metrics: EngineMetrics,
}

/// Summary statistics of a run. Latency percentiles are over completed requests,
/// nearest-rank; `None` with no completed request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Requests in the workload.
    pub requests: usize,
    /// Requests that completed.
    pub completed: usize,
    /// Requests no backend took.
    pub rejected: usize,
    /// From the first arrival to the last completion, s.
    pub duration_s: f64,
    /// Time to first token, median, s.
    pub ttft_p50: Option<f64>,
    /// Time to first token, 90th percentile, s.
    pub ttft_p90: Option<f64>,
    /// Time to first token, 99th percentile, s.
    pub ttft_p99: Option<f64>,
    /// End-to-end latency, median, s.
    pub e2e_p50: Option<f64>,
    /// End-to-end latency, 99th percentile, s.
    pub e2e_p99: Option<f64>,
    /// Mean time per output token after the first, over requests with more than one, s.
    pub tpot_mean: Option<f64>,
    /// Output tokens of completed requests per second of `duration_s`.
    pub output_tokens_per_s: f64,
    /// Prefix-cache hit tokens over looked-up tokens, summed over engines (vLLM's counting).
    pub prefix_cache_hit_rate: f64,
    /// Time-weighted mean, over the time anything was in flight, of `max / mean` in-flight
    /// requests across backends: 1.0 is perfectly even.
    pub in_flight_imbalance_mean: f64,
    /// The largest `max / mean` in-flight ratio seen.
    pub in_flight_imbalance_max: f64,
    /// The capacity-weighted version of `in_flight_imbalance_mean`: the time-weighted mean,
    /// over the time anything was in flight, of `max_b in_flight_b / fair_b`, where a
    /// backend's fair share `fair_b` is the in-flight total split by weight
    /// (`total x weight_b / sum of weights`), but at least one request: a backend holding a
    /// single request is never over its share (without the floor, any request on a slow
    /// backend of weight 1 next to weights of 5 while little else runs reads as 12x, and
    /// weighted round robin, which gives every backend exactly its share of requests, scores
    /// about 8 on the mixed fleet of `tests/routing_quality.rs`). 2.0 means the busiest
    /// backend holds twice its fair share. On equal weights it equals the unweighted ratio
    /// whenever at least as many requests as backends are in flight.
    pub weighted_in_flight_imbalance_mean: f64,
    /// The largest capacity-weighted ratio seen.
    pub weighted_in_flight_imbalance_max: f64,
    /// Preemptions over all engines.
    pub preemptions: u64,
    /// Evicted cache blocks over all engines.
    pub evicted_blocks: u64,
    /// Requests dispatched per backend, in fleet order.
    pub requests_per_backend: Vec<u64>,
}

/// Everything a fleet run produced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunReport {
    /// The policy's config name.
    pub policy: String,
    /// The seed the policy was built with.
    pub seed: u64,
    /// One record per workload request, in workload order.
    pub requests: Vec<RequestRecord>,
    /// One report per backend, in fleet order.
    pub backends: Vec<BackendReport>,
    /// The summary.
    pub summary: Summary,
}

/// Time-weighted `max / mean` of in-flight counts across backends, or, built with
/// [`InFlightImbalance::weighted`], of each backend's count over its capacity-weighted fair
/// share (at least one request).
#[derive(Debug, Default)]
pub(crate) struct InFlightImbalance {
    /// Each backend's share of the total weight (`None`: the plain `max / mean`).
    shares: Option<Vec<f64>>,
    /// The ratio since `since` (`None` while nothing is in flight).
    current: Option<f64>,
    since: f64,
    area: f64,
    loaded_time: f64,
    max: f64,
}

impl InFlightImbalance {
    /// A tracker of in-flight counts against fair shares in proportion to `weights` (a
    /// weight below 1 counts as 1).
    pub(crate) fn weighted(weights: impl IntoIterator<Item = u32>) -> Self {
        let weights: Vec<f64> = weights.into_iter().map(|w| f64::from(w.max(1))).collect();
        let total: f64 = weights.iter().sum();
        Self {
            shares: Some(weights.iter().map(|w| w / total).collect()),
            ..Self::default()
        }
    }

    /// The ratio for these counts, `None` when nothing is in flight.
    fn ratio(&self, in_flight: &[u32]) -> Option<f64> {
        let total: u64 = in_flight.iter().map(|&n| u64::from(n)).sum();
        if total == 0 {
            return None;
        }
        let total = total as f64;
        Some(match &self.shares {
            None => {
                let max = in_flight.iter().copied().max().unwrap_or(0);
                f64::from(max) * in_flight.len() as f64 / total
            }
            Some(shares) => in_flight
                .iter()
                .zip(shares)
                .map(|(&n, share)| f64::from(n) / (total * share).max(1.0))
                .fold(0.0, f64::max),
        })
    }

    /// Accounts the current ratio up to `t`, then takes the new counts.
    pub(crate) fn update(&mut self, t: f64, in_flight: &[u32]) {
        if let Some(r) = self.current {
            let dt = t - self.since;
            self.area += r * dt;
            self.loaded_time += dt;
        }
        self.since = t;
        self.current = self.ratio(in_flight);
        if let Some(r) = self.current {
            self.max = self.max.max(r);
        }
    }

    /// The largest ratio seen (1.0 if nothing was ever in flight).
    pub(crate) fn max(&self) -> f64 {
        self.max.max(1.0)
    }

    /// The time-weighted mean ratio over the time anything was in flight (1.0 if never).
    pub(crate) fn mean(&self) -> f64 {
        if self.loaded_time > 0.0 {
            self.area / self.loaded_time
        } else {
            1.0
        }
    }
}

/// The nearest-rank `p`-quantile (0..1) of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Builds the summary from the records and backend reports.
pub(crate) fn summarize(
    requests: &[RequestRecord],
    backends: &[BackendReport],
    imbalance: &InFlightImbalance,
    weighted_imbalance: &InFlightImbalance,
) -> Summary {
    let done: Vec<&RequestRecord> = requests
        .iter()
        .filter(|r| r.outcome == Outcome::Completed)
        .collect();
    let mut ttft: Vec<f64> = done.iter().filter_map(|r| r.ttft).collect();
    let mut e2e: Vec<f64> = done.iter().filter_map(|r| r.e2e).collect();
    ttft.sort_by(f64::total_cmp);
    e2e.sort_by(f64::total_cmp);
    let tpots: Vec<f64> = done
        .iter()
        .filter(|r| r.output_tokens > 1)
        .filter_map(|r| Some((r.e2e? - r.ttft?) / f64::from(r.output_tokens - 1)))
        .collect();
    let start = requests
        .iter()
        .map(|r| r.arrival)
        .fold(f64::INFINITY, f64::min);
    let end = done
        .iter()
        .filter_map(|r| r.e2e.map(|e| r.arrival + e))
        .fold(f64::NEG_INFINITY, f64::max);
    let duration_s = if end > start { end - start } else { 0.0 };
    let output: u64 = done.iter().map(|r| u64::from(r.output_tokens)).sum();
    let (hits, queries) = backends.iter().fold((0u64, 0u64), |(h, q), b| {
        (
            h + b.final_metrics.prefix_cache_hits,
            q + b.final_metrics.prefix_cache_queries,
        )
    });
    Summary {
        requests: requests.len(),
        completed: done.len(),
        rejected: requests
            .iter()
            .filter(|r| r.outcome == Outcome::Rejected)
            .count(),
        duration_s,
        ttft_p50: percentile(&ttft, 0.50),
        ttft_p90: percentile(&ttft, 0.90),
        ttft_p99: percentile(&ttft, 0.99),
        e2e_p50: percentile(&e2e, 0.50),
        e2e_p99: percentile(&e2e, 0.99),
        tpot_mean: (!tpots.is_empty()).then(|| tpots.iter().sum::<f64>() / tpots.len() as f64),
        output_tokens_per_s: if duration_s > 0.0 {
            output as f64 / duration_s
        } else {
            0.0
        },
        prefix_cache_hit_rate: if queries == 0 {
            0.0
        } else {
            hits as f64 / queries as f64
        },
        in_flight_imbalance_mean: imbalance.mean(),
        in_flight_imbalance_max: imbalance.max(),
        weighted_in_flight_imbalance_mean: weighted_imbalance.mean(),
        weighted_in_flight_imbalance_max: weighted_imbalance.max(),
        preemptions: backends
            .iter()
            .map(|b| b.final_metrics.preemptions_total)
            .sum(),
        evicted_blocks: backends
            .iter()
            .map(|b| b.final_metrics.evicted_blocks_total)
            .sum(),
        requests_per_backend: backends.iter().map(|b| b.requests).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imbalance_is_time_weighted_max_over_mean() {
        let mut m = InFlightImbalance::default();
        assert_eq!((m.mean(), m.max()), (1.0, 1.0));
        m.update(0.0, &[1, 1]); // even: 1.0 for 1 s
        m.update(1.0, &[2, 0]); // all on one of two: 2.0 for 3 s
        m.update(4.0, &[0, 0]); // idle: not counted
        m.update(10.0, &[0, 0]);
        assert!((m.mean() - 1.75).abs() < 1e-12);
        assert_eq!(m.max(), 2.0);
    }

    #[test]
    fn weighted_imbalance_measures_in_flight_against_capacity_share() {
        // Weights 3 and 1: a 3:1 split is each one's fair share, even though unweighted it
        // looks lopsided; a 1:1 split overloads the small one; a lone request on the small
        // one is within its share (one request), though unweighted it reads 2.0.
        let mut w = InFlightImbalance::weighted([3, 1]);
        let mut u = InFlightImbalance::default();
        for m in [&mut w, &mut u] {
            m.update(0.0, &[3, 1]); // 1 s
            m.update(1.0, &[2, 2]); // 1 s
            m.update(2.0, &[0, 1]); // 2 s
            m.update(4.0, &[0, 0]);
        }
        // Weighted: 1.0, then 2 / max(1, 4 x 1/4) = 2.0, then 1 / max(1, 1/4) = 1.0.
        assert!((w.mean() - 1.25).abs() < 1e-12, "{}", w.mean());
        assert_eq!(w.max(), 2.0);
        // Unweighted: 1.5, then 1.0, then 2.0.
        assert!((u.mean() - 1.625).abs() < 1e-12, "{}", u.mean());
        assert_eq!(u.max(), 2.0);
        // Equal weights and at least one request per backend: the two agree.
        let mut e = InFlightImbalance::weighted([1, 1]);
        e.update(0.0, &[3, 1]);
        e.update(1.0, &[0, 0]);
        assert_eq!(e.mean(), 1.5);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&v, 1.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
