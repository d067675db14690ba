//! The result of an overhead run: a row per path, the ratios the README quotes (Switchyard's
//! throughput against nginx's and LiteLLM's from the same run), the targets of issue 6, the
//! Markdown table, the JSON and the latency-against-offered-load plot.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::rounds::RoundRow;
use super::wrk::Throughput;
use super::OverheadConfig;
use crate::output::{write_results, RunMeta};
use crate::stats::{added, ratio, Percentiles};
use crate::svg::{Plot, Series};

/// Latency at one offered rate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RatePoint {
    /// Requests/s offered (open loop).
    pub offered: f64,
    /// Ok requests/s achieved.
    pub achieved: f64,
    /// Ok answers.
    pub ok: u64,
    /// Non-2xx answers.
    pub non_2xx: u64,
    /// Connection errors and requests unanswered at the deadline.
    pub errors: u64,
    /// Scheduled requests never sent: the path fell behind the offered rate.
    pub unsent: u64,
    /// Latency from the scheduled send time, ms.
    pub latency_ms: Option<Percentiles>,
}

/// One path's numbers, or why it has none.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PathResult {
    /// `direct`, `switchyard`, `nginx`, `haproxy`, `litellm`.
    pub path: String,
    /// Why this path could not be measured (the rest of the run still is).
    pub error: Option<String>,
    /// Max throughput at fixed concurrency.
    pub throughput: Option<Throughput>,
    /// Proxy CPU seconds per 1,000 requests during the throughput phase.
    pub cpu_s_per_1k: Option<f64>,
    /// Latency at each offered rate, lowest first.
    pub rates: Vec<RatePoint>,
    /// Offered rate of the streaming phase.
    pub stream_rate: f64,
    /// Time to first byte of streamed answers, ms.
    pub stream_ttfb_ms: Option<Percentiles>,
    /// Failed streaming requests.
    pub stream_errors: u64,
    /// Proxy RSS once ready, before load, MB.
    pub rss_idle_mb: Option<f64>,
    /// Proxy peak RSS over the run (VmHWM), MB.
    pub rss_peak_mb: Option<f64>,
    /// Streams that were open when RSS was read (Switchyard only).
    pub open_streams: Option<usize>,
    /// RSS with those streams open, MB.
    pub rss_open_streams_mb: Option<f64>,
    /// Median latency of requests sent back to back on one connection, ms: the path's cost
    /// per request without any queueing, the steadiest figure to compare two paths by.
    pub sequential_p50_ms: Option<f64>,
    /// What the decision log held after the load (`switchyard-declog` only).
    pub decision_log: Option<super::declog::DecisionLogCheck>,
}

impl PathResult {
    /// A path that could not be measured.
    pub fn failed(path: &str, error: String) -> Self {
        Self {
            path: path.to_owned(),
            error: Some(error),
            throughput: None,
            cpu_s_per_1k: None,
            rates: Vec::new(),
            stream_rate: 0.0,
            stream_ttfb_ms: None,
            stream_errors: 0,
            rss_idle_mb: None,
            rss_peak_mb: None,
            open_streams: None,
            rss_open_streams_mb: None,
            sequential_p50_ms: None,
            decision_log: None,
        }
    }

    fn headline(&self) -> Option<&RatePoint> {
        self.rates.last()
    }
}

/// Ratios and added latencies derived from one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Derived {
    /// Switchyard max req/s over nginx's.
    pub throughput_vs_nginx: Option<f64>,
    /// Switchyard max req/s over LiteLLM's.
    pub throughput_vs_litellm: Option<f64>,
    /// Switchyard max req/s over HAProxy's.
    pub throughput_vs_haproxy: Option<f64>,
    /// Switchyard max req/s over direct.
    pub throughput_vs_direct: Option<f64>,
    /// Switchyard with auth, limits and admission on, max req/s over Switchyard's without.
    pub auth_vs_open: Option<f64>,
    /// Switchyard logging every decision, over Switchyard not logging: (max req/s ratio,
    /// achieved-at-the-headline-rate ratio).
    pub declog_vs_off: Option<(f64, f64)>,
    /// Through an `anthropic` backend over through an `openai` one, both against the same
    /// mock in the same run: added p50 ms of requests sent back to back on one connection
    /// (translation's cost; the median over rounds when there are several).
    pub translation_p50_ms: Option<f64>,
    /// The same for a stream's time to first byte.
    pub translation_ttfb_p50_ms: Option<f64>,
    /// Per path: (path, added p50 ms, added p99 ms) at the headline rate, against direct.
    pub added_at_rate_ms: Vec<(String, f64, f64)>,
    /// Per path: (path, added TTFB p50 ms, added p99 ms) when streaming, against direct.
    pub added_ttfb_ms: Vec<(String, f64, f64)>,
}

/// A whole overhead run.
#[derive(Debug, Clone, Serialize)]
pub struct OverheadRun {
    /// Date, machine, command.
    pub meta: RunMeta,
    /// Connections of the throughput phase.
    pub connections: usize,
    /// Headline offered rate.
    pub rate: f64,
    /// Seconds per phase.
    pub duration_s: f64,
    /// Smoke mode (built-in generators, no peers).
    pub smoke: bool,
    /// Notes: install failures, missing generators.
    pub notes: Vec<String>,
    /// One row per path.
    pub paths: Vec<PathResult>,
    /// Ratios and added latencies.
    pub derived: Derived,
    /// Every path's throughput phase per round, when run with more than one round.
    pub rounds: Vec<RoundRow>,
}

fn find<'a>(paths: &'a [PathResult], name: &str) -> Option<&'a PathResult> {
    paths.iter().find(|p| p.path == name && p.error.is_none())
}

/// Ratios and added latencies from the paths of one run.
pub fn derive(paths: &[PathResult]) -> Derived {
    let rps = |n: &str| {
        find(paths, n)
            .and_then(|p| p.throughput.as_ref())
            .map(|t| t.rps)
    };
    let achieved = |n: &str| {
        find(paths, n)
            .and_then(|p| p.headline())
            .map(|h| h.achieved)
    };
    let sy = rps("switchyard").unwrap_or(f64::NAN);
    let vs = |n: &str| rps(n).and_then(|b| ratio(sy, b));
    let direct = find(paths, "direct");
    let d_rate = direct.and_then(|d| d.headline()).and_then(|h| h.latency_ms);
    let d_ttfb = direct.and_then(|d| d.stream_ttfb_ms);
    let mut added_at_rate_ms = Vec::new();
    let mut added_ttfb_ms = Vec::new();
    for p in paths
        .iter()
        .filter(|p| p.path != "direct" && p.error.is_none())
    {
        if let (Some(d), Some(l)) = (d_rate, p.headline().and_then(|h| h.latency_ms)) {
            added_at_rate_ms.push((p.path.clone(), added(l.p50, d.p50), added(l.p99, d.p99)));
        }
        if let (Some(d), Some(l)) = (d_ttfb, p.stream_ttfb_ms) {
            added_ttfb_ms.push((p.path.clone(), added(l.p50, d.p50), added(l.p99, d.p99)));
        }
    }
    Derived {
        throughput_vs_nginx: vs("nginx"),
        throughput_vs_litellm: vs("litellm"),
        throughput_vs_haproxy: vs("haproxy"),
        throughput_vs_direct: vs("direct"),
        auth_vs_open: rps("switchyard-auth").and_then(|a| ratio(a, sy)),
        declog_vs_off: rps("switchyard-declog")
            .and_then(|a| ratio(a, sy))
            .zip(achieved("switchyard-declog").and_then(|a| ratio(a, achieved("switchyard")?))),
        translation_p50_ms: find(paths, "switchyard-anthropic")
            .and_then(|p| p.sequential_p50_ms)
            .zip(find(paths, "switchyard").and_then(|p| p.sequential_p50_ms))
            .map(|(a, s)| a - s),
        translation_ttfb_p50_ms: over_switchyard(&added_ttfb_ms, "switchyard-anthropic"),
        added_at_rate_ms,
        added_ttfb_ms,
    }
}

/// `path`'s added p50 minus Switchyard's, from `(path, p50, p99)` rows.
fn over_switchyard(rows: &[(String, f64, f64)], path: &str) -> Option<f64> {
    let p50 = |n: &str| rows.iter().find(|r| r.0 == n).map(|r| r.1);
    Some(p50(path)? - p50("switchyard")?)
}

/// `v` with `digits` decimals, or `-`.
pub(super) fn f(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

impl OverheadRun {
    /// Assembles a run's report.
    pub fn new(
        cfg: &OverheadConfig,
        command: String,
        paths: Vec<PathResult>,
        notes: Vec<String>,
    ) -> Self {
        let note = std::env::var("SWITCHYARD_BENCH_NOTE")
            .ok()
            .filter(|n| !n.is_empty());
        Self {
            meta: RunMeta::now(command, Vec::new(), note),
            connections: cfg.connections,
            rate: cfg.rate,
            duration_s: cfg.duration.as_secs_f64(),
            smoke: cfg.smoke,
            notes,
            derived: derive(&paths),
            paths,
            rounds: Vec::new(),
        }
    }

    /// The Markdown report.
    pub fn markdown(&self) -> String {
        let mut s = String::from("# Overhead: direct, Switchyard and peer proxies, one run\n\n");
        s.push_str(&self.meta.markdown());
        let _ = writeln!(
            s,
            "- upstream: the built-in mock (`switchyard bench mock`, its own process): a fixed chat completion, or a 5-chunk SSE stream\n\
             - all paths share the 2-core machine with the load generator and the mock; compare within this run only"
        );
        for n in &self.notes {
            let _ = writeln!(s, "- note: {n}");
        }
        for p in self.paths.iter().filter(|p| p.error.is_some()) {
            let _ = writeln!(
                s,
                "- **error: {}: {}**",
                p.path,
                p.error.as_deref().unwrap_or("")
            );
        }
        let _ = writeln!(
            s,
            "\n## Max throughput at {} connections ({} s){}\n\n| path | generator | requests/s | p50 ms | p99 ms | non-2xx + errors | proxy CPU s / 1k req |\n|---|---|---:|---:|---:|---:|---:|",
            self.connections,
            self.duration_s,
            if self.rounds.is_empty() {
                ""
            } else {
                ", first round (the verdicts are the interleaved rounds' medians, below)"
            }
        );
        for p in self.paths.iter().filter(|p| p.error.is_none()) {
            if let Some(t) = &p.throughput {
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.0} | {} | {} | {} | {} |",
                    p.path,
                    t.generator,
                    t.rps,
                    f(t.latency_ms.map(|l| l.p50), 3),
                    f(t.latency_ms.map(|l| l.p99), 3),
                    t.non_2xx + t.errors,
                    f(p.cpu_s_per_1k, 4)
                );
            }
        }
        let d = &self.derived;
        let _ = writeln!(
            s,
            "\nSwitchyard's throughput: **{}x nginx**, **{}x LiteLLM**, {}x HAProxy, {}x direct (same run).",
            f(d.throughput_vs_nginx, 2),
            f(d.throughput_vs_litellm, 1),
            f(d.throughput_vs_haproxy, 2),
            f(d.throughput_vs_direct, 2)
        );
        if d.auth_vs_open.is_some() {
            let _ = writeln!(
                s,
                "With auth, limits and admission on (`switchyard-auth`): **{}x** its throughput without.",
                f(d.auth_vs_open, 3)
            );
        }
        if let Some((max, at_rate)) = d.declog_vs_off {
            let check = find(&self.paths, "switchyard-declog").and_then(|p| p.decision_log.clone());
            let _ = writeln!(
                s,
                "With the decision log on at a 100% sample (`switchyard-declog`): **{at_rate:.3}x** the requests/s achieved at {:.0} offered, {max:.3}x the max throughput.",
                self.rate
            );
            if let Some(c) = check {
                let _ = writeln!(
                    s,
                    "Its log: {} lines, {} unparsable, {} drops counted, {} requests answered: {}.",
                    c.lines,
                    c.unparsable,
                    c.dropped,
                    c.answered,
                    if c.holds() {
                        "every request is a parsed line or a counted drop"
                    } else {
                        "**lines and drops do not account for every request**"
                    }
                );
            }
        }
        if d.translation_p50_ms.is_some() || d.translation_ttfb_p50_ms.is_some() {
            let _ = writeln!(
                s,
                "Translation through an `anthropic` backend (`switchyard-anthropic` minus `switchyard`, same mock, same run): **{} ms** added p50 on requests sent back to back on one connection{}, {} ms added p50 time to first byte when streaming at {:.0}/s.",
                f(d.translation_p50_ms, 3),
                if self.rounds.is_empty() { "" } else { " (median over the rounds)" },
                f(d.translation_ttfb_p50_ms, 3),
                (self.rate / 4.0).clamp(1.0, 500.0)
            );
        }
        let _ = writeln!(
            s,
            "\n## Latency at {:.0} requests/s offered (open loop, from the scheduled send time)\n\n| path | achieved/s | p50 ms | p99 ms | p99.9 ms | added p50 ms | added p99 ms | non-2xx + errors | unsent |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            self.rate
        );
        for p in self.paths.iter().filter(|p| p.error.is_none()) {
            let Some(h) = p.headline() else { continue };
            let add = d.added_at_rate_ms.iter().find(|a| a.0 == p.path);
            let _ = writeln!(
                s,
                "| {} | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
                p.path,
                h.achieved,
                f(h.latency_ms.map(|l| l.p50), 3),
                f(h.latency_ms.map(|l| l.p99), 3),
                f(h.latency_ms.map(|l| l.p999), 3),
                f(add.map(|a| a.1), 3),
                f(add.map(|a| a.2), 3),
                h.non_2xx + h.errors,
                h.unsent
            );
        }
        let _ = writeln!(
            s,
            "\n## Streaming time to first byte\n\n| path | offered/s | TTFB p50 ms | TTFB p99 ms | added p50 ms | added p99 ms | errors |\n|---|---:|---:|---:|---:|---:|---:|"
        );
        for p in self.paths.iter().filter(|p| p.error.is_none()) {
            let add = d.added_ttfb_ms.iter().find(|a| a.0 == p.path);
            let _ = writeln!(
                s,
                "| {} | {:.0} | {} | {} | {} | {} | {} |",
                p.path,
                p.stream_rate,
                f(p.stream_ttfb_ms.map(|l| l.p50), 3),
                f(p.stream_ttfb_ms.map(|l| l.p99), 3),
                f(add.map(|a| a.1), 3),
                f(add.map(|a| a.2), 3),
                p.stream_errors
            );
        }
        let _ = writeln!(
            s,
            "\n## Memory\n\n| path | RSS idle MB | peak RSS MB | RSS with open streams MB |\n|---|---:|---:|---:|"
        );
        for p in self
            .paths
            .iter()
            .filter(|p| p.error.is_none() && p.path != "direct")
        {
            let streams = match (p.open_streams, p.rss_open_streams_mb) {
                (Some(n), Some(m)) => format!("{m:.1} ({n} streams)"),
                _ => "-".into(),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {streams} |",
                p.path,
                f(p.rss_idle_mb, 1),
                f(p.rss_peak_mb, 1)
            );
        }
        if !self.rounds.is_empty() {
            s.push_str(&super::rounds::markdown(
                &self.rounds,
                self.connections,
                self.duration_s,
            ));
        }
        s.push_str(&self.targets());
        let _ = writeln!(
            s,
            "\n![latency against offered load]({}-latency.svg)",
            self.stem()
        );
        s
    }

    /// Issue 6's targets against this run (reported, not asserted).
    fn targets(&self) -> String {
        let d = &self.derived;
        let sy = find(&self.paths, "switchyard");
        let add99 = d
            .added_at_rate_ms
            .iter()
            .find(|a| a.0 == "switchyard")
            .map(|a| a.2);
        let mark = |ok: Option<bool>| match ok {
            Some(true) => "met",
            Some(false) => "not met",
            None => "not measured",
        };
        let rows = [
            (
                "throughput >= 0.9x nginx",
                f(d.throughput_vs_nginx, 2),
                mark(d.throughput_vs_nginx.map(|r| r >= 0.9)),
            ),
            (
                "throughput >= 20x LiteLLM",
                f(d.throughput_vs_litellm, 1),
                mark(d.throughput_vs_litellm.map(|r| r >= 20.0)),
            ),
            (
                "added p99 <= 0.5 ms at the headline rate",
                f(add99, 3),
                mark(add99.map(|a| a <= 0.5)),
            ),
            (
                "RSS <= 40 MB idle",
                f(sy.and_then(|p| p.rss_idle_mb), 1),
                mark(sy.and_then(|p| p.rss_idle_mb).map(|m| m <= 40.0)),
            ),
            (
                "RSS <= 150 MB with 2,000 open streams",
                f(sy.and_then(|p| p.rss_open_streams_mb), 1),
                mark(sy.and_then(|p| p.rss_open_streams_mb).map(|m| m <= 150.0)),
            ),
        ];
        let mut s = String::from("\n## Targets (issue 6; reported, not tests)\n\n| target | this run | |\n|---|---:|---|\n");
        for (t, v, m) in rows {
            let _ = writeln!(s, "| {t} | {v} | {m} |");
        }
        s
    }

    /// p99 latency against offered rate, one line per path.
    pub fn plot(&self) -> Plot {
        Plot {
            title: "p99 latency against offered load (open loop)".into(),
            x_label: "offered requests/s".into(),
            y_label: "p99 latency, ms (log scale)".into(),
            log_x: false,
            log_y: true,
            series: self
                .paths
                .iter()
                .filter(|p| p.error.is_none())
                .map(|p| Series {
                    label: p.path.clone(),
                    points: p
                        .rates
                        .iter()
                        .filter_map(|r| Some((r.offered, r.latency_ms?.p99)))
                        .collect(),
                })
                .collect(),
        }
    }

    /// `overhead-<date>[-smoke]`: the name every file of this run starts with.
    fn stem(&self) -> String {
        format!(
            "overhead-{}{}",
            self.meta.date,
            if self.smoke { "-smoke" } else { "" }
        )
    }

    /// Writes `<stem>.{md,json}` and `<stem>-latency.svg` into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        let stem = self.stem();
        let (md, js) = write_results(dir, &stem, &self.markdown(), self)?;
        let svg = dir.join(format!("{stem}-latency.svg"));
        std::fs::write(&svg, self.plot().render())?;
        Ok(vec![md, js, svg])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(name: &str, rps: f64, p50: f64, p99: f64) -> PathResult {
        let lat = Percentiles {
            count: 10,
            p50,
            p90: p99,
            p99,
            p999: p99,
            max: p99,
            mean: p50,
        };
        PathResult {
            throughput: Some(Throughput {
                generator: "wrk -t1".into(),
                rps,
                requests: 1000,
                non_2xx: 0,
                errors: 0,
                latency_ms: Some(lat),
            }),
            rates: vec![RatePoint {
                offered: 2000.0,
                achieved: 2000.0,
                ok: 1,
                non_2xx: 0,
                errors: 0,
                unsent: 0,
                latency_ms: Some(lat),
            }],
            stream_ttfb_ms: Some(lat),
            ..PathResult::failed(name, String::new())
        }
        .ok()
    }

    impl PathResult {
        fn ok(mut self) -> Self {
            self.error = None;
            self
        }
    }

    #[test]
    fn ratios_and_added_latency_come_from_the_same_run() {
        let paths = vec![
            path("direct", 100_000.0, 0.2, 0.5),
            path("switchyard", 27_000.0, 0.5, 1.0),
            path("nginx", 30_000.0, 0.4, 0.9),
            path("litellm", 900.0, 5.0, 20.0),
            PathResult::failed("haproxy", "not installed".into()),
        ];
        let d = derive(&paths);
        assert!((d.throughput_vs_nginx.unwrap() - 0.9).abs() < 1e-12);
        assert!((d.throughput_vs_litellm.unwrap() - 30.0).abs() < 1e-12);
        assert_eq!(d.throughput_vs_haproxy, None, "a failed peer has no ratio");
        let sy = d
            .added_at_rate_ms
            .iter()
            .find(|a| a.0 == "switchyard")
            .unwrap();
        assert!((sy.1 - 0.3).abs() < 1e-12 && (sy.2 - 0.5).abs() < 1e-12);
        assert_eq!(d.added_ttfb_ms.len(), 3);
        assert_eq!(d.translation_p50_ms, None, "no anthropic path, no figure");
    }

    #[test]
    fn translation_cost_is_the_anthropic_path_over_the_openai_one() {
        let paths = vec![
            path("direct", 100_000.0, 0.2, 0.5),
            path("switchyard", 27_000.0, 0.5, 1.0),
            path("switchyard-anthropic", 25_000.0, 0.62, 1.3),
        ];
        let mut paths = paths;
        paths[1].sequential_p50_ms = Some(0.30);
        paths[2].sequential_p50_ms = Some(0.35);
        let d = derive(&paths);
        assert!((d.translation_p50_ms.unwrap() - 0.05).abs() < 1e-9);
        assert!((d.translation_ttfb_p50_ms.unwrap() - 0.12).abs() < 1e-9);
    }
}
