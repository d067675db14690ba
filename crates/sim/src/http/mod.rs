//! The simulator's HTTP face: each [`Replica`] serves one [`Engine`](crate::Engine) on a real
//! socket with vLLM's OpenAI-compatible API, so a gateway, an SDK or a dashboard talks to it as
//! to a vLLM server on a GPU.
//!
//! - [`driver`]: the task that owns the engine and steps it in real time, `time_scale` times
//!   faster than the simulated clock (`time_scale = 10` runs a 1 s generation in 0.1 s).
//! - [`openai`]: `POST /v1/chat/completions`, `/v1/completions` (whole or SSE at the simulated
//!   pace, `stream_options.include_usage`), `/v1/embeddings`, `/tokenize`, `/detokenize`;
//!   vLLM's error shape for bad input; [`extras`]: the endpoints that need no engine.
//! - [`stream`]: an answer streamed as vLLM sends it (nothing before the first token).
//! - [`output`]: the output text as a pure function of the request, for clients to recompute.
//! - [`cancel`]: clients that leave early cancel the engine's request; the replica records it.
//! - [`metrics`]: `GET /metrics` with vLLM's metric names and the DCGM GPU gauges.
//! - [`llamacpp`]: in slot mode ([`crate::slots`]), `GET /props` and `llamacpp:` metrics, as
//!   llama.cpp's `llama-server` answers them.
//! - [`faults`]: errors, rate limits, latency, hangs, streams cut (after N tokens or N bytes)
//!   or stalled, crashes and slow starts, set at start or at run time through
//!   `POST /admin/faults`.
//! - [`server`]: the listener, the router, `/health`, `/v1/models`, `/version`.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use switchyard_sim::http::{Replica, ReplicaConfig};
//! let cfg = ReplicaConfig::from_profile(&switchyard_sim::profile::l4_llama3_8b());
//! let replica = Replica::start(cfg, "127.0.0.1:0".parse()?).await?;
//! println!("a simulated L4 at {}/v1", replica.url());
//! # Ok(()) }
//! ```

pub mod cancel;
pub mod driver;
pub mod extras;
pub mod faults;
pub mod llamacpp;
pub mod metrics;
pub mod openai;
pub mod output;
pub mod server;
pub mod stream;

pub use cancel::Cancellations;
pub use driver::Snapshot;
pub use faults::{Faults, FaultsError};
pub use output::{expected, Expected};
pub use server::{Replica, StartError};

use crate::{EngineConfig, Profile};

/// Output tokens of a request that sets no `max_tokens`. vLLM would generate up to the context
/// limit; the simulated model never stops early, so a shorter default keeps answers sane.
pub const DEFAULT_MAX_TOKENS: u32 = 64;

/// Everything one replica needs.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// The engine's parameters (usually from a [`Profile`]).
    pub engine: EngineConfig,
    /// The model name it serves (requests naming another get vLLM's 404).
    pub model: String,
    /// GPU name shown in the DCGM labels.
    pub gpu_name: String,
    /// Simulated seconds per wall-clock second (1 = real time; 10 = ten times faster).
    pub time_scale: f64,
    /// Seed for response ids and fault draws. The output text does not depend on it: it is a
    /// function of the request ([`output`]).
    pub seed: u64,
    /// Faults at start.
    pub faults: Faults,
    /// Output length when a request sets no `max_tokens`.
    pub default_max_tokens: u32,
}

impl ReplicaConfig {
    /// A replica of `profile` serving the profile's Hugging Face model name, in real time.
    pub fn from_profile(profile: &Profile) -> Self {
        Self {
            engine: profile.engine_config(),
            model: profile.model.name.to_owned(),
            gpu_name: profile.gpu.name.to_owned(),
            time_scale: 1.0,
            seed: 0,
            faults: Faults::default(),
            default_max_tokens: DEFAULT_MAX_TOKENS,
        }
    }
}
