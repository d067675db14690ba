//! `switchyard-bench`: Switchyard's benchmarks, the code behind `switchyard bench`.
//!
//! - [`decisions`]: every routing policy against named [`scenarios`] on the sim crate's
//!   virtual-time fleet, with fixed seeds; TTFT, end-to-end latency, throughput, prefix-cache
//!   hits, goodput under an SLO, load balance, per-tenant and per-priority breakdowns, and the
//!   time each decision takes.
//! - [`trace`]: the JSON-lines trace format (documented there), its parser and a generator
//!   from the scenarios; [`replay`] plays a trace in real time, open loop, against any
//!   OpenAI-compatible endpoint.
//! - [`overhead`]: what a proxy adds per request: direct against Switchyard and peer proxies
//!   (nginx, HAProxy, LiteLLM), with [`loadgen`]'s generators and [`mock`]'s upstream.
//! - [`stats`], [`output`], [`svg`]: report arithmetic, result files and plots.
//!
//! Results are tables (Markdown and JSON) under `bench/results/`, each with the date, the
//! machine, the command and the seeds. Benchmarks report numbers; they are not tests.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod decisions;
pub mod decisions_report;
pub mod loadgen;
pub mod mock;
pub mod output;
pub mod overhead;
pub mod replay;
pub mod scenarios;
pub mod stats;
pub mod svg;
pub mod trace;
