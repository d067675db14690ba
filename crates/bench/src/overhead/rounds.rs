//! Interleaved rounds of the throughput phase (`--rounds N`): every path's max throughput,
//! proxy CPU and closed-loop p99 measured N times, one path after another in each round
//! (direct, Switchyard, peers; each later round starts one path further along), so a slow
//! minute on a shared machine falls on every path alike; the medians over the rounds, their
//! ratios to nginx, and issue 13's targets.

use std::fmt::Write;

use serde::Serialize;

use super::report::{f, PathResult};
use crate::stats::ratio;

/// One path's throughput phase in one round.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoundRow {
    /// 1-based.
    pub round: usize,
    /// `direct`, `switchyard`, `nginx`, ...
    pub path: String,
    /// Max requests/s.
    pub rps: Option<f64>,
    /// Proxy CPU seconds per 1,000 requests.
    pub cpu_s_per_1k: Option<f64>,
    /// Closed-loop p99 at max throughput, ms.
    pub p99_ms: Option<f64>,
    /// Median latency of back-to-back requests on one connection, ms.
    pub sequential_p50_ms: Option<f64>,
}

impl RoundRow {
    /// The row of `r`, measured in `round`.
    pub fn of(round: usize, r: &PathResult) -> Self {
        let t = r.throughput.as_ref().filter(|_| r.error.is_none());
        Self {
            round,
            path: r.path.clone(),
            rps: t.map(|t| t.rps),
            cpu_s_per_1k: r.cpu_s_per_1k.filter(|_| r.error.is_none()),
            p99_ms: t.and_then(|t| t.latency_ms).map(|l| l.p99),
            sequential_p50_ms: r.sequential_p50_ms.filter(|_| r.error.is_none()),
        }
    }
}

/// A path's medians over the rounds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Medians {
    /// The path.
    pub path: String,
    /// Median max requests/s.
    pub rps: Option<f64>,
    /// Median proxy CPU seconds per 1,000 requests.
    pub cpu_s_per_1k: Option<f64>,
    /// Median closed-loop p99, ms.
    pub p99_ms: Option<f64>,
    /// Median of the rounds' back-to-back p50, ms.
    pub sequential_p50_ms: Option<f64>,
}

/// The median of the values present (the mean of the middle two for an even count).
pub fn median(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let mut v: Vec<f64> = values.flatten().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// An interval that holds the true median of what `values` sample with at least 95%
/// confidence, whatever their distribution: the `k`-th smallest and `k`-th largest value, for
/// the largest `k` whose two tails of the binomial (n, 1/2) weigh 5% or less together.
/// Returns the interval and its confidence; `None` with fewer than six values (no such `k`).
pub fn median_interval(values: impl Iterator<Item = Option<f64>>) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = values.flatten().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    // P(B <= j) for B ~ Binomial(n, 1/2), j = 0, 1, ...: the chance that j or fewer of the
    // values fall below the median.
    let mut pmf = 0.5f64.powi(i32::try_from(n).ok()?);
    let mut tail = pmf;
    let mut k = None;
    for j in 0..n / 2 {
        if 2.0 * tail > 0.05 {
            break;
        }
        k = Some((j, 1.0 - 2.0 * tail));
        pmf *= (n - j) as f64 / (j + 1) as f64;
        tail += pmf;
    }
    let (j, confidence) = k?;
    Some((v[j], v[n - 1 - j], confidence))
}

/// The ratios of `path`'s figure over `base`'s in the same round, round by round (`pick`
/// reads the figure).
fn paired_ratios<'a>(
    rows: &'a [RoundRow],
    path: &'a str,
    base: &'a str,
    pick: impl Fn(&RoundRow) -> Option<f64> + 'a,
) -> impl Iterator<Item = Option<f64>> + 'a {
    let of = move |round: usize, pick: &dyn Fn(&RoundRow) -> Option<f64>| {
        rows.iter()
            .find(|r| r.path == base && r.round == round)
            .and_then(pick)
    };
    rows.iter()
        .filter(move |r| r.path == path)
        .map(move |r| ratio(pick(r)?, of(r.round, &pick)?))
}

/// The median over rounds of `path`'s figure over `base`'s in the same round (`pick` reads the
/// figure): the paired view of interleaved rounds, which a machine's swings between rounds
/// move less than the ratio of the two medians.
pub fn paired_median(
    rows: &[RoundRow],
    path: &str,
    base: &str,
    pick: impl Fn(&RoundRow) -> Option<f64>,
) -> Option<f64> {
    median(paired_ratios(rows, path, base, pick))
}

/// Medians per path, in the order the paths first appear.
pub fn medians(rows: &[RoundRow]) -> Vec<Medians> {
    let mut names: Vec<&str> = Vec::new();
    for r in rows {
        if !names.contains(&r.path.as_str()) {
            names.push(&r.path);
        }
    }
    names
        .into_iter()
        .map(|name| {
            let of = || rows.iter().filter(move |r| r.path == name);
            Medians {
                path: name.to_owned(),
                rps: median(of().map(|r| r.rps)),
                cpu_s_per_1k: median(of().map(|r| r.cpu_s_per_1k)),
                p99_ms: median(of().map(|r| r.p99_ms)),
                sequential_p50_ms: median(of().map(|r| r.sequential_p50_ms)),
            }
        })
        .collect()
}

/// The Markdown section: every round, the medians, and Switchyard against nginx.
pub fn markdown(rows: &[RoundRow], connections: usize, duration_s: f64) -> String {
    let rounds = rows.iter().map(|r| r.round).max().unwrap_or(0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n## Interleaved rounds: max throughput at {connections} connections ({duration_s} s each), {rounds} rounds\n\n| round | path | requests/s | proxy CPU s / 1k req | closed-loop p99 ms |\n|---:|---|---:|---:|---:|"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            r.round,
            r.path,
            f(r.rps, 0),
            f(r.cpu_s_per_1k, 4),
            f(r.p99_ms, 3)
        );
    }
    let med = medians(rows);
    let _ = writeln!(
        s,
        "\nMedians over the rounds:\n\n| path | requests/s | proxy CPU s / 1k req | closed-loop p99 ms | back-to-back p50 ms |\n|---|---:|---:|---:|---:|"
    );
    for m in &med {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            m.path,
            f(m.rps, 0),
            f(m.cpu_s_per_1k, 4),
            f(m.p99_ms, 3),
            f(m.sequential_p50_ms, 3)
        );
    }
    let get = |name: &str| med.iter().find(|m| m.path == name);
    if let (Some(sy), Some(ng)) = (get("switchyard"), get("nginx")) {
        let tput = sy.rps.zip(ng.rps).and_then(|(a, b)| ratio(a, b));
        let cpu = sy
            .cpu_s_per_1k
            .zip(ng.cpu_s_per_1k)
            .and_then(|(a, b)| ratio(a, b));
        let p99 = sy.p99_ms.zip(ng.p99_ms).and_then(|(a, b)| ratio(a, b));
        let mark = |ok: Option<bool>| match ok {
            Some(true) => "met",
            Some(false) => "not met",
            None => "not measured",
        };
        let _ = writeln!(
            s,
            "\n## Targets (issue 13; medians over the rounds, reported, not tests)\n\n| target | Switchyard / nginx | |\n|---|---:|---|\n| max throughput >= 0.9x nginx | {} | {} |\n| proxy CPU per 1,000 requests <= 1.2x nginx | {} | {} |\n| closed-loop p99 <= 1.5x nginx | {} | {} |",
            f(tput, 2),
            mark(tput.map(|r| r >= 0.9)),
            f(cpu, 2),
            mark(cpu.map(|r| r <= 1.2)),
            f(p99, 2),
            mark(p99.map(|r| r <= 1.5)),
        );
    }
    if let (Some(auth), Some(open)) = (get("switchyard-auth"), get("switchyard")) {
        let tput = auth.rps.zip(open.rps).and_then(|(a, b)| ratio(a, b));
        let verdict = match tput.map(|r| r >= 0.95) {
            Some(true) => "met",
            Some(false) => "not met",
            None => "not measured",
        };
        let _ = writeln!(
            s,
            "
With auth, limits and admission on (issue 14; medians): throughput {}x Switchyard's without (target >= 0.95: {verdict}).",
            f(tput, 3),
        );
        let paired = |pick: fn(&RoundRow) -> Option<f64>| {
            paired_median(rows, "switchyard-auth", "switchyard", pick)
        };
        let _ = writeln!(
            s,
            "Paired by round (the median of each round's ratio): throughput {}x, proxy CPU per request {}x.",
            f(paired(|r| r.rps), 3),
            f(paired(|r| r.cpu_s_per_1k), 3),
        );
        // How far this run's paired median can be from what more rounds would give.
        if let Some((lo, hi, confidence)) =
            median_interval(paired_ratios(rows, "switchyard-auth", "switchyard", |r| {
                r.rps
            }))
        {
            let settles = if lo >= 0.95 {
                "met beyond this run's spread"
            } else if hi < 0.95 {
                "not met beyond this run's spread"
            } else {
                "inside this run's spread: not settled by it"
            };
            let _ = writeln!(
                s,
                "The paired throughput median lies in {lo:.3}x-{hi:.3}x with {:.0}% confidence (order statistics of the rounds' ratios); the 0.95 target is {settles}.",
                confidence * 100.0
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(round: usize, path: &str, rps: f64, cpu: f64, p99: f64) -> RoundRow {
        RoundRow {
            round,
            path: path.into(),
            rps: Some(rps),
            cpu_s_per_1k: Some(cpu),
            p99_ms: Some(p99),
            sequential_p50_ms: None,
        }
    }

    #[test]
    fn medians_are_per_path_and_the_targets_compare_them_with_nginx() {
        let rows = vec![
            row(1, "switchyard", 90.0, 0.030, 3.0),
            row(1, "nginx", 100.0, 0.030, 2.0),
            row(2, "switchyard", 10.0, 0.050, 9.0),
            row(2, "nginx", 50.0, 0.020, 2.0),
            row(3, "switchyard", 95.0, 0.031, 2.9),
            row(3, "nginx", 99.0, 0.026, 2.0),
            row(1, "switchyard-auth", 88.0, 0.031, 3.1),
            row(2, "switchyard-auth", 12.0, 0.051, 9.1),
            row(3, "switchyard-auth", 90.0, 0.032, 3.0),
        ];
        let m = medians(&rows);
        assert_eq!(m[0].path, "switchyard");
        assert_eq!(m[0].rps, Some(90.0));
        assert_eq!(m[1].rps, Some(99.0));
        assert_eq!(m[1].cpu_s_per_1k, Some(0.026));
        let md = markdown(&rows, 32, 5.0);
        assert!(
            md.contains("| max throughput >= 0.9x nginx | 0.91 | met |"),
            "{md}"
        );
        assert!(
            md.contains("| closed-loop p99 <= 1.5x nginx | 1.50 | met |"),
            "{md}"
        );
        assert!(md.contains("<= 1.2x nginx | 1.19 | met |"), "{md}");
        // 88 (median of 88, 12, 90) over 90 (median of 90, 10, 95).
        assert!(
            md.contains("throughput 0.978x Switchyard's without (target >= 0.95: met)"),
            "{md}"
        );
        // Per round: 88/90, 12/10, 90/95; their median is 88/90; CPU 0.031/0.030 and so on.
        assert!(
            md.contains("Paired by round (the median of each round's ratio): throughput 0.978x, proxy CPU per request 1.032x."),
            "{md}"
        );
        assert!(
            !md.contains("confidence"),
            "three rounds give no interval: {md}"
        );
        assert_eq!(median([Some(1.0), None, Some(3.0)].into_iter()), Some(2.0));
        assert_eq!(median(std::iter::empty()), None);
    }

    #[test]
    fn the_median_interval_takes_the_order_statistics_the_binomial_allows() {
        let v = |n: usize| (1..=n).map(|i| Some(i as f64));
        // Five values: even the extremes hold the median with only 1 - 2/32 = 93.75%.
        assert_eq!(median_interval(v(5)), None);
        // Six: the extremes, 1 - 2/64.
        assert_eq!(median_interval(v(6)), Some((1.0, 6.0, 1.0 - 2.0 / 64.0)));
        // Fifteen: P(B <= 3) = 576/32768, so the 4th smallest and 4th largest.
        let (lo, hi, c) = median_interval(v(15)).unwrap();
        assert_eq!((lo, hi), (4.0, 12.0));
        assert!((c - (1.0 - 2.0 * 576.0 / 32768.0)).abs() < 1e-12);
        // Order does not matter; missing values are left out.
        let shuffled = [
            9.0, 1.0, 15.0, 4.0, 12.0, 2.0, 3.0, 5.0, 6.0, 7.0, 8.0, 10.0, 11.0, 13.0, 14.0,
        ];
        let mut with_gaps: Vec<Option<f64>> = shuffled.iter().map(|&x| Some(x)).collect();
        with_gaps.push(None);
        assert_eq!(
            median_interval(with_gaps.into_iter()).map(|(l, h, _)| (l, h)),
            Some((4.0, 12.0))
        );
    }

    #[test]
    fn the_auth_verdict_says_when_a_run_cannot_settle_it() {
        let mut rows = Vec::new();
        for (round, auth) in [90.0, 99.0, 93.0, 97.0, 94.0, 96.0, 95.0, 92.0]
            .into_iter()
            .enumerate()
        {
            rows.push(row(round + 1, "switchyard", 100.0, 0.03, 3.0));
            rows.push(row(round + 1, "switchyard-auth", auth, 0.03, 3.0));
        }
        let md = markdown(&rows, 32, 5.0);
        // Eight rounds: 2 P(B <= 1) = 18/256 is over 5%, 2 P(B <= 0) = 2/256 is not: the
        // smallest and largest ratio, with 99.2%.
        assert!(
            md.contains("lies in 0.900x-0.990x with 99% confidence"),
            "{md}"
        );
        assert!(md.contains("not settled by it"), "{md}");
    }
}
