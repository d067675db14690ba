//! The chaos benchmark's tallies ([`RunStats`]) and its report ([`Report`]): Markdown and
//! JSON under `bench/results/`, with the command, seeds, machine and build.

use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::chaos::{schedule, ChaosArgs, POOL_SETTINGS};
use crate::chaos_judge::{Outcome, Verdict};

/// The code of the event that ends a stream the gateway cut at its idle timeout.
const IDLE_TIMEOUT_CODE: &str = "upstream_idle_timeout";

/// Tallies of one run.
#[derive(Debug, Default)]
pub struct RunStats {
    /// Requests sent.
    pub sent: u64,
    /// Answered in full.
    pub full: u64,
    /// Answered with a clean error.
    pub clean_error: u64,
    /// Clients that left mid-stream on purpose.
    pub left: u64,
    /// Handed something the replica never said.
    pub altered: u64,
    /// Lost.
    pub lost: u64,
    /// Duplicated streamed tokens, summed.
    pub duplicated_tokens: u64,
    /// Tokens not the replica's, summed.
    pub altered_tokens: u64,
    /// Clean errors by kind.
    pub clean_kinds: BTreeMap<String, u64>,
    /// Lost and altered requests by reason (the first 40 characters).
    pub failed_kinds: BTreeMap<String, u64>,
    /// Keys (output seeds) of the requests whose client left.
    left_keys: Vec<u64>,
    /// Keys of the streams the gateway cut at its idle timeout (it then closes the upstream
    /// connection: a cancel for the replica).
    idle_cut_keys: Vec<u64>,
    /// Of `left_keys`, those a replica recorded as cancelled.
    pub left_seen: u64,
    /// Of `idle_cut_keys`, those a replica recorded as cancelled.
    pub idle_cut_seen: u64,
    /// Latencies of answers in full, seconds.
    full_latency: Vec<f64>,
    /// Latencies of every answer (full or clean error), seconds.
    answered_latency: Vec<f64>,
    /// Wall time of the run.
    pub wall_s: f64,
}

impl RunStats {
    /// Counts one request, whose key is `key`.
    pub fn record(&mut self, v: &Verdict, latency: Duration, key: u64) {
        self.sent += 1;
        self.duplicated_tokens += v.duplicated_tokens;
        self.altered_tokens += v.altered_tokens;
        let secs = latency.as_secs_f64();
        match &v.outcome {
            Outcome::Full => {
                self.full += 1;
                self.full_latency.push(secs);
                self.answered_latency.push(secs);
            }
            Outcome::CleanError(kind) => {
                self.clean_error += 1;
                self.answered_latency.push(secs);
                *self.clean_kinds.entry(kind.clone()).or_default() += 1;
                if kind == IDLE_TIMEOUT_CODE {
                    self.idle_cut_keys.push(key);
                }
            }
            Outcome::Left => {
                self.left += 1;
                self.left_keys.push(key);
            }
            Outcome::Altered(why) | Outcome::Lost(why) => {
                if matches!(v.outcome, Outcome::Lost(_)) {
                    self.lost += 1;
                } else {
                    self.altered += 1;
                }
                let key: String = why.chars().take(40).collect();
                *self.failed_kinds.entry(key).or_default() += 1;
            }
        }
    }

    /// Whether every departure (a client's, or the gateway's at its idle timeout) is in
    /// `cancelled`, the keys the replicas recorded.
    pub fn all_cancels_seen(&self, cancelled: &HashSet<u64>) -> bool {
        self.left_keys
            .iter()
            .chain(&self.idle_cut_keys)
            .all(|k| cancelled.contains(k))
    }

    /// Counts the departures whose cancel the replicas recorded in `cancelled`.
    pub fn check_cancels(&mut self, cancelled: &HashSet<u64>) {
        let seen = |keys: &[u64]| keys.iter().filter(|k| cancelled.contains(k)).count() as u64;
        self.left_seen = seen(&self.left_keys);
        self.idle_cut_seen = seen(&self.idle_cut_keys);
    }

    /// Streams the gateway cut at its idle timeout.
    pub fn idle_cut(&self) -> u64 {
        self.idle_cut_keys.len() as u64
    }

    /// The `q` quantile (0..1) of full answers' latency in seconds; 0 with none.
    pub fn percentile(&self, q: f64) -> f64 {
        quantile(&self.full_latency, q)
    }

    /// The `q` quantile of every answer's latency (clean errors included: a hang's timeout
    /// shows here).
    pub fn percentile_answered(&self, q: f64) -> f64 {
        quantile(&self.answered_latency, q)
    }

    /// The tallies as JSON.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "sent": self.sent,
            "answered_in_full": self.full,
            "clean_error": self.clean_error,
            "left_mid_stream": self.left,
            "altered": self.altered,
            "lost": self.lost,
            "duplicated_streamed_tokens": self.duplicated_tokens,
            "altered_tokens": self.altered_tokens,
            "p50_full_s": self.percentile(0.5),
            "p99_full_s": self.percentile(0.99),
            "max_full_s": self.percentile(1.0),
            "p99_answered_s": self.percentile_answered(0.99),
            "max_answered_s": self.percentile_answered(1.0),
            "clean_errors_by_kind": self.clean_kinds,
            "lost_or_altered_by_reason": self.failed_kinds,
            "cancels": {
                "clients_left": self.left,
                "clients_left_seen_by_a_replica": self.left_seen,
                "gateway_idle_timeout_cuts": self.idle_cut(),
                "gateway_idle_timeout_cuts_seen_by_a_replica": self.idle_cut_seen,
            },
            "wall_s": self.wall_s,
        })
    }
}

/// The `q` quantile (0..1) of `samples` (nearest rank, as every benchmark reports it; 1 is
/// the maximum); 0 with none.
fn quantile(samples: &[f64], q: f64) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    switchyard_bench::stats::percentile(&v, q).unwrap_or(0.0)
}

/// Today's date in UTC, `YYYY-MM-DD`.
pub fn utc_date() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    switchyard_bench::output::utc_date_time(secs).0
}

/// Which profile this binary was built with: latencies of a dev build are not release numbers.
fn build() -> &'static str {
    if cfg!(debug_assertions) {
        "dev-profile"
    } else {
        "release"
    }
}

/// Both runs, with what is needed to repeat them.
pub struct Report {
    date: String,
    machine: String,
    command: String,
    seed: u64,
    gateway_timeouts: String,
    baseline: RunStats,
    faulted: RunStats,
}

impl Report {
    /// The report of `baseline` and `faulted`, run with `args`.
    pub fn new(args: &ChaosArgs, baseline: RunStats, faulted: RunStats) -> Self {
        Self {
            date: utc_date(),
            machine: switchyard_bench::output::machine_line(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            seed: args.seed,
            gateway_timeouts: args.gateway_timeouts(),
            baseline,
            faulted,
        }
    }

    /// The report in Markdown.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "# Chaos benchmark, {}\n\nMachine: {}\n\nCommand: `{}` (workload seed {}, replica i seed {}+i; {} build)\n\nGateway (breaker and outlier ejection at their defaults), client timeout {} s:\n\n```yaml\ntimeouts: {}\n{POOL_SETTINGS}\n```\n\nFault schedule of the faulted run (shares of its duration):\n\n",
            self.date,
            self.machine,
            self.command,
            self.seed,
            self.seed,
            build(),
            crate::chaos::CLIENT_TIMEOUT.as_secs(),
            self.gateway_timeouts,
        );
        for step in schedule() {
            let _ = writeln!(s, "- at {:.0}%: {}", step.at * 100.0, step.what);
        }
        s.push_str(concat!(
            "\nEvery token is compared with the replica's output for that request. Latencies in ms.\n\n",
            "| run | sent | in full | clean error | left mid-stream | lost | altered | duplicated tokens | altered tokens | p50 (full) | p99 (full) | max (full) | p99 (every answer) | max (every answer) |\n",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        ));
        let runs = [("no faults", &self.baseline), ("faults", &self.faulted)];
        for (name, r) in runs {
            let _ = writeln!(
                s,
                "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
                r.sent,
                r.full,
                r.clean_error,
                r.left,
                r.lost,
                r.altered,
                r.duplicated_tokens,
                r.altered_tokens,
                r.percentile(0.50) * 1e3,
                r.percentile(0.99) * 1e3,
                r.percentile(1.0) * 1e3,
                r.percentile_answered(0.99) * 1e3,
                r.percentile_answered(1.0) * 1e3,
            );
        }
        for (name, r) in runs {
            let _ = write!(
                s,
                "\n{name}: clients that left mid-stream {}, seen as cancelled by a replica {}; streams the gateway cut at its idle timeout {}, seen as cancelled {}.",
                r.left,
                r.left_seen,
                r.idle_cut(),
                r.idle_cut_seen
            );
            if !r.clean_kinds.is_empty() {
                let _ = write!(s, " Clean errors by kind: {:?}.", r.clean_kinds);
            }
            if !r.failed_kinds.is_empty() {
                let _ = write!(s, " Lost or altered, by reason: {:?}.", r.failed_kinds);
            }
            s.push('\n');
        }
        s
    }

    /// Writes `chaos-<date>.md` and `.json` into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir)?;
        let md = dir.join(format!("chaos-{}.md", self.date));
        let json = dir.join(format!("chaos-{}.json", self.date));
        std::fs::write(&md, self.markdown())?;
        let value = serde_json::json!({
            "date": self.date,
            "machine": self.machine,
            "command": self.command,
            "seed": self.seed,
            "build": build(),
            "gateway_timeouts": self.gateway_timeouts,
            "client_timeout_s": crate::chaos::CLIENT_TIMEOUT.as_secs(),
            "schedule": schedule().iter().map(|s| serde_json::json!({"at_share": s.at, "what": s.what})).collect::<Vec<_>>(),
            "runs": {"no_faults": self.baseline.to_json(), "faults": self.faulted.to_json()},
        });
        std::fs::write(&json, serde_json::to_string_pretty(&value)?)?;
        Ok((md, json))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(outcome: Outcome) -> Verdict {
        Verdict {
            outcome,
            duplicated_tokens: 0,
            altered_tokens: 0,
        }
    }

    #[test]
    fn percentiles_maxima_and_dates() {
        let mut s = RunStats::default();
        for ms in 1..=100 {
            s.record(&verdict(Outcome::Full), Duration::from_millis(ms), ms);
        }
        s.record(
            &verdict(Outcome::CleanError("x".into())),
            Duration::from_secs(2),
            0,
        );
        assert_eq!(s.percentile(0.99), 0.099);
        assert_eq!(s.percentile(0.5), 0.05);
        assert_eq!(s.percentile(1.0), 0.1);
        assert_eq!(s.percentile_answered(1.0), 2.0);
        assert_eq!(utc_date().len(), 10);
    }

    #[test]
    fn departures_are_checked_against_the_replicas_cancels() {
        let mut s = RunStats::default();
        s.record(&verdict(Outcome::Left), Duration::ZERO, 7);
        s.record(
            &verdict(Outcome::CleanError(IDLE_TIMEOUT_CODE.into())),
            Duration::ZERO,
            8,
        );
        s.record(
            &verdict(Outcome::CleanError("upstream_stream_broken".into())),
            Duration::ZERO,
            9,
        );
        s.record(&verdict(Outcome::Altered("x".into())), Duration::ZERO, 10);
        assert_eq!((s.left, s.idle_cut(), s.altered, s.lost), (1, 1, 1, 0));
        let seen: HashSet<u64> = [7, 9].into();
        assert!(!s.all_cancels_seen(&seen));
        s.check_cancels(&seen);
        assert_eq!((s.left_seen, s.idle_cut_seen), (1, 0));
        let seen: HashSet<u64> = [7, 8].into();
        assert!(s.all_cancels_seen(&seen));
    }
}
