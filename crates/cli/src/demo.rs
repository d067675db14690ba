//! `switchyard demo`: a simulated GPU fleet and the gateway in front of it, with nothing to
//! configure.
//!
//! Starts three simulated vLLM replicas on free loopback ports (2 x H100 and 1 x L4 serving
//! Llama-3-8B, five times faster than real time), a gateway built from an embedded config
//! (model `llama-3-8b`, `prefix_aware`) on 127.0.0.1:8080 (`--port`), and a gentle
//! built-in workload (a few requests per second sharing system prompts, `--no-traffic` to turn
//! it off). It prints where to point an OpenAI client, then redraws a per-backend table every
//! second: requests, in flight (the gateway's count), requests running and waiting in the
//! engine, mean time to first token (simulated), prefix-cache hit rate, KV-cache use and GPU
//! utilization. SIGINT or SIGTERM stops everything and exits 0.

use crate::table::{Live, Row};
use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use switchyard_core::rng::SplitMix;
use switchyard_gateway::{Gateway, Server, Stop};
use switchyard_sim::http::{Replica, ReplicaConfig};
use switchyard_sim::profile;
use tokio::sync::Semaphore;

/// The model name the demo serves.
const MODEL: &str = "llama-3-8b";
/// Simulated seconds per wall second: an L4 decodes ~80 tokens/s, an H100 ~750.
const TIME_SCALE: f64 = 5.0;
/// The gateway config, with `{port}` and `{backends}` filled in at start.
const CONFIG_TEMPLATE: &str = "\
listen: 127.0.0.1:{port}
drain_timeout: 2s
drain_delay: 0s
debug_headers: true
scrape: {interval: 200ms}
admin: {token: \"{admin_token}\"}
decision_log: {sample: 1.0}
models:
  llama-3-8b:
    policy: prefix_aware
    backends:
{backends}";
/// Most built-in requests in flight at once.
const MAX_TRAFFIC_IN_FLIGHT: usize = 32;

/// `switchyard demo` flags.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Gateway port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Send no built-in traffic.
    #[arg(long)]
    no_traffic: bool,
    /// Built-in traffic, requests per second.
    #[arg(long, default_value_t = 3.0)]
    rate: f64,
}

/// One replica of the demo fleet.
struct Member {
    name: &'static str,
    /// Relative capacity, the gateway's `weight`.
    weight: u32,
    replica: Replica,
}

/// Runs the demo until SIGINT or SIGTERM.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(demo(args))
}

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    // Weights are relative capacity (an H100 decodes about five times as fast as an L4), so
    // capacity-aware policies give the L4 its fair, smaller share.
    let fleet = [
        ("h100-a", profile::h100_llama3_8b(), 5),
        ("h100-b", profile::h100_llama3_8b(), 5),
        ("l4-a", profile::l4_llama3_8b(), 1),
    ];
    let mut members = Vec::new();
    for (i, (name, p, weight)) in fleet.iter().enumerate() {
        let mut cfg = ReplicaConfig::from_profile(p);
        cfg.model = MODEL.into();
        cfg.time_scale = TIME_SCALE;
        cfg.seed = i as u64;
        let replica = Replica::start(cfg, "127.0.0.1:0".parse()?).await?;
        members.push(Member {
            name,
            weight: *weight,
            replica,
        });
    }
    let mut backends = String::new();
    for m in &members {
        let _ = writeln!(
            backends,
            "      - {{url: \"{}\", name: {}, weight: {}}}",
            m.replica.url(),
            m.name,
            m.weight
        );
    }
    let admin_token = admin_token();
    let yaml = CONFIG_TEMPLATE
        .replace("{port}", &args.port.to_string())
        .replace("{admin_token}", &admin_token)
        .replace("{backends}", &backends);
    let cfg = switchyard_gateway::config::parse(&yaml, "demo config")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let listen = cfg.listen;
    let running = Server::from_config(cfg).start().await.with_context(|| {
        format!(
            "cannot start the gateway on {listen} (try `switchyard demo --port 0` for a free port)"
        )
    })?;
    let addr = running.addr();
    let gw = running.gateway().clone();
    print_banner(addr, &members, &admin_token);
    let traffic = (!args.no_traffic && args.rate > 0.0)
        .then(|| tokio::spawn(traffic(addr, args.rate.min(1000.0))));

    let shutdown = switchyard_gateway::shutdown_signal();
    tokio::pin!(shutdown);
    let mut live = Live::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => live.draw(&rows(&gw, &members).await),
        }
    }
    println!("\nstopping: draining the gateway, then the simulated fleet");
    if let Some(t) = traffic {
        t.abort();
    }
    let _ = running.shutdown(Stop::Now).await;
    drop(members);
    Ok(())
}

/// A fresh admin token for this run: the dashboard and the admin API sit on the demo's port,
/// where the admin API always wants one.
fn admin_token() -> String {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
        ^ u64::from(std::process::id()).rotate_left(32);
    let rng = SplitMix::new(seed);
    format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64())
}

fn print_banner(addr: SocketAddr, members: &[Member], admin_token: &str) {
    let base = format!("http://{addr}/v1");
    let fleet: Vec<String> = members
        .iter()
        .map(|m| format!("{} {}", m.name, m.replica.url()))
        .collect();
    let mut out = std::io::stdout().lock();
    let _ = write!(
        out,
        "\
Switchyard demo: a gateway (prefix_aware) in front of 3 simulated vLLM replicas
(2x H100 + 1x L4 serving Llama-3-8B, running {TIME_SCALE}x faster than real time):
  {}

Point any OpenAI client at:
  base_url = {base}
  model    = {MODEL}

  curl {base}/chat/completions -H 'content-type: application/json' \\
    -d '{{\"model\":\"{MODEL}\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hello!\"}}],\"max_tokens\":32}}'

  python3 -c 'from openai import OpenAI; c = OpenAI(base_url=\"{base}\", api_key=\"none\"); \
print(c.chat.completions.create(model=\"{MODEL}\", messages=[{{\"role\":\"user\",\"content\":\"Hello!\"}}], max_tokens=32).choices[0].message.content)'

Dashboard: http://{addr}/dashboard?token={admin_token}
Terminal:  SWITCHYARD_ADMIN_TOKEN={admin_token} switchyard top --admin http://{addr}
Gateway metrics: http://{addr}/metrics   Ctrl-C to stop.

",
        fleet.join("\n  ")
    );
    let _ = out.flush();
}

async fn rows(gw: &Gateway, members: &[Member]) -> Vec<Row> {
    let snap = gw.snapshot();
    let pool = snap.pools.get(MODEL);
    let mut rows = Vec::with_capacity(members.len());
    for (i, m) in members.iter().enumerate() {
        let in_flight = pool
            .and_then(|p| p.backends.get(i))
            .map_or(0, |b| b.state.in_flight());
        let snap = m.replica.snapshot().await;
        rows.push(match snap {
            Some(s) => Row {
                name: m.name.to_owned(),
                requests: s.requests_received,
                in_flight,
                running: s.engine.num_running,
                waiting: s.engine.num_waiting,
                ttft_ms: s.ttft.mean().map(|t| t * 1e3),
                hit_rate: Some(s.engine.prefix_cache_hit_rate()),
                kv: s.engine.kv_usage,
                gpu_util: s.engine.gpu.utilization_pct,
            },
            None => Row {
                name: m.name.to_owned(),
                requests: 0,
                in_flight,
                running: 0,
                waiting: 0,
                ttft_ms: None,
                hit_rate: None,
                kv: 0.0,
                gpu_util: 0.0,
            },
        });
    }
    rows
}

/// System prompts the built-in traffic shares, so prefix caching has something to find.
const SYSTEM_PROMPTS: &[&str] = &[
    "You are a dispatcher at a busy freight switchyard. Answer in short, precise sentences, name \
     tracks by number, and always state the safety rule that applies before giving an order. \
     Never invent a train that is not on the board. Prefer moves that keep the hump clear.",
    "You are a support assistant for a GPU cloud. Be friendly and concise. When a customer asks \
     about pricing, quote the list price per GPU-hour and mention committed-use discounts. When \
     they report an outage, ask for the region, the instance id and the time it started.",
    "You are a code reviewer for a Rust codebase. Point out correctness problems first, then \
     performance, then style. Quote the line you are talking about. Suggest a concrete fix. Do \
     not comment on formatting that rustfmt would change anyway.",
];
const QUESTIONS: &[&str] = &[
    "What should happen next?",
    "Summarize the situation in two lines.",
    "What is the risk here?",
    "Give me the next three steps.",
    "Explain it to a new colleague.",
];

/// Sends Poisson traffic at `rate` requests per second until aborted.
async fn traffic(addr: SocketAddr, rate: f64) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let rng = SplitMix::new(0x5eed);
    let slots = Arc::new(Semaphore::new(MAX_TRAFFIC_IN_FLIGHT));
    let url = format!("http://{addr}/v1/chat/completions");
    for n in 0u64.. {
        let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let gap = -(1.0 - u).ln() / rate;
        tokio::time::sleep(Duration::from_secs_f64(gap.min(10.0))).await;
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let system = SYSTEM_PROMPTS[rng.below(SYSTEM_PROMPTS.len() as u64) as usize];
        let question = QUESTIONS[rng.below(QUESTIONS.len() as u64) as usize];
        let body = serde_json::json!({
            "model": MODEL,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": format!("{question} (ticket {n})")},
            ],
            "max_tokens": 16 + rng.below(80),
            "stream": rng.below(2) == 0,
        });
        let req = http::Request::post(&url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())));
        let client = client.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Ok(req) = req {
                if let Ok(resp) = client.request(req).await {
                    let _ = resp.into_body().collect().await;
                }
            }
        });
    }
}
