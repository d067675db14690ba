//! `switchyard bench overhead`: what putting a proxy in the path costs, measured side by side
//! in one run with the same load generators: direct to a fast mock upstream ([`crate::mock`],
//! run as its own process), through Switchyard (the release binary), and through the
//! requested peers ([`peers`]).
//!
//! Per path, one after another (only one proxy runs at a time):
//! 1. idle RSS once it answers;
//! 2. max requests/s at fixed concurrency: `wrk` when installed (the most efficient
//!    generator, leaving the most CPU to the proxy), else the built-in closed loop; the
//!    proxy's CPU ticks over that phase give CPU seconds per 1,000 requests;
//! 3. latency at fixed offered rates (the headline `--rate` and a sweep below it) with the
//!    built-in open-loop generator ([`crate::loadgen::open_loop`]);
//! 4. streaming time to first byte at a fixed rate;
//! 5. peak RSS (VmHWM over the proxy's process group); for Switchyard also RSS with
//!    `--open-streams` streams held open.
//!
//! With `--rounds N` (N > 1), the throughput phase (step 2) of every path runs N times, the
//! paths interleaved round by round (see [`rounds`]); the other phases run in round 1 only.
//!
//! `--smoke` runs the same code with the built-in generators only, no peers, one rate and a
//! short duration, so CI can run it without installing anything.

pub mod declog;
pub mod peers;
pub mod procs;
pub mod report;
pub mod rounds;
mod wrk;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use crate::loadgen::{self, LoadResult, Target};
use crate::output::Progress;
use crate::stats::{cpu_seconds_per_1k, Percentiles};
pub use peers::Peer;
use procs::Proc;
pub use report::{OverheadRun, PathResult, RatePoint};

/// How to run.
#[derive(Debug, Clone)]
pub struct OverheadConfig {
    /// The Switchyard binary: runs `serve` and, for the mock, `bench mock`.
    pub switchyard_bin: PathBuf,
    /// Peers to compare against, besides direct and Switchyard.
    pub peers: Vec<Peer>,
    /// Length of the throughput and headline-rate phases.
    pub duration: Duration,
    /// Connections of the throughput phase.
    pub connections: usize,
    /// Headline offered rate, requests/s.
    pub rate: f64,
    /// Streams held open for Switchyard's memory figure (0 skips it).
    pub open_streams: usize,
    /// Built-in generators only, one rate.
    pub smoke: bool,
    /// Rounds of the throughput phase, paths interleaved (1: one pass, as before).
    pub rounds: usize,
    /// Run this script for peers that are not installed (`bench/install-peers.sh`).
    pub install_script: Option<PathBuf>,
    /// No progress line.
    pub quiet: bool,
    /// A note for the result file (e.g. a busy machine).
    pub note: Option<String>,
}

/// An overhead run that could not start at all (a peer failing is reported, not an error).
#[derive(Debug, thiserror::Error)]
pub enum OverheadError {
    /// Temp dir, ports, or the mock.
    #[error("{0}")]
    Setup(String),
}

fn setup<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> OverheadError + '_ {
    move |e| OverheadError::Setup(format!("{what}: {e}"))
}

/// A free loopback port (bound then released: a small race, fine on a bench machine).
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Waits until a POST to `target` answers 2xx, or the budget passes, or the process exits.
async fn ready(target: &Target, proc: &mut Option<Proc>, budget: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + budget;
    loop {
        let r = loadgen::open_loop(target, 1.0, Duration::from_secs(1), 1).await;
        if r.ok > 0 {
            return Ok(());
        }
        if let Some(p) = proc.as_mut() {
            if let Some(status) = p.exited() {
                return Err(format!("{} exited at start ({status})", p.name));
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "no answer within {}s ({} non-2xx, {} connection errors on the last try)",
                budget.as_secs(),
                r.non_2xx,
                r.errors
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn target(addr: SocketAddr, body: &str, key: Option<&str>) -> Target {
    let mut headers = Vec::new();
    if let Some(k) = key {
        if let Ok(v) = HeaderValue::from_str(&format!("Bearer {k}")) {
            headers.push((HeaderName::from_static("authorization"), v));
        }
    }
    Target {
        addr,
        path: "/v1/chat/completions".into(),
        body: Bytes::copy_from_slice(body.as_bytes()),
        headers,
    }
}

/// The request every phase sends.
pub const REQUEST: &str =
    r#"{"model":"m","messages":[{"role":"user","content":"Say hi"}],"max_tokens":8}"#;
const STREAM_REQUEST: &str =
    r#"{"model":"m","messages":[{"role":"user","content":"Say hi"}],"max_tokens":8,"stream":true}"#;
const HOLD_REQUEST: &str = r#"{"model":"m","messages":[{"role":"user","content":"Say hi"}],"max_tokens":8,"stream":true,"mock_hold_ms":120000}"#;

/// Offered rates of the sweep, lowest first, ending at the headline rate.
pub fn sweep(rate: f64, smoke: bool) -> Vec<f64> {
    if smoke {
        vec![rate]
    } else {
        vec![rate / 8.0, rate / 4.0, rate / 2.0, rate]
    }
}

fn ms(p: Option<Percentiles>) -> Option<Percentiles> {
    p.map(|p| Percentiles {
        p50: p.p50 / 1000.0,
        p90: p.p90 / 1000.0,
        p99: p.p99 / 1000.0,
        p999: p.p999 / 1000.0,
        max: p.max / 1000.0,
        mean: p.mean / 1000.0,
        count: p.count,
    })
}

fn rate_point(offered: f64, r: &LoadResult) -> RatePoint {
    RatePoint {
        offered,
        achieved: r.rps(),
        ok: r.ok,
        non_2xx: r.non_2xx,
        errors: r.errors,
        unsent: r.unsent,
        latency_ms: ms(Percentiles::of(&r.latency_us)),
    }
}

/// Measures one path (every phase when `full`, else the throughput phase only); errors
/// become the path's error line.
async fn measure(
    cfg: &OverheadConfig,
    peer: Option<Peer>,
    mock: SocketAddr,
    dir: &Path,
    progress: &mut Progress,
    full: bool,
) -> Result<PathResult, String> {
    let name = peer.map_or("direct", Peer::name);
    let key = peers::master_key();
    let uses_key = matches!(peer, Some(Peer::Litellm | Peer::SwitchyardAuth));
    let (addr, mut proc) = match peer {
        None => (mock, None),
        Some(p) => {
            if !peers::installed(p) {
                return Err(format!(
                    "{} is not installed (run bench/install-peers.sh {}, or pass --install)",
                    p.name(),
                    p.name()
                ));
            }
            let port = free_port().map_err(|e| format!("no free port: {e}"))?;
            let cmd = peers::command(p, dir, port, mock, &cfg.switchyard_bin, &key)
                .map_err(|e| format!("cannot write its config: {e}"))?;
            let log = dir.join(format!("{}.log", p.name()));
            let proc = Proc::spawn(p.name(), cmd, &log)
                .map_err(|e| format!("cannot start {}: {e}", p.name()))?;
            (SocketAddr::from(([127, 0, 0, 1], port)), Some(proc))
        }
    };
    let key = uses_key.then_some(key.as_str());
    let plain = target(addr, REQUEST, key);
    let budget = Duration::from_secs(peer.map_or(10, Peer::startup_budget_s));
    progress.show(&format!("{name}: starting"));
    if let Err(e) = ready(&plain, &mut proc, budget).await {
        let log = dir.join(format!("{name}.log"));
        let tail = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = tail.lines().rev().take(3).collect();
        return Err(format!("{e}; last log lines: {}", tail.join(" | ")));
    }
    let rss_idle_kib = proc.as_ref().map(Proc::rss_kib);
    // Warm-up: connections, caches, JIT-free but lazy allocations.
    let warm = cfg.duration.min(Duration::from_secs(1));
    loadgen::closed_loop(&plain, cfg.connections, warm).await;

    progress.show(&format!(
        "{name}: max throughput, {} connections",
        cfg.connections
    ));
    let ticks0 = proc.as_ref().map_or(0, Proc::cpu_ticks);
    let use_wrk = !cfg.smoke && peers::on_path("wrk");
    let max = if use_wrk {
        wrk::run(&plain, cfg.connections, cfg.duration, dir).await?
    } else {
        let r = loadgen::closed_loop(&plain, cfg.connections, cfg.duration).await;
        wrk::Throughput {
            generator: "built-in closed loop".into(),
            rps: r.rps(),
            requests: r.ok,
            non_2xx: r.non_2xx,
            errors: r.errors,
            latency_ms: ms(Percentiles::of(&r.latency_us)),
        }
    };
    let ticks = proc
        .as_ref()
        .map_or(0, Proc::cpu_ticks)
        .saturating_sub(ticks0);
    progress.step();
    // Back to back on one connection: what one request costs on the path, no queueing.
    let seq = loadgen::closed_loop(&plain, 1, (cfg.duration / 2).min(Duration::from_secs(5))).await;
    let sequential_p50_ms = Percentiles::of(&seq.latency_us).map(|p| p.p50 / 1000.0);
    let tps = procs::ticks_per_second();
    let cpu_s_per_1k = cpu_seconds_per_1k(ticks, tps, max.requests).filter(|_| proc.is_some());
    if !full {
        let mut r = PathResult::failed(name, String::new());
        r.error = None;
        r.throughput = Some(max);
        r.cpu_s_per_1k = cpu_s_per_1k;
        r.sequential_p50_ms = sequential_p50_ms;
        return Ok(r);
    }

    let mut rates = Vec::new();
    let conns = cfg.connections.max(64);
    for (i, &rate) in sweep(cfg.rate, cfg.smoke).iter().rev().enumerate() {
        progress.show(&format!("{name}: {rate:.0} requests/s offered"));
        let d = if i == 0 {
            cfg.duration
        } else {
            cfg.duration / 2
        };
        let r = loadgen::open_loop(&plain, rate, d, conns).await;
        rates.push(rate_point(rate, &r));
        progress.step();
    }
    rates.reverse();

    let stream_rate = (cfg.rate / 4.0).clamp(1.0, 500.0);
    progress.show(&format!("{name}: streaming TTFB at {stream_rate:.0}/s"));
    let s = loadgen::open_loop(
        &target(addr, STREAM_REQUEST, key),
        stream_rate,
        cfg.duration / 2,
        conns,
    )
    .await;
    progress.step();
    let rss_peak_kib = proc.as_ref().map(Proc::peak_rss_kib);

    let mut open_streams = None;
    if peer == Some(Peer::Switchyard) && cfg.open_streams > 0 {
        progress.show(&format!("{name}: {} open streams", cfg.open_streams));
        let hold = target(addr, HOLD_REQUEST, key);
        let p = proc.as_ref();
        let (open, rss) =
            loadgen::open_streams(&hold, cfg.open_streams, Duration::from_secs(30), || {
                p.map_or(0, Proc::rss_kib)
            })
            .await;
        open_streams = Some((open, rss));
    }
    let decision_log = match peer {
        Some(Peer::SwitchyardDeclog) => Some(declog::check(addr, dir).await?),
        _ => None,
    };
    Ok(PathResult {
        path: name.to_owned(),
        error: None,
        throughput: Some(max.clone()),
        cpu_s_per_1k,
        rates,
        stream_rate,
        stream_ttfb_ms: ms(Percentiles::of(&s.ttfb_us)),
        stream_errors: s.errors + s.non_2xx,
        rss_idle_mb: rss_idle_kib.map(|k| k as f64 / 1024.0),
        rss_peak_mb: rss_peak_kib.map(|k| k as f64 / 1024.0),
        open_streams: open_streams.map(|(n, _)| n),
        rss_open_streams_mb: open_streams.map(|(_, k)| k as f64 / 1024.0),
        sequential_p50_ms,
        decision_log,
    })
}

/// Runs the whole comparison. Needs a tokio runtime; the caller picks it (a current-thread
/// runtime keeps the generator on one core, as `wrk -t1` does).
pub async fn run(cfg: &OverheadConfig, command: String) -> Result<OverheadRun, OverheadError> {
    let dir = std::env::temp_dir().join(format!("switchyard-overhead-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(setup("temp dir"))?;
    let _cleanup = RemoveDir(dir.clone());
    let mut notes = Vec::new();
    let missing: Vec<Peer> = cfg
        .peers
        .iter()
        .copied()
        .filter(|p| !peers::installed(*p))
        .collect();
    if let (false, Some(script)) = (missing.is_empty(), &cfg.install_script) {
        let mut names: Vec<&str> = missing.iter().map(|p| p.name()).collect();
        if !cfg.smoke && !peers::on_path("wrk") {
            // Comparing with peers is when the most efficient generator matters most.
            names.push("wrk");
        }
        if !cfg.quiet {
            eprintln!("installing {} with {}", names.join(", "), script.display());
        }
        let status = std::process::Command::new(script).args(&names).status();
        if !matches!(status, Ok(s) if s.success()) {
            notes.push(format!(
                "install-peers.sh failed for some of: {}",
                names.join(", ")
            ));
        }
    }
    if !cfg.smoke && cfg.peers.contains(&Peer::Nginx) && !peers::on_path("wrk") {
        notes.push("wrk is not installed: max throughput used the built-in closed loop".into());
    }
    let mock_port = free_port().map_err(setup("port"))?;
    let mock_addr = SocketAddr::from(([127, 0, 0, 1], mock_port));
    let mut cmd = std::process::Command::new(&cfg.switchyard_bin);
    cmd.args(["bench", "mock", "--listen", &mock_addr.to_string()]);
    let _mock = Proc::spawn("mock", cmd, &dir.join("mock.log")).map_err(setup("mock upstream"))?;
    let mut paths: Vec<Option<Peer>> = vec![None, Some(Peer::Switchyard)];
    paths.extend(cfg.peers.iter().map(|&p| Some(p)));
    let steps_per_path = 2 + sweep(cfg.rate, cfg.smoke).len();
    let rounds = cfg.rounds.max(1);
    let mut progress = Progress::new(paths.len() * (steps_per_path + rounds - 1), cfg.quiet);
    let mut results = Vec::new();
    let mut round_rows = Vec::new();
    for round in 1..=rounds {
        let full = round == 1;
        // Round 1 runs every phase in the report's order; later rounds start one path further
        // along each time, so no path always runs right after the same other one (what a run
        // leaves behind on the machine then falls on every path alike).
        let mut order = paths.clone();
        if !full {
            order.rotate_left((round - 1) % paths.len());
        }
        for &peer in &order {
            let name = peer.map_or("direct", Peer::name);
            let r = match measure(cfg, peer, mock_addr, &dir, &mut progress, full).await {
                Ok(r) => r,
                Err(e) => {
                    progress.note(&format!("error: {name} (round {round}): {e}"));
                    PathResult::failed(name, e)
                }
            };
            round_rows.push(rounds::RoundRow::of(round, &r));
            if full {
                results.push(r);
            }
        }
    }
    progress.finish();
    let mut run = OverheadRun::new(cfg, command, results, notes);
    if rounds > 1 {
        let med = rounds::medians(&round_rows);
        let seq = |n: &str| med.iter().find(|m| m.path == n)?.sequential_p50_ms;
        if let (Some(a), Some(s)) = (seq("switchyard-anthropic"), seq("switchyard")) {
            run.derived.translation_p50_ms = Some(a - s);
        }
        run.rounds = round_rows;
    }
    Ok(run)
}

/// Removes the run's temp dir when the run ends, however it ends.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
