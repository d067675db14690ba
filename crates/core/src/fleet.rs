//! What a policy sees of a pool: its members (fixed at build time) and a per-decision snapshot
//! of their live numbers.

use std::time::Duration;

use crate::cache_model::CacheModel;

/// The index of a backend within its pool, as listed in the config. Stable for the life of a
/// pool; a reload or a membership change builds a new pool (and a new policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId(pub u32);

impl BackendId {
    /// The index as a `usize`, for slices.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A pool member as a policy needs to know it when it is built: what config says of it, which
/// does not change until the pool is rebuilt.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PoolMember {
    /// The backend's configured name: the identity consistent hashing places on its ring, so a
    /// backend keeps its keys across rebuilds as long as its name does not change.
    pub name: String,
    /// Relative share of traffic for weighted policies (at least 1).
    pub weight: u32,
    /// Price per token, for cost-aware policies; `None` when config gives none (self-hosted).
    pub price: Option<Price>,
    /// Longest context (prompt plus output tokens) the backend accepts, when known.
    pub context_window: Option<u32>,
    /// A relative quality score from config (higher is better), for a cost policy's floor.
    pub quality: Option<f32>,
}

/// What a backend charges, in currency units per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Price {
    /// Per million prompt tokens.
    pub input_per_mtok: f64,
    /// Per million output tokens.
    pub output_per_mtok: f64,
}

/// What an engine last reported of its own load (vLLM's `num_requests_running`,
/// `num_requests_waiting`, `kv_cache_usage_perc`, or their equivalents), and how old that
/// report is at decision time. Policies should discount or ignore stale reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EngineLoad {
    /// Sequences in the engine's running batch.
    pub running: u32,
    /// Requests queued inside the engine.
    pub waiting: u32,
    /// Share of KV-cache blocks in use, 0.0 to 1.0.
    pub kv_usage: f32,
    /// The engine's KV-cache size in tokens (blocks x block size, from vLLM's
    /// `cache_config_info` or an equivalent), when it reports one.
    pub kv_capacity_tokens: Option<u32>,
    /// Time since the report was taken.
    pub age: Duration,
}

/// What the GPU exporter (DCGM or an equivalent) last reported for a backend's GPUs, averaged
/// over them, and how old the report is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuLoad {
    /// Compute utilization, 0.0 to 1.0.
    pub utilization: f32,
    /// Share of framebuffer memory in use, 0.0 to 1.0.
    pub memory_used: f32,
    /// Hottest GPU's temperature, degrees Celsius.
    pub temperature_c: f32,
    /// Time since the report was taken.
    pub age: Duration,
}

/// The gateway's own measurements of a backend, from the requests it sent there: peak-sensitive
/// moving averages (see [`crate::ewma`]), in seconds. A field is `None` until its first sample.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LatencySignals {
    /// Request to last byte.
    pub latency_s: Option<f32>,
    /// Request to first byte (first token when streaming).
    pub ttft_s: Option<f32>,
    /// Time per output token after the first.
    pub tpot_s: Option<f32>,
}

/// Live numbers of one backend at the moment of a decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackendView {
    /// Which backend this is.
    pub id: BackendId,
    /// Configured weight (at least 1).
    pub weight: u32,
    /// Requests sent to it and not yet finished.
    pub in_flight: u32,
    /// Whether it may take a new request now: healthy and under its concurrency cap.
    pub usable: bool,
    /// The engine's own report of its load, when the gateway scrapes one.
    pub engine: Option<EngineLoad>,
    /// Tokens the gateway has in flight there: prompt plus expected output of every request
    /// sent and not finished. Load in the unit LLM cost is paid in, unlike `in_flight`.
    pub in_flight_tokens: u64,
    /// Prompt tokens of the requests in flight that have not yet produced their first token:
    /// the prefill work queued ahead of a new request, which is what delays its first token.
    /// Added at dispatch, removed at the first token (or the end, if none came).
    pub prefill_tokens: u64,
    /// The gateway's own latency measurements of it.
    pub latency: LatencySignals,
    /// The GPU exporter's last report, when one is scraped.
    pub gpu: Option<GpuLoad>,
    /// Slow start: the share of a full traffic share the backend should take now, in (0, 1];
    /// 1.0 for a backend that is not ramping up after (re)joining.
    pub ramp: f32,
    /// How its engine caches prompts (from the engine the gateway detected, or config), so
    /// prefix-aware routing predicts what it really holds.
    pub cache: CacheModel,
}

impl BackendView {
    /// An idle, usable backend with no signals: the starting point tests and simulators fill in.
    pub fn idle(id: BackendId, weight: u32) -> Self {
        Self {
            id,
            weight: weight.max(1),
            in_flight: 0,
            usable: true,
            engine: None,
            in_flight_tokens: 0,
            prefill_tokens: 0,
            latency: LatencySignals::default(),
            gpu: None,
            ramp: 1.0,
            cache: CacheModel::Paged,
        }
    }
}

/// An immutable snapshot of a pool handed to a policy, with the time of the decision.
#[derive(Debug, Clone, Copy)]
pub struct FleetView<'a> {
    /// Every member of the pool, in pool order (`backends[i].id == BackendId(i)`).
    pub backends: &'a [BackendView],
    /// The decision time, on whatever monotonic epoch the caller uses.
    pub now: Duration,
    /// The caller wants the decision's [`crate::Explanation`] (debug header, admin endpoint):
    /// policies that score candidates fill it in; otherwise they skip the cost.
    pub explain: bool,
}

impl<'a> FleetView<'a> {
    /// A snapshot at time `now`.
    pub fn new(backends: &'a [BackendView], now: Duration) -> Self {
        Self {
            backends,
            now,
            explain: false,
        }
    }

    /// The same snapshot, asking for an explanation of the decision.
    pub fn explaining(mut self, explain: bool) -> Self {
        self.explain = explain;
        self
    }

    /// The members that may take a request now.
    pub fn usable(&self) -> impl Iterator<Item = &'a BackendView> + 'a {
        self.backends.iter().filter(|b| b.usable)
    }

    /// How many members may take a request now.
    pub fn usable_count(&self) -> usize {
        self.usable().count()
    }

    /// Requests in flight over the whole pool.
    pub fn total_in_flight(&self) -> u64 {
        self.backends.iter().map(|b| u64::from(b.in_flight)).sum()
    }
}

/// `a` is less loaded than `b`, counting load per unit of weight: `a.in_flight / a.weight <
/// b.in_flight / b.weight`, compared by cross-multiplication so no float is involved.
pub(crate) fn lighter(a: &BackendView, b: &BackendView) -> std::cmp::Ordering {
    (u64::from(a.in_flight) * u64::from(b.weight.max(1)))
        .cmp(&(u64::from(b.in_flight) * u64::from(a.weight.max(1))))
}
