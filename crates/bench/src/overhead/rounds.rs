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

/// The median over rounds of `path`'s figure over `base`'s in the same round (`pick` reads the
/// figure): the paired view of interleaved rounds, which a machine's swings between rounds
/// move less than the ratio of the two medians.
pub fn paired_median(
    rows: &[RoundRow],
    path: &str,
    base: &str,
    pick: impl Fn(&RoundRow) -> Option<f64>,
) -> Option<f64> {
    let of = |name: &str, round: usize| {
        rows.iter()
            .find(|r| r.path == name && r.round == round)
            .and_then(&pick)
    };
    median(
        rows.iter()
            .filter(|r| r.path == path)
            .map(|r| ratio(pick(r)?, of(base, r.round)?)),
    )
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
        assert_eq!(median([Some(1.0), None, Some(3.0)].into_iter()), Some(2.0));
        assert_eq!(median(std::iter::empty()), None);
    }
}
