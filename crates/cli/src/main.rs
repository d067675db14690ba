//! `switchyard`: the one binary. `serve` runs the gateway, `check` validates a config, `sim`
//! runs simulated vLLM replicas ([`sim_cmd`]), `demo` runs a simulated fleet behind the gateway
//! ([`demo`]), `bench` runs the benchmarks ([`bench_cmd`]); the hidden `chaos` runs the
//! chaos benchmark ([`chaos`]).
#![forbid(unsafe_code)]

mod bench_cmd;
mod chaos;
mod chaos_judge;
mod chaos_report;
mod demo;
mod keys_cmd;
mod semantic_bench;
mod sim_cmd;
mod table;
mod top;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use switchyard_gateway::{config, Drained, Server};

/// A load balancer and gateway for LLM inference.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about)]
struct Cli {
    /// Log filter, e.g. `info`, `debug`, `switchyard_gateway=debug` (also RUST_LOG).
    #[arg(long, global = true, default_value = "info", env = "SWITCHYARD_LOG")]
    log: String,
    /// Log line format: `text` for people, `json` (one object per line, with the request id
    /// as a field) for log collectors.
    #[arg(long, global = true, default_value = "text", env = "SWITCHYARD_LOG_FORMAT", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// The YAML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Override the config's listen address (ip:port).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Threads that serve client connections, each with an event loop of its own (as
        /// nginx's workers); default: one per CPU core. 0 serves them on one work-stealing
        /// runtime shared with the rest of the gateway.
        #[arg(long, env = "SWITCHYARD_WORKERS")]
        workers: Option<usize>,
    },
    /// Validate a config file and exit: 0 if it is usable, 2 with the problem if not.
    Check {
        /// The YAML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run simulated vLLM replicas (OpenAI API, vLLM metrics, fault injection) on loopback.
    Sim(sim_cmd::SimArgs),
    /// A simulated GPU fleet behind the gateway, with live numbers: no config needed.
    Demo(demo::DemoArgs),
    /// The chaos benchmark: simulated replicas killed, hung, made to fail, cut and stall their
    /// streams behind `switchyard serve`, every token checked; bounded, loopback only; writes
    /// bench/results/chaos-<date>.md/.json.
    #[command(hide = true)]
    Chaos(chaos::ChaosArgs),
    /// API keys of a running gateway (list, create, revoke, rotate) through its admin API.
    Keys(keys_cmd::KeysArgs),
    /// The demo's live backend table for a running gateway, through its admin API.
    Top(top::TopArgs),
    /// Benchmarks: overhead against peer proxies, routing decisions, trace replay.
    Bench {
        #[command(subcommand)]
        command: bench_cmd::BenchCommand,
    },
}

/// mimalloc instead of the system allocator: a request allocates and frees a few dozen small
/// blocks on one worker thread, which mimalloc's per-thread free lists serve without the
/// system allocator's arena locking (see `bench/results/instructions-2026-11-29-direct-s22.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo draws a table on stdout: keep the log quiet unless asked otherwise.
    let log = match cli.command {
        Command::Demo(_) | Command::Chaos(_) | Command::Bench { .. } | Command::Top(_)
            if cli.log == "info" =>
        {
            "warn".to_owned()
        }
        _ => cli.log.clone(),
    };
    let filter = std::env::var("RUST_LOG").unwrap_or(log);
    let env_filter =
        tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| "info".into());
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr);
    if cli.log_format == "json" {
        fmt.json().with_current_span(false).init();
    } else {
        fmt.init();
    }
    match cli.command {
        Command::Sim(args) => finish(sim_cmd::run(args)),
        Command::Demo(args) => finish(demo::run(args)),
        Command::Chaos(args) => finish(chaos::run(args)),
        Command::Bench { command } => finish(bench_cmd::run(command)),
        Command::Keys(args) => finish(keys_cmd::run(args)),
        Command::Top(args) => finish(top::run(args)),
        Command::Check { config } => match config::load(&config) {
            Ok(cfg) => {
                let backends: usize = cfg.models.iter().map(|m| m.backends.len()).sum();
                println!(
                    "{}: ok ({} model{}, {} backend{}, listen {})",
                    config.display(),
                    cfg.models.len(),
                    if cfg.models.len() == 1 { "" } else { "s" },
                    backends,
                    if backends == 1 { "" } else { "s" },
                    cfg.listen
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Serve {
            config,
            listen,
            workers,
        } => {
            let server = match Server::from_file(&config) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let workers = workers.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
            });
            match run_serve(server.workers(workers), listen) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_serve(server: Server, listen: Option<std::net::SocketAddr>) -> anyhow::Result<()> {
    // With connection workers, what stays here (accepting, the admin listener, health checks,
    // scrapes, reloads) is light: one thread serves it.
    let rt = if server.worker_count() > 0 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
    };
    rt.block_on(async move {
        let cfg = server.config();
        let admin_on_main = cfg.admin.as_ref().is_some_and(|a| a.listen.is_none());
        let models: Vec<String> = cfg
            .models
            .iter()
            .map(|m| format!("{} ({})", m.name, m.policy.name()))
            .collect();
        let mut server = server.reload_on_sighup();
        // The override is applied at bind time, so the running config keeps the file's
        // value and a reload does not report `listen` as changed.
        if let Some(l) = listen {
            server = server.listen(l);
        }
        let workers = server.worker_count();
        let running = server.start().await?;
        let addr = running.addr();
        tracing::info!(%addr, workers, models = %models.join(", "), "switchyard listening; point OpenAI clients at http://{addr}/v1");
        match running.admin_addr() {
            Some(a) => tracing::info!(addr = %a, "admin API listening"),
            None if admin_on_main => {
                tracing::info!("admin API on the main listener, behind its token");
            }
            None => {}
        }
        match running.until(switchyard_gateway::shutdown_signal()).await? {
            Drained::Clean => tracing::info!("drained cleanly; bye"),
            Drained::TimedOut => tracing::warn!("drain timeout passed; remaining requests were cut"),
        }
        Ok(())
    })
}
