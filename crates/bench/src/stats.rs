//! The report arithmetic every benchmark shares: percentiles of latency samples, goodput under
//! an SLO, throughput ratios and added latency. Pure functions over numbers, so the tables in
//! `bench/results/` are computed by code the tests pin down.
//!
//! Percentiles are nearest-rank (the smallest sample with at least `p` of the samples at or
//! below it), as the sim crate's fleet summary computes them, so a table mixing both agrees.

use serde::Serialize;

/// The nearest-rank `p`-quantile (`p` in 0..=1) of ascending `sorted` values; `None` if empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() || !p.is_finite() {
        return None;
    }
    let rank = (p.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Percentiles of one set of latency samples (any unit; the caller names it).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// Number of samples.
    pub count: usize,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
}

impl Percentiles {
    /// Summarizes `samples` (any order; non-finite ones are dropped). `None` when no finite
    /// sample is left.
    pub fn of(samples: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let at = |p| percentile(&v, p).unwrap_or(f64::NAN);
        Some(Self {
            count: v.len(),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: v[v.len() - 1],
            mean: v.iter().sum::<f64>() / v.len() as f64,
        })
    }
}

/// Requests that met a time-to-first-token SLO.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Goodput {
    /// The SLO, seconds.
    pub slo_s: f64,
    /// Requests that completed with TTFT at most `slo_s`.
    pub good: usize,
    /// Requests offered (completed or not: a rejected request is not good).
    pub offered: usize,
    /// `good / offered` (0 when nothing was offered).
    pub share: f64,
    /// `good` per second of the run.
    pub per_s: f64,
}

/// Goodput of a run: `ttfts` holds one entry per offered request, `None` for one that never
/// got a first token (rejected, failed, unfinished); `duration_s` is the run's length.
pub fn goodput(ttfts: &[Option<f64>], slo_s: f64, duration_s: f64) -> Goodput {
    let good = ttfts
        .iter()
        .filter(|t| t.is_some_and(|t| t.is_finite() && t <= slo_s))
        .count();
    let offered = ttfts.len();
    Goodput {
        slo_s,
        good,
        offered,
        share: if offered == 0 {
            0.0
        } else {
            good as f64 / offered as f64
        },
        per_s: if duration_s > 0.0 && duration_s.is_finite() {
            good as f64 / duration_s
        } else {
            0.0
        },
    }
}

/// `a / b`, or `None` when either is not a finite number or `b` is not positive (a peer that
/// did not run has no ratio, rather than an infinite one).
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (a.is_finite() && b.is_finite() && b > 0.0).then(|| a / b)
}

/// What a path adds over the direct path: `path - direct` (negative values are noise and are
/// reported as they are, not clamped, so the noise stays visible).
pub fn added(path: f64, direct: f64) -> f64 {
    path - direct
}

/// CPU seconds per 1,000 requests from clock ticks spent and requests served; `None` when no
/// request was served or the tick rate is unknown.
pub fn cpu_seconds_per_1k(ticks: u64, ticks_per_s: u64, requests: u64) -> Option<f64> {
    (requests > 0 && ticks_per_s > 0)
        .then(|| ticks as f64 / ticks_per_s as f64 / requests as f64 * 1000.0)
}

/// Points of an empirical CDF for a plot: at most `max_points` (x, share at or below x) pairs
/// taken evenly over the sorted samples, always including the largest.
pub fn cdf_points(samples: &[f64], max_points: usize) -> Vec<(f64, f64)> {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() || max_points == 0 {
        return Vec::new();
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let step = n.div_ceil(max_points).max(1);
    let mut out: Vec<(f64, f64)> = (step - 1..n)
        .step_by(step)
        .map(|i| (v[i], (i + 1) as f64 / n as f64))
        .collect();
    if out.last().is_none_or(|&(_, y)| y < 1.0) {
        out.push((v[n - 1], 1.0));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_pick_real_samples() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.9), Some(90.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&v, 0.999), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[7.0], 0.99), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&v, f64::NAN), None);
    }

    #[test]
    fn percentiles_sort_their_input_and_drop_non_finite_samples() {
        let p = Percentiles::of(&[3.0, f64::NAN, 1.0, 2.0, 4.0, f64::INFINITY]).unwrap();
        assert_eq!(p.count, 4);
        assert_eq!((p.p50, p.p99, p.max), (2.0, 4.0, 4.0));
        assert!((p.mean - 2.5).abs() < 1e-12);
        assert_eq!(Percentiles::of(&[f64::NAN]), None);
    }

    #[test]
    fn goodput_counts_only_requests_within_the_slo_over_all_offered() {
        let t = [Some(0.5), Some(2.0), Some(2.01), None, Some(f64::NAN)];
        let g = goodput(&t, 2.0, 10.0);
        assert_eq!((g.good, g.offered), (2, 5));
        assert!((g.share - 0.4).abs() < 1e-12);
        assert!((g.per_s - 0.2).abs() < 1e-12);
        let empty = goodput(&[], 2.0, 0.0);
        assert_eq!((empty.share, empty.per_s), (0.0, 0.0));
    }

    #[test]
    fn ratios_refuse_missing_or_zero_denominators() {
        assert_eq!(ratio(90.0, 100.0), Some(0.9));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(f64::NAN, 1.0), None);
        assert_eq!(ratio(1.0, -2.0), None);
        assert!((added(1.25, 1.0) - 0.25).abs() < 1e-12);
        assert!(added(0.9, 1.0) < 0.0, "noise stays visible");
    }

    #[test]
    fn cpu_per_thousand_requests() {
        assert_eq!(cpu_seconds_per_1k(250, 100, 50_000), Some(0.05));
        assert_eq!(cpu_seconds_per_1k(250, 100, 0), None);
        assert_eq!(cpu_seconds_per_1k(250, 0, 10), None);
    }

    #[test]
    fn cdf_points_are_bounded_monotone_and_end_at_one() {
        let v: Vec<f64> = (0..1000).rev().map(f64::from).collect();
        let pts = cdf_points(&v, 50);
        assert!(pts.len() <= 51);
        assert!(pts.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 < w[1].1));
        assert_eq!(*pts.last().unwrap(), (999.0, 1.0));
        assert_eq!(cdf_points(&[2.0], 10), vec![(2.0, 1.0)]);
        assert!(cdf_points(&[], 10).is_empty());
    }
}
