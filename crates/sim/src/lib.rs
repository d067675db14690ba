//! `switchyard-sim`: a simulated LLM inference engine and a virtual-time fleet that drives
//! `switchyard-core` routing policies without sockets or clocks.
//!
//! # The engine
//!
//! An [`Engine`] behaves like one vLLM (V1) server at the level a load balancer can observe:
//!
//! - **Continuous batching.** Each step computes a batch of at most `max_num_seqs` requests and
//!   `max_num_batched_tokens` tokens: one token for every decoding request, plus prompt chunks
//!   (chunked prefill) for requests still prefilling. New requests join between steps.
//! - **Step time** `= a + b × tokens + c × context` ([`StepTime`]): a fixed cost (weights read
//!   once per step), a cost per computed token, and a cost per token of attention context. So
//!   a lone decode is fast, larger batches raise both step time and throughput, and long
//!   prefills delay everyone's next token.
//! - **Paged KV cache with automatic prefix caching** ([`kv`]): fixed-size blocks (16 tokens by
//!   default) named by chained hashes; a request reuses the cached blocks of its longest cached
//!   prefix and computes only the rest; freed blocks stay cached until evicted least recently
//!   used. When blocks run out, requests wait in the queue, and running ones are preempted
//!   (recompute) when a decode needs a block.
//! - **Metrics** ([`EngineMetrics`]): `num_running`, `num_waiting`, `kv_usage`,
//!   `prefix_cache_queries` / `prefix_cache_hits` (in tokens, as vLLM counts), counters, and GPU
//!   gauges (utilization, framebuffer, temperature) from a simple documented model.
//! - **Profiles** ([`profile`]) for H100, A100 and L4 with Llama-3-8B and 4×H100 with
//!   Llama-3-70B: KV blocks from memory arithmetic, step time from hardware figures.
//!
//! Time is always a parameter: `f64` seconds on the caller's epoch. [`Engine::step`]`(now)`
//! runs one scheduler iteration and returns its [`StepOutcome`] (start, end, events), so the
//! same engine serves a discrete-event simulation and a real-time loop (step, sleep until
//! `end`, deliver events) such as an HTTP face.
//!
//! ```
//! use switchyard_sim::{profile, Engine, EngineEvent, RequestId, SimRequest};
//!
//! let mut engine = Engine::new(profile::h100_llama3_8b().engine_config()).unwrap();
//! engine
//!     .submit(SimRequest::from_text(RequestId(1), "Tell me about rail yards.", 3))
//!     .unwrap();
//! let mut now = 0.0;
//! let mut ttft = None;
//! while let Some(step) = engine.step(now) {
//!     for ev in &step.events {
//!         if let EngineEvent::Token { index: 0, .. } = ev {
//!             ttft = Some(step.stats.end);
//!         }
//!     }
//!     now = step.stats.end;
//! }
//! assert!(ttft.unwrap() > 0.0);
//! assert_eq!(engine.metrics(now).generation_tokens_total, 3);
//! ```
//!
//! # The fleet
//!
//! [`fleet::run`] plays a [`Workload`] (timed requests: arrival, session, prompt, output length)
//! against N engines, each with its own profile if wanted. For every arrival it builds a
//! `RequestProfile` and a `FleetView` and asks a core `Policy` (built from a `PolicySpec`) where
//! to send it — the code the gateway ships. Engine metrics and GPU gauges reach the driver
//! through periodic scrapes (`metrics_interval_s`), so they lag as a real gateway's do; the
//! gateway's own signals (requests and tokens in flight, prefill not yet past its first token,
//! peak-EWMA TTFT, latency and time per output token) are the driver's, updated at dispatch,
//! first token and completion. A run is deterministic for its inputs and seeds, and returns a
//! [`RunReport`]: per-request records (backend, TTFT, end-to-end latency, cached prompt tokens)
//! and summary statistics (TTFT and latency percentiles, throughput, prefix-cache hit rate,
//! in-flight imbalance, per-backend counts). [`workload`] generates shared-prefix (with skewed
//! popularity), multi-turn and ShareGPT-like workloads with Poisson arrivals;
//! [`FleetConfig::mixed`] builds heterogeneous fleets with capacity weights; [`baselines`]
//! holds other projects' routers rebuilt to measure against (SGLang's cache-aware policy).
//!
//! # The HTTP face
//!
//! [`http::Replica`] serves one engine on a real socket as a vLLM server would: the
//! OpenAI-compatible API (chat and text completions, whole or streamed one SSE chunk per token
//! at the simulated pace, the first chunk with the first token; embeddings; tokenize),
//! `/health`, `/v1/models`, `/version`, and `/metrics` with vLLM's metric names and DCGM's GPU
//! gauges. A driver task owns the engine and steps it in real time, `time_scale` times faster
//! than the modelled GPU. The output text is a function of the request that clients can
//! recompute ([`http::output`]); a client that leaves cancels its request. Faults (5xx, 429,
//! latency, hangs, streams cut or stalled, crashes, slow starts) are set at start or at run
//! time through `POST /admin/faults`. `switchyard sim` runs a fleet of them; `switchyard demo`
//! puts the gateway in front of one.
//!
//! # What is not modelled
//!
//! - Real attention and GEMM kernels: step time is linear in tokens and context; kernel
//!   efficiency changes with batch shape, CUDA graph padding and quantization are absent.
//! - Speculative decoding, beam search, sampling parameters, LoRA adapters, multimodal inputs,
//!   structured output, pipeline parallelism, CPU swap or KV offload, disaggregated prefill.
//! - Stopping early: the model generates exactly `max_output_tokens` (as benchmarks with
//!   `ignore_eos` do); there is no end-of-sequence token.
//! - Tokenizer exactness: a deterministic stand-in ([`tokenizer`]) makes one token of every 4
//!   bytes; chat templates are not applied.
//! - The network, HTTP and streaming overhead, engine start-up time, and the detokenizer: in the
//!   engine, events happen exactly at step ends (the HTTP face delivers them when the step's
//!   end arrives in real time). Failures are injected by [`http::faults`], not modelled.
//! - GPU physics: utilization, temperature and memory are simple gauges for dashboards and
//!   policies, not a power or thermal-throttling model.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod baselines;
pub mod config;
pub mod engine;
pub mod fleet;
pub mod http;
pub mod kv;
pub mod metrics;
pub mod profile;
pub mod report;
pub mod request;
pub mod slots;
pub mod tokenizer;
pub mod workload;

pub use config::{ConfigError, EngineConfig, GpuModel, StepTime};
pub use engine::Engine;
pub use fleet::{BackendSpec, FleetConfig, FleetError};
pub use metrics::{EngineMetrics, GpuGauges};
pub use profile::Profile;
pub use report::{BackendReport, Outcome, RequestRecord, RunReport, Summary};
pub use request::{EngineEvent, RequestId, SimRequest, StepOutcome, StepStats, SubmitError};
pub use slots::SlotMode;
pub use workload::{Prompt, Segment, Workload, WorkloadRequest};
