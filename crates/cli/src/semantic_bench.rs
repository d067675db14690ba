//! `switchyard bench semantic`: semantic routing measured on a labelled set of prompts. Two
//! gateways run in this process beside a fast mock upstream (chat) and a simulated replica
//! (embeddings, vectors that reflect word overlap): `plain` without routes, `routed` with the
//! intent classes of `--examples` and one rule per class. Every labelled prompt is sent, one
//! at a time over one connection each, to `plain`, to `routed` (classified: uncached) and to
//! `routed` again (cached). Accuracy is the share of prompts whose `x-switchyard-route`
//! names their label; added latency is `routed` minus `plain`.

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use switchyard_bench::output::RunMeta;
use switchyard_bench::stats::Percentiles;

/// `switchyard bench semantic` flags.
#[derive(Debug, clap::Args)]
pub struct SemanticArgs {
    /// Labelled prompts, JSON lines `{"text": ..., "class": ...}`.
    #[arg(long, default_value = "bench/data/intents.jsonl")]
    data: PathBuf,
    /// The intent classes (the shape of `routes.intents`).
    #[arg(long, default_value = "bench/data/intents.yaml")]
    examples: PathBuf,
    /// Where result files go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// A note for the result file.
    #[arg(long, env = "SWITCHYARD_BENCH_NOTE")]
    note: Option<String>,
}

/// One labelled prompt.
#[derive(Debug, Clone, serde::Deserialize)]
struct Labelled {
    text: String,
    class: String,
}

/// The whole run.
#[derive(Debug, Serialize)]
struct SemanticRun {
    meta: RunMeta,
    prompts: usize,
    classes: Vec<String>,
    /// Share of prompts routed by their label's rule.
    accuracy: f64,
    /// Per class: (class, prompts, correct).
    per_class: Vec<(String, usize, usize)>,
    /// label -> predicted (`-` for none) -> count.
    confusion: BTreeMap<String, BTreeMap<String, usize>>,
    /// Latency, ms: without routes, classified (uncached), classified again (cached).
    plain_ms: Option<Percentiles>,
    uncached_ms: Option<Percentiles>,
    cached_ms: Option<Percentiles>,
    /// p50 of routed minus p50 of plain, ms.
    added_p50_uncached_ms: Option<f64>,
    added_p50_cached_ms: Option<f64>,
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// Sends one chat request with `text` as its user message; latency and the route header.
async fn ask(c: &HttpClient, url: &str, text: &str) -> anyhow::Result<(f64, String)> {
    let body = serde_json::json!({"model": "chat", "max_tokens": 8,
        "messages": [{"role": "user", "content": text}]})
    .to_string();
    let req = http::Request::post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let started = Instant::now();
    let resp = c.request(req).await?;
    let route = resp
        .headers()
        .get("x-switchyard-route")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let status = resp.status();
    resp.into_body().collect().await?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if !status.is_success() {
        bail!("{url} answered {status}");
    }
    Ok((ms, route))
}

/// The class a route header names (`intent=<class>`), or `-`.
fn intent_in(route: &str) -> String {
    route
        .split_whitespace()
        .find_map(|w| w.strip_prefix("intent="))
        .unwrap_or("-")
        .trim_end_matches(';')
        .to_owned()
}

/// Runs the benchmark.
pub fn run(a: SemanticArgs, command: String) -> anyhow::Result<()> {
    let data = std::fs::read_to_string(&a.data)
        .with_context(|| format!("reading {}", a.data.display()))?;
    let prompts: Vec<Labelled> = data
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {}", a.data.display()))?;
    let examples: serde_json::Value = serde_norway::from_str(
        &std::fs::read_to_string(&a.examples)
            .with_context(|| format!("reading {}", a.examples.display()))?,
    )
    .with_context(|| format!("parsing {}", a.examples.display()))?;
    let classes: Vec<String> = examples["classes"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    if classes.is_empty() || prompts.is_empty() {
        bail!(
            "no classes in {} or no prompts in {}",
            a.examples.display(),
            a.data.display()
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let run = rt.block_on(measure(&prompts, &classes, examples, command, a.note))?;
    let stem = format!("semantic-{}", run.meta.date);
    let (md, js) = switchyard_bench::output::write_results(&a.out, &stem, &markdown(&run), &run)
        .with_context(|| format!("writing to {}", a.out.display()))?;
    eprintln!("wrote {}\nwrote {}", md.display(), js.display());
    Ok(())
}

async fn measure(
    prompts: &[Labelled],
    classes: &[String],
    mut intents: serde_json::Value,
    command: String,
    note: Option<String>,
) -> anyhow::Result<SemanticRun> {
    let chat =
        switchyard_bench::mock::Mock::start(tokio::net::TcpListener::bind("127.0.0.1:0").await?)?;
    let mut cfg = switchyard_sim::http::ReplicaConfig::from_profile(
        &switchyard_sim::profile::h100_llama3_8b(),
    );
    cfg.model = "embed".into();
    let embed = switchyard_sim::http::Replica::start(cfg, "127.0.0.1:0".parse()?).await?;
    intents["embeddings"]["model"] = "embed".into();
    let pools = serde_json::json!({
        "chat": {"backends": [{"url": format!("http://{}", chat.addr())}]},
        "embed": {"backends": [{"url": embed.url()}]},
    });
    let rules: Vec<serde_json::Value> = classes
        .iter()
        .map(|c| serde_json::json!({"name": c, "when": {"intent": c}, "to": "chat"}))
        .collect();
    let start = |routes: Option<serde_json::Value>| {
        let mut c = serde_json::json!({"listen": "127.0.0.1:0", "scrape": {"enabled": false}, "models": pools});
        if let Some(r) = routes {
            c["routes"] = r;
        }
        switchyard_gateway::config::parse(&c.to_string(), "bench-semantic")
    };
    let plain = switchyard_gateway::Server::from_config(start(None)?)
        .start()
        .await?;
    let routed = switchyard_gateway::Server::from_config(start(Some(
        serde_json::json!({"intents": intents, "rules": rules}),
    ))?)
    .start()
    .await?;
    let plain_url = format!("http://{}/v1/chat/completions", plain.addr());
    let routed_url = format!("http://{}/v1/chat/completions", routed.addr());
    let c: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    // Wait for the examples to be embedded: an example prompt finds its class.
    let probe = "write a poem about love and the night";
    let deadline = Instant::now() + Duration::from_secs(30);
    while intent_in(&ask(&c, &routed_url, probe).await?.1) == "-" {
        if Instant::now() > deadline {
            bail!("the intent classes were not embedded within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Warm-up: connections and caches of the path itself.
    for _ in 0..50 {
        ask(&c, &plain_url, "warm up").await?;
    }
    let (mut plain_ms, mut uncached_ms, mut cached_ms) = (Vec::new(), Vec::new(), Vec::new());
    let mut confusion: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for p in prompts {
        plain_ms.push(ask(&c, &plain_url, &p.text).await?.0);
        let (ms, route) = ask(&c, &routed_url, &p.text).await?;
        uncached_ms.push(ms);
        cached_ms.push(ask(&c, &routed_url, &p.text).await?.0);
        *confusion
            .entry(p.class.clone())
            .or_default()
            .entry(intent_in(&route))
            .or_default() += 1;
    }
    let per_class: Vec<(String, usize, usize)> = classes
        .iter()
        .map(|cl| {
            let row = confusion.get(cl);
            let total = row.map_or(0, |r| r.values().sum());
            let right = row.and_then(|r| r.get(cl)).copied().unwrap_or(0);
            (cl.clone(), total, right)
        })
        .collect();
    let correct: usize = per_class.iter().map(|r| r.2).sum();
    let (p, u, k) = (
        Percentiles::of(&plain_ms),
        Percentiles::of(&uncached_ms),
        Percentiles::of(&cached_ms),
    );
    let added = |x: Option<Percentiles>| Some(x?.p50 - p?.p50);
    Ok(SemanticRun {
        meta: RunMeta::now(command, Vec::new(), note),
        prompts: prompts.len(),
        classes: classes.to_vec(),
        accuracy: correct as f64 / prompts.len() as f64,
        per_class,
        confusion,
        added_p50_uncached_ms: added(u),
        added_p50_cached_ms: added(k),
        plain_ms: p,
        uncached_ms: u,
        cached_ms: k,
    })
}

fn markdown(r: &SemanticRun) -> String {
    use std::fmt::Write;
    let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3}"));
    let mut s = String::from("# Semantic routing: accuracy and added latency\n\n");
    s.push_str(&r.meta.markdown());
    let _ = writeln!(
        s,
        "\n{} labelled prompts in {} classes ({}); embeddings from a simulated replica (hashed word features: similarity is word overlap, not meaning). Each prompt goes one at a time to a gateway without routes (`plain`), to one with the classes and one rule per class (`routed`, classified), and to it again (`cached`).\n",
        r.prompts,
        r.classes.len(),
        r.classes.join(", ")
    );
    let _ = writeln!(s, "**Accuracy: {:.1}%**\n\n| class | prompts | routed to its class | accuracy |\n|---|---:|---:|---:|", r.accuracy * 100.0);
    for (c, n, ok) in &r.per_class {
        let _ = writeln!(
            s,
            "| {c} | {n} | {ok} | {:.1}% |",
            *ok as f64 / (*n).max(1) as f64 * 100.0
        );
    }
    let mut cols: Vec<String> = r.classes.clone();
    cols.push("-".into());
    let _ = writeln!(s, "\nConfusion (rows: label, columns: class found; `-`: none above the threshold):\n\n| label | {} |\n|---|{}", cols.join(" | "), "---:|".repeat(cols.len()));
    for (label, row) in &r.confusion {
        let cells: Vec<String> = cols
            .iter()
            .map(|c| row.get(c).copied().unwrap_or(0).to_string())
            .collect();
        let _ = writeln!(s, "| {label} | {} |", cells.join(" | "));
    }
    let _ = writeln!(
        s,
        "\n| path | p50 ms | p90 ms | p99 ms | added p50 ms |\n|---|---:|---:|---:|---:|"
    );
    for (name, p, added) in [
        ("plain", r.plain_ms, Some(0.0)),
        ("routed, uncached", r.uncached_ms, r.added_p50_uncached_ms),
        ("routed, cached", r.cached_ms, r.added_p50_cached_ms),
    ] {
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} | {} |",
            f(p.map(|p| p.p50)),
            f(p.map(|p| p.p90)),
            f(p.map(|p| p.p99)),
            f(added)
        );
    }
    s
}
