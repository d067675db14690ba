//! `switchyard sim`: a fleet of simulated vLLM replicas on loopback ports, each an
//! [`switchyard_sim::http::Replica`] with its own engine, profile and faults.
//!
//! From flags (`--replicas N --profile P --port BASE`: replicas on `BASE..BASE+N-1`, every one
//! alike) or from a small YAML file (`--config`) that lists replicas with their own profile,
//! port and faults, for a heterogeneous fleet:
//!
//! ```yaml
//! model: llama-3-8b        # served model name (default: the profile's Hugging Face name)
//! time_scale: 5            # simulated seconds per wall second (default: --time-scale)
//! replicas:
//!   - profile: h100-llama3-8b
//!     count: 2             # default 1
//!   - profile: l4-llama3-8b
//!     port: 9010           # default: the next port after the previous replica
//!     faults: { error_rate: 0.05, not_ready_for_s: 10 }
//!   - profile: l4-llama3-8b
//!     engine: llamacpp     # llama.cpp-like slots (default: --engine, vllm)
//!     slots: 2             # default: --slots
//! ```

use anyhow::{bail, Context};
use serde::Deserialize;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use switchyard_sim::http::{Faults, Replica, ReplicaConfig, DEFAULT_MAX_TOKENS};
use switchyard_sim::profile;

/// `switchyard sim` flags.
#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// Number of replicas (with flags; `--config` lists its own).
    #[arg(long, default_value_t = 1)]
    replicas: u16,
    /// Engine profile: h100-llama3-8b, a100-llama3-8b, l4-llama3-8b, h100x4-llama3-70b.
    #[arg(long, default_value = "h100-llama3-8b")]
    profile: String,
    /// First port; replica i listens on 127.0.0.1:PORT+i.
    #[arg(long, default_value_t = 8001)]
    port: u16,
    /// Simulated seconds per wall-clock second (10 runs ten times faster than the GPU would).
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// Seed for response ids and fault draws (replica i uses SEED+i); the output text is a
    /// function of the request alone.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Served model name (default: the profile's Hugging Face name).
    #[arg(long)]
    model: Option<String>,
    /// Output tokens for requests without `max_tokens`.
    #[arg(long, default_value_t = DEFAULT_MAX_TOKENS)]
    default_max_tokens: u32,
    /// A YAML file listing replicas with their own profile, port and faults.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Which engine the replicas behave like: `vllm` (a paged prefix cache shared by all
    /// requests) or `llamacpp` (llama.cpp's server: `--slots` slots, each keeping its last
    /// prompt; `/props` and `llamacpp:` metrics).
    #[arg(long, value_enum, default_value_t = EngineMode::Vllm)]
    engine: EngineMode,
    /// With `--engine llamacpp`: slots per replica (llama.cpp's `-np`).
    #[arg(long, default_value_t = 2)]
    slots: u32,
    /// `priority`: admit waiting requests by their `priority` field, lower first (vLLM's
    /// `--scheduling-policy priority`, what the gateway's `admission.engine_priority` feeds).
    #[arg(long, value_enum, default_value_t = SchedulingPolicy::Fcfs)]
    scheduling_policy: SchedulingPolicy,
    #[command(flatten)]
    faults: FaultArgs,
}

/// The engine a replica behaves like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineMode {
    /// vLLM: a paged prefix cache shared by every request.
    Vllm,
    /// llama.cpp's server: one cached prompt per slot.
    Llamacpp,
}

/// Faults applied to every replica started from flags (change them at run time with
/// `POST /admin/faults`).
#[derive(Debug, clap::Args)]
struct FaultArgs {
    /// Share of inference requests answered 500 (0..1).
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Share of inference requests answered 429 with Retry-After (0..1).
    #[arg(long, default_value_t = 0.0)]
    rate_limit: f64,
    /// Seconds announced in Retry-After.
    #[arg(long, default_value_t = 1)]
    retry_after_s: u32,
    /// Milliseconds added before each inference request.
    #[arg(long, default_value_t = 0)]
    added_latency_ms: u64,
    /// Accept requests and never answer.
    #[arg(long)]
    hang: bool,
    /// Cut each stream's connection after this many tokens.
    #[arg(long)]
    drop_after_tokens: Option<u32>,
    /// Cut each stream's connection after this many body bytes (mid-event, mostly).
    #[arg(long)]
    drop_after_bytes: Option<u64>,
    /// Each stream goes silent after this many tokens (see --stall-for-s).
    #[arg(long)]
    stall_after_tokens: Option<u32>,
    /// How long a stall lasts, seconds (default: until the client leaves).
    #[arg(long)]
    stall_for_s: Option<f64>,
    /// Start crashed (port closed); with --crash-for-s, come up after that long.
    #[arg(long)]
    crash: bool,
    /// With --crash (or a crash set at run time), restart after this many seconds.
    #[arg(long)]
    crash_for_s: Option<f64>,
    /// /health answers 503 for this many seconds after start.
    #[arg(long, default_value_t = 0.0)]
    not_ready_for_s: f64,
}

impl FaultArgs {
    fn faults(&self) -> Faults {
        Faults {
            error_rate: self.error_rate,
            rate_limit: self.rate_limit,
            retry_after_s: self.retry_after_s,
            added_latency_ms: self.added_latency_ms,
            hang: self.hang,
            drop_after_tokens: self.drop_after_tokens,
            drop_after_bytes: self.drop_after_bytes,
            stall_after_tokens: self.stall_after_tokens,
            stall_for_s: self.stall_for_s,
            crash: self.crash,
            crash_for_s: self.crash_for_s,
            not_ready_for_s: self.not_ready_for_s,
        }
    }
}

/// The `--config` file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetFile {
    model: Option<String>,
    time_scale: Option<f64>,
    seed: Option<u64>,
    replicas: Vec<ReplicaEntry>,
}

/// One line of `replicas:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplicaEntry {
    profile: String,
    #[serde(default)]
    count: Option<u16>,
    port: Option<u16>,
    model: Option<String>,
    #[serde(default)]
    faults: Faults,
    /// `vllm` or `llamacpp` (default: `--engine`).
    #[serde(default)]
    engine: Option<EngineMode>,
    /// Slots of a `llamacpp` replica (default: `--slots`).
    #[serde(default)]
    slots: Option<u32>,
}

/// One replica to start.
#[derive(Debug, Clone)]
pub struct ReplicaPlan {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its profile's name.
    pub profile: String,
    /// Its configuration.
    pub config: ReplicaConfig,
}

fn profile_config(name: &str) -> anyhow::Result<ReplicaConfig> {
    match profile::by_name(name) {
        Some(p) => Ok(ReplicaConfig::from_profile(&p)),
        None => bail!(
            "unknown profile '{name}'; known profiles: {}",
            profile::NAMES.join(", ")
        ),
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

impl SimArgs {
    /// The replicas these flags (and file) describe.
    pub fn plan(&self) -> anyhow::Result<Vec<ReplicaPlan>> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let f: FleetFile = serde_norway::from_str(&text)
                    .with_context(|| format!("{}: invalid sim config", path.display()))?;
                Some(f)
            }
            None => None,
        };
        let time_scale = file
            .as_ref()
            .and_then(|f| f.time_scale)
            .unwrap_or(self.time_scale);
        if !(time_scale.is_finite() && time_scale > 0.0) {
            bail!("time_scale must be a positive number, got {time_scale}");
        }
        let seed = file.as_ref().and_then(|f| f.seed).unwrap_or(self.seed);
        let model = file
            .as_ref()
            .and_then(|f| f.model.clone())
            .or(self.model.clone());
        let entries: Vec<ReplicaEntry> = match file {
            Some(f) => f.replicas,
            None => vec![ReplicaEntry {
                profile: self.profile.clone(),
                count: Some(self.replicas),
                port: None,
                model: None,
                faults: self.faults.faults(),
                engine: None,
                slots: None,
            }],
        };
        let mut plans = Vec::new();
        let mut next_port = u32::from(self.port);
        for e in entries {
            let mut port = e.port.map_or(next_port, u32::from);
            for _ in 0..e.count.unwrap_or(1) {
                let Ok(p) = u16::try_from(port) else {
                    bail!("port {port} is out of range");
                };
                let mut config = profile_config(&e.profile)?;
                config.time_scale = time_scale;
                config.seed = seed.wrapping_add(plans.len() as u64);
                config.default_max_tokens = self.default_max_tokens;
                config.faults = e.faults.clone();
                config
                    .faults
                    .validate()
                    .map_err(|err| anyhow::anyhow!("replica on port {p}: invalid faults: {err}"))?;
                if let Some(m) = e.model.clone().or(model.clone()) {
                    config.model = m;
                }
                config.engine.priority_scheduling =
                    self.scheduling_policy == SchedulingPolicy::Priority;
                if e.engine.unwrap_or(self.engine) == EngineMode::Llamacpp {
                    let slots = e.slots.unwrap_or(self.slots);
                    if slots == 0 {
                        bail!("replica on port {p}: slots must be at least 1");
                    }
                    config.engine = config.engine.in_slot_mode(slots);
                }
                plans.push(ReplicaPlan {
                    addr: loopback(p),
                    profile: e.profile.clone(),
                    config,
                });
                port += 1;
            }
            next_port = port;
        }
        if plans.is_empty() {
            bail!("no replicas to start");
        }
        Ok(plans)
    }
}

/// `switchyard sim --scheduling-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SchedulingPolicy {
    /// First come, first served.
    Fcfs,
    /// By the request's `priority` field, lower first.
    Priority,
}

/// Starts every planned replica.
pub async fn start_all(plans: &[ReplicaPlan]) -> anyhow::Result<Vec<Replica>> {
    let mut out = Vec::with_capacity(plans.len());
    for p in plans {
        out.push(Replica::start(p.config.clone(), p.addr).await?);
    }
    Ok(out)
}

/// Runs `switchyard sim` until SIGINT or SIGTERM.
pub fn run(args: SimArgs) -> anyhow::Result<()> {
    let plans = args.plan()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let replicas = start_all(&plans).await?;
        for (p, r) in plans.iter().zip(&replicas) {
            let f = r.faults();
            let faults = if f == Faults::default() {
                String::new()
            } else {
                format!("  faults: {}", serde_json::to_string(&f).unwrap_or_default())
            };
            println!(
                "{}/v1  {}  model {}  time x{}{faults}",
                r.url(),
                p.profile,
                r.model(),
                p.config.time_scale
            );
        }
        println!("simulating {} replica(s); POST /admin/faults on a replica to inject faults; Ctrl-C to stop", replicas.len());
        switchyard_gateway::shutdown_signal().await;
        drop(replicas);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: SimArgs,
    }

    #[test]
    fn flags_plan_consecutive_ports_and_files_plan_heterogeneous_fleets() {
        let t = T::parse_from([
            "t",
            "--replicas",
            "3",
            "--port",
            "9000",
            "--error-rate",
            "0.5",
        ]);
        let plans = t.a.plan().unwrap();
        assert!(plans.iter().all(|p| p.config.engine.slots.is_none()));
        let ports: Vec<u16> = plans.iter().map(|p| p.addr.port()).collect();
        assert_eq!(ports, [9000, 9001, 9002]);
        assert_eq!(plans[2].config.faults.error_rate, 0.5);
        assert_eq!(plans[1].config.seed, 1);

        let dir = std::env::temp_dir().join(format!("sy-sim-{}.yaml", std::process::id()));
        std::fs::write(
            &dir,
            "model: llama\ntime_scale: 5\nreplicas:\n  - {profile: h100-llama3-8b, count: 2}\n  - profile: l4-llama3-8b\n    port: 9500\n    faults: {hang: true}\n",
        )
        .unwrap();
        let t = T::parse_from(["t", "--port", "9000", "--config", dir.to_str().unwrap()]);
        let plans = t.a.plan().unwrap();
        assert_eq!(plans.len(), 3);
        assert_eq!(plans[2].addr.port(), 9500);
        assert!(plans[2].config.faults.hang && !plans[0].config.faults.hang);
        assert_eq!(plans[2].config.engine.name, "l4-llama3-8b");
        assert!(plans
            .iter()
            .all(|p| p.config.model == "llama" && p.config.time_scale == 5.0));

        let t2 = T::parse_from(["t", "--engine", "llamacpp", "--slots", "3"]);
        let plans = t2.a.plan().unwrap();
        assert_eq!(plans[0].config.engine.slots.map(|m| m.slots), Some(3));
        assert_eq!(plans[0].config.engine.max_num_seqs, 3);
        std::fs::write(
            &dir,
            "replicas:\n  - {profile: l4-llama3-8b, engine: llamacpp, slots: 2}\n  - profile: l4-llama3-8b\n",
        )
        .unwrap();
        let plans = t.a.plan().unwrap();
        assert_eq!(plans[0].config.engine.slots.map(|m| m.slots), Some(2));
        assert!(plans[1].config.engine.slots.is_none());

        std::fs::write(&dir, "replicas:\n  - profile: tpu\n").unwrap();
        let e = t.a.plan().unwrap_err().to_string();
        assert!(e.contains("known profiles"), "{e}");
        std::fs::write(
            &dir,
            "replicas:\n  - profile: l4-llama3-8b\n    faults: {eror_rate: 1}\n",
        )
        .unwrap();
        assert!(t.a.plan().is_err());
        let _ = std::fs::remove_file(&dir);
    }
}
