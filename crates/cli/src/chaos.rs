//! `switchyard chaos` (hidden): the chaos benchmark. Bounded and loopback only.
//!
//! Starts `--replicas` simulated vLLM replicas in this process and `switchyard serve` (this
//! binary, a child process) in front of them, then runs the same open-loop workload twice: once
//! with no fault (the baseline), once while replicas are killed (`crash`), hung (`hang`), made
//! to answer 5xx (`error_rate`), to cut their streams inside an event (`drop_after_bytes`) and
//! to stall them midway (`stall_after_tokens`, with the gateway's idle timeout shorter than the
//! client's) on a fixed schedule. Each run sends exactly `rate x duration` requests: about half
//! streamed, a few of those from clients that leave mid-stream. Every answer is judged against
//! the replica's output for that request ([`crate::chaos_judge`]), and every departure (a
//! client's, or the gateway's at its idle timeout) must reach a replica as a cancel. Writes
//! `bench/results/chaos-<date>.md` and `.json` ([`crate::chaos_report`]) with the command,
//! seeds and machine.

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard_core::rng::SplitMix;
use switchyard_gateway::config::Seconds;
use switchyard_sim::http::openai::Kind;
use switchyard_sim::http::{expected, Expected, Faults, Replica, ReplicaConfig};
use tokio::sync::Semaphore;

use crate::chaos_judge::{judge, judge_left, tokens_received, Verdict};
use crate::chaos_report::{Report, RunStats};

/// Served model name.
const MODEL: &str = "llama";
/// A request with no answer after this long counts as lost.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Most requests the driver keeps open at once (arrivals wait beyond it).
const MAX_OPEN: usize = 256;
/// One request in this many comes from a client that leaves mid-stream.
const LEAVING_ONE_IN: u64 = 20;
/// Tokens a leaving client reads before it leaves.
const LEAVE_AFTER_TOKENS: usize = 4;
/// Tokens a leaving client asks for: many, so the replica is still generating when it leaves.
const LEAVING_MAX_TOKENS: u32 = 1000;
/// How long the replicas may take to see the last departures after a run.
const CANCEL_SETTLE: Duration = Duration::from_secs(3);

/// `switchyard chaos` flags.
#[derive(Debug, clap::Args)]
pub struct ChaosArgs {
    /// Simulated replicas behind the gateway (at least 5: the schedule faults r0 to r4).
    #[arg(long, default_value_t = 5)]
    replicas: usize,
    /// Seconds per run (the baseline and the chaos run each take this long), 5 to 120.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Requests per second offered (Poisson arrivals), 1 to 500.
    #[arg(long, default_value_t = 60.0)]
    rate: f64,
    /// Seed for the workload and the replicas.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Simulated seconds per wall second on the replicas.
    #[arg(long, default_value_t = 5.0)]
    time_scale: f64,
    /// The gateway's time-to-first-byte timeout (what a hung replica costs).
    #[arg(long, default_value = "2s")]
    first_byte_timeout: String,
    /// The gateway's idle timeout between two chunks (what a stalled stream costs); shorter
    /// than the client's 30 s.
    #[arg(long, default_value = "1s")]
    idle_timeout: String,
    /// Where to write chaos-<date>.md and .json.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
}

impl ChaosArgs {
    /// The gateway's `timeouts:` line.
    pub fn gateway_timeouts(&self) -> String {
        format!(
            "{{connect: 1s, first_byte: {}, idle: {}}}",
            self.first_byte_timeout, self.idle_timeout
        )
    }
}

/// Runs the benchmark.
pub fn run(args: ChaosArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.replicas >= 5, "--replicas must be at least 5");
    for (flag, value) in [
        ("--first-byte-timeout", &args.first_byte_timeout),
        ("--idle-timeout", &args.idle_timeout),
    ] {
        let d = Seconds::parse(value).map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
        anyhow::ensure!(
            !d.is_zero() && d < CLIENT_TIMEOUT,
            "{flag} must be above 0 and shorter than the client's {} s",
            CLIENT_TIMEOUT.as_secs()
        );
    }
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

/// Replica `i`'s config.
fn replica_config(args: &ChaosArgs, i: usize) -> ReplicaConfig {
    let mut cfg = ReplicaConfig::from_profile(&switchyard_sim::profile::h100_llama3_8b());
    cfg.model = MODEL.into();
    cfg.time_scale = args.time_scale;
    cfg.seed = args.seed.wrapping_add(i as u64);
    cfg
}

async fn bench(args: ChaosArgs) -> anyhow::Result<()> {
    let mut replicas = Vec::with_capacity(args.replicas);
    for i in 0..args.replicas {
        replicas.push(Replica::start(replica_config(&args, i), "127.0.0.1:0".parse()?).await?);
    }
    let gw = start_gateway(&replicas, &args).await?;
    eprintln!(
        "chaos: {} replicas behind the gateway at {}; baseline run ({} s)...",
        replicas.len(),
        gw.1,
        args.duration
    );
    let baseline = drive(gw.1, &args, &replicas, false).await;
    eprintln!("chaos: faulted run ({} s)...", args.duration);
    let faulted = drive(gw.1, &args, &replicas, true).await;
    drop(gw);
    let report = Report::new(&args, baseline, faulted);
    let (md, json) = report.write(&args.out)?;
    println!("{}", report.markdown());
    eprintln!("chaos: wrote {} and {}", md.display(), json.display());
    Ok(())
}

/// The pool's settings: production-like for self-hosted engines, with active health checks on
/// (they are opt-in), breaker and outlier ejection at their defaults, and slow start.
pub const POOL_SETTINGS: &str = "policy: least_connections\nhealth_check: {interval: 250ms, timeout: 250ms, unhealthy_threshold: 2, healthy_threshold: 2}\nslow_start: 2s";

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
        "listen: {addr}\ntimeouts: {}\nmodels:\n  {MODEL}:\n    {}\n    backends:\n",
        args.gateway_timeouts(),
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
pub struct Step {
    /// When, as a share of the run.
    pub at: f64,
    replica: usize,
    /// What it does, for the report.
    pub what: &'static str,
    change: fn(&mut Faults, f64),
}

/// The fault schedule of the faulted run; durations are shares of the run.
pub fn schedule() -> Vec<Step> {
    // r0 to r2 as in the first chaos runs; r3 cuts streams and r4 stalls them where at most
    // one other replica is faulted. A replica whose streams fail is soon ejected (for 10 s)
    // and its breaker opened, so each stream fault has a replica of its own.
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
            at: 0.15,
            replica: 3,
            what: "r3 cuts every stream after 601 bytes, inside its 3rd event",
            change: |f, _| f.drop_after_bytes = Some(601),
        },
        Step {
            at: 0.28,
            replica: 3,
            what: "r3 stops cutting",
            change: |f, _| f.drop_after_bytes = None,
        },
        Step {
            at: 0.30,
            replica: 1,
            what: "r1 hangs",
            change: |f, _| f.hang = true,
        },
        Step {
            at: 0.33,
            replica: 4,
            what: "r4 stalls every stream after 3 tokens, until the client leaves",
            change: |f, _| f.stall_after_tokens = Some(3),
        },
        Step {
            at: 0.45,
            replica: 4,
            what: "r4 stops stalling",
            change: |f, _| f.stall_after_tokens = None,
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
        Step {
            at: 0.88,
            replica: 3,
            what: "r3 cuts every stream after 1000 bytes, inside its 5th event",
            change: |f, _| f.drop_after_bytes = Some(1000),
        },
        Step {
            at: 0.97,
            replica: 3,
            what: "r3 stops cutting",
            change: |f, _| f.drop_after_bytes = None,
        },
    ]
}

/// How one request behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// Waits for the whole answer.
    Whole,
    /// Streams and reads to the end.
    Stream,
    /// Streams and leaves after [`LEAVE_AFTER_TOKENS`] tokens.
    Leaving,
}

/// Runs one workload against `replicas` behind the gateway at `addr`; with `faulted`,
/// applies the schedule to them meanwhile. Every departure is checked against the replicas'
/// cancels at the end.
async fn drive(
    addr: SocketAddr,
    args: &ChaosArgs,
    replicas: &[Replica],
    faulted: bool,
) -> RunStats {
    let client = http_client();
    let url = format!("http://{addr}/v1/chat/completions");
    let rng = SplitMix::new(args.seed ^ 0xC4A0_5EED);
    let answers = replica_config(args, 0);
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
        while let Some(step) =
            steps.next_if(|s| faulted && start.elapsed().as_secs_f64() >= s.at * run_len)
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
        let Ok(permit) = open.clone().acquire_owned().await else {
            break;
        };
        let kind = match (rng.below(LEAVING_ONE_IN) == 0, rng.below(2) == 0) {
            (true, _) => Behaviour::Leaving,
            (false, true) => Behaviour::Stream,
            (false, false) => Behaviour::Whole,
        };
        let max_tokens = match kind {
            Behaviour::Leaving => LEAVING_MAX_TOKENS,
            _ => 8 + rng.below(25) as u32,
        };
        let body = serde_json::json!({
            "model": MODEL,
            "messages": [{"role": "user", "content": format!("chaos request {n}")}],
            "max_tokens": max_tokens,
            "stream": kind != Behaviour::Whole,
        })
        .to_string();
        let want = match expected(&answers, Kind::Chat, body.as_bytes()) {
            Ok(w) => w,
            Err(e) => panic!("the chaos workload built a request the replicas refuse: {e}"),
        };
        let (client, url, stats) = (client.clone(), url.clone(), stats.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let sent = Instant::now();
            let verdict = match tokio::time::timeout(
                CLIENT_TIMEOUT,
                exchange(&client, &url, body, kind == Behaviour::Leaving),
            )
            .await
            {
                Ok(Ok(x)) => verdict_of(&x, kind, &want),
                Ok(Err(e)) => Verdict::lost(format!("transport: {e}")),
                Err(_) => Verdict::lost("no answer within 30 s".into()),
            };
            stats.lock().unwrap_or_else(|e| e.into_inner()).record(
                &verdict,
                sent.elapsed(),
                want.output_seed,
            );
        });
    }
    while tasks.join_next().await.is_some() {}
    // Leave every replica healthy for the next run.
    if faulted {
        for r in replicas {
            let _ = r.set_faults(Faults::default());
        }
    }
    let mut s = std::mem::take(&mut *stats.lock().unwrap_or_else(|e| e.into_inner()));
    s.wall_s = start.elapsed().as_secs_f64();
    // A departure reaches the replica a moment after the client's last byte: wait for it.
    let settle = Instant::now() + CANCEL_SETTLE;
    let mut cancelled = cancelled_keys(replicas);
    while !s.all_cancels_seen(&cancelled) && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(50)).await;
        cancelled = cancelled_keys(replicas);
    }
    s.check_cancels(&cancelled);
    s
}

/// The keys of the requests the replicas recorded as cancelled by their client.
fn cancelled_keys(replicas: &[Replica]) -> HashSet<u64> {
    replicas
        .iter()
        .flat_map(|r| r.cancellations().recent)
        .collect()
}

/// What a client got.
struct Exchange {
    status: u16,
    body: Vec<u8>,
    /// The client left before the end, as it meant to.
    left: bool,
}

fn verdict_of(x: &Exchange, kind: Behaviour, want: &Expected) -> Verdict {
    if x.left {
        judge_left(&x.body, want)
    } else {
        judge(x.status, &x.body, kind != Behaviour::Whole, want)
    }
}

/// Sends one request and reads the answer to its end or, with `leave`, until
/// [`LEAVE_AFTER_TOKENS`] tokens arrived (then drops the connection).
async fn exchange(
    client: &HttpClient,
    url: &str,
    body: String,
    leave: bool,
) -> anyhow::Result<Exchange> {
    let req = http::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let resp = client.request(req).await?;
    let status = resp.status().as_u16();
    let mut incoming = resp.into_body();
    let mut body = Vec::new();
    while let Some(frame) = incoming.frame().await {
        if let Ok(d) = frame?.into_data() {
            body.extend_from_slice(&d);
        }
        if leave && status == 200 && tokens_received(&body) >= LEAVE_AFTER_TOKENS {
            return Ok(Exchange {
                status,
                body,
                left: true,
            });
        }
    }
    Ok(Exchange {
        status,
        body,
        left: false,
    })
}
