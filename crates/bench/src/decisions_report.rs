//! The tables and plots of a `switchyard bench decisions` run: one Markdown table per
//! workload (a row per policy), tenant and priority breakdowns, a TTFT CDF plot per workload,
//! and the JSON of everything.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::decisions::{GroupRow, Outcome};
use crate::output::{write_results, RunMeta};
use crate::svg::{Plot, Series};

/// A whole decisions run, as written to JSON.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionsRun {
    /// Date, machine, command, seeds.
    pub meta: RunMeta,
    /// Whether scenarios were the small `--quick` size.
    pub quick: bool,
    /// Offered load relative to each workload's own rate.
    pub load: f64,
    /// `Some(true)` when the run was repeated and everything but decision times was equal.
    pub determinism_checked: Option<bool>,
    /// Wall time of the whole run, s.
    pub wall_s: f64,
    /// One row per (workload, policy).
    pub outcomes: Vec<Outcome>,
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.0}", v * 1000.0))
}

fn group_table(out: &mut String, title: &str, rows: &[(String, &GroupRow)], gap: bool) {
    let _ = writeln!(out, "\n{title}\n");
    let _ = writeln!(
        out,
        "| policy | group | requests | completed | TTFT p50 ms | TTFT p99 ms | goodput |{}",
        if gap {
            " service gap (p99 vs no abuser) |"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "|---|---|---:|---:|---:|---:|---:|{}",
        if gap { "---:|" } else { "" }
    );
    for (policy, r) in rows {
        let _ = write!(
            out,
            "| {policy} | {} | {} | {} | {} | {} | {:.1}% |",
            r.group,
            r.requests,
            r.completed,
            ms(r.ttft.map(|t| t.p50)),
            ms(r.ttft.map(|t| t.p99)),
            r.goodput.share * 100.0
        );
        if gap {
            let _ = write!(
                out,
                " {} |",
                r.service_gap.map_or("-".into(), |g| format!("{g:.2}x"))
            );
        }
        out.push('\n');
    }
}

impl DecisionsRun {
    /// Workload names in the order they were run.
    fn workloads(&self) -> Vec<&str> {
        let mut w: Vec<&str> = Vec::new();
        for o in &self.outcomes {
            if !w.contains(&o.workload.as_str()) {
                w.push(&o.workload);
            }
        }
        w
    }

    /// The Markdown report.
    pub fn markdown(&self) -> String {
        let mut s =
            String::from("# Routing decisions: policies x workloads (virtual-time fleet)\n\n");
        s.push_str(&self.meta.markdown());
        let _ = writeln!(
            s,
            "- size: {}; load {}x; wall time {:.0} s; determinism: {}",
            if self.quick { "quick" } else { "full" },
            self.load,
            self.wall_s,
            match self.determinism_checked {
                Some(true) => "run twice, identical except decision time",
                Some(false) => "run twice, DIFFERENT (a bug)",
                None => "not re-checked in this run",
            }
        );
        s.push_str(
            "\nTimes are simulated seconds on the modelled GPUs (ms in the tables); decision time is \
             wall-clock on this machine. Goodput: share of offered requests with TTFT within the \
             workload's SLO. Load ratio: max/mean requests in flight across backends, \
             time-weighted mean (and max).\n",
        );
        for w in self.workloads() {
            let rows: Vec<&Outcome> = self.outcomes.iter().filter(|o| o.workload == w).collect();
            let slo = rows.first().map_or(0.0, |o| o.goodput.slo_s);
            let _ = writeln!(s, "\n## {w}\n");
            let _ = writeln!(
                s,
                "| policy | TTFT p50 | p90 | p99 | e2e p50 | e2e p99 | out tok/s | prefix hit | goodput (TTFT<={slo}s) | load ratio | rejected | decision µs (p99) |"
            );
            s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
            for o in &rows {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {:.0} | {:.1}% | {:.1}% | {:.2} ({:.1}) | {} | {:.2} ({:.2}) |",
                    o.policy,
                    ms(o.ttft.map(|t| t.p50)),
                    ms(o.ttft.map(|t| t.p90)),
                    ms(o.ttft.map(|t| t.p99)),
                    ms(o.e2e.map(|t| t.p50)),
                    ms(o.e2e.map(|t| t.p99)),
                    o.output_tokens_per_s,
                    o.prefix_cache_hit_rate * 100.0,
                    o.goodput.share * 100.0,
                    o.load_ratio_mean,
                    o.load_ratio_max,
                    o.rejected + o.unfinished,
                    o.decision_us_mean,
                    o.decision_us_p99
                );
            }
            let tenants: Vec<(String, &GroupRow)> = rows
                .iter()
                .flat_map(|o| o.tenants.iter().map(|r| (o.policy.clone(), r)))
                .collect();
            if !tenants.is_empty() {
                group_table(&mut s, "Per tenant:", &tenants, true);
            }
            let prios: Vec<(String, &GroupRow)> = rows
                .iter()
                .flat_map(|o| o.priorities.iter().map(|r| (o.policy.clone(), r)))
                .collect();
            if !prios.is_empty() {
                group_table(&mut s, "Per priority:", &prios, false);
            }
            let _ = writeln!(
                s,
                "\n![TTFT CDF, {w}](decisions-{}-ttft-{w}.svg)",
                self.meta.date
            );
        }
        s
    }

    /// The TTFT CDF plot of one workload.
    pub fn plot(&self, workload: &str) -> Plot {
        Plot {
            title: format!("TTFT CDF, {workload}"),
            x_label: "time to first token (simulated s, log scale)".into(),
            y_label: "share of requests".into(),
            log_x: true,
            log_y: false,
            series: self
                .outcomes
                .iter()
                .filter(|o| o.workload == workload)
                .map(|o| Series {
                    label: o.policy.clone(),
                    points: o.ttft_cdf.clone(),
                })
                .collect(),
        }
    }

    /// `decisions-<date>[-quick]`: the name every file of this run starts with.
    fn stem(&self) -> String {
        format!(
            "decisions-{}{}",
            self.meta.date,
            if self.quick { "-quick" } else { "" }
        )
    }

    /// Writes `<stem>.{md,json}` and one `<stem>-ttft-<workload>.svg` per workload into
    /// `dir`; returns the paths written.
    pub fn write(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        let stem = self.stem();
        let (md, js) = write_results(dir, &stem, &self.markdown(), self)?;
        let mut paths = vec![md, js];
        for w in self.workloads() {
            let p = dir.join(format!("{stem}-ttft-{w}.svg"));
            std::fs::write(&p, self.plot(w).render())?;
            paths.push(p);
        }
        Ok(paths)
    }
}
