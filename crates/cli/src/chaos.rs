//! `switchyard chaos` (hidden): the chaos benchmark. Bounded and loopback only.
//!
//! Starts `--replicas` simulated vLLM replicas in this process and `switchyard serve` (this
//! binary, a child process) in front of them, then runs the same open-loop workload twice: once
//! with no fault (the baseline), once while replicas are killed (`crash`), hung (`hang`) and
//! made to answer 5xx (`error_rate`) on a fixed schedule. Each run sends exactly
//! `rate x duration` requests, half of them streamed, and judges every answer
//! ([`crate::chaos_judge`]): answered in full, answered with a clean error, or lost; streamed
//! answers are also checked for duplicated tokens. Writes `bench/results/chaos-<date>.md` and
//! `.json` with the command, seeds and machine.

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard_core::rng::SplitMix;
use switchyard_sim::http::{Faults, Replica, ReplicaConfig};
use tokio::sync::Semaphore;

use crate::chaos_judge::{judge, RunStats, Verdict};

/// Served model name.
const MODEL: &str = "llama";
/// A request with no answer after this long counts as lost.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Most requests the driver keeps open at once (arrivals wait beyond it).
const MAX_OPEN: usize = 256;

/// `switchyard chaos` flags.
#[derive(Debug, clap::Args)]
pub struct ChaosArgs {
    /// Simulated replicas behind the gateway (at least 3: one each is killed, hung, 5xx).
    #[arg(long, default_value_t = 4)]
    replicas: usize,
    /// Seconds per run (the baseline and the chaos run each take this long), 5 to 120.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Requests per second offered (Poisson arrivals), 1 to 500.
    #[arg(long, default_value_t = 60.0)]
    rate: f64,
    /// Seed for the workload and the replicas.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Simulated seconds per wall second on the replicas.
    #[arg(long, default_value_t = 5.0)]
    time_scale: f64,
    /// The gateway's time-to-first-byte timeout (what a hung replica costs).
    #[arg(long, default_value = "2s")]
    first_byte_timeout: String,
    /// Where to write chaos-<date>.md and .json.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
}

/// Runs the benchmark.
pub fn run(args: ChaosArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.replicas >= 3, "--replicas must be at least 3");
    anyhow::ensure!(
        (5..=120).contains(&args.duration),
        "--duration must be 5 to 120 s"
    );
    anyhow::ensure!(
        (1.0..=500.0).contains(&args.rate),
        "--rate must be 1 to 500"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(bench(args))
}

/// The gateway child process; killed on drop so a failed run leaves nothing behind.
struct Gateway {
    child: Child,
    config: PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

async fn bench(args: ChaosArgs) -> anyhow::Result<()> {
    let mut replicas = Vec::with_capacity(args.replicas);
    for i in 0..args.replicas {
        let mut cfg = ReplicaConfig::from_profile(&switchyard_sim::profile::h100_llama3_8b());
        cfg.model = MODEL.into();
        cfg.time_scale = args.time_scale;
        cfg.seed = args.seed.wrapping_add(i as u64);
        replicas.push(Replica::start(cfg, "127.0.0.1:0".parse()?).await?);
    }
    let gw = start_gateway(&replicas, &args).await?;
    eprintln!(
        "chaos: {} replicas behind the gateway at {}; baseline run ({} s)...",
        replicas.len(),
        gw.1,
        args.duration
    );
    let baseline = drive(gw.1, &args, args.seed, None).await;
    eprintln!("chaos: faulted run ({} s)...", args.duration);
    let faulted = drive(gw.1, &args, args.seed, Some(&replicas)).await;
    drop(gw);
    let report = Report::new(&args, baseline, faulted);
    let (md, json) = report.write(&args.out)?;
    println!("{}", report.markdown());
    eprintln!("chaos: wrote {} and {}", md.display(), json.display());
    Ok(())
}

/// The pool's settings: production-like for self-hosted engines, with active health checks on
/// (they are opt-in), breaker and outlier ejection at their defaults, and slow start.
const POOL_SETTINGS: &str = "policy: least_connections\nhealth_check: {interval: 250ms, timeout: 250ms, unhealthy_threshold: 2, healthy_threshold: 2}\nslow_start: 2s";

/// Writes the gateway's config, starts `switchyard serve`, and waits for `/health`.
async fn start_gateway(
    replicas: &[Replica],
    args: &ChaosArgs,
) -> anyhow::Result<(Gateway, SocketAddr)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let mut yaml = format!(
        "listen: {addr}\ntimeouts: {{connect: 1s, first_byte: {}}}\nmodels:\n  {MODEL}:\n    {}\n    backends:\n",
        args.first_byte_timeout,
        POOL_SETTINGS.replace('\n', "\n    ")
    );
    for (i, r) in replicas.iter().enumerate() {
        let _ = writeln!(yaml, "      - {{url: \"{}\", name: r{i}}}", r.url());
    }
    let config = std::env::temp_dir().join(format!("switchyard-chaos-{}.yaml", std::process::id()));
    std::fs::write(&config, &yaml).context("writing the gateway config")?;
    let child = Command::new(std::env::current_exe()?)
        .args(["--log", "error", "serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting switchyard serve")?;
    let gw = Gateway { child, config };
    let client = http_client();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let req =
            http::Request::get(format!("http://{addr}/health")).body(Full::new(Bytes::new()))?;
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(1), client.request(req)).await {
            if r.status().is_success() {
                return Ok((gw, addr));
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the gateway did not come up within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// One fault step: at `at` (share of the run), replica `replica` gets `change`.
struct Step {
    at: f64,
    replica: usize,
    what: &'static str,
    change: fn(&mut Faults, f64),
}

/// The fault schedule of the faulted run; durations are shares of the run.
fn schedule() -> Vec<Step> {
    vec![
        Step {
            at: 0.10,
            replica: 0,
            what: "r0 killed (back after 20% of the run)",
            change: |f, d| {
                f.crash = true;
                f.crash_for_s = Some(0.2 * d);
            },
        },
        Step {
            at: 0.30,
            replica: 1,
            what: "r1 hangs",
            change: |f, _| f.hang = true,
        },
        Step {
            at: 0.45,
            replica: 2,
            what: "r2 answers 30% of requests with 500",
            change: |f, _| f.error_rate = 0.3,
        },
        Step {
            at: 0.55,
            replica: 1,
            what: "r1 recovers from the hang",
            change: |f, _| f.hang = false,
        },
        Step {
            at: 0.60,
            replica: 0,
            what: "r0 killed again (back after 15%)",
            change: |f, d| {
                f.crash = true;
                f.crash_for_s = Some(0.15 * d);
            },
        },
        Step {
            at: 0.70,
            replica: 1,
            what: "r1 killed (back after 15%)",
            change: |f, d| {
                f.crash = true;
                f.crash_for_s = Some(0.15 * d);
            },
        },
        Step {
            at: 0.85,
            replica: 2,
            what: "r2 stops failing",
            change: |f, _| f.error_rate = 0.0,
        },
    ]
}

/// Runs one workload; with `faults`, applies the schedule to those replicas meanwhile.
async fn drive(
    addr: SocketAddr,
    args: &ChaosArgs,
    seed: u64,
    faults: Option<&[Replica]>,
) -> RunStats {
    let client = http_client();
    let url = format!("http://{addr}/v1/chat/completions");
    let rng = SplitMix::new(seed ^ 0xC4A0_5EED);
    let total = (args.rate * args.duration as f64).round() as u64;
    let open = Arc::new(Semaphore::new(MAX_OPEN));
    let stats = Arc::new(Mutex::new(RunStats::default()));
    let run_len = args.duration as f64;
    let start = Instant::now();
    let mut steps = schedule().into_iter().peekable();
    let mut tasks = tokio::task::JoinSet::new();
    let mut next_at = 0.0f64;
    for n in 0..total {
        let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        next_at += -(1.0 - u).ln() / args.rate;
        let wait = Duration::from_secs_f64(next_at).saturating_sub(start.elapsed());
        tokio::time::sleep(wait).await;
        if let Some(replicas) = faults {
            while let Some(step) =
                steps.next_if(|s| start.elapsed().as_secs_f64() >= s.at * run_len)
            {
                if let Some(r) = replicas.get(step.replica) {
                    let mut f = r.faults();
                    (step.change)(&mut f, run_len);
                    let _ = r.set_faults(f);
                    eprintln!(
                        "chaos: t={:.1}s {}",
                        start.elapsed().as_secs_f64(),
                        step.what
                    );
                }
            }
        }
        let Ok(permit) = open.clone().acquire_owned().await else {
            break;
        };
        let stream = rng.below(2) == 0;
        let max_tokens = 8 + rng.below(25) as u32;
        let body = serde_json::json!({
            "model": MODEL,
            "messages": [{"role": "user", "content": format!("chaos request {n}")}],
            "max_tokens": max_tokens,
            "stream": stream,
        });
        let (client, url, stats) = (client.clone(), url.clone(), stats.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let sent = Instant::now();
            let verdict = match tokio::time::timeout(
                CLIENT_TIMEOUT,
                exchange(&client, &url, body.to_string()),
            )
            .await
            {
                Ok(Ok((status, bytes))) => judge(status, &bytes, stream, max_tokens),
                Ok(Err(e)) => Verdict::lost(format!("transport: {e}")),
                Err(_) => Verdict::lost("no answer within 30 s".into()),
            };
            stats
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .record(&verdict, sent.elapsed());
        });
    }
    while tasks.join_next().await.is_some() {}
    // Leave every replica healthy for the next run.
    if let Some(replicas) = faults {
        for r in replicas {
            let _ = r.set_faults(Faults::default());
        }
    }
    let mut s = std::mem::take(&mut *stats.lock().unwrap_or_else(|e| e.into_inner()));
    s.wall_s = start.elapsed().as_secs_f64();
    s
}

/// Sends one request and reads the whole answer.
async fn exchange(client: &HttpClient, url: &str, body: String) -> anyhow::Result<(u16, Bytes)> {
    let req = http::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let resp = client.request(req).await?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok((status, bytes))
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
struct Report {
    date: String,
    machine: String,
    command: String,
    seed: u64,
    baseline: RunStats,
    faulted: RunStats,
}

impl Report {
    fn new(args: &ChaosArgs, baseline: RunStats, faulted: RunStats) -> Self {
        Self {
            date: crate::chaos_judge::utc_date(),
            machine: switchyard_bench::output::machine_line(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            seed: args.seed,
            baseline,
            faulted,
        }
    }

    fn markdown(&self) -> String {
        let mut s = format!(
            "# Chaos benchmark, {}\n\nMachine: {}\n\nCommand: `{}` (workload seed {}, replica i seed {}+i; {} build)\n\nGateway pool (breaker and outlier ejection at their defaults):\n\n```yaml\n{POOL_SETTINGS}\n```\n\nFault schedule of the faulted run (shares of its duration):\n\n",
            self.date, self.machine, self.command, self.seed, self.seed, build()
        );
        for step in schedule() {
            let _ = writeln!(s, "- at {:.0}%: {}", step.at * 100.0, step.what);
        }
        s.push_str("\n| run | sent | answered in full | clean error | lost | duplicated streamed tokens | p50 (full) | p99 (full) | p99 (every answer) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for (name, r) in [("no faults", &self.baseline), ("faults", &self.faulted)] {
            let _ = writeln!(
                s,
                "| {name} | {} | {} | {} | {} | {} | {:.0} ms | {:.0} ms | {:.0} ms |",
                r.sent,
                r.full,
                r.clean_error,
                r.lost,
                r.duplicated_tokens,
                r.percentile(0.50) * 1e3,
                r.percentile(0.99) * 1e3,
                r.percentile_answered(0.99) * 1e3
            );
        }
        for (name, r) in [("no faults", &self.baseline), ("faults", &self.faulted)] {
            if !r.clean_kinds.is_empty() || !r.lost_kinds.is_empty() {
                let _ = writeln!(
                    s,
                    "\n{name}: clean errors by kind {:?}; lost by kind {:?}",
                    r.clean_kinds, r.lost_kinds
                );
            }
        }
        s
    }

    fn write(&self, dir: &std::path::Path) -> anyhow::Result<(PathBuf, PathBuf)> {
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
            "schedule": schedule().iter().map(|s| serde_json::json!({"at_share": s.at, "what": s.what})).collect::<Vec<_>>(),
            "runs": {"no_faults": self.baseline.to_json(), "faults": self.faulted.to_json()},
        });
        std::fs::write(&json, serde_json::to_string_pretty(&value)?)?;
        Ok((md, json))
    }
}
