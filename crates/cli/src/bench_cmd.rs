//! `switchyard bench ...`: the benchmark commands of [`switchyard_bench`], with their flags,
//! result files under `bench/results/` (or `--out`) and a progress line on stderr.
//!
//! - `overhead`: direct vs Switchyard vs peer proxies (nginx, HAProxy, LiteLLM).
//! - `decisions`: every policy x every workload on the virtual-time fleet.
//! - `replay`: a trace in real time against one or more OpenAI-compatible endpoints.
//! - `trace`: writes a workload as a trace file.
//! - `mock` (hidden): the fast upstream `overhead` starts as its own process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use switchyard_bench::decisions::{self, Contender};
use switchyard_bench::decisions_report::DecisionsRun;
use switchyard_bench::output::{Progress, RunMeta};
use switchyard_bench::overhead::{self, OverheadConfig, Peer};
use switchyard_bench::replay::{self, ReplayConfig, ReplayRun};
use switchyard_bench::scenarios::{self, Size};
use switchyard_bench::trace;

/// `switchyard bench` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// What a proxy adds: direct vs Switchyard vs peers, same generator, one run.
    Overhead(OverheadArgs),
    /// Routing quality: every policy on every workload, virtual time, fixed seeds.
    Decisions(DecisionsArgs),
    /// Replay a trace in real time (open loop, streaming) against OpenAI-compatible endpoints.
    Replay(ReplayArgs),
    /// Write a workload as a trace file (JSON lines).
    Trace(TraceArgs),
    /// Semantic routing on a labelled prompt set: accuracy and added latency.
    Semantic(crate::semantic_bench::SemanticArgs),
    /// The fast mock upstream of `overhead` (runs until killed).
    #[command(hide = true)]
    Mock {
        /// Address to listen on.
        #[arg(long)]
        listen: SocketAddr,
    },
}

/// `switchyard bench overhead` flags.
#[derive(Debug, clap::Args)]
pub struct OverheadArgs {
    /// Peer proxies to compare against: nginx, haproxy, litellm, switchyard-auth
    /// (Switchyard with auth, limits and admission on) and switchyard-anthropic (Switchyard
    /// with the mock as an `anthropic` backend: translation's cost) (comma-separated).
    #[arg(long, value_delimiter = ',')]
    peers: Vec<String>,
    /// Seconds of each throughput and headline-rate phase (fractions allowed).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Connections of the throughput phase.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Headline offered rate, requests/s (the sweep goes 1/8, 1/4, 1/2 of it).
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,
    /// Streams held open through Switchyard for its memory figure (0 skips).
    #[arg(long, default_value_t = 2000)]
    open_streams: usize,
    /// Built-in generators only, no wrk, one rate, at most 50 open streams: for CI.
    #[arg(long)]
    smoke: bool,
    /// Rounds of the max-throughput phase, paths interleaved; medians and issue 13's
    /// targets are reported when more than one.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Do not run bench/install-peers.sh for missing peers.
    #[arg(long)]
    no_install: bool,
    /// The install script.
    #[arg(long, default_value = "bench/install-peers.sh")]
    install_script: PathBuf,
    /// Where result files go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// A note for the result file (e.g. "machine busy with other builds").
    #[arg(long, env = "SWITCHYARD_BENCH_NOTE")]
    note: Option<String>,
}

/// `switchyard bench decisions` flags.
#[derive(Debug, clap::Args)]
pub struct DecisionsArgs {
    /// Small workloads (seconds): a smoke run.
    #[arg(long)]
    quick: bool,
    /// Seed of workloads and policies.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Workloads to run (default all): shared_prefix, multi_turn, agent, low_sharing, heterogeneous,
    /// tenants, priority.
    #[arg(long, value_delimiter = ',')]
    workloads: Vec<String>,
    /// Only these policies (default all).
    #[arg(long, value_delimiter = ',')]
    policies: Vec<String>,
    /// Offered load relative to each workload's own rate (2 = twice the requests/s).
    #[arg(long, default_value_t = 1.0)]
    load: f64,
    /// Run everything twice and check the numbers (all but decision time) are identical.
    #[arg(long)]
    check_determinism: bool,
    /// The admission stage: `off` (as the scenarios define them, nothing held back), `on`
    /// (backends capped, core's admission queue in front), or `both`, side by side.
    #[arg(long, value_enum, default_value = "off")]
    admission: AdmissionFlag,
    /// With admission: every backend's concurrency cap (default: as many requests as its KV
    /// cache holds at the workload's mean size).
    #[arg(long)]
    admission_cap: Option<u32>,
    /// With admission: the gateway's `engine_queue_threshold`, a backend whose scraped engine
    /// queue holds more waiting requests than this counts as full (default: none).
    #[arg(long)]
    admission_queue_threshold: Option<u32>,
    /// With admission: a backend whose requests not yet past their first token hold this many
    /// prompt tokens counts as full (the gateway's `max_prefill_tokens`; default: none).
    #[arg(long)]
    admission_prefill_tokens: Option<u64>,
    /// With admission: of each backend's cap, requests kept for critical ones (the gateway's
    /// `critical_reserve`; default 0).
    #[arg(long, default_value_t = 0)]
    admission_critical_reserve: u32,
    /// With admission: pass each request's level to its engine as vLLM's `priority`, the
    /// engines scheduling by it (the gateway's `engine_priority`; vLLM's
    /// `--scheduling-policy priority`).
    #[arg(long)]
    admission_engine_priority: bool,
    /// With admission and `--admission-prefill-tokens`: do not hold a tenant to its share of
    /// the pool's prefill budget (the gateway's `tenant_prefill_share: false`).
    #[arg(long)]
    admission_no_tenant_share: bool,
    /// Where result files go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// A note for the result file.
    #[arg(long, env = "SWITCHYARD_BENCH_NOTE")]
    note: Option<String>,
}

/// `bench decisions --admission`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AdmissionFlag {
    /// Without the admission stage.
    Off,
    /// With it.
    On,
    /// Each run without, then with.
    Both,
}

impl AdmissionFlag {
    fn modes(
        self,
        cap: Option<u32>,
        (queue_threshold, prefill_tokens, critical_reserve, engine_priority, tenant_share): (
            Option<u32>,
            Option<u64>,
            u32,
            bool,
            bool,
        ),
    ) -> Vec<decisions::Mode> {
        let on = decisions::Mode::Admission {
            max_in_flight: cap,
            queue_threshold,
            prefill_tokens,
            critical_reserve,
            engine_priority,
            tenant_share,
        };
        match self {
            AdmissionFlag::Off => vec![decisions::Mode::Off],
            AdmissionFlag::On => vec![on],
            AdmissionFlag::Both => vec![decisions::Mode::Off, on],
        }
    }
}

/// `LABEL=VALUE` of a repeated flag.
fn label_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((l, v)) if !l.is_empty() && !v.is_empty() => Ok((l.to_owned(), v.to_owned())),
        _ => Err(format!("'{s}' is not LABEL=VALUE")),
    }
}

/// `switchyard bench replay` flags.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The trace file (JSON lines; see crates/bench/src/trace.rs).
    #[arg(long)]
    trace: PathBuf,
    /// Endpoint base URL, e.g. http://127.0.0.1:8080; repeat to replay against several, one
    /// after another; `label=URL` names one in the report.
    #[arg(long, required = true)]
    target: Vec<String>,
    /// The `model` field sent.
    #[arg(long, default_value = "llama-3-8b")]
    model: String,
    /// Trace seconds per wall second (2 = twice as fast).
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// TTFT SLO for goodput, seconds of wall time.
    #[arg(long, default_value_t = 2.0)]
    slo_ttft: f64,
    /// Seconds after which a request counts as an error.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Bearer token to send.
    #[arg(long, env = "SWITCHYARD_BENCH_API_KEY")]
    api_key: Option<String>,
    /// `LABEL=KEY`: the key for requests of this tenant, else of this priority label, of the
    /// trace (repeat; others send --api-key).
    #[arg(long = "key", value_parser = label_value)]
    keys: Vec<(String, String)>,
    /// Where result files go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// A note for the result file.
    #[arg(long, env = "SWITCHYARD_BENCH_NOTE")]
    note: Option<String>,
}

/// `switchyard bench trace` flags.
#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    /// The workload: shared_prefix, multi_turn, agent, low_sharing, heterogeneous, tenants, priority.
    #[arg(long)]
    workload: String,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The small size of `decisions --quick`.
    #[arg(long)]
    quick: bool,
    /// Offered load relative to the workload's own rate.
    #[arg(long, default_value_t = 1.0)]
    load: f64,
    /// Keep only the first N requests.
    #[arg(long)]
    limit: Option<usize>,
    /// The file to write.
    #[arg(long)]
    out: PathBuf,
}

/// The command line as typed (shell-quoted where needed), for result files.
fn command_line() -> String {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .map(|a| {
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_./,=:-+@".contains(c));
            if plain {
                a
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect();
    format!("switchyard {}", args.join(" "))
}

/// Runs a bench subcommand.
pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Mock { listen } => current_thread()?
            .block_on(switchyard_bench::mock::serve_forever(listen))
            .with_context(|| format!("mock upstream on {listen}")),
        BenchCommand::Trace(a) => {
            let size = if a.quick { Size::Quick } else { Size::Full };
            let sc = scenarios::build(&a.workload, size, a.seed)?.at_load(a.load);
            let mut recs = trace::from_workload(&sc.workload, &sc.tags);
            if let Some(n) = a.limit {
                recs.truncate(n);
            }
            trace::write(&a.out, &recs)?;
            eprintln!(
                "wrote {} requests of '{}' (seed {}) to {}",
                recs.len(),
                a.workload,
                a.seed,
                a.out.display()
            );
            Ok(())
        }
        BenchCommand::Decisions(a) => run_decisions(a),
        BenchCommand::Replay(a) => run_replay(a),
        BenchCommand::Overhead(a) => run_overhead(a),
        BenchCommand::Semantic(a) => crate::semantic_bench::run(a, command_line()),
    }
}

fn current_thread() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn run_decisions(a: DecisionsArgs) -> anyhow::Result<()> {
    let names: Vec<&str> = if a.workloads.is_empty() {
        scenarios::NAMES.to_vec()
    } else {
        a.workloads.iter().map(String::as_str).collect()
    };
    for n in &names {
        if !scenarios::NAMES.contains(n) {
            bail!(scenarios::UnknownScenario((*n).to_owned()));
        }
    }
    let contenders: Vec<Contender> = decisions::contenders()
        .into_iter()
        .filter(|c| a.policies.is_empty() || a.policies.contains(&c.name))
        .collect();
    if contenders.is_empty() {
        bail!("no policy matches --policies {}", a.policies.join(","));
    }
    let size = if a.quick { Size::Quick } else { Size::Full };
    let started = std::time::Instant::now();
    let runs = if a.check_determinism { 2 } else { 1 };
    let modes = a.admission.modes(
        a.admission_cap,
        (
            a.admission_queue_threshold,
            a.admission_prefill_tokens,
            a.admission_critical_reserve,
            a.admission_engine_priority,
            !a.admission_no_tenant_share,
        ),
    );
    let mut progress = Progress::new(runs * names.len() * contenders.len() * modes.len(), false);
    let first = decisions::run_all(&names, size, a.seed, a.load, &contenders, &modes, |l| {
        progress.show(l);
        progress.step();
    })?;
    let determinism_checked = if a.check_determinism {
        let second = decisions::run_all(&names, size, a.seed, a.load, &contenders, &modes, |l| {
            progress.show(&format!("again: {l}"));
            progress.step();
        })?;
        Some(
            first
                .iter()
                .map(|o| o.deterministic_part())
                .eq(second.iter().map(|o| o.deterministic_part())),
        )
    } else {
        None
    };
    progress.finish();
    let run = DecisionsRun {
        meta: RunMeta::now(command_line(), vec![a.seed], a.note),
        quick: a.quick,
        load: a.load,
        determinism_checked,
        wall_s: started.elapsed().as_secs_f64(),
        outcomes: first,
    };
    let paths = run
        .write(&a.out)
        .with_context(|| format!("writing to {}", a.out.display()))?;
    println!("{}", run.markdown());
    for p in paths {
        eprintln!("wrote {}", p.display());
    }
    if determinism_checked == Some(false) {
        bail!("the two runs differ: a determinism bug");
    }
    Ok(())
}

fn run_replay(a: ReplayArgs) -> anyhow::Result<()> {
    let records = trace::read(&a.trace)?;
    let rt = current_thread()?;
    let mut results = Vec::new();
    for t in &a.target {
        let (label, url) = match t.split_once('=') {
            Some((l, u)) if !l.contains("://") => (l.to_owned(), u.to_owned()),
            _ => (t.clone(), t.clone()),
        };
        let cfg = ReplayConfig {
            target: url,
            model: a.model.clone(),
            time_scale: a.time_scale,
            request_timeout: Duration::from_secs(a.timeout),
            api_key: a.api_key.clone(),
            keys: a.keys.clone(),
            slo_ttft_s: a.slo_ttft,
        };
        let mut progress = Progress::new(records.len(), false);
        let (summary, _) = rt.block_on(replay::replay(&records, &cfg, |done, _| {
            progress.step();
            if done % 10 == 0 || done == records.len() {
                progress.show(&format!("replay against {label}"));
            }
        }))?;
        progress.finish();
        results.push((label, summary));
    }
    let run = ReplayRun {
        meta: RunMeta::now(command_line(), Vec::new(), a.note),
        trace: a.trace.display().to_string(),
        requests: records.len(),
        time_scale: a.time_scale,
        targets: results,
    };
    let stem = format!(
        "replay-{}-{}",
        run.meta.date,
        a.trace
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("trace")
    );
    let (md, js) = switchyard_bench::output::write_results(&a.out, &stem, &run.markdown(), &run)
        .with_context(|| format!("writing to {}", a.out.display()))?;
    println!("{}", run.markdown());
    eprintln!("wrote {}\nwrote {}", md.display(), js.display());
    Ok(())
}

fn run_overhead(a: OverheadArgs) -> anyhow::Result<()> {
    let mut peers = Vec::new();
    for p in &a.peers {
        match Peer::parse(p) {
            Some(peer) if !peers.contains(&peer) => peers.push(peer),
            Some(_) => {}
            None => bail!("unknown peer '{p}'; known: nginx, haproxy, litellm, switchyard-auth"),
        }
    }
    let rate_ok = a.rate.is_finite() && a.rate > 0.0;
    let duration_ok = a.duration.is_finite() && a.duration > 0.0 && a.duration <= 3600.0;
    if !rate_ok || !duration_ok || a.connections == 0 {
        bail!("--rate, --duration (at most 3600) and --connections must be positive");
    }
    let cfg = OverheadConfig {
        switchyard_bin: std::env::current_exe().context("locating the switchyard binary")?,
        peers,
        duration: Duration::from_secs_f64(a.duration),
        connections: a.connections,
        rate: a.rate,
        open_streams: if a.smoke {
            a.open_streams.min(50)
        } else {
            a.open_streams
        },
        smoke: a.smoke,
        rounds: a.rounds,
        install_script: (!a.no_install && a.install_script.is_file()).then_some(a.install_script),
        quiet: false,
        note: a.note,
    };
    let rt = current_thread()?;
    let result = rt.block_on(async {
        tokio::select! {
            r = overhead::run(&cfg, command_line()) => r.map_err(anyhow::Error::from),
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted; every started process was stopped")),
        }
    })?;
    let paths = result
        .write(&a.out)
        .with_context(|| format!("writing to {}", a.out.display()))?;
    println!("{}", result.markdown());
    for p in paths {
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}
